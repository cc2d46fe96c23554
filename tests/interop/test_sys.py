"""$SYS statistics and Mosquitto-format log lines (issue 15).

Every test here except the wake-up counts runs against Mosquitto too
(`--broker=mosquitto`): the same expectations pass on both, which is the proof of
parity. Each test starts its own broker from a config file both brokers read
(`sys_interval`, `log_*`, `connection_messages`).
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import _find_mosquitto, _find_wrenmq, broker_is, broker_name, free_port
from pahoutil import Paho

# The metric names a mosquitto-exporter-style reader derives from Mosquitto 2.0.11's $SYS
# tree (topic minus "$SYS/broker/", "/" and " " to "_"), for every topic whose payload
# starts with a number. Captured from mosquitto 2.0.11 with sys_interval 1 and one client
# (`clients/maximum` appears once a client has connected).
MOSQUITTO_METRICS = {
    "version", "uptime",
    "clients_total", "clients_maximum", "clients_inactive", "clients_disconnected",
    "clients_active", "clients_connected", "clients_expired",
    "messages_stored", "messages_received", "messages_sent",
    "store_messages_count", "store_messages_bytes",
    "subscriptions_count", "shared_subscriptions_count", "retained_messages_count",
    "heap_current", "heap_maximum",
    "publish_messages_dropped", "publish_messages_received", "publish_messages_sent",
    "publish_bytes_received", "publish_bytes_sent",
    "bytes_received", "bytes_sent",
} | {
    f"load_{m}_{w}"
    for m in ("messages_received", "messages_sent", "publish_dropped", "publish_received",
              "publish_sent", "bytes_received", "bytes_sent", "sockets", "connections")
    for w in ("1min", "5min", "15min")
}

NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")


class ConfBroker:
    """wrenmq or mosquitto (whichever the suite runs against) from a config file."""

    def __init__(self, extra: str = "", sys_interval: int = 1):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sys-"))
        self.conf = self.dir / "broker.conf"
        self.conf.write_text(
            f"listener {self.port} {self.host}\n"
            "persistence false\n"
            f"sys_interval {sys_interval}\n"
            f"{extra}\n"
        )
        if "allow_anonymous" not in extra:
            self.conf.write_text(self.conf.read_text() + "allow_anonymous true\n")
        exe = _find_mosquitto() if broker_is("mosquitto") else _find_wrenmq()
        self.log_path = self.dir / "stderr"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.dir)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, f"{broker_name()} exited:\n{self.text()}"
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "broker did not start"
                time.sleep(0.05)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def wait_line(self, pattern: str, timeout: float = 5.0) -> re.Match:
        """The first log line matching `pattern` in full, waiting for it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines():
                m = rx.fullmatch(line)
                if m:
                    return m
            assert time.monotonic() < deadline, f"no line matching {pattern!r} in:\n{self.text()}"
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def ctxt_switches(self) -> int:
        """Context switches of the loop thread (the process's main thread) so far."""
        status = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/status").read_text()
        return sum(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))


@pytest.fixture
def conf_broker():
    made = []

    def make(extra: str = "", sys_interval: int = 1) -> ConfBroker:
        b = ConfBroker(extra, sys_interval)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def collect(sub: Paho, seconds: float) -> list:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(sub.messages.get(timeout=max(0.0, deadline - time.monotonic())))
        except Exception:
            break
    return out


def metric_name(topic: str) -> str:
    return topic.removeprefix("$SYS/broker/").replace("/", "_").replace(" ", "_")


def latest(msgs, name: str) -> str | None:
    topic = f"$SYS/broker/{name}"
    found = [m.payload.decode() for m in msgs if m.topic == topic]
    return found[-1] if found else None


# ------------------------------------------------------------------------- $SYS


def test_sys_metric_names_match_mosquitto_for_an_exporter(conf_broker):
    b = conf_broker()
    sub = Paho(b)
    sub.subscribe("$SYS/#")
    msgs = collect(sub, 2.5)
    names = set()
    for m in msgs:
        if NUMBER.search(m.payload.decode(errors="replace")):
            names.add(metric_name(m.topic))
    assert names == MOSQUITTO_METRICS, (
        f"missing {sorted(MOSQUITTO_METRICS - names)}, extra {sorted(names - MOSQUITTO_METRICS)}")
    sub.close()


def test_sys_payload_formats(conf_broker):
    b = conf_broker()
    sub = Paho(b)
    sub.subscribe("$SYS/#")
    msgs = collect(sub, 1.5)
    assert re.fullmatch(r"\d+ seconds", latest(msgs, "uptime"))
    assert re.fullmatch(r"(mosquitto|wrenmq) version \d+\.\d+\.\d+", latest(msgs, "version"))
    for m in msgs:
        name = m.topic.removeprefix("$SYS/broker/")
        if name.startswith("load/"):
            assert re.fullmatch(r"\d+\.\d\d", m.payload.decode()), (name, m.payload)
        elif name not in ("uptime", "version"):
            assert re.fullmatch(r"\d+", m.payload.decode()), (name, m.payload)
    assert "$SYS/broker/retained messages/count" in {m.topic for m in msgs}
    sub.close()


