"""Byte-level MQTT 5.0 packet builders and parsers (on top of mqttraw's RawClient).

Properties are passed and returned as a list of (property_id, value) pairs so
that order and repeats (User Property, Subscription Identifier) are kept;
`props_dict()` folds them into a dict of id -> value (or list of values for
the repeatable ones). Every read goes through mqttraw.RawClient, so every
blocking call is bounded by a deadline.
"""

from __future__ import annotations

import struct

from mqttraw import Closed, Packet, RawClient, mqtt_str, packet, varint  # noqa: F401

# ------------------------------------------------------------ property ids

PAYLOAD_FORMAT = 0x01
MESSAGE_EXPIRY = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_ID = 0x0B
SESSION_EXPIRY = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTH_METHOD = 0x15
AUTH_DATA = 0x16
REQUEST_PROBLEM_INFO = 0x17
WILL_DELAY = 0x18
REQUEST_RESPONSE_INFO = 0x19
RESPONSE_INFO = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUB_AVAILABLE = 0x28
SUB_ID_AVAILABLE = 0x29
SHARED_SUB_AVAILABLE = 0x2A

_BYTE = {PAYLOAD_FORMAT, REQUEST_PROBLEM_INFO, REQUEST_RESPONSE_INFO, MAXIMUM_QOS,
         RETAIN_AVAILABLE, WILDCARD_SUB_AVAILABLE, SUB_ID_AVAILABLE, SHARED_SUB_AVAILABLE}
_U16 = {SERVER_KEEP_ALIVE, RECEIVE_MAXIMUM, TOPIC_ALIAS_MAXIMUM, TOPIC_ALIAS}
_U32 = {MESSAGE_EXPIRY, SESSION_EXPIRY, WILL_DELAY, MAXIMUM_PACKET_SIZE}
_STR = {CONTENT_TYPE, RESPONSE_TOPIC, ASSIGNED_CLIENT_ID, AUTH_METHOD, RESPONSE_INFO,
        SERVER_REFERENCE, REASON_STRING}
_BIN = {CORRELATION_DATA, AUTH_DATA}
_VARINT = {SUBSCRIPTION_ID}
_PAIR = {USER_PROPERTY}
REPEATABLE = {USER_PROPERTY, SUBSCRIPTION_ID}

# packet types
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ_T, PINGRESP_T, DISCONNECT, AUTH = range(8, 16)


# ------------------------------------------------------------ encoding


def encode_props(props=()) -> bytes:
    """props: iterable of (id, value) -> property length + properties."""
    out = bytearray()
    for pid, val in props or ():
        out += varint(pid)
        if pid in _BYTE:
            out.append(val)
        elif pid in _U16:
            out += struct.pack("!H", val)
        elif pid in _U32:
            out += struct.pack("!I", val)
        elif pid in _STR or pid in _BIN:
            out += mqtt_str(val)
        elif pid in _VARINT:
            out += varint(val)
        elif pid in _PAIR:
            out += mqtt_str(val[0]) + mqtt_str(val[1])
        else:
            raise ValueError(f"unknown property {pid:#x}")
    return varint(len(out)) + bytes(out)


def connect(client_id="", clean_start=True, keepalive=60, props=(), will=None,
            username=None, password=None, flags=None) -> bytes:
    """v5 CONNECT. will = dict(topic, payload, qos=0, retain=False, props=())."""
    f = 0x02 if clean_start else 0
    payload = mqtt_str(client_id)
    if will is not None:
        f |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
        wp = will.get("payload", b"")
        payload += encode_props(will.get("props", ())) + mqtt_str(will["topic"]) + mqtt_str(
            wp.encode() if isinstance(wp, str) else wp)
    if username is not None:
        f |= 0x80
        payload += mqtt_str(username)
    if password is not None:
        f |= 0x40
        payload += mqtt_str(password)
    if flags is not None:
        f = flags
    vh = mqtt_str("MQTT") + bytes([5, f]) + struct.pack("!H", keepalive) + encode_props(props)
    return packet(0x10, vh + payload)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=1, props=()) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    fb = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    vh = mqtt_str(topic)
    if qos > 0:
        vh += struct.pack("!H", pid)
    return packet(fb, vh + encode_props(props) + payload)


def ack(ptype, pid, reason=None, props=()) -> bytes:
    """PUBACK/PUBREC/PUBREL/PUBCOMP; reason None -> short form (implies 0x00)."""
    fb = (ptype << 4) | (0x02 if ptype == PUBREL else 0)
    body = struct.pack("!H", pid)
    if reason is not None or props:
        body += bytes([reason or 0])
        if props:
            body += encode_props(props)
    return packet(fb, body)


