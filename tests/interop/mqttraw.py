"""Minimal byte-level MQTT 3.1/3.1.1 packet builders and a raw socket client.

Used by the malformed-input, keepalive, load and conformance tests, where we
need exact control of the bytes on the wire (paho would refuse to send them).
Every blocking call is bounded by a timeout.
"""

from __future__ import annotations

import socket
import struct
import time


# ---------------------------------------------------------------- encoding


def varint(n: int) -> bytes:
    """MQTT remaining-length encoding (1..4 bytes)."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def mqtt_str(s) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b)) + b


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connect(
    client_id="",
    clean=True,
    keepalive=60,
    will=None,
    username=None,
    password=None,
    proto_name="MQTT",
    level=4,
    flags=None,
) -> bytes:
    """CONNECT. will = (topic, payload, qos, retain). flags overrides the byte."""
    f = 0
    if clean:
        f |= 0x02
    payload = mqtt_str(client_id)
    if will is not None:
        wt, wp, wq, wr = will
        f |= 0x04 | (wq << 3) | (0x20 if wr else 0)
        payload += mqtt_str(wt) + mqtt_str(wp)
    if username is not None:
        f |= 0x80
        payload += mqtt_str(username)
    if password is not None:
        f |= 0x40
        payload += mqtt_str(password)
    if flags is not None:
        f = flags
    vh = mqtt_str(proto_name) + bytes([level, f]) + struct.pack("!H", keepalive)
    return packet(0x10, vh + payload)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=None) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    fb = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    vh = mqtt_str(topic)
    if qos > 0:
        vh += struct.pack("!H", 1 if pid is None else pid)
    return packet(fb, vh + payload)


def subscribe(pid, filters, first_byte=0x82) -> bytes:
    """filters: list of (filter, qos)."""
    body = struct.pack("!H", pid)
    for flt, q in filters:
        body += mqtt_str(flt) + bytes([q])
    return packet(first_byte, body)


def unsubscribe(pid, filters) -> bytes:
    body = struct.pack("!H", pid)
    for flt in filters:
        body += mqtt_str(flt)
    return packet(0xA2, body)


def puback(pid):
    return packet(0x40, struct.pack("!H", pid))


def pubrec(pid):
    return packet(0x50, struct.pack("!H", pid))


def pubrel(pid):
    return packet(0x62, struct.pack("!H", pid))


def pubcomp(pid):
    return packet(0x70, struct.pack("!H", pid))


PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"
DISCONNECT = b"\xe0\x00"
CONNACK_OK = b"\x20\x02\x00\x00"


# ---------------------------------------------------------------- decoding


class Packet:
    def __init__(self, first_byte: int, body: bytes):
        self.first_byte = first_byte
        self.type = first_byte >> 4
        self.flags = first_byte & 0x0F
        self.body = body

    @property
    def raw(self) -> bytes:
        return bytes([self.first_byte]) + varint(len(self.body)) + self.body

    # PUBLISH accessors
    @property
    def qos(self):
        return (self.flags >> 1) & 3

    @property
    def retain(self):
        return bool(self.flags & 1)

    @property
    def dup(self):
        return bool(self.flags & 8)

    @property
    def topic(self) -> str:
        n = struct.unpack("!H", self.body[:2])[0]
        return self.body[2 : 2 + n].decode("utf-8")

    @property
    def pid(self):
        if self.type == 3:
            n = struct.unpack("!H", self.body[:2])[0]
            return struct.unpack("!H", self.body[2 + n : 4 + n])[0] if self.qos else None
        return struct.unpack("!H", self.body[:2])[0]

    @property
    def payload(self) -> bytes:
        n = struct.unpack("!H", self.body[:2])[0]
        off = 2 + n + (2 if self.qos else 0)
        return self.body[off:]

    def __repr__(self):
        return f"Packet(type={self.type}, flags={self.flags:#x}, body={self.body[:40]!r})"


class Closed(Exception):
    """The peer closed the connection."""


class RawClient:
    """A blocking TCP client with explicit deadlines on every read."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""

    # context manager
    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            raise Closed("connection reset")
        if not chunk:
            raise Closed("EOF")
        self.buf += chunk

    def read_exact(self, n, timeout=None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_packet(self, timeout=None) -> Packet:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            # try to parse a complete packet from buf
            if len(self.buf) >= 2:
                mult, length, i = 1, 0, 1
                complete_header = False
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        complete_header = True
                        break
                if complete_header and len(self.buf) >= i + length:
                    p = Packet(self.buf[0], self.buf[i : i + length])
                    self.buf = self.buf[i + length :]
                    return p
            self._fill(deadline)

    def expect_closed(self, timeout=3.0) -> bool:
        """True if the peer closes within timeout (any pending bytes are discarded)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
                self.buf = b""
        except Closed:
            return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def expect_silence(self, seconds) -> bool:
        """True if nothing arrives (and no close) within `seconds`."""
        deadline = time.monotonic() + seconds
        try:
            self._fill(deadline)
            return False
        except socket.timeout:
            return True
        except Closed:
            return False

    def is_open(self, probe_timeout=2.0) -> bool:
        """Ping the broker: True if PINGRESP comes back."""
        try:
            self.send(PINGREQ)
            p = self.read_packet(timeout=probe_timeout)
            while p.type != 13:
                p = self.read_packet(timeout=probe_timeout)
            return True
        except (Closed, OSError):
            return False

    # convenience
    def connect(self, client_id="", clean=True, keepalive=60, **kw) -> Packet:
        self.send(connect(client_id, clean=clean, keepalive=keepalive, **kw))
        p = self.read_packet()
        assert p.type == 2, f"expected CONNACK, got {p!r}"
        return p

    def subscribe(self, filters, pid=1) -> Packet:
        if isinstance(filters, str):
            filters = [(filters, 0)]
        self.send(subscribe(pid, filters))
        p = self.read_packet()
        assert p.type == 9, f"expected SUBACK, got {p!r}"
        return p


def connected_client(host, port, client_id="", **kw) -> RawClient:
    c = RawClient(host, port)
    ack = c.connect(client_id, **kw)
    assert ack.raw[:2] == b"\x20\x02" and ack.body[1] == 0, f"bad CONNACK {ack.raw!r}"
    return c
