"""MQTT 5.0: CONNECT / CONNACK properties, session expiry, clean start, takeover,
AUTH, keepalive and how the server ends a connection it objects to.

Normative ids are from the OASIS MQTT 5.0 standard (Appendix B numbering).
Everything here runs against Mosquitto 2.0.11 (BROKER=mosquitto), which defines
the target; tests marked wrenmq_only follow the spec where Mosquitto does not.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest

import mqtt5raw as m
from mqtt5raw import raw5  # noqa: F401  (fixture)


def uid(tag="c"):
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def assert_server_closed(c: m.Raw5, allowed, timeout=5.0):
    """The server must close the connection; if it sends a DISCONNECT first its
    reason code must be one of `allowed` (section 4.13: a DISCONNECT before the
    close is a MAY). Returns the DISCONNECT (or None for a bare close)."""
    try:
        d = c.close_reason(timeout=timeout)
    except (socket.timeout, TimeoutError):
        pytest.fail(f"connection still open after {timeout}s")
    if d is not None:
        assert d.reason in allowed, f"DISCONNECT reason {d.reason:#x} not in {[hex(a) for a in allowed]}"
        # the server must not send a Session Expiry Interval on DISCONNECT
        assert m.SESSION_EXPIRY not in d.p
    return d


# ------------------------------------------------------------------ CONNACK


def test_assigned_client_identifier_for_empty_id_MQTT_3_2_2_16(broker, raw5):
    """[MQTT-3.2.2-16] zero-length ClientID -> CONNACK 0x00 with an Assigned Client
    Identifier that no other session uses; [MQTT-3.1.3-7] the connection is then
    processed as if the client had sent that id (its session can be resumed by it)."""
    a = raw5(broker, "", props=[(m.SESSION_EXPIRY, 30)])
    b = raw5(broker, "")
    ida = a.connack.p.get(m.ASSIGNED_CLIENT_ID)
    idb = b.connack.p.get(m.ASSIGNED_CLIENT_ID)
    assert ida and idb, f"no Assigned Client Identifier: {a.connack.props} / {b.connack.props}"
    assert ida != idb
    assert not a.connack.session_present
    a.send(m.disconnect())
    a.close()
    c = raw5(broker, ida, clean_start=False)
    assert c.connack.session_present, "session of the assigned id was not kept"
    assert m.ASSIGNED_CLIENT_ID not in c.connack.p
    c.send(m.disconnect())  # session expiry 0 from this CONNECT: the session ends


def test_empty_id_with_clean_start_0_is_assigned_too(broker, raw5):
    """v5 lets a zero-length ClientID come with Clean Start 0 [MQTT-3.1.3-6/7]: the
    server either accepts it (assigning an id, as Mosquitto does) or refuses with
    CONNACK 0x85 [MQTT-3.1.3-8]. Mosquitto accepts and assigns."""
    c = raw5(broker, connect=False)
    a = c.connect5("", clean_start=False)
    if a.reason == 0x85:
        return
    assert a.reason == 0x00
    assert a.p.get(m.ASSIGNED_CLIENT_ID)
    assert not a.session_present


def test_no_assigned_client_identifier_when_client_sends_one(broker, raw5):
    c = raw5(broker, uid())
    assert m.ASSIGNED_CLIENT_ID not in c.connack.p


def test_connack_capabilities(broker, raw5):
    """CONNACK properties a client acts on (section 3.2.2.3). Each is either absent
    (meaning the default) or carries the value that means "supported":
    Maximum QoS absent or 2 ([MQTT-3.2.2-9]: the broker supports QoS 2); Retain,
    Wildcard, Subscription Identifier and Shared Subscription Available absent or 1;
    Receive Maximum absent or 1..65535; no property repeated, reserved flag bits 0
    [MQTT-3.2.2-1]. Topic Alias Maximum must be present and >= 1: clients
    may only send aliases when the server announced a maximum [MQTT-3.2.2-18], and
    Mosquitto announces 10. Mosquitto 2.0.11 sends exactly: Topic Alias Maximum 10,
    Maximum Packet Size (only when configured), Receive Maximum 20."""
    c = raw5(broker, uid(), props=[(m.RECEIVE_MAXIMUM, 10)])
    a = c.connack
    assert a.raw[2] & 0xFE == 0
    p = a.p  # props_dict already rejects repeats
    assert p.get(m.MAXIMUM_QOS, 2) == 2
    assert p.get(m.RETAIN_AVAILABLE, 1) == 1
    assert p.get(m.WILDCARD_SUB_AVAILABLE, 1) == 1
    assert p.get(m.SUB_ID_AVAILABLE, 1) == 1
    assert p.get(m.SHARED_SUB_AVAILABLE, 1) == 1
    assert 1 <= p.get(m.RECEIVE_MAXIMUM, 65535) <= 65535
    assert p.get(m.TOPIC_ALIAS_MAXIMUM, 0) >= 1, "no Topic Alias Maximum: clients may not use aliases"
    # a client that did not ask for response information gets none [MQTT-3.1.2-28]
    assert m.RESPONSE_INFO not in p
    # nothing the server must not send on CONNACK
    for forbidden in (m.TOPIC_ALIAS, m.SUBSCRIPTION_ID, m.WILL_DELAY, m.MESSAGE_EXPIRY):
        assert forbidden not in p


def test_connack_maximum_packet_size_advertised(broker, raw5):
    """Both brokers run this suite with a 2,000,000-byte packet limit (conftest:
    wrenmq's default; `max_packet_size 2000000` for Mosquitto), and Mosquitto then
    announces it as Maximum Packet Size 2000000 in every v5 CONNACK. A client needs
    it to avoid sending a packet the server will reject [MQTT-3.2.2-15]."""
    c = raw5(broker, uid())
    assert c.connack.p.get(m.MAXIMUM_PACKET_SIZE) == 2_000_000


def test_server_receive_maximum_honoured_for_inbound_qos2(broker, raw5, prefix):
    """Section 4.9: a client may have up to the server's Receive Maximum QoS 2
    PUBLISHes unacknowledged (PUBREC sent, PUBREL not yet): all of them get a
    successful PUBREC and complete afterwards."""
    c = raw5(broker, uid())
    quota = min(c.connack.p.get(m.RECEIVE_MAXIMUM, 65535), 50)
    for pid in range(1, quota + 1):
        c.send(m.publish(f"{prefix}/q2", b"x", qos=2, pid=pid))
    recs = [c.read_until(m.PUBREC) for _ in range(quota)]
    assert sorted(r.pid for r in recs) == list(range(1, quota + 1))
    assert all(r.reason < 0x80 for r in recs), [hex(r.reason) for r in recs]
    for pid in range(1, quota + 1):
        c.send(m.ack(m.PUBREL, pid))
    comps = [c.read_until(m.PUBCOMP) for _ in range(quota)]
    assert sorted(x.pid for x in comps) == list(range(1, quota + 1))
    assert all(x.reason == 0 for x in comps)


# ------------------------------------------------------------------ sessions


def test_session_expiry_zero_ends_session_at_disconnect_MQTT_3_1_2_23(broker, raw5, prefix):
    """Session Expiry Interval 0 (or absent): the session ends when the network
    connection closes; only > 0 keeps state [MQTT-3.1.2-23]. Reconnecting with
    Clean Start 0 finds no session [MQTT-3.2.2-3] and no subscription."""
    cid = uid("sx0")
    topic = f"{prefix}/t"
    a = raw5(broker, cid, props=[(m.SESSION_EXPIRY, 0)])
    a.subscribe5([(topic, 1)])
    a.send(m.disconnect())
    a.close()
    b = raw5(broker, cid, clean_start=False)
    assert not b.connack.session_present
    p = raw5(broker, uid())
    p.send(m.publish(topic, b"lost", qos=1, pid=1))
    assert p.read_until(m.PUBACK).pid == 1
    assert m.collect(b, quiet=0.4, ptype=m.PUBLISH) == []


def test_session_expiry_interval_kept_then_expired(broker, raw5, prefix):
    """Session Expiry Interval 2 s: a reconnect after 1 s finds the session
    (Session Present 1 [MQTT-3.2.2-3], subscriptions and queued QoS 1 messages
    [MQTT-3.1.2-5]); 3 s after the last disconnect it is gone. 0xFFFFFFFF means the
    session does not expire: still there after the same wait (3.1.2.11.2)."""
    short, short2, forever = uid("sx2"), uid("sx2b"), uid("sxinf")
    topic = f"{prefix}/t"
    for cid, sx in ((short, 2), (short2, 2), (forever, 0xFFFFFFFF)):
        c = raw5(broker, cid, props=[(m.SESSION_EXPIRY, sx)])
        c.subscribe5([(topic, 1)])
        c.send(m.disconnect())
        c.close()
    p = raw5(broker, uid())
    p.send(m.publish(topic, b"queued", qos=1, pid=1))
    assert p.read_until(m.PUBACK).reason == 0x00
    time.sleep(1.0)
    c = raw5(broker, short, clean_start=False, props=[(m.SESSION_EXPIRY, 0)])
    assert c.connack.session_present, "session gone before its expiry interval"
    msg = c.read_until(m.PUBLISH)
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"queued", 1)
    c.send(m.puback(msg.pid))
    c.send(m.disconnect())  # expiry 0 now: ends the session
    time.sleep(2.0)  # short2 disconnected >= 3.0 s ago
    c = raw5(broker, short2, clean_start=False, props=[(m.SESSION_EXPIRY, 0)])
    assert not c.connack.session_present, "session still present after its expiry interval"
    assert m.collect(c, quiet=0.3, ptype=m.PUBLISH) == []
    c = raw5(broker, forever, clean_start=False, props=[(m.SESSION_EXPIRY, 0)])
    assert c.connack.session_present, "0xFFFFFFFF session expired"
    msg = c.read_until(m.PUBLISH)
    assert msg.payload == b"queued"
    c.send(m.puback(msg.pid))
    c.send(m.disconnect())


def test_clean_start_discards_session_MQTT_3_1_2_4(broker, raw5, prefix):
    """[MQTT-3.1.2-4] Clean Start 1 discards an existing session: Session Present 0
    [MQTT-3.2.2-2], queued messages and subscriptions are gone."""
    cid = uid("cs")
    topic = f"{prefix}/t"
    a = raw5(broker, cid, props=[(m.SESSION_EXPIRY, 60)])
    a.subscribe5([(topic, 1)])
    a.send(m.disconnect())
    a.close()
    p = raw5(broker, uid())
    p.send(m.publish(topic, b"old", qos=1, pid=1))
    p.read_until(m.PUBACK)
    b = raw5(broker, cid, clean_start=True, props=[(m.SESSION_EXPIRY, 60)])
    assert not b.connack.session_present
    p.send(m.publish(topic, b"new", qos=1, pid=2))
    assert p.read_until(m.PUBACK).reason == 0x10  # no subscriber any more (see test_v5_publish)
    assert m.collect(b, quiet=0.4, ptype=m.PUBLISH) == []
    b.send(m.disconnect(0, [(m.SESSION_EXPIRY, 0)]))


def test_disconnect_can_set_session_expiry_to_zero(broker, raw5):
    """3.14.2.2.2: the client may change the Session Expiry Interval on DISCONNECT;
    60 -> 0 ends the session at the disconnect."""
    cid = uid("dsx")
    a = raw5(broker, cid, props=[(m.SESSION_EXPIRY, 60)])
    a.subscribe5([("x/y", 1)])
    a.send(m.disconnect(0x00, [(m.SESSION_EXPIRY, 0)]))
    a.close()
    b = raw5(broker, cid, clean_start=False)
    assert not b.connack.session_present


def test_disconnect_can_lengthen_nonzero_session_expiry(broker, raw5):
    """3.14.2.2.2: 1 s on CONNECT, 60 s on DISCONNECT -> the session outlives 1 s."""
    cid = uid("dsl")
    a = raw5(broker, cid, props=[(m.SESSION_EXPIRY, 1)])
    a.send(m.disconnect(0x00, [(m.SESSION_EXPIRY, 60)]))
    a.close()
    time.sleep(2.2)
    b = raw5(broker, cid, clean_start=False)
    assert b.connack.session_present
    b.send(m.disconnect())


def test_disconnect_nonzero_session_expiry_after_zero_is_protocol_error(broker, raw5, prefix):
    """3.14.2.2.2: if CONNECT had Session Expiry 0, a non-zero Session Expiry on the
    client's DISCONNECT is a Protocol Error: the server does not treat it as a valid
    DISCONNECT, answers with DISCONNECT 0x82 (section 4.13) and, since it was not
    a normal disconnection, publishes the will [MQTT-3.1.2-8].
    Mosquitto 2.0.11 sends e0 01 82 and publishes the will."""
    w = raw5(broker, uid("w"))
    w.subscribe5([(f"{prefix}/will", 0)])
    c = raw5(broker, uid("bad"), will=dict(topic=f"{prefix}/will", payload=b"gone"))
    c.send(m.disconnect(0x00, [(m.SESSION_EXPIRY, 30)]))
    assert_server_closed(c, {0x82})
    will = w.read_until(m.PUBLISH, timeout=5)
    assert will.payload == b"gone"


def test_session_takeover_closes_old_connection_MQTT_3_1_4_3(broker, raw5):
    """[MQTT-3.1.4-3] a second connection with the same ClientID: the server MUST
    close the existing one; if it sends a DISCONNECT first, the reason is 0x8E.
    Mosquitto 2.0.11 just closes the old socket (no DISCONNECT; see the wrenmq-only
    test below)."""
    cid = uid("to")
    old = raw5(broker, cid)
    new = raw5(broker, cid)
    assert not new.connack.session_present
    assert_server_closed(old, {0x8E})
    assert new.is_open()


@pytest.mark.wrenmq_only
def test_session_takeover_sends_disconnect_0x8e_MQTT_3_1_4_3(broker, raw5):
    """[MQTT-3.1.4-3] "the Server sends a DISCONNECT packet to the existing Client
    with Reason Code of 0x8E (Session taken over)": exactly e0 01 8e (optionally
    with properties) before the close.

    wrenmq-only: Mosquitto 2.0.11 closes the old v5 connection without any
    DISCONNECT (observed: EOF, no bytes)."""
    cid = uid("to8e")
    old = raw5(broker, cid)
    raw5(broker, cid)
    d = assert_server_closed(old, {0x8E})
    assert d is not None and d.reason == 0x8E, "no DISCONNECT 0x8E before the close"


def test_unsupported_authentication_method_connack_0x8c(broker, raw5):
    """Section 4.12: CONNECT with an Authentication Method the server does not
    support -> CONNACK 0x8C (Bad authentication method), Session Present 0
    [MQTT-3.2.2-6], then the connection is closed [MQTT-3.2.2-7].
    Mosquitto 2.0.11 (no auth plugin) sends exactly 20 03 00 8c 00."""
    c = raw5(broker, connect=False)
    c.send(m.connect(uid("auth"), props=[(m.AUTH_METHOD, "SCRAM-SHA-1"), (m.AUTH_DATA, b"n,,n=user,r=abc")]))
    a = c.read5()
    assert a.type == m.CONNACK, a
    assert a.reason == 0x8C
    assert not a.session_present
    assert c.expect_closed(3.0)


# ------------------------------------------------------------------ keepalive


def test_keepalive_timeout_closes_v5_client(broker, raw5):
    """[MQTT-3.1.2-22] keepalive 1 and silence -> the server closes the connection
    (DISCONNECT 0x8D Keep Alive timeout is allowed first, section 4.13).
    Mosquitto 2.0.11 checks keepalives coarsely: observed a bare close (no
    DISCONNECT) about 4.5 s after CONNACK; the bound here is generous."""
    c = raw5(broker, uid("ka"), keepalive=1, timeout=15)
    t0 = time.monotonic()
    assert_server_closed(c, {0x8D}, timeout=12.0)
    assert time.monotonic() - t0 >= 1.0


# ------------------------------------------------------------------ errors


def test_second_connect_is_protocol_error_MQTT_3_1_0_2(broker, raw5):
    """[MQTT-3.1.0-2] a second CONNECT is a Protocol Error: the server closes the
    connection (DISCONNECT 0x82 allowed first). Mosquitto 2.0.11: bare close."""
    cid = uid("2c")
    c = raw5(broker, cid)
    c.send(m.connect(cid))
    assert_server_closed(c, {0x82})


# (description, bytes after a successful CONNECT, allowed reason codes, Mosquitto 2.0.11's bytes)
MALFORMED = [
    ("subscribe filter with # not last [MQTT-4.7.1-1]",
     m.subscribe(1, [("a/#/x", 0)]), {0x81, 0x82, 0x8F}, b"\xe0\x01\x81"),
    ("unknown property id 0x7f in PUBLISH (2.2.2.2)",
     m.packet(0x30, m.mqtt_str("a") + b"\x02\x7f\x00" + b"x"), {0x81}, b"\xe0\x01\x81"),
    ("SUBSCRIBE fixed-header flags 0000 [MQTT-3.8.1-1]",
     b"\x80\x07\x00\x01\x00\x00\x01a\x00", {0x81}, b"\xe0\x01\x81"),
    ("PUBLISH QoS 3 [MQTT-3.3.1-4]",
     b"\x36\x06\x00\x01a\x00\x01\x00", {0x81}, b"\xe0\x01\x81"),
    ("Topic Alias 0 [MQTT-3.3.2-8]",
     m.publish("a", b"x", props=[(m.TOPIC_ALIAS, 0)]), {0x81, 0x82, 0x94}, b"\xe0\x01\x81"),
    ("wildcard in PUBLISH topic [MQTT-3.3.2-2]",
     m.publish("a/+", b"x"), {0x82}, b"\xe0\x01\x82"),
    ("Subscription Identifier 0 (3.8.2.1.2)",
     m.subscribe(1, [("a", 0)], props=[(m.SUBSCRIPTION_ID, 0)]), {0x81, 0x82}, b"\xe0\x01\x81"),
    ("Retain Handling 3 (3.8.3.1)",
     m.subscribe(1, [("a", 0x30)]), {0x81, 0x82}, b"\xe0\x01\x81"),
    ("empty topic without Topic Alias (3.3.2.1)",
     m.publish("", b"x"), {0x82}, b"\xe0\x01\x82"),
    ("property repeated (Content Type twice, 2.2.2.2)",
     m.publish("a", b"x", props=[(m.CONTENT_TYPE, "a"), (m.CONTENT_TYPE, "b")]), {0x81, 0x82}, b""),
]


@pytest.mark.parametrize("desc,data,allowed,mosq", MALFORMED, ids=[x[0].split(" [")[0].split(" (")[0] for x in MALFORMED])
def test_malformed_or_protocol_error_disconnects(broker, raw5, desc, data, allowed, mosq):
    """Section 4.13: a malformed packet or protocol error ends the connection; a
    DISCONNECT before the close is optional and carries 0x81 (Malformed Packet),
    0x82 (Protocol Error) or a more specific code. The exact bytes Mosquitto
    2.0.11 sends are listed in MALFORMED (b"" = bare close)."""
    c = raw5(broker, uid("mal"))
    c.send(data)
    assert_server_closed(c, allowed, timeout=5.0)
    w = raw5(broker, uid("alive"))  # the broker survives
    assert w.is_open()


@pytest.mark.parametrize("desc,connect", [
    ("reserved CONNECT flag set [MQTT-3.1.2-3]", m.connect("rf", flags=0x03)),
    ("Will QoS 3 [MQTT-3.1.2-12]", m.connect("wq3", will=dict(topic="w", payload=b"", qos=3))),
    ("Receive Maximum 0 (3.1.2.11.3)", m.connect("rm0", props=[(m.RECEIVE_MAXIMUM, 0)])),
    ("Maximum Packet Size 0 (3.1.2.11.4)", m.connect("mp0", props=[(m.MAXIMUM_PACKET_SIZE, 0)])),
], ids=["reserved-flag", "will-qos-3", "receive-max-0", "max-packet-size-0"])
def test_bad_connect_rejected(broker, raw5, desc, connect):
    """[MQTT-3.1.4-1] a non-conforming CONNECT closes the connection; a CONNACK with
    reason >= 0x80 (0x81/0x82/0x9B...) is allowed first [MQTT-3.2.2-7], never a
    success. Mosquitto 2.0.11: bare close for all four."""
    c = raw5(broker, connect=False)
    c.send(connect)
    try:
        while True:
            p = c.read5(timeout=5.0)
            assert p.type == m.CONNACK and p.reason >= 0x80, f"unexpected {p!r}"
    except (m.Closed, ConnectionError):
        pass