def puback(pid, reason=None):
    return ack(PUBACK, pid, reason)


def subscribe(pid, filters, props=()) -> bytes:
    """filters: list of (filter, options_byte) or (filter, dict(qos, nl, rap, rh))."""
    body = struct.pack("!H", pid) + encode_props(props)
    for flt, opt in filters:
        if isinstance(opt, dict):
            opt = sub_opts(**opt)
        body += mqtt_str(flt) + bytes([opt])
    return packet(0x82, body)


def sub_opts(qos=0, nl=False, rap=False, rh=0) -> int:
    return qos | (0x04 if nl else 0) | (0x08 if rap else 0) | (rh << 4)


def unsubscribe(pid, filters, props=()) -> bytes:
    body = struct.pack("!H", pid) + encode_props(props)
    for flt in filters:
        body += mqtt_str(flt)
    return packet(0xA2, body)


def disconnect(reason=0x00, props=()) -> bytes:
    if reason == 0 and not props:
        return b"\xe0\x00"
    body = bytes([reason])
    if props:
        body += encode_props(props)
    return packet(0xE0, body)


def auth(reason=0x00, props=()) -> bytes:
    return packet(0xF0, bytes([reason]) + encode_props(props))


# ------------------------------------------------------------ decoding


def _read_varint(buf, i):
    mult, n = 1, 0
    while True:
        b = buf[i]
        i += 1
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return n, i


def decode_props(buf, i=0):
    """-> (list of (id, value), index after the properties)."""
    n, i = _read_varint(buf, i)
    end = i + n
    out = []
    while i < end:
        pid, i = _read_varint(buf, i)
        if pid in _BYTE:
            val, i = buf[i], i + 1
        elif pid in _U16:
            val, i = struct.unpack("!H", buf[i:i + 2])[0], i + 2
        elif pid in _U32:
            val, i = struct.unpack("!I", buf[i:i + 4])[0], i + 4
        elif pid in _STR or pid in _BIN:
            ln = struct.unpack("!H", buf[i:i + 2])[0]
            raw = bytes(buf[i + 2:i + 2 + ln])
            val, i = (raw.decode("utf-8") if pid in _STR else raw), i + 2 + ln
        elif pid in _VARINT:
            val, i = _read_varint(buf, i)
        elif pid in _PAIR:
            k = struct.unpack("!H", buf[i:i + 2])[0]
            key = bytes(buf[i + 2:i + 2 + k]).decode()
            i += 2 + k
            v = struct.unpack("!H", buf[i:i + 2])[0]
            value = bytes(buf[i + 2:i + 2 + v]).decode()
            val, i = (key, value), i + 2 + v
        else:
            raise ValueError(f"unknown property id {pid:#x} in {bytes(buf)!r}")
        out.append((pid, val))
    assert i == end, f"property length mismatch in {bytes(buf)!r}"
    return out, end


def props_dict(props):
    d = {}
    for pid, val in props:
        if pid in REPEATABLE:
            d.setdefault(pid, []).append(val)
        else:
            assert pid not in d, f"property {pid:#x} repeated"
            d[pid] = val
    return d


class P5:
    """A decoded v5 packet: .type, .flags, .raw and type-specific fields
    (session_present, reason, reasons, pid, topic, payload, qos, retain, dup,
    props (list), p (dict))."""

    def __init__(self, pkt: Packet):
        self.pkt = pkt
        self.type = pkt.type
        self.flags = pkt.flags
        self.raw = pkt.raw
        b = pkt.body
        self.props = []
        self.reason = None
        self.reasons = None
        self.pid = None
        t = self.type
        if t == CONNACK:
            self.session_present = bool(b[0] & 1)
            self.reason = b[1]
            self.props, _ = decode_props(b, 2) if len(b) > 2 else ([], 2)
        elif t == PUBLISH:
            self.qos = (self.flags >> 1) & 3
            self.retain = bool(self.flags & 1)
            self.dup = bool(self.flags & 8)
            n = struct.unpack("!H", b[:2])[0]
            self.topic = bytes(b[2:2 + n]).decode()
            i = 2 + n
            if self.qos:
                self.pid = struct.unpack("!H", b[i:i + 2])[0]
                i += 2
            self.props, i = decode_props(b, i)
            self.payload = bytes(b[i:])
        elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            self.pid = struct.unpack("!H", b[:2])[0]
            self.reason = b[2] if len(b) > 2 else 0x00
            if len(b) > 3:
                self.props, _ = decode_props(b, 3)
        elif t in (SUBACK, UNSUBACK):
            self.pid = struct.unpack("!H", b[:2])[0]
            self.props, i = decode_props(b, 2)
            self.reasons = list(b[i:])
        elif t in (DISCONNECT, AUTH):
            self.reason = b[0] if len(b) else 0x00
            if len(b) > 1:
                self.props, _ = decode_props(b, 1)
        self.p = props_dict(self.props)

    def __repr__(self):
        return f"P5(type={self.type}, reason={self.reason}, raw={self.raw[:60]!r})"