def test_sys_retained_on_subscribe_then_live_updates_only_when_changed(conf_broker):
    b = conf_broker()
    time.sleep(1.2)  # the start-up values are retained by now
    sub = Paho(b)
    sub.subscribe("$SYS/#")
    msgs = collect(sub, 2.5)
    first = {}
    for m in msgs:
        first.setdefault(m.topic, m)
    # clients/maximum is first published when the subscriber itself raises it: live.
    first.pop("$SYS/broker/clients/maximum", None)
    assert len(first) >= 50
    assert all(m.retain for m in first.values()), [t for t, m in first.items() if not m.retain]
    live = [m for m in msgs if not m.retain]
    assert any(m.topic == "$SYS/broker/uptime" for m in live), "uptime is republished"
    # Nothing touched the version or the shared subscriptions: sent once, retained.
    assert [m.topic for m in msgs].count("$SYS/broker/version") == 1
    assert [m.topic for m in msgs].count("$SYS/broker/shared_subscriptions/count") == 1
    sub.close()


def test_sys_clients_connected_moves_by_five(conf_broker):
    b = conf_broker()
    sub = Paho(b)
    sub.subscribe("$SYS/broker/clients/connected")
    # The retained value predates the subscriber; the next update counts it.
    before = int(latest(collect(sub, 2.2), "clients/connected"))
    assert before >= 1
    clients = [Paho(b) for _ in range(5)]

    def wait_for(want):
        deadline = time.monotonic() + 5
        now = None
        while now != want:
            assert time.monotonic() < deadline, f"clients/connected is {now}, wanted {want}"
            now = int(sub.messages.get(timeout=5).payload)

    wait_for(before + 5)
    for c in clients:
        c.close()
    wait_for(before)
    sub.close()


def test_sys_counts_publishes(conf_broker):
    b = conf_broker()
    sub = Paho(b)
    sub.subscribe([("$SYS/broker/publish/messages/received", 0),
                   ("$SYS/broker/publish/bytes/received", 0)])
    collect(sub, 0.3)
    pub = Paho(b)
    for _ in range(3):
        pub.c.publish("sys/test", b"12345", qos=1).wait_for_publish(5)
    msgs = collect(sub, 2.5)
    assert latest(msgs, "publish/messages/received") == "3"
    assert latest(msgs, "publish/bytes/received") == "15"
    pub.close()
    sub.close()


def test_sys_hash_does_not_match_and_clients_cannot_publish_there(conf_broker):
    # [MQTT-4.7.2-1]
    b = conf_broker()
    every = Paho(b)
    every.subscribe("#")
    sub = Paho(b)
    sub.subscribe("$SYS/broker/version")
    collect(sub, 0.5)
    forger = Paho(b)
    forger.c.publish("$SYS/broker/version", b"forged", qos=1).wait_for_publish(5)
    msgs = collect(every, 1.5)
    assert [m.topic for m in msgs if m.topic.startswith("$SYS")] == []
    assert [m.payload for m in collect(sub, 0.3)] == []
    for c in (every, sub, forger):
        c.close()


def test_sys_interval_0_publishes_nothing(conf_broker):
    b = conf_broker(sys_interval=0)
    sub = Paho(b)
    sub.subscribe("$SYS/#")
    assert collect(sub, 1.5) == []
    sub.close()


@pytest.mark.wrenmq_only
def test_idle_wakeups_none_with_sys_interval_0_one_per_interval_otherwise(conf_broker):
    off = conf_broker(sys_interval=0)
    on = conf_broker(sys_interval=1)
    time.sleep(0.5)  # start-up done
    off0, on0 = off.ctxt_switches(), on.ctxt_switches()
    time.sleep(3.0)
    off1, on1 = off.ctxt_switches(), on.ctxt_switches()
    assert off1 - off0 == 0, "an idle broker with sys_interval 0 woke up"
    # One timer wake-up per second over 3 s; scheduling may add one or two.
    assert 2 <= on1 - on0 <= 6, on1 - on0


# ------------------------------------------------------------------------- logs

STAMP = r"\d+: "


def raw_connect(b, client_id: bytes, keepalive=60, flags=0x02, extra=b"") -> socket.socket:
    s = socket.create_connection((b.host, b.port), timeout=5)
    body = (b"\x00\x04MQTT\x04" + bytes([flags]) + keepalive.to_bytes(2, "big")
            + len(client_id).to_bytes(2, "big") + client_id + extra)
    s.sendall(bytes([0x10, len(body)]) + body)
    return s


def test_log_new_connection_and_new_client_connected(conf_broker):
    b = conf_broker(sys_interval=0)
    c = Paho(b, client_id="logged-1", keepalive=45, connect=False)
    c.c.username_pw_set("user")
    c.connect()
    m = b.wait_line(STAMP + r"New client connected from 127\.0\.0\.1:(\d+)"
                    r" as logged-1 \(p2, c1, k45, u'user'\)\.")
    b.wait_line(STAMP + r"New connection from 127\.0\.0\.1:" + m.group(1)
                + r" on port " + str(b.port) + r"\.")
    c.close()
    b.wait_line(STAMP + r"Client logged-1 disconnected\.")


