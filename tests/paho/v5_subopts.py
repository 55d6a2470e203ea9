"""Eclipse Paho (Python, MQTT 5) against shardmq: subscription identifiers, No Local,
Retain As Published and Retain Handling.

Usage: v5_subopts.py PORT. Prints one line per check, exits non-zero on the first failure.
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

PORT = int(sys.argv[1])
TIMEOUT = 20


class Client:
    def __init__(self, cid):
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        self.got = []
        self.cond = threading.Condition()
        self.acks = threading.Semaphore(0)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.acks.release()
        done = threading.Event()
        self.c.on_connect = lambda *a: done.set()
        self.c.connect("127.0.0.1", PORT, keepalive=30)
        self.c.loop_start()
        assert done.wait(TIMEOUT), "no CONNACK"

    def _on_message(self, _c, _u, msg):
        with self.cond:
            ids = getattr(msg.properties, "SubscriptionIdentifier", None)
            self.got.append((msg.topic, msg.payload, bool(msg.retain), ids))
            self.cond.notify_all()

    def subscribe(self, topic, sub_id=None, **opts):
        props = None
        if sub_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        self.c.subscribe(topic, options=SubscribeOptions(qos=1, **opts), properties=props)
        assert self.acks.acquire(timeout=TIMEOUT), "no SUBACK"

    def publish(self, topic, payload, retain=False):
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(TIMEOUT)

    def wait_for(self, payload):
        """Every message up to and including the one with `payload`."""
        with self.cond:
            ok = self.cond.wait_for(lambda: any(g[1] == payload for g in self.got), TIMEOUT)
            assert ok, f"{payload!r} not received: {self.got}"
            i = next(i for i, g in enumerate(self.got) if g[1] == payload)
            out, self.got = self.got[: i + 1], self.got[i + 1:]
            return out


def main():
    a = Client("so-a")
    b = Client("so-b")

    # Subscription identifiers: one copy carrying every matching identifier
    # [MQTT-3.3.4-3] [MQTT-3.3.4-5].
    a.subscribe("so/#", sub_id=1)
    a.subscribe("so/+", sub_id=2)
    b.publish("so/x", b"both")
    [(topic, _, _, ids)] = a.wait_for(b"both")
    assert topic == "so/x" and sorted(ids) == [1, 2], ids
    print("ok subscription identifiers")

    # No Local: a's own message is not sent back to it [MQTT-3.8.3-3].
    a.subscribe("nl/t", noLocal=True)
    a.publish("nl/t", b"own")
    b.publish("nl/t", b"other")
    got = a.wait_for(b"other")
    assert [g[1] for g in got] == [b"other"], got
    print("ok no local")

    # Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13] on live messages.
    a.subscribe("rap/keep", retainAsPublished=True)
    a.subscribe("rap/clear")
    b.publish("rap/keep", b"k", retain=True)
    b.publish("rap/clear", b"c", retain=True)
    got = a.wait_for(b"k") + a.wait_for(b"c")
    flags = {g[1]: g[2] for g in got}
    assert flags == {b"k": True, b"c": False}, got
    print("ok retain as published")

    # Retain Handling [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]
    b.publish("rh/t", b"stored", retain=True)
    c = Client("so-c")
    c.subscribe("rh/t", retainHandling=2)  # never
    c.subscribe("rh/+", retainHandling=1)  # only for a new subscription
    c.subscribe("rh/+", retainHandling=1)  # not new: none
    c.subscribe("rh/#", retainHandling=0)  # always
    b.publish("rh/marker", b"marker")
    got = c.wait_for(b"marker")
    stored = [g for g in got if g[1] == b"stored"]
    assert len(stored) == 2 and all(g[2] for g in stored), got
    print("ok retain handling")

    for x in (a, b, c):
        x.c.disconnect()
        x.c.loop_stop()


if __name__ == "__main__":
    main()
