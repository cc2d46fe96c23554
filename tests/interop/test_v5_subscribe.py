"""MQTT 5.0 subscription options (No Local, Retain As Published, Retain
Handling), Subscription Identifiers and Shared Subscriptions."""

from __future__ import annotations

import time
import uuid

import pytest

import mqtt5raw as m
from mqtt5raw import raw5  # noqa: F401  (fixture)


def uid(tag="c"):
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def pubs(c, quiet=0.3):
    return m.collect(c, quiet=quiet, ptype=m.PUBLISH)


def retain_on(broker, raw5, topic, payload=b"kept"):
    p = raw5(broker, uid("r"))
    p.send(m.publish(topic, payload, qos=1, pid=1, retain=True))
    p.read_until(m.PUBACK)
    return p


# ------------------------------------------------------------ no local


def test_no_local_MQTT_3_8_3_3(broker, raw5, prefix):
    """[MQTT-3.8.3-3] No Local 1: the client's own messages are not forwarded to
    it; other subscribers, and the same client's No Local 0 subscriptions on
    another connection, still get them."""
    topic = f"{prefix}/nl"
    me = raw5(broker, uid("me"))
    me.subscribe5([(topic, {"qos": 1, "nl": True})])
    other = raw5(broker, uid("other"))
    other.subscribe5([(topic, {"qos": 1, "nl": False})])
    me.send(m.publish(topic, b"mine", qos=1, pid=1))
    assert me.read_until(m.PUBACK).reason == 0x00  # someone (other) matched
    assert [x.payload for x in pubs(me)] == []
    got = pubs(other)
    assert [x.payload for x in got] == [b"mine"]
    other.send(m.puback(got[0].pid))
    # messages from others still arrive on the No Local subscription
    other.send(m.publish(topic, b"theirs"))
    assert [x.payload for x in pubs(me)] == [b"theirs"]
    # without No Local a client receives its own messages
    assert [x.payload for x in pubs(other)] == [b"theirs"]


@pytest.mark.wrenmq_only
def test_no_local_on_shared_subscription_is_protocol_error_MQTT_3_8_3_4(broker, raw5, prefix):
    """[MQTT-3.8.3-4] No Local 1 on a Shared Subscription is a Protocol Error: the
    server closes the connection (DISCONNECT 0x82 allowed first) and grants nothing.

    wrenmq-only: Mosquitto 2.0.11 accepts it (SUBACK 0x00, observed 90 04 00 01 00 00)."""
    c = raw5(broker, uid())
    c.send(m.subscribe(1, [(f"$share/g/{prefix}/t", {"nl": True})]))
    try:
        while True:
            p = c.read5(timeout=5.0)
            assert p.type == m.DISCONNECT, f"expected close, got {p!r}"
            assert p.reason == 0x82
    except (m.Closed, ConnectionError):
        pass


# ------------------------------------------------------------ retain as published / handling


def test_retain_as_published_MQTT_3_3_1_12_13(broker, raw5, prefix):
    """Retain As Published 0: messages forwarded to an established subscription
    carry RETAIN 0 [MQTT-3.3.1-12]; 1: the RETAIN flag as published [MQTT-3.3.1-13].
    Retained messages sent because of the SUBSCRIBE carry RETAIN 1 in both cases
    (3.3.1.3)."""
    topic = f"{prefix}/rap"
    retain_on(broker, raw5, topic, b"old")
    rap0 = raw5(broker, uid("rap0"))
    rap0.subscribe5([(topic, {"rap": False})])
    rap1 = raw5(broker, uid("rap1"))
    rap1.subscribe5([(topic, {"rap": True})])
    assert [(x.payload, x.retain) for x in pubs(rap0)] == [(b"old", True)]
    assert [(x.payload, x.retain) for x in pubs(rap1)] == [(b"old", True)]
    p = raw5(broker, uid("p"))
    p.send(m.publish(topic, b"live-retained", retain=True))
    p.send(m.publish(topic, b"live-plain", retain=False))
    assert [(x.payload, x.retain) for x in pubs(rap0)] == [(b"live-retained", False), (b"live-plain", False)]
    assert [(x.payload, x.retain) for x in pubs(rap1)] == [(b"live-retained", True), (b"live-plain", False)]
    p.send(m.publish(topic, b"", retain=True))  # clear


