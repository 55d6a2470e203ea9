"""Eclipse Paho (Python, MQTT 5) against shardmq: topic aliases both ways.

Usage: v5_alias.py PORT. The broker runs with `max_topic_alias 4`. Prints one line per
check and exits non-zero on the first failure.

Paho sends a PUBLISH with an empty topic and a Topic Alias as asked, and hands incoming
PUBLISHes to on_message as they came on the wire (it does not resolve aliases), so this
script sees exactly what the broker sent.
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

PORT = int(sys.argv[1])
TIMEOUT = 20


def connect(cid, alias_max=None):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    done = threading.Event()
    acked = {}

    def on_connect(_c, _u, _flags, reason, props):
        acked["reason"] = reason
        acked["props"] = props
        done.set()

    c.on_connect = on_connect
    props = None
    if alias_max is not None:
        props = Properties(PacketTypes.CONNECT)
        props.TopicAliasMaximum = alias_max
    c.connect("127.0.0.1", PORT, keepalive=30, properties=props)
    c.loop_start()
    assert done.wait(TIMEOUT), "no CONNACK"
    return c, acked


def alias(n):
    p = Properties(PacketTypes.PUBLISH)
    p.TopicAlias = n
    return p


def disconnected_with(cid, topic, n):
    """Publishes `topic` with alias `n` (after setting alias 1) and returns the reason
    code of the broker's DISCONNECT."""
    c, _ = connect(cid)
    gone = threading.Event()
    why = {}

    def on_disconnect(_c, _u, _flags, reason, _props):
        why["reason"] = reason
        gone.set()

    c.on_disconnect = on_disconnect
    c.publish("pa/set", b"x", qos=1, properties=alias(1)).wait_for_publish(TIMEOUT)
    c.publish(topic, b"x", qos=0, properties=alias(n))
    assert gone.wait(TIMEOUT), f"{cid}: not disconnected"
    c.loop_stop()
    return why["reason"].value


def main():
    got = []
    cond = threading.Condition()

    def on_message(_c, _u, msg):
        with cond:
            a = getattr(msg.properties, "TopicAlias", None)
            got.append((msg.topic, a, msg.payload))
            cond.notify_all()

    sub, acked = connect("pa-sub", alias_max=3)
    # [MQTT-3.2.2-17]: the broker announces max_topic_alias.
    assert acked["props"].TopicAliasMaximum == 4, acked["props"]
    print("ok connack topic alias maximum")
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe([("pa/#", 1)])
    assert subscribed.wait(TIMEOUT), "no SUBACK"

    pub, _ = connect("pa-pub")
    # Inbound: the topic once with alias 4, then the alias alone.
    pub.publish("pa/hot", b"m0", qos=1, properties=alias(4)).wait_for_publish(TIMEOUT)
    for i in range(1, 4):
        pub.publish("", f"m{i}".encode(), qos=1, properties=alias(4)).wait_for_publish(TIMEOUT)
    with cond:
        assert cond.wait_for(lambda: len(got) >= 4, TIMEOUT), got
    print("ok inbound alias without topic")
    # Outbound: the broker aliases the topic from its second delivery on
    # [MQTT-3.3.2-11]: within the 3 the subscriber allowed.
    assert got == [
        ("pa/hot", None, b"m0"),
        ("pa/hot", 1, b"m1"),
        ("", 1, b"m2"),
        ("", 1, b"m3"),
    ], got
    print("ok outbound alias")

    assert disconnected_with("pa-bad1", "pa/x", 5) == 0x94  # [MQTT-3.3.2-9]
    assert disconnected_with("pa-bad2", "", 2) == 0x82  # unknown alias
    print("ok invalid aliases refused")
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()


if __name__ == "__main__":
    main()
