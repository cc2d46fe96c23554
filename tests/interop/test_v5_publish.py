"""MQTT 5.0: PUBLISH and its acknowledgements - reason codes, forwarded
properties, message expiry, topic aliases, flow control (Receive Maximum) and
the client's Maximum Packet Size.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest

import mqtt5raw as m
from conftest import broker_is
from mqtt5raw import raw5  # noqa: F401  (fixture)


def uid(tag="c"):
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def closed_with(c, timeout=5.0):
    try:
        return c.close_reason(timeout=timeout)
    except (socket.timeout, TimeoutError):
        pytest.fail(f"connection still open after {timeout}s")


# ------------------------------------------------------------ reason codes


def test_puback_0x10_no_matching_subscribers(broker, raw5, prefix):
    """3.4.2.1: a server that knows there are no matching subscribers MAY answer a
    QoS 1 PUBLISH with PUBACK 0x10 (No matching subscribers) instead of 0x00.
    Mosquitto 2.0.11 does (40 03 <pid> 10), and 0x00 once someone is subscribed;
    clients surface this code, so wrenmq matches it."""
    c = raw5(broker, uid())
    c.send(m.publish(f"{prefix}/nobody", b"x", qos=1, pid=7))
    a = c.read_until(m.PUBACK)
    assert (a.pid, a.reason) == (7, 0x10)
    s = raw5(broker, uid())
    s.subscribe5([(f"{prefix}/#", 0)])
    c.send(m.publish(f"{prefix}/nobody", b"x", qos=1, pid=8))
    a = c.read_until(m.PUBACK)
    assert (a.pid, a.reason) == (8, 0x00)


def test_pubrec_no_matching_subscribers(broker, raw5, prefix):
    """3.5.2.1 allows PUBREC 0x10 or 0x00 for a QoS 2 PUBLISH nobody receives;
    Mosquitto 2.0.11 sends 0x00 here (the short form 50 02 <pid>), then PUBCOMP
    0x00 for the PUBREL. Both values are success codes (< 0x80), so the exchange
    completes either way."""
    c = raw5(broker, uid())
    c.send(m.publish(f"{prefix}/nobody", b"x", qos=2, pid=9))
    r = c.read_until(m.PUBREC)
    assert r.pid == 9 and r.reason in (0x00, 0x10)
    c.send(m.ack(m.PUBREL, 9))
    comp = c.read_until(m.PUBCOMP)
    assert (comp.pid, comp.reason) == (9, 0x00)


def test_suback_granted_qos_per_filter_and_unsuback_codes(broker, raw5, prefix):
    """[MQTT-3.8.4-5/6] one SUBACK, one reason code per filter in order, each the
    granted QoS (0x00/0x01/0x02; Mosquitto grants what was asked); a shared
    subscription is granted too. UNSUBACK (3.11.3): 0x00 Success for an existing
    subscription, 0x11 No subscription existed otherwise, one per filter in order."""
    c = raw5(broker, uid())
    sa = c.subscribe5([(f"{prefix}/a", 0), (f"{prefix}/b", 1), (f"{prefix}/c", 2),
                       (f"$share/g/{prefix}/d", 1)], pid=3)
    assert sa.reasons == [0x00, 0x01, 0x02, 0x01]
    ua = c.unsubscribe5([f"{prefix}/a", f"{prefix}/none", f"$share/g/{prefix}/d"], pid=4)
    assert ua.reasons == [0x00, 0x11, 0x00]
    # the subscription really is gone, the others are not
    c.send(m.publish(f"{prefix}/a", b"gone"))
    c.send(m.publish(f"{prefix}/b", b"kept"))
    msgs = m.collect(c, quiet=0.4, ptype=m.PUBLISH)
    assert [(x.topic, x.payload) for x in msgs] == [(f"{prefix}/b", b"kept")]


# ------------------------------------------------------------ properties


def test_publish_properties_forwarded_unchanged(broker, raw5, prefix):
    """The server forwards unaltered: Payload Format Indicator [MQTT-3.3.2-4],
    Response Topic [MQTT-3.3.2-15], Correlation Data [MQTT-3.3.2-16], User
    Properties - all of them, repeated keys included, in order [MQTT-3.3.2-17/18] -
    and Content Type [MQTT-3.3.2-20]. The Topic Alias is not forwarded (3.3.2.3.4)
    and the QoS 1 delivery carries the same payload."""
    topic = f"{prefix}/props"
    s = raw5(broker, uid("s"))
    s.subscribe5([(topic, 1)])
    props = [
        (m.PAYLOAD_FORMAT, 1),
        (m.CONTENT_TYPE, "application/json; charset=utf-8"),
        (m.RESPONSE_TOPIC, f"{prefix}/reply"),
        (m.CORRELATION_DATA, b"\x00\x01\xffcorr"),
        (m.USER_PROPERTY, ("b", "2")),
        (m.USER_PROPERTY, ("a", "1")),
        (m.USER_PROPERTY, ("b", "1")),
        (m.USER_PROPERTY, ("", "empty key")),
        (m.USER_PROPERTY, ("ünï", "cödé")),
    ]
    p = raw5(broker, uid("p"))
    p.send(m.publish(topic, b'{"v":1}', qos=1, pid=1, props=props))
    assert p.read_until(m.PUBACK).reason == 0x00
    msg = s.read_until(m.PUBLISH)
    assert (msg.topic, msg.payload, msg.qos) == (topic, b'{"v":1}', 1)
    # order of the non-user properties is not significant; the user properties' is
    assert msg.p[m.PAYLOAD_FORMAT] == 1
    assert msg.p[m.CONTENT_TYPE] == "application/json; charset=utf-8"
    assert msg.p[m.RESPONSE_TOPIC] == f"{prefix}/reply"
    assert msg.p[m.CORRELATION_DATA] == b"\x00\x01\xffcorr"
    assert msg.p[m.USER_PROPERTY] == [v for k, v in props if k == m.USER_PROPERTY]
    assert m.TOPIC_ALIAS not in msg.p
    assert m.MESSAGE_EXPIRY not in msg.p  # none was set: none invented
    s.send(m.puback(msg.pid))


def test_message_expiry_MQTT_3_3_2_5_6(broker, raw5, prefix):
    """A message with Message Expiry 1 s queued for an offline persistent
    subscriber is not delivered 2 s later [MQTT-3.3.2-5]; one with 10 s is, with
    the expiry reduced by the time it waited [MQTT-3.3.2-6] (Mosquitto: 8 after
    ~2.2 s); one without expiry is delivered without the property."""
    cid = uid("exp")
    topic = f"{prefix}/e"
    s = raw5(broker, cid, props=[(m.SESSION_EXPIRY, 60)])
    s.subscribe5([(topic, 1)])
    s.send(m.disconnect())
    s.close()
    p = raw5(broker, uid("p"))
    p.send(m.publish(topic, b"short", qos=1, pid=1, props=[(m.MESSAGE_EXPIRY, 1)]))
    p.send(m.publish(topic, b"long", qos=1, pid=2, props=[(m.MESSAGE_EXPIRY, 10)]))
    p.send(m.publish(topic, b"forever", qos=1, pid=3))
    assert sorted(p.read_until(m.PUBACK).pid for _ in range(3)) == [1, 2, 3]
    time.sleep(2.1)
    s = raw5(broker, cid, clean_start=False, props=[(m.SESSION_EXPIRY, 0)])
    assert s.connack.session_present
    msgs = m.collect(s, quiet=0.5, ptype=m.PUBLISH)
    assert [x.payload for x in msgs] == [b"long", b"forever"]
    remaining = msgs[0].p.get(m.MESSAGE_EXPIRY)
    assert remaining is not None and 1 <= remaining <= 9, remaining
    assert m.MESSAGE_EXPIRY not in msgs[1].p
    for x in msgs:
        s.send(m.puback(x.pid))
    s.send(m.disconnect())


def test_message_expiry_forwarded_to_online_subscriber(broker, raw5, prefix):
    """[MQTT-3.3.2-6] an immediately forwarded message keeps its Message Expiry
    (minus ~0 s of waiting)."""
    topic = f"{prefix}/e"
    s = raw5(broker, uid("s"))
    s.subscribe5([(topic, 0)])
    p = raw5(broker, uid("p"))
    p.send(m.publish(topic, b"x", props=[(m.MESSAGE_EXPIRY, 100)]))
    msg = s.read_until(m.PUBLISH)
    assert msg.p.get(m.MESSAGE_EXPIRY) in (99, 100)


# ------------------------------------------------------------ topic aliases


def test_topic_alias_inbound_MQTT_3_3_2_12(broker, raw5, prefix):
    """[MQTT-3.3.2-12] the server accepts every alias 1..its Topic Alias Maximum.
    PUBLISH(topic, alias 1) sets the mapping; PUBLISH("", alias 1) uses it; a new
    topic with the same alias replaces the mapping (3.3.2.3.4). Subscribers see
    full topic names and no Topic Alias (the subscriber announced no Topic Alias
    Maximum, so the server must not send one [MQTT-3.1.2-27])."""
    s = raw5(broker, uid("s"))
    s.subscribe5([(f"{prefix}/#", 0)])
    c = raw5(broker, uid("p"))
    top = c.connack.p.get(m.TOPIC_ALIAS_MAXIMUM, 0)
    assert top >= 1
    long1 = f"{prefix}/a/rather/long/topic/name"
    long2 = f"{prefix}/other"
    c.send(m.publish(long1, b"1", props=[(m.TOPIC_ALIAS, 1)]))
    c.send(m.publish("", b"2", props=[(m.TOPIC_ALIAS, 1)]))
    c.send(m.publish(long2, b"3", props=[(m.TOPIC_ALIAS, 1)]))
    c.send(m.publish("", b"4", props=[(m.TOPIC_ALIAS, 1)]))
    c.send(m.publish(long1, b"5", props=[(m.TOPIC_ALIAS, top)]))
    c.send(m.publish("", b"6", qos=1, pid=1, props=[(m.TOPIC_ALIAS, top)]))
    assert c.read_until(m.PUBACK).reason == 0x00
    msgs = [s.read_until(m.PUBLISH) for _ in range(6)]
    assert [(x.topic, x.payload) for x in msgs] == [
        (long1, b"1"), (long1, b"2"), (long2, b"3"), (long2, b"4"), (long1, b"5"), (long1, b"6")]
    assert all(m.TOPIC_ALIAS not in x.p for x in msgs)


def test_topic_alias_not_carried_to_next_connection_MQTT_3_3_2_7(broker, raw5, prefix):
    """[MQTT-3.3.2-7] alias mappings belong to one network connection: using alias
    1 without a topic on a new connection is a Protocol Error (DISCONNECT 0x82;
    Mosquitto sends e0 01 82)."""
    cid = uid("tac")
    c = raw5(broker, cid, props=[(m.SESSION_EXPIRY, 30)])
    c.send(m.publish(f"{prefix}/t", b"1", props=[(m.TOPIC_ALIAS, 1)]))
    c.send(m.disconnect())
    c.close()
    c = raw5(broker, cid, clean_start=False)  # ends the session on close
    c.send(m.publish("", b"2", props=[(m.TOPIC_ALIAS, 1)]))
    d = closed_with(c)
    assert d is None or d.reason == 0x82


def test_topic_alias_above_maximum_disconnect_0x94(broker, raw5, prefix):
    """3.3.2.3.4 / [MQTT-3.2.2-17]: a Topic Alias greater than the server's Topic
    Alias Maximum -> DISCONNECT 0x94 (Topic Alias invalid) and close.
    Mosquitto 2.0.11 (maximum 10, alias 11): e0 01 94."""
    w = raw5(broker, uid("w"))
    w.subscribe5([(f"{prefix}/#", 0)])
    c = raw5(broker, uid())
    top = c.connack.p.get(m.TOPIC_ALIAS_MAXIMUM, 0)
    c.send(m.publish(f"{prefix}/t", b"x", props=[(m.TOPIC_ALIAS, top + 1)]))
    d = closed_with(c)
    assert d is not None and d.reason == 0x94, d
    assert m.collect(w, quiet=0.3, ptype=m.PUBLISH) == []


def test_topic_alias_unknown_is_protocol_error(broker, raw5):
    """3.3.2.3.4: zero-length topic with an alias that has no mapping is a Protocol
    Error -> DISCONNECT 0x82 (Mosquitto: e0 01 82)."""
    c = raw5(broker, uid())
    c.send(m.publish("", b"x", props=[(m.TOPIC_ALIAS, 3)]))
    d = closed_with(c)
    assert d is not None and d.reason == 0x82, d


# ------------------------------------------------------------ flow control


def _receive_max_setup(broker, raw5, prefix, rm, n):
    topic = f"{prefix}/rm"
    s = raw5(broker, uid("s"), props=[(m.RECEIVE_MAXIMUM, rm)])
    s.subscribe5([(topic, 1)])
    p = raw5(broker, uid("p"))
    for i in range(n):
        p.send(m.publish(topic, f"m{i}", qos=1, pid=i + 1))
    assert len([p.read_until(m.PUBACK) for _ in range(n)]) == n
    return s


def test_receive_maximum_limits_unacked_deliveries(broker, raw5, prefix):
    """Section 4.9: a subscriber that announced Receive Maximum 2 gets at most 2
    unacknowledged QoS 1 PUBLISHes; once it acknowledges, more arrive, and in the
    end all 5 do, in order [MQTT-4.6.0-6]."""
    s = _receive_max_setup(broker, raw5, prefix, rm=2, n=5)
    first = m.collect(s, quiet=0.6, ptype=m.PUBLISH)
    assert [x.payload for x in first] == [b"m0", b"m1"], "more than Receive Maximum in flight"
    got = list(first)
    deadline = time.monotonic() + 10
    while len(got) < 5 and time.monotonic() < deadline:
        for x in first:
            s.send(m.puback(x.pid))
        first = m.collect(s, quiet=0.4, ptype=m.PUBLISH)
        assert first, "nothing more after acknowledging"
        got += first
    assert [x.payload for x in got] == [f"m{i}".encode() for i in range(5)]
    assert all(x.qos == 1 and not x.dup for x in got)
    for x in first:
        s.send(m.puback(x.pid))


@pytest.mark.wrenmq_only
def test_receive_maximum_never_exceeded_MQTT_3_3_4_9(broker, raw5, prefix):
    """[MQTT-3.3.4-9] the server MUST NOT have more than Receive Maximum QoS 1/2
    PUBLISHes unacknowledged at any time: with Receive Maximum 2 and acks sent one
    at a time, each ack releases exactly one more message.

    wrenmq-only: Mosquitto 2.0.11 releases a whole quota's worth after the first
    ack (observed with Receive Maximum 2: m0 m1, ack m0 -> m2 m3 while m1 is still
    unacknowledged, i.e. 3 in flight)."""
    s = _receive_max_setup(broker, raw5, prefix, rm=2, n=6)
    inflight = m.collect(s, quiet=0.6, ptype=m.PUBLISH)
    assert [x.payload for x in inflight] == [b"m0", b"m1"]
    seen = [x.payload for x in inflight]
    while inflight:
        x = inflight.pop(0)
        s.send(m.puback(x.pid))
        more = m.collect(s, quiet=0.4, ptype=m.PUBLISH)
        inflight += more
        seen += [y.payload for y in more]
        assert len(inflight) <= 2, f"{len(inflight)} unacknowledged with Receive Maximum 2"
    assert seen == [f"m{i}".encode() for i in range(6)]


@pytest.mark.wrenmq_only
def test_resumed_session_resends_within_the_new_receive_maximum_MQTT_3_3_4_9(broker, raw5, prefix):
    """[MQTT-4.4.0-1] meets [MQTT-3.3.4-9]: a session with 4 unacknowledged QoS 1
    messages, resumed by a connection announcing Receive Maximum 2, gets 2 of them
    resent (DUP) and each of the others as an acknowledgement makes room, in order.
    Found by the broker fuzz target (all 4 were resent at once).

    wrenmq-only: Mosquitto 2.0.11 resends every in-flight message on reconnect (observed:
    all 4 with Receive Maximum 2)."""
    topic = f"{prefix}/resume-rm"
    cid = uid("s")
    keep = [(m.SESSION_EXPIRY, 300)]
    s = raw5(broker, cid, props=keep, clean_start=True)
    s.subscribe5([(topic, 1)])
    p = raw5(broker, uid("p"))
    for i in range(4):
        p.send(m.publish(topic, f"m{i}", qos=1, pid=i + 1))
    assert len([p.read_until(m.PUBACK) for _ in range(4)]) == 4
    first = m.collect(s, quiet=0.6, ptype=m.PUBLISH)
    assert [x.payload for x in first] == [b"m0", b"m1", b"m2", b"m3"]
    s.close()
    s = raw5(broker, cid, props=keep + [(m.RECEIVE_MAXIMUM, 2)], clean_start=False)
    assert s.connack.session_present
    inflight = m.collect(s, quiet=0.6, ptype=m.PUBLISH)
    assert [x.payload for x in inflight] == [b"m0", b"m1"], "more than Receive Maximum resent"
    assert all(x.dup for x in inflight)
    seen = [x.payload for x in inflight]
    while inflight:
        x = inflight.pop(0)
        s.send(m.puback(x.pid))
        more = m.collect(s, quiet=0.4, ptype=m.PUBLISH)
        inflight += more
        seen += [y.payload for y in more]
        assert len(inflight) <= 2, f"{len(inflight)} unacknowledged with Receive Maximum 2"
    assert seen == [f"m{i}".encode() for i in range(4)]


# ------------------------------------------------------------ maximum packet size


def test_maximum_packet_size_MQTT_3_1_2_24_25(broker, raw5, prefix):
    """[MQTT-3.1.2-24] the server MUST NOT send a packet larger than the client's
    Maximum Packet Size; [MQTT-3.1.2-25] such a message is dropped for that client
    (the publisher still gets PUBACK 0x00) while other messages keep flowing, and
    subscribers without the limit receive it."""
    topic = f"{prefix}/mps"
    small = raw5(broker, uid("small"), props=[(m.MAXIMUM_PACKET_SIZE, 100)])
    small.subscribe5([(topic, 1)])
    big = raw5(broker, uid("big"))
    big.subscribe5([(topic, 1)])
    p = raw5(broker, uid("p"))
    p.send(m.publish(topic, b"B" * 500, qos=1, pid=1))
    p.send(m.publish(topic, b"tiny", qos=1, pid=2))
    acks = [p.read_until(m.PUBACK) for _ in range(2)]
    assert all(a.reason == 0x00 for a in acks)
    got = m.collect(small, quiet=0.5, ptype=m.PUBLISH)
    assert [x.payload for x in got] == [b"tiny"]
    assert all(len(x.raw) <= 100 for x in got)
    got_big = m.collect(big, quiet=0.5, ptype=m.PUBLISH)
    assert [x.payload for x in got_big] == [b"B" * 500, b"tiny"]
    for x in got:
        small.send(m.puback(x.pid))
    for x in got_big:
        big.send(m.puback(x.pid))


# ------------------------------------------------------------ protocol strictness


@pytest.mark.wrenmq_only
def test_publish_with_subscription_identifier_disconnect_0x82_MQTT_3_3_4_6(broker, raw5, prefix):
    """[MQTT-3.3.4-6] a PUBLISH from a client MUST NOT carry a Subscription
    Identifier; it is a Protocol Error: DISCONNECT 0x82 and close, and the message
    is not delivered.

    wrenmq-only: Mosquitto 2.0.11 (and 2.0.22, eclipse-mosquitto#3319) accepts it
    and answers PUBACK."""
    topic = f"{prefix}/subid"
    s = raw5(broker, uid("s"))
    s.subscribe5([(topic, 0)])
    c = raw5(broker, uid("p"))
    c.send(m.publish(topic, b"x", qos=1, pid=3, props=[(m.SUBSCRIPTION_ID, 5)]))
    d = closed_with(c)
    assert d is not None and d.reason == 0x82, d
    assert m.collect(s, quiet=0.4, ptype=m.PUBLISH) == []


ACK_REASONS_NOT_IN_TABLE = [
    ("PUBACK 0x05", m.PUBACK, 0x05),
    ("PUBREC 0x92", m.PUBREC, 0x92),
    ("PUBREL 0x80", m.PUBREL, 0x80),
    ("PUBCOMP 0x10", m.PUBCOMP, 0x10),
]


@pytest.mark.wrenmq_only
@pytest.mark.parametrize("desc,ptype,reason", ACK_REASONS_NOT_IN_TABLE,
                         ids=[x[0].replace(" ", "-") for x in ACK_REASONS_NOT_IN_TABLE])
def test_ack_reason_code_not_valid_for_packet_disconnect_0x82(broker, raw5, desc, ptype, reason):
    """3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1 list the reason codes of each
    acknowledgement; another code ends the connection with DISCONNECT 0x82, as
    Mosquitto 2.0's broker does (its handle__pubackcomp/pubrec/pubrel return
    MOSQ_ERR_PROTOCOL).

    wrenmq-only: the Mosquitto 2.0.11 on the test machine predates that check."""
    c = raw5(broker, uid("ack"))
    c.send(m.ack(ptype, 9, reason))
    d = closed_with(c)
    assert d is not None and d.reason == 0x82, d


def test_pubrel_unknown_id_answered_with_pubcomp_connection_stays(broker, raw5):
    """A PUBREL for an id the server does not know is not an error: it happens after
    a reconnect (4.3.3). The server answers PUBCOMP and keeps the connection; the
    spec's code is 0x92 Packet Identifier not found (3.7.2.1), which wrenmq sends.
    Mosquitto 2.0 answers PUBCOMP 0x00 (observed on 2.0.11; 2.0.20's handle__pubrel
    sends PUBCOMP without a reason code)."""
    c = raw5(broker, uid("rel"))
    c.send(m.ack(m.PUBREL, 41))
    comp = c.read_until(m.PUBCOMP)
    assert comp.pid == 41
    assert comp.reason == (0x00 if broker_is("mosquitto") else 0x92)
    c.send(b"\xc0\x00")  # PINGREQ: the connection is still up
    assert c.read_until(m.PINGRESP_T).type == m.PINGRESP_T


@pytest.mark.wrenmq_only
@pytest.mark.parametrize("flt", ["$share/g", "$share/g/", "$share//a"])
def test_share_without_filter_or_name_disconnect_0x82_MQTT_4_8_2_1_2(broker, raw5, prefix, flt):
    """[MQTT-4.8.2-1/2] a shared subscription is `$share/{ShareName}/{filter}` with a
    non-empty ShareName and a topic filter: anything else starting with `$share/` is a
    Protocol Error (DISCONNECT 0x82), not a SUBACK failure code; no filter of that
    SUBSCRIBE takes effect.

    wrenmq-only: Mosquitto 2.0.11 grants all three (SUBACK 0x00); it answers 0x82
    only for `$share` alone, which wrenmq treats as an ordinary filter."""
    c = raw5(broker, uid("share"))
    c.send(m.subscribe(1, [(f"{prefix}/ok", 0), (flt, 0)]))
    d = closed_with(c)
    assert d is not None and d.reason == 0x82, d
    w = raw5(broker, uid("w"))
    w.send(m.publish(f"{prefix}/ok", b"x"))
    assert w.is_open()


def test_publish_topic_with_wildcard_disconnect_0x82_MQTT_3_3_2_2(broker, raw5):
    """[MQTT-3.3.2-2] a Topic Name MUST NOT contain wildcards. Mosquitto 2.0 answers
    DISCONNECT 0x82 (observed on 2.0.11 for "+" and "#" at QoS 0 and 1); wrenmq sent
    0x90 before and now matches."""
    for topic, qos in (("a/+", 0), ("a/#", 1)):
        c = raw5(broker, uid("wild"))
        c.send(m.publish(topic, b"x", qos=qos, pid=2))
        d = closed_with(c)
        assert d is not None and d.reason == 0x82, (topic, d)


def test_connack_over_client_maximum_packet_size_closes_without_connack(broker, raw5):
    """[MQTT-3.1.2-24] the server MUST NOT send a packet larger than the client's
    Maximum Packet Size, CONNACK included. Both brokers' CONNACK here is 16 bytes;
    with a limit of 10 the connection is closed without any CONNACK (as Mosquitto
    2.0.11 does), and a limit of 100 connects normally."""
    c = raw5(broker, connect=False)
    c.send(m.connect(uid("mps"), props=[(m.MAXIMUM_PACKET_SIZE, 10)]))
    assert c.close_reason(timeout=5.0) is None
    ok = raw5(broker, uid("mps"), props=[(m.MAXIMUM_PACKET_SIZE, 100)])
    assert len(ok.connack.raw) <= 100


@pytest.mark.wrenmq_only
def test_receive_maximum_exceeded_disconnect_readable_while_client_keeps_sending(broker, raw5, prefix):
    """A client that sends more unacknowledged QoS 2 PUBLISHes than the Receive
    Maximum it was given gets DISCONNECT 0x93 [MQTT-3.3.4-7]. A client that keeps
    publishing must still be able to read it: the broker sends FIN after the
    DISCONNECT and discards the client's input for a short, bounded time before it
    closes. Before the fix it closed at once with unread input, the kernel answered
    with RST and the client got EPIPE/ECONNRESET on its next write.

    wrenmq-only: Mosquitto 2.0.11 does not enforce its receive maximum this way."""
    c = raw5(broker, uid("flood"))
    rm = c.connack.p.get(m.RECEIVE_MAXIMUM, 65535)
    assert rm <= 1000
    data = b"".join(m.publish(f"{prefix}/q2", b"x", qos=2, pid=i + 1) for i in range(rm + 1))
    # About 2 MiB more: far more than the socket buffers hold in flight when the
    # broker decides to close, and well under the 8 MiB linger bound.
    data += m.publish(f"{prefix}/more", b"y" * 1000) * 2048
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    c.sock.settimeout(10.0)
    try:
        c.sock.sendall(data)
    except OSError as e:
        pytest.fail(f"publishing failed before the DISCONNECT could be read: {e!r}")
    got = []
    end = None
    deadline = time.monotonic() + 10.0
    while end is None and time.monotonic() < deadline:
        try:
            got.append(c.read5(timeout=max(0.05, deadline - time.monotonic())))
        except m.Closed as e:
            end = str(e)
    assert [p.reason for p in got if p.type == m.DISCONNECT] == [0x93], got[-3:]
    assert end == "EOF", f"connection ended by {end}"
