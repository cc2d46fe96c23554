"""MQTT 5.0 next to 3.1.1 on one listener, the paho-mqtt v5 client, and the
stock mosquitto_pub / mosquitto_sub with `-V mqttv5`."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqtt5raw as m
import mqttraw as r
from mqtt5raw import raw5  # noqa: F401  (fixture)


def uid(tag="c"):
    return f"{tag}-{uuid.uuid4().hex[:10]}"


V5_PROPS = [
    (m.PAYLOAD_FORMAT, 1),
    (m.CONTENT_TYPE, "text/plain"),
    (m.RESPONSE_TOPIC, "reply/here"),
    (m.CORRELATION_DATA, b"\x00cd"),
    (m.USER_PROPERTY, ("k", "v")),
    (m.MESSAGE_EXPIRY, 60),
]


# ------------------------------------------------------------ 3.1.1 <-> 5 on one listener


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_v311_publisher_to_v5_subscriber(broker, raw5, prefix, qos):
    """A 3.1.1 PUBLISH reaches a v5 subscriber with topic, payload and QoS intact and
    no properties (there were none to forward)."""
    topic = f"{prefix}/from311"
    s = raw5(broker, uid("s5"))
    s.subscribe5([(topic, 2)])
    p = r.connected_client(broker.host, broker.port, uid("p311"))
    p.send(r.publish(topic, b"\x00binary\xffpayload", qos=qos, pid=5))
    if qos == 1:
        assert p.read_packet().raw == b"\x40\x02\x00\x05"
    elif qos == 2:
        assert p.read_packet().raw == b"\x50\x02\x00\x05"
        p.send(r.pubrel(5))
        assert p.read_packet().raw == b"\x70\x02\x00\x05"
    msg = s.read_until(m.PUBLISH)
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"\x00binary\xffpayload", qos)
    assert msg.props == []
    if qos == 1:
        s.send(m.puback(msg.pid))
    elif qos == 2:
        s.send(m.ack(m.PUBREC, msg.pid))
        assert s.read_until(m.PUBREL).pid == msg.pid
        s.send(m.ack(m.PUBCOMP, msg.pid))


@pytest.mark.parametrize("qos", [0, 1])
def test_v5_publisher_to_v311_subscriber(broker, raw5, prefix, qos):
    """A v5 PUBLISH with properties reaches a 3.1.1 subscriber as a plain 3.1.1
    PUBLISH: the exact 3.1.1 encoding of topic (+ packet id) + payload, no property
    bytes, and 3.1.1-style acks (PUBACK 40 02) on the v3 side."""
    topic = f"{prefix}/from5"
    s = r.connected_client(broker.host, broker.port, uid("s311"))
    s.subscribe([(topic, 1)])
    p = raw5(broker, uid("p5"))
    p.send(m.publish(topic, b"hello v3", qos=qos, pid=3, props=V5_PROPS))
    if qos:
        assert p.read_until(m.PUBACK).reason == 0x00
    pkt = s.read_packet()
    assert pkt.type == 3 and pkt.qos == qos
    assert pkt.topic == topic and pkt.payload == b"hello v3"
    expected_len = 2 + len(topic.encode()) + (2 if qos else 0) + len(b"hello v3")
    assert len(pkt.body) == expected_len, f"extra bytes in the 3.1.1 PUBLISH: {pkt.raw!r}"
    if qos:
        s.send(r.puback(pkt.pid))


def test_paho_v311_and_v5_clients_share_topics(broker, prefix):
    """The same exchange through paho-mqtt: a MQTTv5 client and a MQTTv311 client
    on one listener, both directions; the v5 receiver sees the v5 sender's user
    properties and content type, the 3.1.1 receiver just the payload."""
    topic = f"{prefix}/paho"
    got5, got3 = [], []
    ev5, ev3 = threading.Event(), threading.Event()

    def make(proto, sink, ev):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uid("paho"), protocol=proto)
        c.reconnect_delay_set(60, 60)
        connected = threading.Event()
        c.on_connect = lambda *a: connected.set()
        c.on_message = lambda cl, u, msg: (sink.append(msg), ev.set())
        c.connect(broker.host, broker.port, 30)
        c.loop_start()
        assert connected.wait(5)
        return c

    c5 = make(mqtt.MQTTv5, got5, ev5)
    c3 = make(mqtt.MQTTv311, got3, ev3)
    try:
        subscribed = threading.Event()
        c5.on_subscribe = lambda *a: subscribed.set()
        c5.subscribe(topic, qos=1)
        assert subscribed.wait(5)
        subscribed.clear()
        c3.on_subscribe = lambda *a: subscribed.set()
        c3.subscribe(topic, qos=1)
        assert subscribed.wait(5)
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("k", "v"), ("k", "w")]
        props.ContentType = "text/x"
        c5.publish(topic, b"from-v5", qos=1, properties=props).wait_for_publish(5)
        assert ev5.wait(5) and ev3.wait(5)
        (m5,), (m3,) = got5, got3
        assert (m5.payload, m3.payload) == (b"from-v5", b"from-v5")
        assert m5.properties.UserProperty == [("k", "v"), ("k", "w")]
        assert m5.properties.ContentType == "text/x"
        ev5.clear()
        ev3.clear()
        got5.clear()
        got3.clear()
        c3.publish(topic, b"from-v311", qos=1).wait_for_publish(5)
        assert ev5.wait(5) and ev3.wait(5)
        assert [x.payload for x in got5] == [b"from-v311"]
        assert [x.payload for x in got3] == [b"from-v311"]
        assert not hasattr(got5[0].properties, "UserProperty")
    finally:
        for c in (c5, c3):
            c.disconnect()
            c.loop_stop()


def test_retained_v5_message_keeps_properties(broker, raw5, prefix):
    """A retained message is stored with its properties (3.3.1.3): a later v5
    subscriber gets them with RETAIN 1; a later 3.1.1 subscriber gets the bare
    message."""
    topic = f"{prefix}/ret"
    p = raw5(broker, uid("p"))
    props = [(m.CONTENT_TYPE, "text/plain"), (m.USER_PROPERTY, ("a", "1")), (m.USER_PROPERTY, ("b", "2"))]
    p.send(m.publish(topic, b"stored", qos=1, pid=1, retain=True, props=props))
    p.read_until(m.PUBACK)
    s = raw5(broker, uid("s"))
    s.subscribe5([(topic, 0)])
    msg = s.read_until(m.PUBLISH)
    assert (msg.payload, msg.retain) == (b"stored", True)
    assert msg.p[m.CONTENT_TYPE] == "text/plain"
    assert msg.p[m.USER_PROPERTY] == [("a", "1"), ("b", "2")]
    s3 = r.connected_client(broker.host, broker.port, uid("s3"))
    s3.subscribe([(topic, 0)])
    pkt = s3.read_packet()
    assert (pkt.topic, pkt.payload, pkt.retain) == (topic, b"stored", True)
    p.send(m.publish(topic, b"", retain=True))


# ------------------------------------------------------------ mosquitto_pub / mosquitto_sub -V mqttv5

HAVE_CLI = bool(shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub"))
cli = pytest.mark.skipif(not HAVE_CLI, reason="mosquitto-clients not installed")
FMT = "MSG|%t|%q|%r|%P|%C|%p"


class Sub:
    """mosquitto_sub in the background; waits until its SUBACK arrived."""

    def __init__(self, broker, topic, count, qos=0, version="mqttv5", timeout=10, extra=()):
        stdbuf = [shutil.which("stdbuf"), "-oL"] if shutil.which("stdbuf") else []
        cmd = stdbuf + ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", version,
                        "-q", str(qos), "-C", str(count), "-W", str(timeout), "-d", "-F", FMT,
                        "-t", topic, *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.subscribed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.subscribed.wait(10):
            self.proc.kill()
            raise AssertionError(f"mosquitto_sub never got its SUBACK: {self.lines}")

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("Subscribed (mid:"):
                self.subscribed.set()

    def messages(self, timeout=15):
        """-> [(topic, qos, retain, user_props, content_type, payload)]"""
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        time.sleep(0.05)
        out = []
        for line in self.lines:
            if line.startswith("MSG|"):
                _, t, q, rt, up, ct, pl = line.split("|", 6)
                out.append((t, int(q), int(rt), up, ct, pl))
        return out


def pub(broker, topic, *args, version="mqttv5"):
    cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", version, "-t", topic, *args]
    res = subprocess.run(cmd, capture_output=True, timeout=15)
    assert res.returncode == 0, f"{cmd}: {res.stdout!r} {res.stderr!r}"


@cli
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_cli_v5_round_trip(broker, prefix, qos):
    """mosquitto_pub -V mqttv5 -> broker -> mosquitto_sub -V mqttv5 at each QoS."""
    topic = f"{prefix}/cli"
    s = Sub(broker, topic, count=2, qos=qos)
    for i in range(2):
        pub(broker, topic, "-q", str(qos), "-m", f"msg-{i}")
    msgs = s.messages()
    assert s.rc == 0
    assert [(x[0], x[1], x[2], x[5]) for x in msgs] == [(topic, qos, 0, "msg-0"), (topic, qos, 0, "msg-1")]


@cli
def test_cli_v5_user_properties_and_content_type(broker, prefix):
    """`-D publish user-property k v` (twice) and `-D publish content-type` reach a
    v5 mosquitto_sub (printed by %P as key:value, in order, and %C)."""
    topic = f"{prefix}/cliprops"
    s = Sub(broker, topic, count=1, qos=1)
    pub(broker, topic, "-q", "1", "-m", "hi", "-D", "publish", "user-property", "k", "v",
        "-D", "publish", "user-property", "a", "b", "-D", "publish", "content-type", "text/x")
    (msg,) = s.messages()
    assert msg[3] == "k:v a:b"
    assert msg[4] == "text/x"
    assert msg[5] == "hi"


@cli
def test_cli_v5_retained_set_and_clear(broker, prefix):
    """mosquitto_pub -V mqttv5 -r stores a retained message a later v5 subscriber
    gets with the retain flag; -n -r clears it."""
    topic = f"{prefix}/cliret"
    pub(broker, topic, "-r", "-q", "1", "-m", "kept", "-D", "publish", "user-property", "r", "1")
    s = Sub(broker, topic, count=1, timeout=5)
    msgs = s.messages()
    assert [(x[5], x[2], x[3]) for x in msgs] == [("kept", 1, "r:1")]
    pub(broker, topic, "-r", "-n")
    s = Sub(broker, topic, count=1, timeout=1)
    assert s.messages() == []


@cli
def test_cli_v5_to_v311_subscriber(broker, prefix):
    """mosquitto_pub -V mqttv5 with properties -> mosquitto_sub -V mqttv311."""
    topic = f"{prefix}/climix"
    s = Sub(broker, topic, count=1, qos=1, version="mqttv311")
    pub(broker, topic, "-q", "1", "-m", "mixed", "-D", "publish", "user-property", "k", "v")
    assert [(x[0], x[5]) for x in s.messages()] == [(topic, "mixed")]
