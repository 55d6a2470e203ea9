"""Eclipse Paho (Python) against shardmq: MQTT 3.1.1 and 5.0, QoS 0/1/2, retained, will.

Usage: roundtrip.py PORT PROTOCOL   (PROTOCOL: 311 or 5). Prints one line per check and
exits non-zero on the first failure.
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

PORT = int(sys.argv[1])
PROTO = mqtt.MQTTv5 if sys.argv[2] == "5" else mqtt.MQTTv311
TIMEOUT = 20


def client(cid):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=PROTO)
    return c


def connect(c, **kw):
    done = threading.Event()
    c.on_connect = lambda *a: done.set()
    c.connect("127.0.0.1", PORT, keepalive=30, **kw)
    c.loop_start()
    assert done.wait(TIMEOUT), "no CONNACK"


def main():
    tag = sys.argv[2]
    got = []
    cond = threading.Condition()

    def on_message(_c, _u, msg):
        with cond:
            props = getattr(msg, "properties", None)
            user = list(getattr(props, "UserProperty", []) or []) if props else []
            got.append((msg.topic, msg.payload, msg.qos, msg.retain, user))
            cond.notify_all()

    def wait_for(n):
        with cond:
            ok = cond.wait_for(lambda: len(got) >= n, TIMEOUT)
        assert ok, f"expected {n} messages, got {got}"

    sub = client(f"paho-sub-{tag}")
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    connect(sub)
    sub.subscribe([(f"paho{tag}/#", 2)])
    assert subscribed.wait(TIMEOUT), "no SUBACK"

    pub = client(f"paho-pub-{tag}")
    connect(pub)
    for qos in (0, 1, 2):
        props = None
        if PROTO == mqtt.MQTTv5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = ("k", f"v{qos}")
        pub.publish(f"paho{tag}/q{qos}", f"m{qos}".encode(), qos=qos, properties=props).wait_for_publish(TIMEOUT)
    wait_for(3)
    for qos in (0, 1, 2):
        topic, payload, q, retain, user = got[qos]
        assert (topic, payload, q, retain) == (f"paho{tag}/q{qos}", f"m{qos}".encode(), qos, False), got[qos]
        if PROTO == mqtt.MQTTv5:
            assert user == [("k", f"v{qos}")], user
    print(f"ok qos 0/1/2 ({tag})")

    # Retained: a late subscriber gets it with the retain flag.
    pub.publish(f"paho{tag}/ret", b"kept", qos=1, retain=True).wait_for_publish(TIMEOUT)
    # The `#` subscriber gets it live too: wait for it, so that the will below is the
    # next message it receives (on a loaded machine it can arrive late).
    wait_for(4)
    assert got[3][:2] == (f"paho{tag}/ret", b"kept"), got[3]
    late_got = []
    late_ev = threading.Event()
    late = client(f"paho-late-{tag}")

    def on_late(_c, _u, msg):
        late_got.append((msg.topic, msg.payload, msg.retain))
        late_ev.set()

    late.on_message = on_late
    connect(late)
    late.subscribe(f"paho{tag}/ret", 1)
    assert late_ev.wait(TIMEOUT), "retained not delivered"
    assert late_got[0] == (f"paho{tag}/ret", b"kept", True), late_got
    print(f"ok retained ({tag})")

    # Will: a client that vanishes without DISCONNECT.
    doomed = client(f"paho-doomed-{tag}")
    doomed.will_set(f"paho{tag}/will", b"gone", qos=1)
    connect(doomed)
    before = len(got)
    doomed.loop_stop()
    doomed.socket().close()
    wait_for(before + 1)
    assert got[before][:2] == (f"paho{tag}/will", b"gone"), got[before]
    print(f"ok will ({tag})")

    for c in (sub, pub, late):
        c.disconnect()
        c.loop_stop()


if __name__ == "__main__":
    main()
