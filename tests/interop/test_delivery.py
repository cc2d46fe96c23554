"""Message delivery: QoS, topic matching, retained messages, unsubscribe, wills."""

from __future__ import annotations

import uuid

import pytest

import mqttraw as r
from conftest import broker_is


# ------------------------------------------------------------------ QoS


def test_qos2_exactly_once_MQTT_4_3_3(broker, paho_factory, prefix):
    """[MQTT-4.3.3-*] 50 QoS 2 messages: each delivered exactly once, in order [MQTT-4.6.0-6]."""
    topic = f"{prefix}/q2"
    s = paho_factory(broker)
    assert s.subscribe(topic, 2) == [2]
    p = paho_factory(broker)
    for i in range(50):
        p.c.publish(topic, f"{i}", qos=2)
    msgs = s.get_n(50, timeout=15)
    assert [m.payload.decode() for m in msgs] == [str(i) for i in range(50)]
    assert all(m.qos == 2 for m in msgs)
    s.none(0.5)


@pytest.mark.parametrize("sub_qos", [0, 1, 2])
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
def test_delivered_qos_is_min_MQTT_3_8_4_6(broker, paho_factory, prefix, pub_qos, sub_qos):
    """[MQTT-3.8.4-6] delivered QoS = min(publish QoS, granted QoS); SUBACK grants what was asked
    [MQTT-3.9.3-*]."""
    topic = f"{prefix}/m"
    s = paho_factory(broker)
    assert s.subscribe(topic, sub_qos) == [sub_qos]
    paho_factory(broker).publish(topic, b"v", qos=pub_qos)
    m = s.get()
    assert m.qos == min(pub_qos, sub_qos)
    assert m.payload == b"v"


@pytest.mark.parametrize("q_hash,q_plus", [(1, 2), (2, 1), (0, 1), (1, 0), (0, 0)])
def test_overlapping_subscriptions_delivered_once(broker, raw_factory, paho_factory, prefix,
                                                  q_hash, q_plus):
    """One client subscribed to both `p/#` and `p/+` gets a matching message ONCE, at the
    highest granted QoS (wrenmq's intended behaviour; MQTT 3.1.1 section 3.3.5 allows it,
    [MQTT-3.3.5-1] requires the max QoS when one copy is sent).

    INTENDED DIFFERENCE: Mosquitto 2.0.11 (observed) also sends one copy, but at the QoS
    of the `p/+` subscription, not the maximum: (#:2, +:1) -> QoS 1, (#:1, +:0) -> QoS 0.
    """
    c = raw_factory(broker)
    c.connect(f"ov-{uuid.uuid4().hex[:8]}")
    ack = c.subscribe([(f"{prefix}/#", q_hash), (f"{prefix}/+", q_plus)])
    assert ack.body[2:] == bytes([q_hash, q_plus])
    paho_factory(broker).publish(f"{prefix}/x", b"once", qos=2)
    got = []
    while True:
        try:
            p = c.read_packet(timeout=1.0)
        except Exception:
            break
        if p.type == 3:
            got.append((p.qos, p.payload))
            if p.qos == 1:
                c.send(r.puback(p.pid))
            elif p.qos == 2:
                c.send(r.pubrec(p.pid))
        elif p.type == 6:  # PUBREL
            c.send(r.pubcomp(p.pid))
    if broker_is("mosquitto"):
        # Mosquitto: single copy, QoS taken from the `+` subscription (not the max).
        assert got == [(q_plus, b"once")], f"deliveries (qos, payload): {got}"
    else:
        assert got == [(max(q_hash, q_plus), b"once")], f"deliveries (qos, payload): {got}"


# ------------------------------------------------------------------ topics


def test_dollar_topics_not_matched_by_wildcards_MQTT_4_7_2_1(fresh_broker, paho_factory):
    """[MQTT-4.7.2-1] `#` and `+/...` must not match topics starting with `$`."""
    b = fresh_broker
    hash_all = paho_factory(b)
    hash_all.subscribe("#", 0)
    plus = paho_factory(b)
    plus.subscribe("+/broker/#", 0)
    plus.subscribe("+/wren/x", 0)
    explicit = paho_factory(b)
    explicit.subscribe("$wren/#", 0)
    pub = paho_factory(b)
    pub.publish("$wren/x", b"dollar", qos=1)
    assert explicit.get().topic == "$wren/x"
    # $SYS exists on Mosquitto (and will on wrenmq); subscribing explicitly is allowed
    pub.publish("plain/x", b"plain", qos=1)
    assert hash_all.get().topic == "plain/x"
    leaked = [m.topic for m in hash_all.drain(1.0) + plus.drain(0.2) if m.topic.startswith("$")]
    assert leaked == []