def test_retain_handling_MQTT_3_3_1_9_10_11(broker, raw5, prefix):
    """Retain Handling 0: retained messages sent on every SUBSCRIBE, also when the
    subscription already exists [MQTT-3.3.1-9]; 1: only when the subscription did
    not exist [MQTT-3.3.1-10]; 2: never at subscribe time [MQTT-3.3.1-11] (live
    messages still flow)."""
    topic = f"{prefix}/rh"
    retain_on(broker, raw5, topic, b"kept")
    rh0 = raw5(broker, uid("rh0"))
    rh0.subscribe5([(topic, {"rh": 0})])
    assert [x.payload for x in pubs(rh0)] == [b"kept"]
    rh0.subscribe5([(topic, {"rh": 0})], pid=2)
    assert [x.payload for x in pubs(rh0)] == [b"kept"]

    rh1 = raw5(broker, uid("rh1"))
    rh1.subscribe5([(topic, {"rh": 1})])
    assert [x.payload for x in pubs(rh1)] == [b"kept"]
    rh1.subscribe5([(topic, {"rh": 1})], pid=2)
    assert pubs(rh1) == []
    # a subscription on a different filter that matches is a new subscription
    rh1.subscribe5([(f"{prefix}/+", {"rh": 1})], pid=3)
    assert [x.payload for x in pubs(rh1)] == [b"kept"]

    rh2 = raw5(broker, uid("rh2"))
    rh2.subscribe5([(topic, {"rh": 2})])
    assert pubs(rh2) == []
    p = raw5(broker, uid("p"))
    p.send(m.publish(topic, b"live"))
    assert [x.payload for x in pubs(rh2)] == [b"live"]
    p.send(m.publish(topic, b"", retain=True))


# ------------------------------------------------------------ subscription identifiers


def _sub_ids(msgs):
    return sorted(i for x in msgs for i in x.p.get(m.SUBSCRIPTION_ID, []))


def test_subscription_identifier_delivered_MQTT_3_3_4_3(broker, raw5, prefix):
    """The Subscription Identifier given on SUBSCRIBE comes back on every matching
    PUBLISH, retained ones included [MQTT-3.3.4-3]; a subscription without one
    gets none; a multi-byte value (300) round-trips."""
    topic = f"{prefix}/x"
    retain_on(broker, raw5, topic, b"ret")
    c = raw5(broker, uid())
    c.subscribe5([(topic, 1)], props=[(m.SUBSCRIPTION_ID, 300)])
    r = pubs(c)
    assert [(x.payload, x.p.get(m.SUBSCRIPTION_ID)) for x in r] == [(b"ret", [300])]
    c.send(m.puback(r[0].pid))
    n = raw5(broker, uid("n"))
    n.subscribe5([(topic, 0)], props=[])
    p = raw5(broker, uid("p"))
    p.send(m.publish(topic, b"live"))
    got = pubs(c)
    assert [(x.payload, x.p.get(m.SUBSCRIPTION_ID)) for x in got] == [(b"live", [300])]
    plain = [x for x in pubs(n) if x.payload == b"live"]
    assert len(plain) == 1 and m.SUBSCRIPTION_ID not in plain[0].p
    p.send(m.publish(topic, b"", retain=True))


def test_overlapping_subscriptions_identifiers_MQTT_3_3_4_4_5(broker, raw5, prefix):
    """Two matching subscriptions with identifiers 7 and 9 (and one without):
    either one PUBLISH carrying both identifiers [MQTT-3.3.4-4] or one PUBLISH per
    subscription each carrying its own [MQTT-3.3.4-5]. Mosquitto sends one per
    subscription (3 PUBLISHes here: ids [7], [9] and none)."""
    c = raw5(broker, uid())
    c.subscribe5([(f"{prefix}/+", 1)], pid=1, props=[(m.SUBSCRIPTION_ID, 7)])
    c.subscribe5([(f"{prefix}/#", 0)], pid=2, props=[(m.SUBSCRIPTION_ID, 9)])
    c.subscribe5([(f"{prefix}/x", 0)], pid=3)
    p = raw5(broker, uid("p"))
    p.send(m.publish(f"{prefix}/x", b"both", qos=1, pid=1))
    got = pubs(c)
    assert got and all(x.payload == b"both" for x in got)
    assert _sub_ids(got) == [7, 9]
    for x in got:
        ids = x.p.get(m.SUBSCRIPTION_ID, [])
        assert len(ids) == len(set(ids))
        if x.qos:
            c.send(m.puback(x.pid))
    if len(got) > 1:  # one copy per subscription: each with at most its own id
        assert all(len(x.p.get(m.SUBSCRIPTION_ID, [])) <= 1 for x in got)


