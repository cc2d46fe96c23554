"""Raw-byte malformed and unusual input.

Each bad input must close only the offending connection: a well-behaved
"witness" client, connected before the bad input and kept for the whole test,
must still get a publish round trip afterwards. MQTT 3.1.1 has no error
CONNACK/DISCONNECT for protocol violations after CONNECT, so "close the
network connection" with no bytes sent is what Mosquitto 2.0 does (observed).
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest

import mqttraw as r
from mqttraw import connect, mqtt_str, packet, publish, subscribe, unsubscribe, varint


@pytest.fixture
def witness(broker, prefix):
    c = r.connected_client(broker.host, broker.port, f"wit-{uuid.uuid4().hex[:8]}")
    topic = f"{prefix}/witness"
    c.subscribe([(topic, 1)])

    def check(tag="ok"):
        c.send(publish(topic, tag.encode(), qos=1, pid=7))
        seen = set()
        deadline = time.monotonic() + 5
        while seen != {"puback", "publish"}:
            p = c.read_packet(timeout=max(0.05, deadline - time.monotonic()))
            if p.type == 4 and p.pid == 7:
                seen.add("puback")
            elif p.type == 3 and p.payload == tag.encode():
                seen.add("publish")
                c.send(r.puback(p.pid))
        return True

    check("before")
    yield check
    check("after")
    c.close()


def cid():
    return f"bad-{uuid.uuid4().hex[:8]}"


# (id, description, bytes, connect_first, bytes expected before the close)
CASES = [
    ("MQTT-3.1.0-1", "first packet is PUBLISH, not CONNECT", publish("a", b"x"), False, b""),
    ("MQTT-3.1.0-1", "first packet is SUBSCRIBE", subscribe(1, [("a", 0)]), False, b""),
    ("MQTT-3.1.0-2", "second CONNECT", None, True, b""),  # bytes filled in below
    ("MQTT-3.1.2-1", "bad protocol name MQTX", connect(cid(), proto_name="MQTX"), False, b""),
    ("MQTT-3.1.2-2", "unsupported level 6 -> CONNACK 0x01", connect(cid(), level=6), False,
     b"\x20\x02\x00\x01"),
    ("MQTT-3.1.2-2", "name MQTT with level 3 -> CONNACK 0x01", connect(cid(), level=3), False,
     b"\x20\x02\x00\x01"),
    ("MQTT-3.1.2-2", "name MQIsdp with level 4 -> CONNACK 0x01",
     connect(cid(), proto_name="MQIsdp", level=4), False, b"\x20\x02\x00\x01"),
    ("MQTT-3.1.2-3", "reserved connect flag bit 0 set", connect(cid(), flags=0x03), False, b""),
    ("MQTT-3.1.2-14", "will QoS 3", connect(cid(), will=("w", b"x", 3, False)), False, b""),
    ("MQTT-3.1.2-13", "will QoS 1 without will flag", connect(cid(), flags=0x0A), False, b""),
    ("MQTT-3.1.2-15", "will retain without will flag", connect(cid(), flags=0x22), False, b""),
    ("MQTT-3.1.2-22", "password flag without username flag", connect(cid(), password="p"), False, b""),
    ("MQTT-3.3.1-4", "PUBLISH with QoS 3", publish("a", b"x", qos=3, pid=1), True, b""),
    ("MQTT-3.3.2-2", "wildcard # in PUBLISH topic", publish("a/#", b"x"), True, b""),
    ("MQTT-3.3.2-2", "wildcard + in PUBLISH topic", publish("a/+/b", b"x"), True, b""),
    ("MQTT-4.7.3-1", "zero-length PUBLISH topic", publish("", b"x"), True, b""),
    ("MQTT-2.3.1-1", "QoS 1 PUBLISH with packet id 0", publish("a", b"x", qos=1, pid=0), True, b""),
    ("MQTT-2.3.1-1", "SUBSCRIBE with packet id 0", subscribe(0, [("a", 0)]), True, b""),
    ("MQTT-4.7.1-2", "SUBSCRIBE filter a/#/b", subscribe(1, [("a/#/b", 0)]), True, b""),
    ("MQTT-4.7.1-2", "SUBSCRIBE filter a#", subscribe(1, [("a#", 0)]), True, b""),
    ("MQTT-4.7.1-3", "SUBSCRIBE filter a/b+", subscribe(1, [("a/b+", 0)]), True, b""),
    ("MQTT-4.7.3-1", "SUBSCRIBE empty filter", subscribe(1, [("", 0)]), True, b""),
    ("MQTT-3.8.3-4", "SUBSCRIBE requested QoS 3", subscribe(1, [("a", 3)]), True, b""),
    ("MQTT-3.8.1-1", "SUBSCRIBE fixed-header flags 0000", subscribe(1, [("a", 0)], first_byte=0x80),
     True, b""),
    ("MQTT-3.8.3-3", "SUBSCRIBE with no filters", subscribe(1, []), True, b""),
    ("MQTT-3.10.1-1", "UNSUBSCRIBE fixed-header flags 0000", packet(0xA0, b"\x00\x01" + mqtt_str("a")),
     True, b""),
    ("MQTT-3.10.3-2", "UNSUBSCRIBE with no filters", unsubscribe(1, []), True, b""),
    ("MQTT-3.6.1-1", "PUBREL fixed-header flags 0000", packet(0x60, b"\x00\x01"), True, b""),
    ("MQTT-3.14.1-1", "DISCONNECT with flags 0001", b"\xe1\x00", True, b""),
    ("MQTT-1.5.3-1", "invalid UTF-8 in PUBLISH topic", packet(0x30, mqtt_str(b"a\xff") + b"x"), True, b""),
    ("MQTT-1.5.3-2", "U+0000 in PUBLISH topic", packet(0x30, mqtt_str(b"a\x00b") + b"x"), True, b""),
    ("MQTT-1.5.3-2", "U+0000 in SUBSCRIBE filter", packet(0x82, b"\x00\x01" + mqtt_str(b"a\x00b") + b"\x00"),
     True, b""),
    ("MQTT-1.5.3-1", "UTF-16 surrogate (ED A0 80) in topic", packet(0x30, mqtt_str(b"a\xed\xa0\x80") + b"x"),
     True, b""),
    ("MQTT-2.2.3", "remaining length of 5 bytes", b"\x30\xff\xff\xff\xff\x01", True, b""),
    ("MQTT-2.2.1", "reserved packet type 0", b"\x00\x00", True, b""),
    ("MQTT-2.2.1", "reserved packet type 15", b"\xf0\x00", True, b""),
    ("MQTT-3.2", "CONNACK sent by a client", b"\x20\x02\x00\x00", True, b""),
    ("garbage", "garbage bytes after CONNECT", b"\x00\x00\x00\x00", True, b""),
    ("garbage", "HTTP request instead of CONNECT", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False, b""),
]


def _ids():
    return [f"{i}-{d}".replace(" ", "_") for i, d, *_ in CASES]


@pytest.mark.parametrize("norm_id,desc,data,connect_first,reply", CASES, ids=_ids())
def test_malformed_closes_only_that_connection(broker, witness, norm_id, desc, data, connect_first, reply):
    c = r.RawClient(broker.host, broker.port)
    try:
        if connect_first:
            c.connect(cid())
        if data is None:  # second CONNECT
            data = connect(cid())
        c.send(data)
        if reply:
            assert c.read_exact(len(reply)) == reply
        assert c.expect_closed(3), f"[{norm_id}] {desc}: connection not closed"
    finally:
        c.close()
    witness()


@pytest.mark.parametrize("remaining", [2_000_001, 10_000_000, 268_435_455])
def test_oversized_packet_closed_before_body(broker, witness, remaining):
    """An announced packet above the 2,000,000-byte limit (Mosquitto: max_packet_size 2000000,
    set by the fixture to match wrenmq's default) closes the connection as soon as the
    fixed header is read, without waiting for the body."""
    c = r.RawClient(broker.host, broker.port)
    try:
        c.connect(cid())
        c.send(b"\x30" + varint(remaining) + mqtt_str("big"))
        assert c.expect_closed(3), "oversized announcement not rejected before the body"
    finally:
        c.close()
    witness()


def test_packet_at_limit_accepted(broker, witness, prefix):
    """A PUBLISH whose whole packet is just under 2,000,000 bytes is delivered."""
    topic = f"{prefix}/big"
    c = r.connected_client(broker.host, broker.port, cid())
    try:
        c.subscribe([(topic, 0)])
        body_len = 1_999_000
        c.send(packet(0x30, mqtt_str(topic) + b"z" * (body_len - 2 - len(topic))))
        p = c.read_packet(timeout=10)
        assert p.topic == topic and len(p.payload) == body_len - 2 - len(topic)
    finally:
        c.close()
    witness()


def test_byte_at_a_time(broker, witness, prefix):
    """CONNECT + SUBSCRIBE + PUBLISH + PINGREQ fed one byte per write all work."""
    topic = f"{prefix}/slow"
    data = (connect(cid()) + subscribe(3, [(topic, 1)]) + publish(topic, b"trickle", qos=1, pid=9)
            + r.PINGREQ)
    c = r.RawClient(broker.host, broker.port)
    try:
        for i in range(len(data)):
            c.send(data[i:i + 1])
            time.sleep(0.002)
        assert c.read_exact(4) == r.CONNACK_OK
        assert c.read_exact(5) == b"\x90\x03\x00\x03\x01"
        got = [c.read_packet() for _ in range(3)]
        types = sorted(p.type for p in got)
        assert types == [3, 4, 13], got  # PUBLISH (to self), PUBACK, PINGRESP
        pub = next(p for p in got if p.type == 3)
        assert pub.payload == b"trickle" and pub.qos == 1
        assert next(p for p in got if p.type == 4).raw == b"\x40\x02\x00\x09"
    finally:
        c.close()
    witness()


def test_many_packets_in_one_write(broker, witness, prefix):
    """CONNECT, SUBSCRIBE, 100 QoS 0 PUBLISHes and a PINGREQ in a single write: all processed
    in order [MQTT-4.6.0-6]."""
    topic = f"{prefix}/burst"
    data = connect(cid()) + subscribe(1, [(topic, 0)])
    data += b"".join(publish(topic, str(i).encode()) for i in range(100)) + r.PINGREQ
    c = r.RawClient(broker.host, broker.port)
    try:
        c.send(data)
        assert c.read_exact(4) == r.CONNACK_OK
        assert c.read_exact(5) == b"\x90\x03\x00\x01\x00"
        got = [c.read_packet() for _ in range(101)]
        assert [p.payload for p in got[:100]] == [str(i).encode() for i in range(100)]
        assert got[100].raw == r.PINGRESP
    finally:
        c.close()
    witness()


def test_half_packet_then_close_does_not_publish(broker, witness, prefix):
    """A PUBLISH cut off mid-body (client closes) is never delivered."""
    topic = f"{prefix}/cut"
    s = r.connected_client(broker.host, broker.port, cid())
    try:
        s.subscribe([(topic, 0)])
        c = r.connected_client(broker.host, broker.port, cid())
        full = publish(topic, b"x" * 100)
        c.send(full[:50])
        c.close()
        assert s.expect_silence(0.7)
    finally:
        s.close()
    witness()


def test_unknown_packet_ids_in_acks(broker, witness):
    """Acks for unknown packet ids (Mosquitto 2.0 behaviour, which wrenmq copies):
    PUBACK/PUBCOMP ignored; PUBREC answered with PUBREL; PUBREL answered with PUBCOMP
    ([MQTT-4.3.3-*] lets the receiver answer a PUBREL it has no state for)."""
    c = r.connected_client(broker.host, broker.port, cid())
    try:
        c.send(r.puback(77))
        c.send(r.pubcomp(78))
        assert c.expect_silence(0.5)
        c.send(r.pubrel(79))
        assert c.read_exact(4) == b"\x70\x02\x00\x4f"
        c.send(r.pubrec(80))
        assert c.read_exact(4) == b"\x62\x02\x00\x50"
        assert c.is_open()
    finally:
        c.close()
    witness()


# ------------------------------------------------------------ graceful close


def _send_flood_then_read(c, data, timeout=10.0):
    """Sends `data` (the client does not read while it sends, like a client busy
    publishing), then reads everything until the server closes. Returns (the send
    error or None, raw bytes read, how the read ended: "EOF" or "reset")."""
    # A small send buffer keeps most of the flood in the client: before the fix the
    # broker closed with unread input, the kernel answered with RST, and the rest of
    # the send failed with EPIPE/ECONNRESET.
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    c.sock.settimeout(timeout)
    err = None
    try:
        c.sock.sendall(data)
    except OSError as e:
        err = e
    got = b""
    end = None
    deadline = time.monotonic() + timeout
    while end is None:
        c.sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = c.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            end = "reset"
            break
        if not chunk:
            end = "EOF"
        got += chunk
    return err, got, end


# About 2 MiB: far more than the socket buffers hold in flight when the broker decides
# to close, and well under wrenmq's 8 MiB linger bound.
FLOOD = publish("flood/after", b"y" * 1000) * 2048


@pytest.mark.wrenmq_only
def test_refused_connack_readable_by_client_still_sending_MQTT_3_2_2_5(broker, witness):
    """A refused CONNECT (3.1.1: empty client id without clean session -> CONNACK 0x02
    [MQTT-3.1.3-8]) is answered, then the connection is closed [MQTT-3.2.2-5]. A client
    that sent more bytes right after its CONNECT must still get the CONNACK instead of
    a reset: the broker sends FIN after the CONNACK and discards the client's input for
    a short, bounded time before closing (before the fix: EPIPE on the send, and the
    CONNACK destroyed by the RST).

    wrenmq-only: Mosquitto 2.0.11 closes at once, so the sender sees a reset."""
    c = r.RawClient(broker.host, broker.port)
    try:
        err, got, end = _send_flood_then_read(c, connect("", clean=False) + FLOOD)
        assert err is None, f"sending after CONNECT failed: {err!r}"
        assert got == b"\x20\x02\x00\x02", got[:20]
        assert end == "EOF"
    finally:
        c.close()
    witness()
