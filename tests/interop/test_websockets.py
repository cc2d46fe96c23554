"""MQTT over WebSockets (`protocol websockets` listeners), over real sockets.

The broker runs with a plain MQTT listener and a WebSockets listener. paho-mqtt with
`transport="websockets"` checks round trips (3.1.1 and 5.0, QoS 0/1/2) and a 1 MiB message;
paho over `wss` (WebSockets over TLS) the same seam with TLS below; raw-socket
clients check the refusals: HTTP without Upgrade, an oversize header, an
unmasked frame, a 2^63-byte frame, garbage, and a client that never handshakes (closed
within the connect timeout while another client keeps working).
"""

from __future__ import annotations

import base64
import os
import queue
import socket
import struct
import subprocess
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import mqttraw as r
from test_auth import ConfBroker

WAIT = 10.0

pytestmark = pytest.mark.wrenmq_only


@pytest.fixture
def ws_broker(tmp_path):
    """A broker with a TCP listener (.port) and a WebSockets listener (.ws_port)."""
    made = []

    def make(extra: str = "", tls: str = ""):
        b = ConfBroker(tmp_path)
        b.ws_port = free_ws_port()
        b.write_conf(
            "allow_anonymous true\npersistence false\n"
            f"{extra}"
            f"listener {b.ws_port} 127.0.0.1\nprotocol websockets\n{tls}"
        )
        made.append(b)
        b.start()
        wait_ws(b)
        return b

    yield make
    for b in made:
        b.stop()


def free_ws_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ws(b, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", b.ws_port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"websockets listener not up:\n{b.logs()}")


# ------------------------------------------------------------------ paho


class WsPaho:
    """A paho client over WebSockets (or TCP with ws=False), deadline-bounded."""

    def __init__(self, port, protocol=mqtt.MQTTv311, ws=True, **tls):
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="w-" + uuid.uuid4().hex[:10],
                             protocol=protocol, transport="websockets" if ws else "tcp")
        if tls:
            self.c.tls_set(**tls)
        self.c.reconnect_delay_set(min_delay=60, max_delay=60)
        self.messages: queue.Queue = queue.Queue()
        self.connacks: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.c.on_connect = lambda c, u, f, rc, p: self.connacks.put(rc)
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        rc = self.connacks.get(timeout=WAIT)
        assert not rc.is_failure, rc

    def subscribe(self, topic, qos):
        self.c.subscribe(topic, qos)
        self.subacks.get(timeout=WAIT)

    def publish(self, topic, payload, qos):
        info = self.c.publish(topic, payload, qos)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published()

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_round_trip_over_websockets(ws_broker, version, qos):
    b = ws_broker()
    sub = WsPaho(b.ws_port, version)
    pub = WsPaho(b.ws_port, version)
    try:
        sub.subscribe("ws/rt", qos)
        pub.publish("ws/rt", b"hello over ws", qos)
        m = sub.messages.get(timeout=WAIT)
        assert (m.topic, m.payload, m.qos) == ("ws/rt", b"hello over ws", qos)
    finally:
        sub.close()
        pub.close()


def test_one_mib_message_over_websockets(ws_broker):
    b = ws_broker("max_packet_size 4000000\n")
    sub = WsPaho(b.ws_port)
    pub = WsPaho(b.ws_port)
    payload = os.urandom(1 << 20)
    try:
        sub.subscribe("ws/big", 1)
        pub.publish("ws/big", payload, 1)
        m = sub.messages.get(timeout=30)
        assert m.payload == payload
    finally:
        sub.close()
        pub.close()


def test_tcp_publisher_reaches_websockets_subscriber(ws_broker):
    b = ws_broker()
    sub = WsPaho(b.ws_port)
    pub = WsPaho(b.port, ws=False)
    try:
        sub.subscribe("cross/#", 1)
        pub.publish("cross/a", b"from tcp", 1)
        m = sub.messages.get(timeout=WAIT)
        assert (m.topic, m.payload) == ("cross/a", b"from tcp")
    finally:
        sub.close()
        pub.close()


# ------------------------------------------------------------------ raw sockets


