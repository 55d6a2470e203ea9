"""Eclipse Paho (Python) over shardmq's websockets listener: transport="websockets",
ws:// or (with a CA file) wss://, MQTT 3.1.1 or 5.0, QoS 0/1/2 between two clients.

Usage: websockets.py PORT PROTOCOL [CAFILE]   (PROTOCOL: 311 or 5). Prints
"ok qos 0/1/2 ws|wss PROTOCOL" and exits 0, or fails with the reason.
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

PORT = int(sys.argv[1])
TAG = sys.argv[2]
PROTO = mqtt.MQTTv5 if TAG == "5" else mqtt.MQTTv311
CA = sys.argv[3] if len(sys.argv) > 3 else None
SCHEME = "wss" if CA else "ws"
TIMEOUT = 20


def client(cid):
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=cid, protocol=PROTO, transport="websockets"
    )
    c.ws_set_options(path="/mqtt")
    if CA:
        c.tls_set(ca_certs=CA)
    done = threading.Event()
    c.on_connect = lambda *a: done.set()
    c.connect("localhost" if CA else "127.0.0.1", PORT, keepalive=30)
    c.loop_start()
    assert done.wait(TIMEOUT), "no CONNACK"
    return c


def main():
    got = []
    cond = threading.Condition()

    def on_message(_c, _u, msg):
        with cond:
            got.append((msg.topic, msg.payload, msg.qos))
            cond.notify_all()

    sub = client(f"paho-ws-sub-{SCHEME}-{TAG}")
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe([(f"ws{TAG}/#", 2)])
    assert subscribed.wait(TIMEOUT), "no SUBACK"

    pub = client(f"paho-ws-pub-{SCHEME}-{TAG}")
    big = bytes(range(256)) * 400  # 100 KiB: many frames' worth, 64-bit lengths
    for qos in (0, 1, 2):
        info = pub.publish(f"ws{TAG}/q{qos}", f"m{qos}".encode(), qos=qos)
        info.wait_for_publish(TIMEOUT)
    pub.publish(f"ws{TAG}/big", big, qos=1).wait_for_publish(TIMEOUT)
    with cond:
        ok = cond.wait_for(lambda: len(got) >= 4, TIMEOUT)
    assert ok, f"expected 4 messages, got {[g[:1] for g in got]}"
    by_topic = {t: (p, q) for t, p, q in got}
    for qos in (0, 1, 2):
        assert by_topic[f"ws{TAG}/q{qos}"] == (f"m{qos}".encode(), qos), by_topic
    assert by_topic[f"ws{TAG}/big"] == (big, 1), "big payload differs"
    print(f"ok qos 0/1/2 {SCHEME} {TAG}")
    pub.disconnect()
    sub.disconnect()
    pub.loop_stop()
    sub.loop_stop()


if __name__ == "__main__":
    main()
