"""Configuration files, password files, ACLs and SIGHUP reload, black-box.

The broker is started with `-c FILE` (Mosquitto's format, so the same files run
against BROKER=mosquitto too). Password files are written by both
`mosquitto_passwd` and `wrenmq passwd` and checked by both brokers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

import mqttraw as r
from conftest import REPO_ROOT, _find_mosquitto, _find_wrenmq, broker_is, free_port

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
needs_mosquitto_passwd = pytest.mark.skipif(not MOSQUITTO_PASSWD, reason="mosquitto_passwd not installed")

ACL = """\
# anonymous: read public/#
topic read public/#

user alice
topic readwrite sensors/#
topic deny sensors/secret
topic write cmd/#

user bob
topic read sensors/#

pattern readwrite own/%c/#
"""


def uid(tag="c"):
    return f"{tag}-{uuid.uuid4().hex[:8]}"


class ConfBroker:
    """The broker under test, started with a config file in `workdir`."""

    def __init__(self, workdir: Path, name: str | None = None):
        self.name = name or ("mosquitto" if broker_is("mosquitto") else "wrenmq")
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.conf = workdir / "broker.conf"
        self.log_path = workdir / "broker.log"
        self.proc = None

    def write_conf(self, body: str):
        head = f"listener {self.port} 127.0.0.1\n"
        if self.name == "mosquitto" and os.geteuid() == 0:
            # Started as root, Mosquitto reads the password file as user "mosquitto",
            # which cannot enter pytest's 0700 temporary directories.
            head += "user root\n"
        tail = ""
        if self.name == "wrenmq" and "persistence_location" not in body:
            # One data directory per broker: a second wrenmq on the same one is refused.
            # Last, so that the line numbers the tests expect stay the same.
            tail = f"\npersistence_location {self.workdir / f'data-{self.port}'}\n"
        self.conf.write_text(head + body + tail)

    def start(self, timeout=10.0):
        exe = _find_mosquitto() if self.name == "mosquitto" else _find_wrenmq()
        cmd = [exe, "-c", str(self.conf)] + (["-v"] if self.name == "wrenmq" else [])
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)
        wait_port(self.host, self.port, timeout, self)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()

    def logs(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def wait_port(host, port, timeout, b=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b is not None and not b.alive():
            raise RuntimeError(f"broker exited:\n{b.logs()}")
        try:
            r.RawClient(host, port, timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s:\n{b.logs() if b else ''}")


@pytest.fixture
def conf_broker(tmp_path):
    made = []

    def make(body: str, name=None):
        b = ConfBroker(tmp_path, name)
        b.write_conf(body)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.stop()


def mosquitto_hash(path: Path, user: str, pw: str, create=False):
    args = [MOSQUITTO_PASSWD] + (["-c"] if create else []) + ["-b", str(path), user, pw]
    subprocess.run(args, check=True, timeout=10, capture_output=True)


def wrenmq_passwd(*args, input=None):
    return subprocess.run([_find_wrenmq(), "passwd", *map(str, args)], input=input,
                          timeout=10, capture_output=True, text=True)


def connack(b, **kw) -> int:
    c = r.RawClient(b.host, b.port)
    try:
        return c.connect(kw.pop("client_id", uid()), **kw).body[1]
    finally:
        c.close()


def client(b, client_id=None, **kw) -> r.RawClient:
    c = r.RawClient(b.host, b.port)
    ack = c.connect(client_id or uid(), **kw)
    assert ack.body[1] == 0, f"CONNACK {ack.raw!r}"
    return c


def bad_credentials_code():
    # Mosquitto 2.0 answers a wrong password or unknown user with 0x05 (not authorized),
    # not 0x04; wrenmq answers as Mosquitto does.
    return 0x05


# ------------------------------------------------------------- config errors


@pytest.mark.wrenmq_only
@pytest.mark.parametrize("body,message", [
    ("listener 1883\nfrobnicate 1\n", "broker.conf:2: frobnicate: unknown configuration key"),
    ("max_inflight_messages lots\n",
     "broker.conf:1: max_inflight_messages: invalid value 'lots' (expected 0 (no limit) or a count up to 65535)"),
    ("password_file /nonexistent/pw\n", "password_file /nonexistent/pw: cannot read"),
    ("acl_file {acl}\n", "acl_file {acl}:1: invalid access type 'sometimes'"),
])
def test_bad_config_exits_before_listening(tmp_path, body, message):
    acl = tmp_path / "acl"
    acl.write_text("topic sometimes x\n")
    conf = tmp_path / "broker.conf"
    port = free_port()
    conf.write_text(body.format(acl=acl).replace("listener 1883", f"listener {port} 127.0.0.1"))
    p = subprocess.run([_find_wrenmq(), "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 1
    assert message.format(acl=acl) in p.stderr, p.stderr


@pytest.mark.wrenmq_only
def test_missing_config_file_is_an_error(tmp_path):
    p = subprocess.run([_find_wrenmq(), "-c", str(tmp_path / "none.conf")],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 1
    assert "none.conf: cannot read" in p.stderr


@pytest.mark.wrenmq_only
def test_unsupported_mosquitto_key_warns_and_runs(conf_broker):
    b = conf_broker("allow_anonymous true\nset_tcp_nodelay true\n")
    assert connack(b) == 0
    assert "broker.conf:3: set_tcp_nodelay: Mosquitto option not supported" in b.logs()


# ------------------------------------------------------------- CONNACK paths


@needs_mosquitto_passwd
def test_connack_paths(conf_broker, tmp_path):
    pw = tmp_path / "pw"
    mosquitto_hash(pw, "alice", "apw", create=True)
    b = conf_broker(f"password_file {pw}\n")
    assert connack(b, username="alice", password="apw") == 0x00
    assert connack(b, username="alice", password="wrong") == bad_credentials_code()
    assert connack(b, username="nobody", password="apw") == bad_credentials_code()
    assert connack(b) == 0x05  # anonymous: allow_anonymous defaults to false


@needs_mosquitto_passwd
def test_wrong_password_is_refused_not_authorized_in_v5(conf_broker, tmp_path):
    """Mosquitto 2.0 answers 0x87 (not authorized) to a 5.0 client with a wrong password or
    an unknown user, not 0x86."""
    import mqtt5raw as m
    pw = tmp_path / "pw"
    mosquitto_hash(pw, "alice", "apw", create=True)
    b = conf_broker(f"password_file {pw}\n")
    for user, password in (("alice", "apw"), ("alice", "wrong"), ("nobody", "apw"), ("alice", None)):
        c = m.Raw5(b.host, b.port)
        try:
            kw = {"username": user} | ({"password": password} if password else {})
            got = c.connect5(uid(), **kw).reason
        finally:
            c.close()
        assert got == (0x00 if password == "apw" and user == "alice" else 0x87), (user, password, got)


def test_listener_config_without_password_file_refuses_anonymous(conf_broker):
    b = conf_broker("")
    assert connack(b) == 0x05
    b2 = conf_broker("allow_anonymous true\n")
    assert connack(b2) == 0x00


# ------------------------------------------------------------- password files both ways


@needs_mosquitto_passwd
@pytest.mark.wrenmq_only
def test_mosquitto_passwd_files_verify_in_wrenmq(conf_broker, tmp_path):
    pw = tmp_path / "pw"
    mosquitto_hash(pw, "alice", "s3cret pass", create=True)
    mosquitto_hash(pw, "bob", "ü-unicode")
    b = conf_broker(f"password_file {pw}\n", name="wrenmq")
    assert connack(b, username="alice", password="s3cret pass") == 0
    assert connack(b, username="bob", password="ü-unicode") == 0
    assert connack(b, username="bob", password="u-unicode") == 0x05


@needs_mosquitto_passwd
@pytest.mark.wrenmq_only
def test_wrenmq_passwd_files_verify_in_mosquitto(conf_broker, tmp_path):
    pw = tmp_path / "pw"
    assert wrenmq_passwd("-c", "-b", pw, "carol", "cpw").returncode == 0
    assert wrenmq_passwd("-b", "-I", 1000, pw, "dave", "dpw").returncode == 0
    # mosquitto_passwd edits the file wrenmq wrote without complaint...
    mosquitto_hash(pw, "erin", "epw")
    b = conf_broker(f"password_file {pw}\n", name="mosquitto")
    assert connack(b, username="carol", password="cpw") == 0
    assert connack(b, username="dave", password="dpw") == 0
    assert connack(b, username="erin", password="epw") == 0
    assert connack(b, username="carol", password="dpw") == 0x05


@pytest.mark.wrenmq_only
def test_wrenmq_passwd_cli(tmp_path):
    pw = tmp_path / "pw"
    # No file without -c.
    p = wrenmq_passwd("-b", pw, "a", "x")
    assert p.returncode == 1 and "No such file" in p.stderr
    assert wrenmq_passwd("-c", "-b", pw, "a", "x").returncode == 0
    # Prompted twice; stdin is not a TTY, so two lines are read.
    assert wrenmq_passwd(pw, "b", input="bpw\nbpw\n").returncode == 0
    p = wrenmq_passwd(pw, "c", input="one\ntwo\n")
    assert p.returncode == 1 and "passwords do not match" in p.stderr
    lines = pw.read_text().splitlines()
    assert [l.split(":")[0] for l in lines] == ["a", "b"]
    assert all(l.split(":", 1)[1].startswith("$7$101$") for l in lines)
    assert oct(pw.stat().st_mode & 0o777) == "0o600"
    # Delete.
    assert wrenmq_passwd("-D", pw, "a").returncode == 0
    p = wrenmq_passwd("-D", pw, "a")
    assert p.returncode == 1 and "user 'a' not found" in p.stderr
    # -U hashes a plain-text file in place.
    plain = tmp_path / "plain"
    plain.write_text("u1:p1\nu2:p2\n")
    assert wrenmq_passwd("-U", plain).returncode == 0
    assert all(l.split(":", 1)[1].startswith("$7$") for l in plain.read_text().splitlines())
    # Usage errors exit 2.
    assert wrenmq_passwd("-c", "-D", pw, "a").returncode == 2
    if MOSQUITTO_PASSWD:
        # mosquitto_passwd -U... not needed: check wrenmq's -U output in Mosquitto's tool
        # by deleting a user with it (it parses every line).
        subprocess.run([MOSQUITTO_PASSWD, "-D", str(plain), "u1"], check=True, timeout=10,
                       capture_output=True)
        assert plain.read_text().startswith("u2:$7$")


# ------------------------------------------------------------- ACL matrix


@needs_mosquitto_passwd
def test_acl_matrix(conf_broker, tmp_path):
    pw = tmp_path / "pw"
    mosquitto_hash(pw, "alice", "apw", create=True)
    mosquitto_hash(pw, "bob", "bpw")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    b = conf_broker(f"allow_anonymous true\npassword_file {pw}\nacl_file {acl}\n")

    alice = client(b, username="alice", password="apw")
    bob = client(b, username="bob", password="bpw")
    anon = client(b, client_id="dev1")

    bob.subscribe([("sensors/#", 1)])
    anon.subscribe([("#", 0)])
    anon.subscribe([("own/dev1/#", 0)], pid=2)
    # Subscribing is allowed in both brokers; per-message read checks filter below.
    alice.subscribe([("sensors/#", 0)])

    # alice writes sensors/x: bob (read) and alice get it; anonymous does not.
    alice.send(r.publish("sensors/x", b"1", qos=1, pid=1))
    # Her own copy and the PUBACK, in either order.
    got_alice = sorted((p.type, p.topic if p.type == 3 else "") for p in (alice.read_packet(), alice.read_packet()))
    assert got_alice == [(3, "sensors/x"), (4, "")]
    got = bob.read_packet()
    assert (got.topic, got.payload) == ("sensors/x", b"1")
    bob.send(r.puback(got.pid))
    # sensors/secret is denied to alice: acknowledged, delivered to nobody she... bob may
    # read sensors/# so he gets it only if alice may write it, which she may not.
    alice.send(r.publish("sensors/secret", b"2", qos=1, pid=2))
    assert alice.read_packet().type == 4
    # bob may not write: PUBACK anyway, nobody receives.
    bob.send(r.publish("sensors/y", b"3", qos=1, pid=3))
    p = bob.read_packet()
    assert p.type == 4
    # Anonymous may not write public/#, but may write its own pattern tree.
    anon.send(r.publish("public/z", b"4"))
    anon.send(r.publish("own/dev1/z", b"5"))
    got = anon.read_packet()
    assert (got.topic, got.payload) == ("own/dev1/z", b"5")
    assert bob.expect_silence(0.5)
    assert alice.expect_silence(0.1)
    for c in (alice, bob, anon):
        c.close()


@needs_mosquitto_passwd
def test_retained_and_will_respect_the_acl(conf_broker, tmp_path):
    pw = tmp_path / "pw"
    mosquitto_hash(pw, "alice", "apw", create=True)
    mosquitto_hash(pw, "bob", "bpw")
    acl = tmp_path / "acl"
    acl.write_text(ACL + "user bob\ntopic read public/#\n")
    b = conf_broker(f"allow_anonymous true\npassword_file {pw}\nacl_file {acl}\n")
    alice = client(b, username="alice", password="apw")
    alice.send(r.publish("sensors/keep", b"k", retain=True))
    # bob's will goes to sensors/will, which he may not write.
    bob = client(b, username="bob", password="bpw", will=("sensors/will", b"w", 0, False))
    watcher = client(b, username="alice", password="apw")
    watcher.subscribe([("sensors/#", 0)])
    got = watcher.read_packet()
    assert (got.topic, got.payload, got.retain) == ("sensors/keep", b"k", True)
    bob.sock.close()  # ungraceful: the will would be published if allowed
    assert watcher.expect_silence(0.7)
    # anonymous subscribes to # and may read only public/#: the retained sensors/keep
    # is not delivered.
    anon = client(b)
    anon.subscribe([("#", 0)])
    assert anon.expect_silence(0.5)
    for c in (alice, watcher, anon):
        c.close()


@needs_mosquitto_passwd
def test_shared_subscriptions_and_patterns_under_an_acl(conf_broker, tmp_path):
    """`$share/g/filter` is checked by its filter part, `%c` is substituted inside a level,
    and a `/` in a client id is substituted as it is: as Mosquitto 2.0 does."""
    pw = tmp_path / "pw"
    mosquitto_hash(pw, "alice", "apw", create=True)
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite #\npattern read dev-%c/#\npattern read ids/%c/#\n")
    b = conf_broker(f"allow_anonymous true\npassword_file {pw}\nacl_file {acl}\n")
    alice = client(b, username="alice", password="apw")
    ack = alice.subscribe([("$share/g/sensors/#", 1)])
    assert ack.body[2:] == b"\x01", ack
    dev = client(b, client_id="7")
    assert dev.subscribe([("dev-7/#", 0)]).body[2:] == b"\x00"
    slash = client(b, client_id="a/b")
    assert slash.subscribe([("ids/a/b/#", 0)]).body[2:] == b"\x00"
    alice.send(r.publish("sensors/t", b"s", qos=1, pid=1))
    got = sorted((p.type, p.payload) for p in (alice.read_packet(), alice.read_packet()))
    assert got == [(3, b"s"), (4, b"")]
    alice.send(r.publish("dev-7/x", b"d"))
    alice.send(r.publish("ids/a/b/x", b"i"))
    assert (dev.read_packet().payload, slash.read_packet().payload) == (b"d", b"i")
    for c in (alice, dev, slash):
        c.close()


# ------------------------------------------------------------- reload under load


@needs_mosquitto_passwd
@pytest.mark.wrenmq_only
def test_reload_under_load_keeps_everyone_connected(conf_broker, tmp_path):
    pw = tmp_path / "pw"
    mosquitto_hash(pw, "alice", "apw", create=True)
    mosquitto_hash(pw, "bob", "bpw")
    mosquitto_hash(pw, "dave", "dpw")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    body = f"password_file {pw}\nacl_file {acl}\n"
    b = conf_broker(body)

    bob = client(b, username="bob", password="bpw")
    bob.subscribe([("sensors/#", 0)])
    publishers = [client(b, client_id=f"pub{i}", username="alice", password="apw") for i in range(4)]
    stop = threading.Event()
    errors: list = []
    sent = [0] * len(publishers)

    def run(i, c):
        n = 0
        try:
            while not stop.is_set():
                n += 1
                c.send(r.publish(f"sensors/p{i}", str(n).encode(), qos=1, pid=(n % 65535) + 1))
                p = c.read_packet(timeout=5)
                assert p.type == 4, p
                sent[i] = n
                time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(publishers)]
    for t in threads:
        t.start()

    def bob_reads(seconds):
        topics = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                topics.add(bob.read_packet(timeout=max(0.05, deadline - time.monotonic())).topic)
            except OSError:
                break
        return topics

    assert bob_reads(0.5) >= {"sensors/p0"}
    # New rules: bob loses sensors/# (his subscription is removed), dave's password
    # changes (dave is not connected: a connected dave would be disconnected), carol
    # appears, and a second listener is added.
    acl.write_text(ACL.replace("user bob\ntopic read sensors/#\n", "user bob\ntopic read public/#\n"))
    mosquitto_hash(pw, "dave", "new")
    mosquitto_hash(pw, "carol", "cpw")
    port2 = free_port()
    b.conf.write_text(b.conf.read_text() + f"listener {port2} 127.0.0.1\n")
    before = list(sent)
    b.hup()
    wait_port(b.host, port2, 5, b)
    # Drain what was in flight before the reload; then bob must go quiet although the
    # publishers keep publishing.
    deadline = time.monotonic() + 5
    quiet = False
    while time.monotonic() < deadline and not quiet:
        quiet = bob.expect_silence(0.5)
    assert quiet, "bob still receives sensors/# after the reload"
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert all(after > b4 for after, b4 in zip(sent, before)), (before, sent)
    # Everyone is still connected.
    for c in publishers + [bob]:
        assert c.is_open(), "a client was disconnected by the reload"
    # New credentials apply to new connections; the new listener works.
    assert connack(b, username="dave", password="dpw") == 0x05
    assert connack(b, username="dave", password="new") == 0
    assert connack(b, username="carol", password="cpw") == 0
    c2 = r.RawClient(b.host, port2)
    assert c2.connect(uid(), username="carol", password="cpw").body[1] == 0
    c2.close()
    assert "configuration reloaded" in b.logs()
    for c in publishers + [bob]:
        c.close()


def wait_closed(c, what, timeout=5.0):
    assert c.expect_closed(timeout), f"{what} still connected after the reload"


@needs_mosquitto_passwd
def test_reload_disconnects_clients_it_no_longer_admits(conf_broker, tmp_path):
    """Mosquitto 2.0 on SIGHUP disconnects a user removed from the password file, a user
    whose password changed, and anonymous clients once allow_anonymous is off; the
    others stay connected."""
    import mqtt5raw as m
    pw = tmp_path / "pw"
    for user in ("alice", "bob", "carol"):
        mosquitto_hash(pw, user, user[0] + "pw", create=user == "alice")
    b = conf_broker(f"allow_anonymous true\npassword_file {pw}\n")
    alice = client(b, username="alice", password="apw")
    bob = client(b, username="bob", password="bpw")
    carol = client(b, username="carol", password="cpw")
    anon = client(b)
    bob5 = m.Raw5(b.host, b.port)
    assert bob5.connect5(uid(), username="bob", password="bpw").reason == 0
    subprocess.run([MOSQUITTO_PASSWD, "-D", str(pw), "bob"], check=True, timeout=10, capture_output=True)
    mosquitto_hash(pw, "carol", "changed")
    b.conf.write_text(b.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    b.hup()
    for c, what in ((bob, "removed user"), (carol, "changed password"), (anon, "anonymous")):
        wait_closed(c, what)
    reason = bob5.close_reason()
    # wrenmq tells a 5.0 client why (0x87); Mosquitto 2.0.11 just closes.
    if broker_is("mosquitto"):
        assert reason is None or reason.reason == 0x87
    else:
        assert reason is not None and reason.reason == 0x87, reason
    assert alice.is_open()
    assert connack(b, username="carol", password="changed") == 0
    assert connack(b, username="bob", password="bpw") == 0x05
    for c in (alice, bob5):
        c.close()


@needs_mosquitto_passwd
def test_reload_stops_inflight_and_queued_messages_the_acl_no_longer_allows(conf_broker, tmp_path):
    """A persistent subscriber that lost read access in a reload gets neither its
    unacknowledged in-flight message (resent on reconnect) nor its queued one."""
    pw = tmp_path / "pw"
    mosquitto_hash(pw, "alice", "apw", create=True)
    mosquitto_hash(pw, "bob", "bpw")
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite #\nuser bob\ntopic read sensors/#\ntopic read other/#\n")
    b = conf_broker(f"allow_anonymous true\npassword_file {pw}\nacl_file {acl}\n")
    bob_id = uid("bob")
    bob = client(b, client_id=bob_id, username="bob", password="bpw", clean=False)
    bob.subscribe([("sensors/#", 1), ("other/#", 1)])
    alice = client(b, username="alice", password="apw")
    alice.send(r.publish("sensors/a", b"inflight", qos=1, pid=1))
    assert alice.read_packet().type == 4
    got = bob.read_packet()
    assert (got.topic, got.payload) == ("sensors/a", b"inflight")
    bob.close()  # without PUBACK: sensors/a stays in flight
    time.sleep(0.2)
    alice.send(r.publish("sensors/b", b"queued", qos=1, pid=2))
    assert alice.read_packet().type == 4
    acl.write_text("user alice\ntopic readwrite #\nuser bob\ntopic read other/#\n")
    b.conf.write_text(b.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    b.hup()
    # The reload has been applied once anonymous clients are refused.
    deadline = time.monotonic() + 5
    while connack(b) != 0x05:
        assert time.monotonic() < deadline, "reload not applied"
        time.sleep(0.05)
    alice.send(r.publish("other/c", b"allowed", qos=1, pid=3))
    assert alice.read_packet().type == 4
    bob = r.RawClient(b.host, b.port)
    ack = bob.connect(bob_id, username="bob", password="bpw", clean=False)
    assert ack.body == b"\x01\x00", ack
    got = bob.read_packet()
    assert (got.topic, got.payload) == ("other/c", b"allowed"), got
    assert bob.expect_silence(0.5)
    for c in (alice, bob):
        c.close()


@pytest.mark.wrenmq_only
def test_failed_reload_keeps_the_old_configuration(conf_broker, tmp_path):
    b = conf_broker("allow_anonymous true\n")
    c = client(b)
    b.conf.write_text(b.conf.read_text() + "bogus_key 1\n")
    b.hup()
    deadline = time.monotonic() + 5
    while "reload failed" not in b.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reload failed, keeping the current configuration" in b.logs()
    assert "bogus_key: unknown configuration key" in b.logs()
    assert c.is_open()
    assert connack(b) == 0
    # Removing a listener on reload: the old port closes, its clients stay.
    port2 = free_port()
    b.conf.write_text(f"listener {port2} 127.0.0.1\nallow_anonymous true\n")
    b.hup()
    wait_port(b.host, port2, 5, b)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            r.RawClient(b.host, b.port, timeout=0.5).close()
            time.sleep(0.05)
        except OSError:
            break
    else:
        pytest.fail("the removed listener still accepts connections")
    assert c.is_open()
    c.close()