def upgrade_request(protocol="mqtt", extra=""):
    key = base64.b64encode(os.urandom(16)).decode()
    proto = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else ""
    return (f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{proto}{extra}\r\n").encode()


def frame(b0, payload, mask=b"\x11\x22\x33\x44", masked=True):
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([b0, bit | n])
    elif n < 65536:
        head = bytes([b0, bit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, bit | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    return head + mask + bytes(x ^ mask[i % 4] for i, x in enumerate(payload))


class RawWs:
    def __init__(self, port, timeout=5.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def recv_until(self, marker, timeout=5.0):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.s.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        return self.buf

    def read_all_until_closed(self, timeout=5.0):
        """Reads until EOF; returns (bytes, closed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                return self.buf, False
            except ConnectionResetError:
                return self.buf, True
            if not chunk:
                return self.buf, True
            self.buf += chunk
        return self.buf, False

    def handshake(self, protocol="mqtt"):
        self.send(upgrade_request(protocol))
        head = self.recv_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.buf = head[head.index(b"\r\n\r\n") + 4:]

    def read_frame(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                off = 2
                if n == 126:
                    n, off = struct.unpack(">H", self.buf[2:4])[0], 4
                elif n == 127:
                    n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
                if len(self.buf) >= off + n:
                    b0, payload = self.buf[0], self.buf[off:off + n]
                    self.buf = self.buf[off + n:]
                    return b0, payload
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.s.recv(65536)
            assert chunk, "closed before a whole frame"
            self.buf += chunk

    def close(self):
        self.s.close()


def connect_frames(client_id="raw"):
    return frame(0x82, r.connect(client_id))


def test_raw_handshake_connect_and_ping(ws_broker):
    b = ws_broker()
    c = RawWs(b.ws_port)
    try:
        c.handshake()
        c.send(connect_frames())
        assert c.read_frame() == (0x82, bytes([0x20, 0x02, 0x00, 0x00]))
        c.send(frame(0x89, b"hey"))
        assert c.read_frame() == (0x8A, b"hey")
        # A PINGREQ split over a fragmented message.
        c.send(frame(0x02, b"\xc0") + frame(0x80, b"\x00"))
        assert c.read_frame() == (0x82, b"\xd0\x00")
        c.send(frame(0x88, b"\x03\xe8"))
        data, closed = c.read_all_until_closed()
        assert closed and data[:4] == b"\x88\x02\x03\xe8", data
    finally:
        c.close()


def test_client_without_subprotocol_is_served(ws_broker):
    # Mosquitto 2.0.11 answers 101 and then never answers the CONNECT.
    b = ws_broker()
    c = RawWs(b.ws_port)
    try:
        c.send(upgrade_request(protocol=None))
        head = c.recv_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Protocol" not in head
        c.buf = head[head.index(b"\r\n\r\n") + 4:]
        c.send(connect_frames())
        assert c.read_frame() == (0x82, bytes([0x20, 0x02, 0x00, 0x00]))
    finally:
        c.close()


def expect_http_refusal(port, request, status):
    c = RawWs(port)
    try:
        c.send(request)
        data, closed = c.read_all_until_closed()
        assert data.startswith(b"HTTP/1.1 " + status), data[:200]
        assert closed
    finally:
        c.close()


def test_http_request_without_upgrade_gets_400(ws_broker):
    b = ws_broker()
    expect_http_refusal(b.ws_port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"400")


def test_oversize_header_gets_431(ws_broker):
    b = ws_broker("websockets_headers_size 1024\n")
    filler = "X-Filler: " + "a" * 2000 + "\r\n"
    expect_http_refusal(b.ws_port, upgrade_request(extra=filler), b"431")
    # Under the limit still works.
    c = RawWs(b.ws_port)
    c.handshake()
    c.close()


def expect_close_code(port, data, code):
    c = RawWs(port)
    try:
        c.handshake()
        c.send(connect_frames())
        assert c.read_frame()[0] == 0x82
        c.send(data)
        rest, closed = c.read_all_until_closed()
        assert closed, "connection left open"
        assert rest[:4] == b"\x88\x02" + struct.pack(">H", code), rest[:16]
    finally:
        c.close()


def test_unmasked_frame_is_closed_with_1002(ws_broker):
    b = ws_broker()
    expect_close_code(b.ws_port, frame(0x82, b"\xc0\x00", masked=False), 1002)


def test_frame_of_2_pow_63_bytes_is_closed_with_1009(ws_broker):
    b = ws_broker()
    expect_close_code(b.ws_port, b"\x82\xff" + struct.pack(">Q", 1 << 63) + b"\0\0\0\0", 1009)
    assert b.alive()


def test_text_frame_is_closed_with_1003(ws_broker):
    b = ws_broker()
    expect_close_code(b.ws_port, frame(0x81, b"\xc0\x00"), 1003)


def test_garbage_instead_of_a_handshake_is_refused(ws_broker):
    b = ws_broker()
    expect_http_refusal(b.ws_port, os.urandom(64) + b"\r\n\r\n", b"400")
    # Plain MQTT on a WebSockets port.
    expect_http_refusal(b.ws_port, r.connect("plain") + b"\r\n\r\n", b"400")
    assert b.alive()


def test_silent_client_is_closed_within_connect_timeout_while_others_work(ws_broker):
    b = ws_broker("connect_timeout 2\n")
    silent = RawWs(b.ws_port, timeout=10)
    half = RawWs(b.ws_port, timeout=10)
    try:
        half.send(upgrade_request()[:20])
        sub = WsPaho(b.ws_port)
        pub = WsPaho(b.port, ws=False)
        sub.subscribe("alive", 0)
        pub.publish("alive", b"x", 0)
        assert sub.messages.get(timeout=WAIT).payload == b"x"
        start = time.monotonic()
        _, closed = silent.read_all_until_closed(timeout=8)
        assert closed, "a client that never handshakes stayed connected"
        _, closed = half.read_all_until_closed(timeout=8 - (time.monotonic() - start))
        assert closed, "a client that stopped mid-handshake stayed connected"
        # The others are unaffected.
        pub.publish("alive", b"y", 0)
        assert sub.messages.get(timeout=WAIT).payload == b"y"
        sub.close()
        pub.close()
    finally:
        silent.close()
        half.close()


# ------------------------------------------------------------------ wss (WebSockets over TLS)


@pytest.fixture
def wss_broker(tmp_path, ws_broker):
    """A broker with a TCP listener (.port) and a WebSockets-over-TLS one (.ws_port);
    .ca is the certificate to trust (self-signed for 127.0.0.1)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30)
    b = ws_broker(tls=f"certfile {cert}\nkeyfile {key}\n")
    b.ca = str(cert)
    return b


@pytest.mark.parametrize("version", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_paho_round_trip_over_wss(wss_broker, version):
    b = wss_broker
    sub = WsPaho(b.ws_port, version, ca_certs=b.ca)
    pub = WsPaho(b.ws_port, version, ca_certs=b.ca)
    try:
        sub.subscribe("wss/rt", 2)
        pub.publish("wss/rt", b"hello over wss", 2)
        m = sub.messages.get(timeout=WAIT)
        assert (m.topic, m.payload, m.qos) == ("wss/rt", b"hello over wss", 2)
        big = os.urandom(300_000)
        pub.publish("wss/rt", big, 1)
        assert sub.messages.get(timeout=30).payload == big
    finally:
        sub.close()
        pub.close()


def test_tcp_publisher_reaches_wss_subscriber(wss_broker):
    b = wss_broker
    sub = WsPaho(b.ws_port, ca_certs=b.ca)
    pub = WsPaho(b.port, ws=False)
    try:
        sub.subscribe("cross/#", 1)
        pub.publish("cross/tls", b"tcp to wss", 1)
        assert sub.messages.get(timeout=WAIT).payload == b"tcp to wss"
    finally:
        sub.close()
        pub.close()


def test_plain_websocket_client_on_a_wss_port_is_closed(wss_broker):
    b = wss_broker
    c = RawWs(b.ws_port)
    try:
        c.send(upgrade_request())
        data, closed = c.read_all_until_closed()
        assert closed and not data.startswith(b"HTTP/1.1 101"), data[:100]
    finally:
        c.close()
    assert b.alive()