def test_multilevel_wildcard_matches_parent_MQTT_4_7_1_2(broker, paho_factory, prefix):
    """[MQTT-4.7.1-2] `sport/#` also matches `sport`; `sport/+` does not."""
    hs = paho_factory(broker)
    hs.subscribe(f"{prefix}/sport/#", 0)
    ps = paho_factory(broker)
    ps.subscribe(f"{prefix}/sport/+", 0)
    p = paho_factory(broker)
    p.publish(f"{prefix}/sport", b"parent", qos=1)
    p.publish(f"{prefix}/sport/", b"empty-level", qos=1)
    assert [m.payload for m in hs.get_n(2)] == [b"parent", b"empty-level"]
    # `sport/+` matches `sport/` (empty level) but not `sport`
    assert [m.payload for m in ps.get_n(1)] == [b"empty-level"]
    ps.none(0.3)


def test_single_level_wildcard(broker, paho_factory, prefix):
    """[MQTT-4.7.1-3] `+` matches exactly one level."""
    s = paho_factory(broker)
    s.subscribe(f"{prefix}/+/t", 0)
    p = paho_factory(broker)
    for t in ("a/t", "a/b/t", "t", "b/t"):
        p.publish(f"{prefix}/{t}", t.encode(), qos=1)
    assert [m.payload for m in s.get_n(2)] == [b"a/t", b"b/t"]
    s.none(0.3)


def test_unsubscribe_stops_delivery_MQTT_3_10_4_1(broker, paho_factory, prefix):
    """[MQTT-3.10.4-1/4/5] after UNSUBACK no new messages are delivered for that filter."""
    topic = f"{prefix}/u"
    s = paho_factory(broker)
    s.subscribe(topic, 1)
    p = paho_factory(broker)
    p.publish(topic, b"before", qos=1)
    assert s.get().payload == b"before"
    s.unsubscribe(topic)
    p.publish(topic, b"after", qos=1)
    s.none(0.7)


def test_unsubscribe_unknown_filter_still_acked_MQTT_3_10_4_5(broker, raw_factory):
    """[MQTT-3.10.4-5] UNSUBACK even if no subscription matched: b0 02 <pid>."""
    c = raw_factory(broker)
    c.connect(f"un-{uuid.uuid4().hex[:8]}")
    c.send(r.unsubscribe(0x1234, ["never/subscribed"]))
    assert c.read_exact(4) == b"\xb0\x02\x12\x34"


# ------------------------------------------------------------------ retained


def test_retained_store_replace_clear_MQTT_3_3_1_5_10_11(broker, paho_factory, prefix):
    """[MQTT-3.3.1-5] stored; a new retained message replaces it; [MQTT-3.3.1-10/11] an empty
    retained payload clears it and is not stored."""
    topic = f"{prefix}/r"
    p = paho_factory(broker)
    p.publish(topic, b"one", qos=1, retain=True)
    p.publish(topic, b"two", qos=1, retain=True)
    s = paho_factory(broker)
    s.subscribe(topic, 1)
    m = s.get()
    assert (m.payload, m.retain) == (b"two", True)
    s.none(0.3)
    p.publish(topic, b"", qos=1, retain=True)
    # the live subscriber does see the empty message (forwarded, RETAIN=0)
    m = s.get()
    assert (m.payload, m.retain) == (b"", False)
    s2 = paho_factory(broker)
    s2.subscribe(topic, 1)
    s2.none(0.5)


def test_retain_flag_on_subscribe_vs_live_MQTT_3_3_1_8_9(broker, paho_factory, prefix):
    """[MQTT-3.3.1-8] retained message sent because of a new subscription has RETAIN=1;
    [MQTT-3.3.1-9] a retained PUBLISH forwarded to an existing subscriber has RETAIN=0."""
    topic = f"{prefix}/rf"
    p = paho_factory(broker)
    p.publish(topic, b"stored", qos=1, retain=True)
    s = paho_factory(broker)
    s.subscribe(topic, 1)
    m = s.get()
    assert (m.payload, m.retain) == (b"stored", True)
    p.publish(topic, b"live", qos=1, retain=True)
    m = s.get()
    assert (m.payload, m.retain) == (b"live", False)
    p.publish(topic, b"", qos=0, retain=True)


