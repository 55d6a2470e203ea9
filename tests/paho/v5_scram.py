"""MQTT 5 enhanced authentication with SCRAM-SHA-256 (RFC 5802 / RFC 7677) against
shardmq, as an independent client: the SCRAM arithmetic is Python's hashlib / hmac, the
MQTT framing is written out here (Paho's Python client sends Authentication Method and
Data in CONNECT but does not handle AUTH packets).

Usage: v5_scram.py PORT USER PASSWORD. Prints one line per check, exits non-zero on the
first failure.
"""
import base64
import hashlib
import hmac
import os
import socket
import struct
import sys

PORT = int(sys.argv[1])
USER = sys.argv[2]
PASSWORD = sys.argv[3].encode()
METHOD = "SCRAM-SHA-256"


def varint(n):
    out = b""
    while True:
        b, n = n % 128, n // 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def utf8(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def binary(b):
    return struct.pack(">H", len(b)) + b


def props(method, data):
    p = b""
    if method is not None:
        p += b"\x15" + utf8(method)
    if data is not None:
        p += b"\x16" + binary(data)
    return varint(len(p)) + p


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect_packet(client_id, method, data):
    body = utf8("MQTT") + b"\x05" + b"\x02" + struct.pack(">H", 30)
    body += props(method, data) + utf8(client_id)
    return packet(0x10, body)


def auth_packet(reason, method, data):
    return packet(0xF0, bytes([reason]) + props(method, data))


class Conn:
    def __init__(self):
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=20)
        self.buf = b""

    def send(self, b):
        self.s.sendall(b)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(4096)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def read(self):
        """(packet type, body) of the next packet; (None, None) when the broker closed."""
        try:
            self._need(2)
            mult, length, i = 1, 0, 1
            while True:
                self._need(i + 1)
                b = self.buf[i]
                length += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            self._need(i + length)
        except (EOFError, ConnectionResetError):
            return None, None
        first, body = self.buf[0], self.buf[i:i + length]
        self.buf = self.buf[i + length:]
        return first >> 4, body


def parse_props(b):
    """Authentication Method / Data of a property block at the start of `b`."""
    mult, length, i = 1, 0, 0
    while True:
        c = b[i]
        length += (c & 0x7F) * mult
        mult *= 128
        i += 1
        if not c & 0x80:
            break
    end = i + length
    out = {}
    while i < end:
        pid = b[i]
        i += 1
        if pid in (0x15, 0x16, 0x1F, 0x12, 0x1A, 0x1C):
            n = struct.unpack(">H", b[i:i + 2])[0]
            out[pid] = b[i + 2:i + 2 + n]
            i += 2 + n
        elif pid in (0x11, 0x27):
            i += 4
        elif pid in (0x13, 0x21, 0x22):
            i += 2
        elif pid in (0x24, 0x25, 0x28, 0x29, 0x2A):
            i += 1
        elif pid == 0x26:
            for _ in range(2):
                n = struct.unpack(">H", b[i:i + 2])[0]
                i += 2 + n
        else:
            raise ValueError(f"property {pid:#x}")
    return out


def hi(password, salt, iterations):
    return hashlib.pbkdf2_hmac("sha256", password, salt, iterations)


class Scram:
    def __init__(self, user, password):
        self.user, self.password = user, password
        self.cnonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={user},r={self.cnonce}"

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        server_first = server_first.decode()
        fields = dict(f.split("=", 1) for f in server_first.split(","))
        assert fields["r"].startswith(self.cnonce), server_first
        salt, iters = base64.b64decode(fields["s"]), int(fields["i"])
        salted = hi(self.password, salt, iters)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={fields['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check_server_final(self, data):
        assert data == b"v=" + base64.b64encode(self.server_signature), data


def scram_connect(client_id, password):
    """Runs CONNECT / AUTH / AUTH / CONNACK; returns (conn, CONNACK reason code)."""
    c = Conn()
    scram = Scram(USER, password)
    c.send(connect_packet(client_id, METHOD, scram.client_first()))
    kind, body = c.read()
    if kind == 2:  # refused straight away
        return c, body[1]
    assert kind == 15 and body[0] == 0x18, (kind, body)  # AUTH, continue authentication
    p = parse_props(body[1:])
    assert p[0x15] == METHOD.encode(), p
    c.send(auth_packet(0x18, METHOD, scram.client_final(p[0x16])))
    kind, body = c.read()
    assert kind == 2, (kind, body)  # CONNACK
    if body[1] == 0:
        p = parse_props(body[2:])
        assert p[0x15] == METHOD.encode(), p
        scram.check_server_final(p[0x16])  # the server knows the credentials too
    return c, body[1]


def main():
    c, rc = scram_connect("scram-ok", PASSWORD)
    assert rc == 0, f"CONNACK {rc:#x}"
    print("ok scram connect")

    # Re-authentication [MQTT-4.12.1-1]: AUTH 0x19, AUTH 0x18 both ways, AUTH 0x00.
    scram = Scram(USER, PASSWORD)
    c.send(auth_packet(0x19, METHOD, scram.client_first()))
    kind, body = c.read()
    assert kind == 15 and body[0] == 0x18, (kind, body)
    p = parse_props(body[1:])
    c.send(auth_packet(0x18, METHOD, scram.client_final(p[0x16])))
    kind, body = c.read()
    assert kind == 15 and body[0] == 0x00, (kind, body)
    scram.check_server_final(parse_props(body[1:])[0x16])
    c.send(packet(0xC0, b""))  # PINGREQ: still connected
    kind, _ = c.read()
    assert kind == 13, kind
    print("ok scram re-authentication")

    # Re-authentication with another method is a Protocol Error [MQTT-4.12.1-1].
    c.send(auth_packet(0x19, "PLAIN", b"x"))
    kind, body = c.read()
    assert kind == 14 and body[0] == 0x82, (kind, body)
    print("ok re-authentication with another method refused")

    _, rc = scram_connect("scram-bad", PASSWORD + b"x")
    assert rc == 0x86, f"CONNACK {rc:#x}"
    print("ok wrong password refused")

    c = Conn()
    c.send(connect_packet("other-method", "SCRAM-SHA-1", b"n,,n=u,r=x"))
    kind, body = c.read()
    assert kind == 2 and body[1] == 0x8C, (kind, body)
    print("ok unknown method refused")


if __name__ == "__main__":
    main()