def test_log_v5_client_without_user(conf_broker):
    import paho.mqtt.client as mqtt
    b = conf_broker(sys_interval=0)
    c = Paho(b, client_id="logged-5", protocol=mqtt.MQTTv5, clean_session=None)
    b.wait_line(STAMP + r"New client connected from 127\.0\.0\.1:\d+ as logged-5 \(p5, c1, k60\)\.")
    c.close()


def test_log_closed_its_connection(conf_broker):
    b = conf_broker(sys_interval=0)
    s = raw_connect(b, b"closer")
    s.recv(4)
    s.close()
    b.wait_line(STAMP + r"Client closer closed its connection\.")
    s = socket.create_connection((b.host, b.port), timeout=5)
    s.close()
    b.wait_line(STAMP + r"Client <unknown> closed its connection\.")
    # A reset is a close too, as Mosquitto words it.
    s = raw_connect(b, b"resetter")
    s.recv(4)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    b.wait_line(STAMP + r"Client resetter closed its connection\.")


def test_log_exceeded_timeout(conf_broker):
    b = conf_broker(sys_interval=0)
    s = raw_connect(b, b"sleeper", keepalive=1)
    s.recv(4)
    b.wait_line(STAMP + r"Client sleeper has exceeded timeout, disconnecting\.", timeout=10)
    s.close()


def test_log_takeover(conf_broker):
    b = conf_broker(sys_interval=0)
    first = raw_connect(b, b"twin")
    first.recv(4)
    second = raw_connect(b, b"twin")
    second.recv(4)
    b.wait_line(STAMP + r"Client twin already connected, closing old connection\.")
    first.close()
    second.close()


def test_log_protocol_error(conf_broker):
    b = conf_broker(sys_interval=0)
    s = raw_connect(b, b"twice")
    s.recv(4)
    body = b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x05twice"
    s.sendall(bytes([0x10, len(body)]) + body)
    b.wait_line(STAMP + r"Client twice disconnected due to protocol error\.")
    s.close()


def test_log_not_authorised(conf_broker):
    b = conf_broker("allow_anonymous false", sys_interval=0)
    s = raw_connect(b, b"nobody")
    assert s.recv(4) == b"\x20\x02\x00\x05"
    b.wait_line(STAMP + r"Client <unknown> disconnected, not authorised\.")
    s.close()


def test_log_connection_messages_false_silences_connection_lines(conf_broker):
    b = conf_broker("connection_messages false", sys_interval=0)
    c = Paho(b, client_id="quiet")
    c.close()
    s = raw_connect(b, b"quiet2")
    s.recv(4)
    s.close()
    marker = Paho(b, client_id="marker")  # a later client proves the earlier ones were handled
    marker.close()
    time.sleep(0.5)
    text = b.text()
    for word in ("New connection", "New client", "quiet", "marker"):
        assert word not in text, text


def test_log_timestamp_false_and_format(conf_broker):
    plain = conf_broker("log_timestamp false", sys_interval=0)
    Paho(plain, client_id="nostamp").close()
    plain.wait_line(r"New client connected from 127\.0\.0\.1:\d+ as nostamp \(p2, c1, k60\)\.")
    fmt = conf_broker("log_timestamp_format %Y-%m-%dT%H:%M:%S", sys_interval=0)
    Paho(fmt, client_id="stamped").close()
    fmt.wait_line(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d: New client connected from 127\.0\.0\.1:\d+ "
                  r"as stamped \(p2, c1, k60\)\.")


@pytest.mark.wrenmq_only
def test_log_to_the_journal_carries_priorities_and_no_timestamp(tmp_path):
    """Under systemd, stderr is the journal and $JOURNAL_STREAM names it (device:inode):
    lines then start with a <N> priority instead of a time stamp."""
    import os
    port = free_port()
    conf = tmp_path / "j.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "sys_interval 0\n")
    log_path = tmp_path / "stderr"
    with open(log_path, "wb") as log:
        st = os.fstat(log.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        proc = subprocess.Popen([_find_wrenmq(), "-c", str(conf)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while "started" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        deadline = time.monotonic() + 5
        while "New connection" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        s.close()
    finally:
        proc.terminate()
        proc.wait(5)
    lines = log_path.read_text().splitlines()
    assert any(re.fullmatch(r"<6>New connection from 127\.0\.0\.1:\d+ on port \d+\.", l)
               for l in lines), lines
    assert any(l.startswith("<4>running as root") for l in lines) or os.geteuid() != 0, lines
    assert all(re.match(r"<[3-7]>", l) for l in lines), lines


def test_log_subscribe_and_unsubscribe_lines(conf_broker):
    b = conf_broker("log_type all", sys_interval=0)
    c = Paho(b, client_id="subber")
    c.subscribe("log/+/x", qos=1)
    b.wait_line(STAMP + r"subber 1 log/\+/x")
    rc, mid = c.c.unsubscribe("log/+/x")
    b.wait_line(STAMP + r"subber log/\+/x")
    c.close()