def test_retained_delivered_at_min_qos_and_wildcard(broker, paho_factory, prefix):
    """Retained messages match wildcard subscriptions and use min(stored QoS, granted QoS)."""
    p = paho_factory(broker)
    p.publish(f"{prefix}/a/1", b"q2", qos=2, retain=True)
    p.publish(f"{prefix}/a/2", b"q0", qos=0, retain=True)
    s = paho_factory(broker)
    s.subscribe(f"{prefix}/a/+", 1)
    got = {m.topic: (m.payload, m.qos, m.retain) for m in s.get_n(2)}
    assert got == {f"{prefix}/a/1": (b"q2", 1, True), f"{prefix}/a/2": (b"q0", 0, True)}
    p.publish(f"{prefix}/a/1", b"", retain=True)
    p.publish(f"{prefix}/a/2", b"", retain=True)


def test_retained_resent_on_resubscribe_MQTT_3_8_4_3(broker, paho_factory, prefix):
    """[MQTT-3.8.4-3] re-subscribing replaces the subscription and re-sends retained messages."""
    topic = f"{prefix}/rs"
    p = paho_factory(broker)
    p.publish(topic, b"r", qos=1, retain=True)
    s = paho_factory(broker)
    s.subscribe(topic, 0)
    assert s.get().payload == b"r"
    assert s.subscribe(topic, 1) == [1]
    m = s.get()
    assert (m.payload, m.retain, m.qos) == (b"r", True, 1)
    p.publish(topic, b"", retain=True)


# ------------------------------------------------------------------ wills


def test_will_on_ungraceful_close_MQTT_3_1_2_8(broker, raw_factory, paho_factory, prefix):
    """[MQTT-3.1.2-8] the will is published when the network connection closes without DISCONNECT."""
    w = paho_factory(broker)
    w.subscribe(f"{prefix}/will", 1)
    c = raw_factory(broker)
    c.connect(f"w-{uuid.uuid4().hex[:8]}", will=(f"{prefix}/will", b"bye", 1, False))
    c.close()
    m = w.get()
    assert (m.topic, m.payload, m.qos, m.retain) == (f"{prefix}/will", b"bye", 1, False)


def test_no_will_after_disconnect_MQTT_3_1_2_10(broker, raw_factory, paho_factory, prefix):
    """[MQTT-3.1.2-10] the will is removed on DISCONNECT and never published."""
    w = paho_factory(broker)
    w.subscribe(f"{prefix}/will", 1)
    c = raw_factory(broker)
    c.connect(f"w-{uuid.uuid4().hex[:8]}", will=(f"{prefix}/will", b"bye", 1, False))
    c.send(r.DISCONNECT)
    assert c.expect_closed(3)  # [MQTT-3.14.4-1] server closes after DISCONNECT
    w.none(1.0)


def test_will_retain_and_qos_MQTT_3_1_2_14_17(broker, raw_factory, paho_factory, prefix):
    """[MQTT-3.1.2-14/17] will QoS and will retain are honoured: a later subscriber gets it
    retained (RETAIN=1) at the will QoS."""
    topic = f"{prefix}/wr"
    c = raw_factory(broker)
    c.connect(f"w-{uuid.uuid4().hex[:8]}", will=(topic, b"last", 2, True))
    c.close()
    live = None
    s = paho_factory(broker)
    for _ in range(20):  # the will is published asynchronously after the close
        s.subscribe(topic, 2)
        msgs = s.drain(0.25)
        if msgs:
            live = msgs[0]
            break
    assert live is not None, "retained will not stored"
    assert (live.payload, live.retain, live.qos) == (b"last", True, 2)
    paho_factory(broker).publish(topic, b"", retain=True)


def test_will_on_takeover(broker, raw_factory, paho_factory, prefix):
    """Takeover [MQTT-3.1.4-2] closes the old connection without DISCONNECT, so its will is
    published (Mosquitto 2.0 does this for MQTT 3.1.1)."""
    cid = f"wt-{uuid.uuid4().hex[:8]}"
    w = paho_factory(broker)
    w.subscribe(f"{prefix}/will", 1)
    a = raw_factory(broker)
    a.connect(cid, will=(f"{prefix}/will", b"taken-over", 1, False))
    b = raw_factory(broker)
    b.connect(cid)
    assert a.expect_closed(3)
    assert w.get().payload == b"taken-over"
    b.send(r.DISCONNECT)
    w.none(0.5)