class Raw5(RawClient):
    """RawClient speaking v5: read5() returns P5 objects."""

    def read5(self, timeout=None) -> P5:
        return P5(self.read_packet(timeout=timeout))

    def read_until(self, ptype, timeout=None) -> P5:
        """Skip packets until one of `ptype` arrives (PINGRESPs, stray acks...)."""
        while True:
            p = self.read5(timeout=timeout)
            if p.type == ptype:
                return p

    def connect5(self, client_id="", clean_start=True, keepalive=60, props=(), **kw) -> P5:
        self.send(connect(client_id, clean_start=clean_start, keepalive=keepalive, props=props, **kw))
        p = self.read5()
        assert p.type == CONNACK, f"expected CONNACK, got {p!r}"
        return p

    def subscribe5(self, filters, pid=1, props=()) -> P5:
        if isinstance(filters, str):
            filters = [(filters, 0)]
        self.send(subscribe(pid, filters, props))
        p = self.read_until(SUBACK)
        assert p.pid == pid
        return p

    def unsubscribe5(self, filters, pid=1) -> P5:
        self.send(unsubscribe(pid, filters))
        p = self.read_until(UNSUBACK)
        assert p.pid == pid
        return p

    def close_reason(self, timeout=5.0):
        """Wait for the server to end the connection. Returns the DISCONNECT P5
        if one was sent before the close, or None for a bare close. Other packets
        are skipped. Raises socket.timeout if the connection stays open."""
        last = None
        while True:
            try:
                p = self.read5(timeout=timeout)
            except (Closed, ConnectionError):
                return last
            if p.type == DISCONNECT:
                last = p


def connected5(broker, client_id="", props=(), timeout=5.0, **kw) -> Raw5:
    c = Raw5(broker.host, broker.port, timeout=timeout)
    ack_ = c.connect5(client_id, props=props, **kw)
    assert ack_.reason == 0x00, f"CONNACK reason {ack_.reason:#x} {ack_.raw!r}"
    c.connack = ack_
    return c


# ------------------------------------------------------------ test helpers


def collect(c: Raw5, quiet=0.5, total=5.0, ptype=None):
    """Read packets until `quiet` seconds pass with nothing new (or `total`
    seconds overall). Returns the P5 list (only `ptype` packets if given)."""
    import socket as _socket
    import time as _time

    out = []
    deadline = _time.monotonic() + total
    while _time.monotonic() < deadline:
        try:
            p = c.read5(timeout=min(quiet, max(0.01, deadline - _time.monotonic())))
        except (_socket.timeout, TimeoutError):
            break
        except (Closed, ConnectionError):
            break
        if ptype is None or p.type == ptype:
            out.append(p)
    return out


class _Factory:
    def __init__(self):
        self.made = []

    def __call__(self, broker, client_id="", props=(), connect=True, timeout=5.0, **kw):
        """A Raw5 connected to `broker` (CONNACK 0x00 asserted) or, with
        connect=False, just the socket."""
        c = Raw5(broker.host, broker.port, timeout=timeout)
        self.made.append(c)
        if connect:
            a = c.connect5(client_id, props=props, **kw)
            assert a.reason == 0x00, f"CONNACK reason {a.reason:#x} {a.raw!r}"
            c.connack = a
        return c

    def close_all(self):
        for c in self.made:
            c.close()


try:
    import pytest as _pytest

    @_pytest.fixture
    def raw5():
        """raw5(broker, client_id, props=..., clean_start=..., will=...) -> connected Raw5;
        all closed at teardown. Import this fixture into a test module to use it."""
        f = _Factory()
        yield f
        f.close_all()
except ImportError:  # pragma: no cover - only used under pytest
    pass