def test_subscription_identifier_replaced_on_resubscribe(broker, raw5, prefix):
    """3.8.4: re-subscribing to the same filter replaces the subscription, including
    its Subscription Identifier (here 5 -> 6; then none)."""
    topic = f"{prefix}/x"
    c = raw5(broker, uid())
    p = raw5(broker, uid("p"))
    for pid, props, want in ((1, [(m.SUBSCRIPTION_ID, 5)], [5]), (2, [(m.SUBSCRIPTION_ID, 6)], [6]), (3, [], None)):
        c.subscribe5([(topic, 0)], pid=pid, props=props)
        p.send(m.publish(topic, f"v{pid}"))
        got = pubs(c)
        assert [(x.payload, x.p.get(m.SUBSCRIPTION_ID)) for x in got] == [(f"v{pid}".encode(), want)]


# ------------------------------------------------------------ shared subscriptions


def test_shared_subscription_distributes_messages(broker, raw5, prefix):
    """Section 4.8.2: `$share/g/<filter>`: each message goes to exactly one member
    of the group, so two members each get a share and together exactly N (no loss,
    no duplicate); a plain subscriber on the same filter still gets all N.
    Mosquitto 2.0.11 round-robins (members get alternate messages)."""
    topic = f"{prefix}/work"
    n = 20
    a = raw5(broker, uid("a"))
    b = raw5(broker, uid("b"))
    a.subscribe5([(f"$share/g1/{topic}", 1)])
    b.subscribe5([(f"$share/g1/{topic}", 1)])
    plain = raw5(broker, uid("plain"))
    plain.subscribe5([(topic, 0)])
    p = raw5(broker, uid("p"))
    for i in range(n):
        p.send(m.publish(topic, f"{i}", qos=1, pid=i + 1))
    assert all(p.read_until(m.PUBACK).reason == 0x00 for _ in range(n))
    ga, gb = [], []
    deadline = time.monotonic() + 10
    while len(ga) + len(gb) < n and time.monotonic() < deadline:
        for c, acc in ((a, ga), (b, gb)):
            for x in m.collect(c, quiet=0.2, ptype=m.PUBLISH):
                assert x.topic == topic  # the real topic, not the $share filter
                acc.append(int(x.payload))
                c.send(m.puback(x.pid))
    assert ga and gb, f"one member got everything: {ga} / {gb}"
    assert sorted(ga + gb) == list(range(n))
    assert ga == sorted(ga) and gb == sorted(gb)
    assert sorted(int(x.payload) for x in pubs(plain)) == list(range(n))


def test_shared_groups_are_independent(broker, raw5, prefix):
    """Section 4.8.2: each share group gets its own copy of every message."""
    topic = f"{prefix}/t"
    g1 = raw5(broker, uid("g1"))
    g2 = raw5(broker, uid("g2"))
    g1.subscribe5([(f"$share/one/{topic}", 0)])
    g2.subscribe5([(f"$share/two/{prefix}/+", 0)])
    p = raw5(broker, uid("p"))
    for i in range(3):
        p.send(m.publish(topic, f"{i}"))
    assert [x.payload for x in pubs(g1)] == [b"0", b"1", b"2"]
    assert [x.payload for x in pubs(g2)] == [b"0", b"1", b"2"]


@pytest.mark.wrenmq_only
def test_shared_subscription_gets_no_retained_messages(broker, raw5, prefix):
    """Section 4.8.2: retained messages are not sent to a session when it
    subscribes to a Shared Subscription (later messages, retained or not, flow
    normally).

    wrenmq-only: Mosquitto 2.0.11 sends the retained message to the new shared
    subscriber (observed: PUBLISH with RETAIN 1 right after the SUBACK)."""
    topic = f"{prefix}/r"
    p = retain_on(broker, raw5, topic, b"kept")
    c = raw5(broker, uid())
    c.subscribe5([(f"$share/g/{topic}", 0)])
    assert pubs(c) == []
    p.send(m.publish(topic, b"live"))
    assert [x.payload for x in pubs(c)] == [b"live"]
    p.send(m.publish(topic, b"", retain=True))
