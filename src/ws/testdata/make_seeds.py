"""Writes the WebSocket fixtures of this directory (fuzz seeds, read by src/ws/tests.rs).

Usage: python3 make_seeds.py   (in this directory; deterministic output)

- upgrade-then-frames.bin: a browser-like upgrade request offering mqtt, then masked
  frames: an MQTT 3.1.1 CONNECT split across two binary frames, SUBSCRIBE + PUBLISH
  packed into one, a ping, a fragmented PUBLISH with a ping between its fragments, a close.
- frames-only.bin: the frames above without the request (for the frame decoder target).
- request-get-file.txt: a plain GET for http_dir.
"""


def frame(opcode, payload, fin=True, mask=b"\x5a\xc3\x11\x7e"):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n <= 0xFFFF:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def mqtt_str(s):
    return len(s).to_bytes(2, "big") + s


def packet(first, body):
    return bytes([first, len(body)]) + body


CONNECT = packet(0x10, mqtt_str(b"MQTT") + b"\x04\x02\x00\x3c" + mqtt_str(b"seed"))
SUBSCRIBE = packet(0x82, b"\x00\x01" + mqtt_str(b"seed/#") + b"\x01")
PUBLISH = packet(0x30, mqtt_str(b"seed/a") + b"hello")
PUBLISH2 = packet(0x32, mqtt_str(b"seed/b") + b"\x00\x07" + b"fragmented")

REQUEST = (
    b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nOrigin: http://127.0.0.1:9001\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)

FRAMES = (
    frame(2, CONNECT[:5])
    + frame(2, CONNECT[5:])
    + frame(2, SUBSCRIBE + PUBLISH)
    + frame(9, b"ping")
    + frame(2, PUBLISH2[:9], fin=False)
    + frame(9, b"")
    + frame(0, PUBLISH2[9:])
    + frame(8, (1000).to_bytes(2, "big") + b"bye")
)

with open("upgrade-then-frames.bin", "wb") as f:
    f.write(REQUEST + FRAMES)
with open("frames-only.bin", "wb") as f:
    f.write(FRAMES)
with open("request-get-file.txt", "wb") as f:
    f.write(b"GET /index.html?x=1 HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\n\r\n")
with open("mqtt-payload.bin", "wb") as f:
    f.write(CONNECT + SUBSCRIBE + PUBLISH + PUBLISH2)
