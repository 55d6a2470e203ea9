"""Raw MQTT 3.1.1 for the perf scripts and test-data generators, dependency-free: the
remaining-length varint, length-prefixed strings, whole packets, taking one packet off a
receive buffer, and a blocking connection that reads packets. Scripts put this
directory on PYTHONPATH (or sys.path) and import it."""

import socket
import struct


def varint(n):
    """MQTT remaining length encoding of n."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(x):
    """A length-prefixed string (bytes)."""
    return struct.pack(">H", len(x)) + x


def frame(first, body):
    """A whole packet: first byte, remaining length, body."""
    return bytes([first]) + varint(len(body)) + body


def take_packet(buf):
    """Removes the first complete packet from bytearray buf: (first byte, body), or None
    when buf holds only part of one."""
    n, mult, i = 0, 1, 1
    while i < len(buf):
        b = buf[i]
        n += (b & 0x7F) * mult
        mult *= 128
        i += 1
        if not b & 0x80:
            break
    else:
        return None
    if len(buf) < i + n:
        return None
    first, body = buf[0], bytes(buf[i:i + n])
    del buf[:i + n]
    return first, body


def publish(topic, payload, qos=0, retain=False, packet_id=1):
    """A PUBLISH packet (topic and payload are bytes)."""
    body = s(topic) + (struct.pack(">H", packet_id) if qos else b"") + payload
    return frame(0x30 | (qos << 1) | int(retain), body)


class Conn:
    """A connected MQTT 3.1.1 client (CONNACK checked), keep alive 60 s."""

    def __init__(self, port, cid, clean, user=None):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        flags = (0x02 if clean else 0) | (0x80 if user else 0)
        body = s(b"MQTT") + bytes([4, flags]) + struct.pack(">H", 60) + s(cid.encode())
        if user:
            body += s(user.encode())
        self.sock.sendall(frame(0x10, body))
        first, body = self.packet()
        assert first == 0x20 and body[1] == 0, (first, body)
        self.present = bool(body[0] & 1)

    def send(self, data):
        self.sock.sendall(data)

    def fill(self, timeout=None):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        if not d:
            raise EOFError
        self.buf += d
        return True

    def packet(self, timeout=None):
        """The next packet (first byte, body), or (None, None) after timeout seconds."""
        while True:
            p = take_packet(self.buf)
            if p:
                return p
            if not self.fill(timeout):
                return None, None
