"""Makes the persistence files of testdata/ (see README.md there):
make_fixtures.py BINARY WORKDIR OUTDIR."""
import os, shutil, signal, socket, struct, subprocess, sys, time

BIN = sys.argv[1]; DIR = sys.argv[2]; OUT = sys.argv[3]
PORT = 18931

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../perf"))
from mqtt_raw import Conn, frame, s  # noqa: E402


def pub(topic, qos, retain, pid, payload):
    body = s(topic.encode()) + (struct.pack(">H", pid) if qos else b"") + payload
    return frame(0x30 | (qos << 1) | int(retain), body)

def start():
    conf = os.path.join(DIR, "b.conf")
    with open(conf, "w") as f:
        f.write(f"listener {PORT} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {DIR}/\npersistence_fsync always\nsys_interval 0\n")
    p = subprocess.Popen([BIN, "-c", conf], stderr=open(os.path.join(DIR, "log.txt"), "a"))
    for _ in range(100):
        try: socket.create_connection(("127.0.0.1", PORT)).close(); return p
        except OSError: time.sleep(0.05)
    raise SystemExit("no start")

os.makedirs(DIR, exist_ok=True)
# Run 1: build state, then kill -9.
b = start()
sub = Conn(PORT, "fx-sub", False, user="alice")
sub.send(frame(0x82, struct.pack(">H", 1) + s(b"fx/#") + b"\x02" + s(b"other/+") + b"\x01"))
f, _ = sub.packet(5); assert f == 0x90
sub.send(b"\xe0\x00"); sub.sock.close(); time.sleep(0.2)
p = Conn(PORT, "fx-pub", True)
p.send(pub("fx/ret", 1, True, 1, b"retained-1")); assert p.packet()[0] == 0x40
p.send(pub("keep/ret", 0, True, 0, b"retained-2"))
for i in range(4):
    p.send(pub("fx/q", 1, False, 10 + i, b"q1-%d" % i)); assert p.packet()[0] == 0x40
p.send(pub("fx/q2", 2, False, 20, b"q2-0")); assert p.packet()[0] == 0x50
p.send(frame(0x62, struct.pack(">H", 20))); assert p.packet()[0] == 0x70
# An inbound QoS 2 publish awaiting PUBREL on a persistent publisher session.
p2 = Conn(PORT, "fx-pub2", False)
p2.send(pub("fx/held", 2, False, 77, b"held")); assert p2.packet()[0] == 0x50
# A v5 client with session expiry and a delayed will, dropped abnormally.
ms = subprocess.Popen(["mosquitto_sub", "-p", str(PORT), "-V", "5", "-i", "fx-will", "-c", "-t", "w/#",
    "-x", "3600", "--will-topic", "fx/will", "--will-payload", "bye", "-D", "will", "will-delay-interval", "1800"],
    stdout=subprocess.DEVNULL)
time.sleep(1.0); ms.kill(); ms.wait(); time.sleep(0.3)
# fx-sub comes back: takes two, acks neither, PUBREC for the QoS 2 one.
sub = Conn(PORT, "fx-sub", False, user="alice"); assert sub.present
got = []
while True:
    f, body = sub.packet(timeout=1)
    if f is None: break
    got.append((f, body))
for f, body in got:
    if (f >> 1) & 3 == 2:
        tl = struct.unpack(">H", body[:2])[0]; pid = body[2+tl:4+tl]
        sub.send(frame(0x50, pid))
time.sleep(0.3)
b.send_signal(signal.SIGKILL); b.wait()
shutil.copy(os.path.join(DIR, "shardmq.db.log"), os.path.join(OUT, "crash-only.log"))
print("run1 deliveries", len(got))
# Run 2: restart, clean stop (snapshot), restart, one more record, kill -9.
b = start(); time.sleep(0.5)
b.send_signal(signal.SIGTERM); b.wait()
b = start()
p = Conn(PORT, "fx-pub", True)
p.send(pub("fx/after", 1, True, 5, b"after-snapshot")); assert p.packet()[0] == 0x40
time.sleep(0.2)
b.send_signal(signal.SIGKILL); b.wait()
shutil.copy(os.path.join(DIR, "shardmq.db"), os.path.join(OUT, "shardmq.db"))
shutil.copy(os.path.join(DIR, "shardmq.db.log"), os.path.join(OUT, "shardmq.db.log"))
print(open(os.path.join(DIR, "log.txt")).read()[-1500:])
