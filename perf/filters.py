"""Memory and time of many distinct subscriptions from one client (perf/filters.sh runs it).

    python3 perf/filters.py PORT BROKER_PID COUNT PATTERN [WINDOW]

Connects one MQTT 3.1.1 client, takes the broker's RSS, subscribes to COUNT distinct
filters (PATTERN with {i} replaced by 0..COUNT-1, one filter per SUBSCRIBE, at most WINDOW
SUBSCRIBEs waiting for their SUBACK), waits for every SUBACK, takes the RSS again once it
has stopped changing, and prints one line:

    filters N rss_before_kb A rss_after_kb B bytes_per_filter C subscribe_s D per_s E

Every SUBACK is checked (packet id, granted QoS 0): a refused subscription fails the run.
"""

import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqtt_raw  # noqa: E402


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settled_rss(pid):
    """The RSS once two samples 0.5 s apart agree (at most 10 s)."""
    last = rss_kb(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = rss_kb(pid)
        if now == last:
            return now
        last = now
    return last


def subscribe(packet_id, topic_filter):
    body = struct.pack(">H", packet_id) + mqtt_raw.s(topic_filter) + b"\x00"
    return mqtt_raw.frame(0x82, body)


def main():
    port, pid, count, pattern = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    window = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    conn = mqtt_raw.Conn(port, "filters-bench", clean=True)
    before = settled_rss(pid)
    start = time.monotonic()
    sent = acked = 0
    while acked < count:
        batch = bytearray()
        while sent < count and sent - acked < window:
            packet_id = sent % 65535 + 1
            batch += subscribe(packet_id, pattern.replace("{i}", str(sent)).encode())
            sent += 1
        if batch:
            conn.send(bytes(batch))
        first, body = conn.packet(timeout=60)
        if first is None:
            sys.exit(f"filters.py: no SUBACK within 60 s ({acked} of {count})")
        if first != 0x90:
            continue
        expect = acked % 65535 + 1
        got = struct.unpack(">H", body[:2])[0]
        if got != expect or body[2:] != b"\x00":
            sys.exit(f"filters.py: SUBACK {got} {body[2:]!r}, expected {expect} granted 0")
        acked += 1
    elapsed = time.monotonic() - start
    after = settled_rss(pid)
    per_filter = (after - before) * 1024 / count
    print(
        f"filters {count} rss_before_kb {before} rss_after_kb {after} "
        f"bytes_per_filter {per_filter:.0f} subscribe_s {elapsed:.3f} per_s {count / elapsed:.0f}"
    )
    conn.sock.close()


if __name__ == "__main__":
    main()
