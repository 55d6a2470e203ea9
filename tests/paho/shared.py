"""Eclipse Paho (Python) against shardmq: shared subscriptions ($share/GROUP/FILTER).

Usage: shared.py PORT PROTOCOL   (PROTOCOL: 311 or 5). Two members of one group and a
plain subscriber; 20 QoS 1 messages: each goes to exactly one member (10 each with the
default round robin), the plain subscriber gets all 20. With 5, No Local on a shared
subscription gets DISCONNECT 0x82 and a malformed share name SUBACK 0x8F. Prints one line
per check and exits non-zero on the first failure.
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

PORT = int(sys.argv[1])
V5 = sys.argv[2] == "5"
PROTO = mqtt.MQTTv5 if V5 else mqtt.MQTTv311
TIMEOUT = 20
N = 20


def client(cid):
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=PROTO)


def connect(c):
    done = threading.Event()
    flags = {}

    def on_connect(_c, _u, _f, _rc, props=None):
        flags["props"] = props
        done.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", PORT, keepalive=30)
    c.loop_start()
    assert done.wait(TIMEOUT), "no CONNACK"
    return flags.get("props")


def subscriber(cid, topic, got, cond):
    c = client(cid)

    def on_message(_c, _u, msg):
        with cond:
            got.append((cid, msg.payload))
            cond.notify_all()

    c.on_message = on_message
    acked = threading.Event()
    codes = []

    def on_subscribe(_c, _u, _mid, reason_codes, _props=None):
        codes.extend(reason_codes)
        acked.set()

    c.on_subscribe = on_subscribe
    props = connect(c)
    c.subscribe(topic, qos=1)
    assert acked.wait(TIMEOUT), "no SUBACK"
    return c, props, codes


def main():
    tag = sys.argv[2]
    got = []
    cond = threading.Condition()
    a, props, codes = subscriber(f"paho-a-{tag}", f"$share/g{tag}/jobs{tag}", got, cond)
    if V5:
        assert props is not None and props.SharedSubscriptionAvailable == 1, props
    assert all(not c.is_failure for c in codes), codes
    b, _, _ = subscriber(f"paho-b-{tag}", f"$share/g{tag}/jobs{tag}", got, cond)
    plain, _, _ = subscriber(f"paho-plain-{tag}", f"jobs{tag}", got, cond)
    pub = client(f"paho-pub-{tag}")
    connect(pub)
    for i in range(N):
        pub.publish(f"jobs{tag}", f"m{i}".encode(), qos=1).wait_for_publish(TIMEOUT)
    with cond:
        ok = cond.wait_for(lambda: len(got) >= 2 * N, TIMEOUT)
    assert ok, f"expected {2 * N} deliveries, got {len(got)}"
    members = [p for (cid, p) in got if "plain" not in cid]
    assert sorted(members) == sorted(f"m{i}".encode() for i in range(N)), members
    na = sum(1 for (cid, _) in got if cid.startswith("paho-a"))
    nb = sum(1 for (cid, _) in got if cid.startswith("paho-b"))
    assert (na, nb) == (N // 2, N // 2), (na, nb)
    print(f"ok one member per message ({tag})")

    if V5:
        bad = client(f"paho-bad-{tag}")
        connect(bad)
        acked = threading.Event()
        codes = []

        def on_subscribe(_c, _u, _mid, reason_codes, _props=None):
            codes.extend(reason_codes)
            acked.set()

        bad.on_subscribe = on_subscribe
        bad.subscribe("$share//jobs", qos=0)
        assert acked.wait(TIMEOUT), "no SUBACK"
        assert codes[0].value == 0x8F, codes
        print("ok malformed share name 0x8F (5)")

        gone = threading.Event()
        reason = []

        def on_disconnect(_c, _u, _f, rc, _props=None):
            reason.append(rc)
            gone.set()

        bad.on_disconnect = on_disconnect
        bad.subscribe("$share/g/jobs", options=SubscribeOptions(qos=0, noLocal=True))
        assert gone.wait(TIMEOUT), "not disconnected"
        assert reason[0].value == 0x82, reason
        print("ok no local is a protocol error (5)")

    for c in (a, b, plain, pub):
        c.disconnect()
        c.loop_stop()


if __name__ == "__main__":
    main()
