#!/usr/bin/env python3
"""perf/bridge.py: bridged throughput, edge -> central, shardmq -> shardmq side by side with
Mosquitto -> Mosquitto, at QoS 0 and QoS 1, and what the bridge costs the edge broker.

For each broker kind and QoS: a central broker, an edge broker with a bridge
`topic bench/# out QOS`, a subscriber on the central broker (QoS as the run, acknowledging
QoS 1), and one publisher on the edge broker sending MESSAGES messages of PAYLOAD bytes
(QoS 0: written as fast as the socket takes them; QoS 1: WINDOW in flight). Reported:
messages received at the central broker per second (first publish to last receipt), how
many arrived, and the CPU seconds (user + system, /proc/PID/stat) each broker spent per
10^6 messages -- the edge's figure is what bridging costs the local broker.

Usage: perf/bridge.py [--brokers shardmq,mosquitto] [--qos 0,1] [--messages 200000]
                      [--payload 64] [--window 100] [--out perf/results]
Environment: SHARDMQ_BIN [target/release/shardmq], MOSQUITTO_BIN [/usr/sbin/mosquitto].
Runs on loopback; ports 18890-18891. Numbers from a shared machine are indicative only:
the result file says what else ran.
"""

import argparse
import datetime
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqtt_raw import Conn, frame, publish, s  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CENTRAL, EDGE = 18890, 18891


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def start(kind, port, extra, tmp):
    conf = os.path.join(tmp, f"{kind}-{port}.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        f.write("max_queued_messages 100000\n")
        if kind == "mosquitto" and os.geteuid() == 0:
            f.write("user root\n")
        f.write(extra)
    binary = os.environ.get("SHARDMQ_BIN", os.path.join(ROOT, "target/release/shardmq"))
    if kind == "mosquitto":
        binary = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
    p = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError(f"{kind} did not start on {port}")


def subscribe(conn, topic, qos):
    conn.send(frame(0x82, struct.pack(">H", 1) + s(topic) + bytes([qos])))
    while True:
        first, _ = conn.packet(20)
        if first is None:
            raise RuntimeError("no SUBACK")
        if first == 0x90:
            return


def wait_bridge(port):
    c = Conn(port, "bench-watch", True)
    subscribe(c, b"$SYS/broker/connection/+/state", 0)
    deadline = time.time() + 30
    while time.time() < deadline:
        first, body = c.packet(1)
        if first is not None and first & 0xF0 == 0x30 and body.endswith(b"1"):
            c.sock.close()
            return
    raise RuntimeError("the bridge did not come up")


def run(kind, qos, messages, payload, window, tmp):
    central = start(kind, CENTRAL, "", tmp)
    edge = start(kind, EDGE, f"connection bench\naddress 127.0.0.1:{CENTRAL}\n"
                 f"remote_clientid bench-edge\ntopic bench/# out {qos}\n", tmp)
    try:
        wait_bridge(CENTRAL)
        sub = Conn(CENTRAL, "bench-sub", True)
        subscribe(sub, b"bench/#", qos)
        received = [0]
        last = [0.0]

        def receive():
            while received[0] < messages:
                first, body = sub.packet(5)
                if first is None:
                    return
                if first & 0xF0 == 0x30:
                    received[0] += 1
                    last[0] = time.time()
                    if (first >> 1) & 3:
                        tlen = struct.unpack(">H", body[:2])[0]
                        sub.send(frame(0x40, body[2 + tlen:4 + tlen]))

        t = threading.Thread(target=receive)
        t.start()
        pub = Conn(EDGE, "bench-pub", True)
        body = b"x" * payload
        cpu0 = (cpu_seconds(edge.pid), cpu_seconds(central.pid))
        start_t = time.time()
        if qos == 0:
            batch = b"".join(publish(b"bench/t", body) for _ in range(1000))
            for _ in range(messages // 1000):
                pub.send(batch)
        else:
            inflight, sent, pid = 0, 0, 0
            while sent < messages or inflight:
                while sent < messages and inflight < window:
                    pid = pid % 65535 + 1
                    pub.send(publish(b"bench/t", body, qos=1, packet_id=pid))
                    sent += 1
                    inflight += 1
                first, _ = pub.packet(20)
                if first is None:
                    raise RuntimeError("no PUBACK from the edge")
                if first == 0x40:
                    inflight -= 1
        t.join(60)
        cpu1 = (cpu_seconds(edge.pid), cpu_seconds(central.pid))
        elapsed = max(last[0] - start_t, 1e-9)
        got = received[0]
        per_m = [(b - a) / max(got, 1) * 1e6 for a, b in zip(cpu0, cpu1)]
        return got, got / elapsed, per_m[0], per_m[1]
    finally:
        for p in (edge, central):
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default="shardmq,mosquitto")
    ap.add_argument("--qos", default="0,1")
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--payload", type=int, default=64)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for qos in [int(q) for q in a.qos.split(",")]:
            for kind in a.brokers.split(","):
                got, rate, edge_cpu, central_cpu = run(kind, qos, a.messages, a.payload,
                                                      a.window, tmp)
                row = (f"| {kind} -> {kind} | {qos} | {got}/{a.messages} | {rate:,.0f} | "
                       f"{edge_cpu:.2f} | {central_cpu:.2f} |")
                print(row, flush=True)
                rows.append(row)
    head = ("| bridge | QoS | received | msg/s at central | edge CPU s / 10^6 msg | "
            "central CPU s / 10^6 msg |\n| --- | --- | --- | --- | --- | --- |")
    text = (f"# Bridged throughput, edge -> central ({datetime.date.today()})\n\n"
            f"`perf/bridge.py --messages {a.messages} --payload {a.payload} "
            f"--window {a.window}`; one publisher on the edge broker, one subscriber on the "
            f"central one, loopback, brokers not pinned.\n\n{head}\n" + "\n".join(rows) + "\n")
    if a.out:
        path = os.path.join(a.out, f"{datetime.date.today()}-bridge.md")
        with open(path, "w") as f:
            f.write(text)
        print(f"written {path}")
    else:
        print(text)


if __name__ == "__main__":
    main()
