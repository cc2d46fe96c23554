"""Hostile clients (issue 11): the broker's memory and loop time stay bounded.

Each test starts its own wrenmq (a config file sets the limits under test), runs one
attack over real sockets, and checks that the broker is alive, that its peak RSS grew by
less than a stated cap (VmHWM against VmRSS before the attack, from /proc), and that an
innocent client's round trip still works. Round-trip times are printed (run with -s), and
only asserted against the issue's generous 1 s bound. Every socket operation has a timeout.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

import mqttraw as raw
from conftest import Broker, _find_wrenmq, free_port

pytestmark = pytest.mark.wrenmq_only

MB = 1024 * 1024


class ConfiguredBroker(Broker):
    """A wrenmq started with a config file (persistence on or off)."""

    def __init__(self, workdir: Path, extra: str = "", persistence: bool = False):
        super().__init__("wrenmq", workdir)
        self.port = free_port()
        self.conf = workdir / "wrenmq.conf"
        self.conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            f"persistence {'true' if persistence else 'false'}\n"
            f"persistence_location {workdir / 'data'}\n"
            f"{extra}\n"
        )

    def start(self, timeout=10.0):
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [_find_wrenmq(), "-c", str(self.conf)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wrenmq exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                socket.create_connection(self.addr, timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"wrenmq did not start:\n{self.stderr()}")

    def status_kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)


@pytest.fixture(params=[False, True], ids=["memory", "persistent"])
def make_broker(request, tmp_path):
    made = []

    def make(extra=""):
        b = ConfiguredBroker(tmp_path, extra, persistence=request.param).start()
        made.append(b)
        return b

    yield make
    for b in made:
        alive = b.alive()
        b.stop()
        assert alive, f"broker died:\n{b.stderr()}"


class Innocent:
    """A client that publishes to itself and times each round trip, in a thread."""

    def __init__(self, b: Broker, name: str):
        self.c = raw.connected_client(b.host, b.port, name)
        self.topic = f"innocent/{name}"
        self.c.subscribe(self.topic)
        self.rtts: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = None

    def round_trip(self) -> float:
        start = time.monotonic()
        self.c.send(raw.publish(self.topic, b"ping"))
        p = self.c.read_packet(timeout=10)
        assert p.type == 3 and p.topic == self.topic, p
        return time.monotonic() - start

    def _run(self):
        while not self._stop.is_set():
            try:
                self.rtts.append(self.round_trip())
            except Exception as e:  # recorded, asserted by the test
                self.errors.append(repr(e))
                return
            time.sleep(0.01)

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(15)
        assert not self._thread.is_alive(), "innocent client hung"
        assert not self.errors, self.errors
        assert self.rtts, "no round trip completed"
        return max(self.rtts)


def growth_mb(b: ConfiguredBroker, baseline_kb: int) -> float:
    return (b.status_kb("VmHWM") - baseline_kb) / 1024


def test_pre_connect_flood_is_refused_on_the_fixed_header(make_broker):
    """40 sockets announce a ~2 MB CONNECT and send most of it: the broker closes each as
    soon as the length is read (limit max_connect_packet_size), buffering nothing."""
    b = make_broker()
    innocent = Innocent(b, "pre")
    baseline = b.status_kb("VmRSS")
    body = 2_000_000 - 5
    header = bytes([0x10]) + raw.varint(body)
    chunk = b"\0" * 65536
    socks = []
    refused = 0
    for _ in range(40):
        s = socket.create_connection(b.addr, timeout=2)
        socks.append(s)
        sent = 0
        try:
            s.sendall(header)
            while sent < int(body * 0.9):
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            refused += 1  # closed by the broker while we were still sending
    growth = growth_mb(b, baseline)
    rtt = innocent.round_trip()
    print(f"\npre-CONNECT flood: {refused}/40 refused mid-send, RSS growth {growth:.1f} MB, rtt {rtt*1000:.1f} ms")
    closed = 0
    for s in socks:
        s.settimeout(3)
        try:
            while s.recv(65536):
                pass
            closed += 1
        except socket.timeout:
            pass  # still open: the broker is waiting for the rest of the packet
        except OSError:
            closed += 1  # reset: the broker closed with our bytes unread
        s.close()
    assert closed == 40, f"only {closed} of 40 oversized CONNECTs were refused"
    assert growth < 16, f"peak RSS grew {growth:.1f} MB"
    assert b.alive()


def test_a_connect_just_under_the_limit_is_still_accepted(make_broker):
    """A large but legitimate CONNECT (90 kB of will and password) still works."""
    b = make_broker()
    c = raw.RawClient(b.host, b.port)
    will = ("w", b"w" * 30_000, 0, False)
    c.send(raw.connect("big", will=will, username="u", password=b"p" * 60_000))
    assert c.read_packet().type == 2
    c.close()


def test_subscribe_with_40000_hash_filters_after_200_retained(make_broker):
    """One SUBSCRIBE repeating `#` 40,000 times after 200 retained messages: bounded memory,
    the filters over max_filters_per_subscribe refused per filter, each retained message
    sent once."""
    b = make_broker()
    pub = raw.connected_client(b.host, b.port, "retainer")
    for i in range(200):
        pub.send(raw.publish(f"r/{i}", b"x" * 100, retain=True))
    assert pub.is_open()
    innocent = Innocent(b, "sub")
    baseline = b.status_kb("VmRSS")
    att = raw.connected_client(b.host, b.port, "attacker")
    att.send(raw.subscribe(1, [("#", 0)] * 40_000))
    suback = att.read_packet(timeout=30)
    assert suback.type == 9
    codes = suback.body[2:]
    assert len(codes) == 40_000
    assert set(codes[:10_000]) == {0} and set(codes[10_000:]) == {0x80}
    got = {}
    deadline = time.monotonic() + 30
    while len(got) < 200 and time.monotonic() < deadline:
        p = att.read_packet(timeout=10)
        if p.type == 3:
            got[p.topic] = got.get(p.topic, 0) + 1
    assert len(got) == 200 and set(got.values()) == {1}
    assert att.expect_silence(0.5), "nothing sent twice"
    growth = growth_mb(b, baseline)
    rtt = innocent.round_trip()
    print(f"\nSUBSCRIBE x retained: RSS growth {growth:.1f} MB, rtt {rtt*1000:.1f} ms")
    assert growth < 16, f"peak RSS grew {growth:.1f} MB"


def test_retained_flood_to_a_client_that_does_not_read(make_broker):
    """A subscriber that never reads, 2,000 retained messages of 1 kB, 3,000 `#` filters:
    the broker holds at most its write-buffer bound for it, not the product."""
    b = make_broker()
    pub = raw.connected_client(b.host, b.port, "retainer")
    for i in range(2000):
        pub.send(raw.publish(f"big/{i}", b"y" * 1000, retain=True))
    assert pub.is_open(probe_timeout=10)
    baseline = b.status_kb("VmRSS")
    att = raw.RawClient(b.host, b.port)
    att.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    att.connect("sleeper")
    att.send(raw.subscribe(1, [(f"big/{i % 1000}/#", 0) for i in range(1000)] + [("#", 0)] * 2000))
    innocent = Innocent(b, "sleeper")
    time.sleep(1)
    growth = growth_mb(b, baseline)
    rtt = innocent.round_trip()
    print(f"\nretained to a non-reader: RSS growth {growth:.1f} MB, rtt {rtt*1000:.1f} ms")
    assert growth < 16, f"peak RSS grew {growth:.1f} MB"
    att.close()


def test_filter_flood_does_not_stall_other_clients(make_broker):
    """60,000 distinct wildcard filters from one client (limits raised to allow them) while
    an innocent client does round trips; then publishes still route quickly."""
    b = make_broker("max_subscriptions_per_client 0\nmax_filters_per_subscribe 0")
    innocent = Innocent(b, "flood")
    baseline = b.status_kb("VmRSS")
    innocent.start()
    att = raw.connected_client(b.host, b.port, "flooder")
    pid = 0
    total = 60_000
    per_packet = 5_000
    t0 = time.monotonic()
    for start in range(0, total, per_packet):
        pid += 1
        filters = []
        for i in range(start, start + per_packet):
            # Half start with a wildcard (the case every publish used to scan).
            filters.append((f"+/{i}/#" if i % 2 else f"f/{i}/+", 0))
        att.send(raw.subscribe(pid, filters))
    for _ in range(pid):
        p = att.read_packet(timeout=60)
        assert p.type == 9 and set(p.body[2:]) == {0}
    subscribe_s = time.monotonic() - t0
    worst = innocent.stop()
    # Publishing to topics that match no flood filter costs nothing extra now.
    rtts = [innocent.round_trip() for _ in range(50)]
    growth = growth_mb(b, baseline)
    print(
        f"\nfilter flood: 60,000 filters subscribed in {subscribe_s:.2f} s, max innocent rtt "
        f"{worst*1000:.1f} ms over {len(innocent.rtts)} round trips, after: max rtt "
        f"{max(rtts)*1000:.1f} ms, RSS growth {growth:.1f} MB"
    )
    # A matching publish reaches the flooder through the trie.
    innocent.c.send(raw.publish("x/123/y", b"hit"))
    p = att.read_packet(timeout=10)
    assert p.topic == "x/123/y"
    # The bound is 1 s for the shipped (release) build. A debug build does the same
    # work 10-30x slower and CI runs it on 2 shared cores, so it gets 5 s: still far below
    # the tens of seconds the linear filter scans used to cost, which is what this catches.
    bound = 5.0 if "/debug/" in _find_wrenmq() else 1.0
    assert worst < bound, f"innocent round trip took {worst:.2f} s (bound {bound} s)"


def test_filters_over_the_per_client_bound_are_refused(make_broker):
    b = make_broker("max_subscriptions_per_client 5")
    c = raw.connected_client(b.host, b.port, "capped")
    ack = c.subscribe([(f"a/{i}", 1) for i in range(7)])
    assert list(ack.body[2:]) == [1] * 5 + [0x80] * 2
    # Replacing a subscription is not a new one.
    ack = c.subscribe([("a/0", 0), ("a/9", 0)], pid=2)
    assert list(ack.body[2:]) == [0, 0x80]
    # Unsubscribing frees room.
    c.send(raw.unsubscribe(3, ["a/1"]))
    assert c.read_packet().type == 11
    ack = c.subscribe([("a/9", 0)], pid=4)
    assert list(ack.body[2:]) == [0]


def test_v311_qos2_flood_without_pubrel_is_bounded(make_broker):
    """A 3.1.1 client sending QoS 2 messages and never PUBREL: beyond the receive maximum
    (max_inflight_messages) they are acknowledged and dropped."""
    b = make_broker("max_inflight_messages 20")
    sub = raw.connected_client(b.host, b.port, "q2sub")
    sub.subscribe([("q2/#", 0)])
    c = raw.connected_client(b.host, b.port, "q2pub")
    for pid in range(1, 26):
        c.send(raw.publish("q2/t", b"m", qos=2, pid=pid))
    for pid in range(1, 26):
        p = c.read_packet()
        assert p.type == 5 and struct.unpack("!H", p.body[:2])[0] == pid
    n = 0
    while True:
        try:
            p = sub.read_packet(timeout=1)
        except socket.timeout:
            break
        n += p.type == 3
    assert n == 20
    for pid in range(1, 26):
        c.send(raw.pubrel(pid))
    for _ in range(25):
        assert c.read_packet().type == 7


# ---- Bounds with a configured cap (issue 11): what a client sees at each one.

import mqtt5raw as r5  # noqa: E402


def _connack_code(b, pkt: bytes) -> int:
    c = raw.RawClient(b.host, b.port)
    c.send(pkt)
    p = c.read_packet()
    assert p.type == 2, p
    code = p.body[1]
    if code:
        assert c.expect_closed(), "a refused CONNECT is closed"
    else:
        c.close()
    return code


def test_retained_messages_beyond_max_retained_messages_are_not_stored(make_broker):
    b = make_broker("max_retained_messages 3")
    live = raw.connected_client(b.host, b.port, "live")
    live.subscribe([("r/#", 0)])
    pub = raw.connected_client(b.host, b.port, "rpub")
    for i in range(5):
        pub.send(raw.publish(f"r/{i}", b"v%d" % i, retain=True))
    # Delivered live, all five.
    got = [live.read_packet().topic for _ in range(5)]
    assert got == [f"r/{i}" for i in range(5)]
    # Stored: only the first three.
    late = raw.connected_client(b.host, b.port, "late")
    late.subscribe([("r/#", 0)])
    stored = sorted(late.read_packet().topic for _ in range(3))
    assert stored == ["r/0", "r/1", "r/2"]
    assert late.expect_silence(0.5)
    # A 5.0 publisher of a QoS 1 retained message for a new topic is told 0x97.
    c5 = r5.Raw5(b.host, b.port)
    c5.connect5("rpub5")
    c5.send(r5.publish("r/new", b"x", qos=1, retain=True, pid=7))
    ack = c5.read_until(r5.PUBACK)
    assert (ack.pid, ack.reason) == (7, 0x97)
    # Replacing a stored topic still works.
    c5.send(r5.publish("r/0", b"new", qos=1, retain=True, pid=8))
    ack = c5.read_until(r5.PUBACK)
    assert ack.reason in (0x00, 0x10)


def test_connect_beyond_max_sessions_is_refused(make_broker):
    b = make_broker("max_sessions 2")
    held = [raw.connected_client(b.host, b.port, f"s{i}", clean=False) for i in range(2)]
    assert _connack_code(b, raw.connect("s2")) == 0x03
    assert _connack_code(b, r5.connect("s2v5")) == 0x97
    # An offline persistent session still counts; resuming it is allowed.
    held[0].close()
    time.sleep(0.2)
    assert _connack_code(b, raw.connect("s3")) == 0x03
    c = raw.RawClient(b.host, b.port)
    p = c.connect("s0", clean=False)
    assert p.body[1] == 0 and p.body[0] & 1 == 1, "session present"


def test_client_id_over_max_client_id_length_is_rejected(make_broker):
    b = make_broker("max_client_id_length 23")
    assert _connack_code(b, raw.connect("x" * 23)) == 0
    assert _connack_code(b, raw.connect("x" * 24)) == 0x02
    assert _connack_code(b, r5.connect("x" * 24)) == 0x85


def test_client_id_of_65535_bytes_is_rejected_by_default(make_broker):
    b = make_broker()
    assert _connack_code(b, raw.connect("y" * 65535)) == 0x02


def test_subscriptions_beyond_max_subscriptions_across_clients_are_refused(make_broker):
    b = make_broker("max_subscriptions 4")
    a = raw.connected_client(b.host, b.port, "ta")
    c = raw.connected_client(b.host, b.port, "tb")
    ack = a.subscribe([("a/1", 0), ("a/2", 0), ("a/3", 0)])
    assert list(ack.body[2:]) == [0, 0, 0]
    ack = c.subscribe([("b/1", 1), ("b/2", 1)])
    assert list(ack.body[2:]) == [1, 0x80]
    a.send(raw.unsubscribe(2, ["a/1"]))
    assert a.read_packet().type == 11
    ack = c.subscribe([("b/2", 1)], pid=3)
    assert list(ack.body[2:]) == [1]


def test_memory_limit_refuses_and_recovers(make_broker):
    """memory_limit 300000: QoS 1 messages queue for a subscriber that does not acknowledge
    until the cap; then a 5.0 publisher (paho) gets PUBACK 0x97, QoS 0 is dropped, a 3.1.1
    QoS 1 publisher is disconnected; once the subscriber drains its queue, messages flow
    again. (The subscriber stays online: with persistence on, an offline session's queue
    moves to disk and no longer counts, see the next test.)"""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes

    b = make_broker("memory_limit 300000\nmax_queued_messages 10000\nmax_inflight_messages 1")
    sub = raw.connected_client(b.host, b.port, "msub", clean=False)
    sub.subscribe([("m/#", 1)])
    watch = raw.connected_client(b.host, b.port, "mwatch")
    watch.subscribe([("m/#", 0)])

    acks: dict[int, int] = {}
    done = threading.Event()

    def on_publish(client, userdata, mid, reason_code, properties):
        acks[mid] = reason_code.value
        done.set()

    p5 = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="mp5", protocol=mqtt.MQTTv5)
    p5.on_publish = on_publish
    props = Properties(PacketTypes.CONNECT)
    p5.connect(b.host, b.port, 60, clean_start=True, properties=props)
    p5.loop_start()
    try:
        payload = b"z" * 10_000
        accepted = 0
        for _ in range(100):
            done.clear()
            info = p5.publish("m/t", payload, qos=1)
            assert done.wait(5), "no PUBACK"
            code = acks[info.mid]
            if code == 0x97:
                break
            assert code == 0, code
            accepted += 1
        else:
            pytest.fail("memory_limit never reached")
        assert 20 <= accepted <= 30, accepted
        got = [watch.read_packet() for _ in range(accepted)]
        assert all(p.payload == payload for p in got)
        # QoS 0 is dropped: the online watcher gets nothing.
        watch_before = time.monotonic()
        p5.publish("m/t", b"qos0", qos=0)
        assert watch.expect_silence(0.5), "QoS 0 dropped at the cap"
        assert time.monotonic() - watch_before < 5
        # A 3.1.1 client's QoS 1 message cannot be refused in-band: disconnected.
        p3 = raw.connected_client(b.host, b.port, "mp3")
        p3.send(raw.publish("m/t", b"q1", qos=1, pid=1))
        assert p3.expect_closed(), "3.1.1 QoS 1 publisher disconnected at the cap"
        # The subscriber takes its queue: memory frees.
        s = sub
        n = 0
        while n < accepted:
            p = s.read_packet(timeout=5)
            if p.type == 3:
                n += 1
                s.send(raw.puback(p.pid))
        assert s.expect_silence(0.3)
        done.clear()
        info = p5.publish("m/t", b"after", qos=1)
        assert done.wait(5)
        assert acks[info.mid] == 0, "accepted again once memory freed"
        assert s.read_packet(timeout=5).payload == b"after"
        assert b'memory_limit reached' in b.log_path.read_bytes()
        assert b'memory back under memory_limit' in b.log_path.read_bytes()
    finally:
        p5.loop_stop()
        p5.disconnect()


def test_an_offline_queue_on_disk_is_not_held_against_memory_limit(tmp_path):
    """Issue 11: with persistence on, an offline persistent session's queue keeps 16 bytes
    per message in memory and the payloads on disk, so 1 MB queued under a 300,000-byte
    memory_limit is accepted, and comes back in order."""
    b = ConfiguredBroker(tmp_path, "memory_limit 300000\nmax_queued_messages 0", persistence=True)
    b.start()
    try:
        sub = raw.connected_client(b.host, b.port, "dsub", clean=False)
        sub.subscribe([("d/#", 1)])
        sub.close()
        p = raw.connected_client(b.host, b.port, "dpub")
        for i in range(100):
            p.send(raw.publish("d/t", b"%03d" % i + b"z" * 10_000, qos=1, pid=i + 1))
            ack = p.read_packet(timeout=5)
            assert (ack.type, ack.pid) == (4, i + 1), "accepted: the queue is on disk"
        s = raw.RawClient(b.host, b.port)
        s.connect("dsub", clean=False)
        got = []
        while len(got) < 100:
            m = s.read_packet(timeout=5)
            if m.type == 3:
                got.append(m.payload[:3])
                s.send(raw.puback(m.pid))
        assert got == [b"%03d" % i for i in range(100)]
        assert b"memory_limit reached" not in b.log_path.read_bytes()
    finally:
        b.stop()


def test_memory_limit_counts_partial_input(make_broker):
    """Partial packets the loop buffers count towards memory_limit: four sockets each
    holding 90 KB of an unfinished CONNECT put the broker over a 300,000-byte limit, and
    closing them brings it back."""
    b = make_broker("memory_limit 300000")
    c5 = r5.Raw5(b.host, b.port)
    c5.connect5("pin")
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", 60_000) + b"c" * 90_000
    first = bytes([0x10]) + raw.varint(99_000) + body
    partial = []
    for _ in range(4):
        s = socket.create_connection(b.addr, timeout=5)
        s.sendall(first)
        partial.append(s)
    pid = 1
    deadline = time.monotonic() + 5
    while True:
        c5.send(r5.publish("p/t", b"x", qos=1, pid=pid))
        ack = c5.read_until(r5.PUBACK)
        if ack.reason == 0x97:
            break
        assert time.monotonic() < deadline, "partial input never counted"
        pid += 1
        time.sleep(0.05)
    for s in partial:
        s.close()
    deadline = time.monotonic() + 5
    while True:
        pid += 1
        c5.send(r5.publish("p/t", b"x", qos=1, pid=pid))
        ack = c5.read_until(r5.PUBACK)
        if ack.reason in (0x00, 0x10):
            break
        assert time.monotonic() < deadline, "closed connections' input never released"
        time.sleep(0.05)
