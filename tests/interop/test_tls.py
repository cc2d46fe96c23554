"""TLS listeners, black-box: mosquitto_pub/sub and paho over TLS 1.2 and 1.3, mutual TLS
with the certificate's CN as user name under an ACL, refused clients, cross-listener
delivery, garbage on the TLS port, SIGHUP certificate reload.

Certificates are made per module with the `openssl` CLI. The configuration is
Mosquitto's format with three listeners (plain, TLS, mutual TLS), so the same tests run
against BROKER=mosquitto (2.0) except those marked wrenmq_only.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from certs import Pki
from conftest import _find_mosquitto, _find_wrenmq, broker_is, free_port

WAIT = 5.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    p = Pki(d)
    p.server_crt, p.server_key = p.server()
    p.sensor = p.client("sensor", "/O=Wren/CN=sensor-1")
    p.nocn = p.client("nocn", "/O=Wren/OU=no common name")
    p.expired = p.client("expired", "/CN=sensor-1", expired=True)
    other = Pki(d / "other", "other")
    p.other = other
    p.foreign = other.client("foreign", "/CN=sensor-1")
    other.server_crt, other.server_key = other.server("server2")
    return p


ACL = """\
topic readwrite t/#
topic read sensors/#
topic read subject/#

user sensor-1
topic readwrite sensors/sensor-1/#

user admin
topic readwrite #

user CN=sensor-1,O=Wren
topic readwrite subject/#
"""


class TlsBroker:
    """The broker under test with listeners: plain, TLS, mutual TLS (CN as user name)."""

    def __init__(self, workdir: Path, pki: Pki, extra_tls="", extra="",
                 identity="use_identity_as_username"):
        self.name = "mosquitto" if broker_is("mosquitto") else "wrenmq"
        self.workdir = workdir
        self.pki = pki
        self.plain, self.tls, self.mtls = free_port(), free_port(), free_port()
        self.crt = workdir / "server.crt"
        self.key = workdir / "server.key"
        self.crt.write_bytes(pki.server_crt.read_bytes())
        self.key.write_bytes(pki.server_key.read_bytes())
        acl = workdir / "acl"
        acl.write_text(ACL)
        head = "user root\n" if self.name == "mosquitto" and os.geteuid() == 0 else ""
        data = f"persistence_location {workdir / 'data'}\n" if self.name == "wrenmq" else ""
        self.conf = workdir / "broker.conf"
        self.conf.write_text(
            f"{head}{data}{extra}allow_anonymous true\nacl_file {acl}\n"
            f"listener {self.plain} 127.0.0.1\n"
            f"listener {self.tls} 127.0.0.1\ncertfile {self.crt}\nkeyfile {self.key}\n{extra_tls}"
            f"listener {self.mtls} 127.0.0.1\ncertfile {self.crt}\nkeyfile {self.key}\n"
            f"cafile {pki.ca}\nrequire_certificate true\n{identity} true\n")
        self.log_path = workdir / "broker.log"

    def start(self):
        exe = _find_mosquitto() if self.name == "mosquitto" else _find_wrenmq()
        cmd = [exe, "-c", str(self.conf)] + (["-v"] if self.name == "wrenmq" else [])
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr()
            try:
                socket.create_connection(("127.0.0.1", self.mtls), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"broker did not start:\n{self.stderr()}")

    def stderr(self):
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def tls_broker(tmp_path, pki):
    made = []

    def make(**kw):
        b = TlsBroker(tmp_path, pki, **kw).start()
        made.append(b)
        return b

    yield make
    for b in made:
        alive = b.proc.poll() is None
        b.stop()
        assert alive, f"broker died:\n{b.stderr()}"


def topic(tag):
    return f"t/{tag}-{uuid.uuid4().hex[:8]}"


def sub_proc(port, t, count=1, tls=(), extra=()):
    """A mosquitto_sub waiting for `count` messages on `t`."""
    p = subprocess.Popen(["mosquitto_sub", "-h", "localhost", "-p", str(port), "-t", t,
                          "-C", str(count), "-W", "10", "-v", *tls, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p


def pub(port, t, msg, tls=(), extra=(), check=True):
    """A retained QoS 1 publish: a subscriber gets it whether it subscribed before or after
    (each test has a broker of its own), so no test depends on timing."""
    return subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(port), "-t", t, "-m", msg,
                           "-q", "1", "-r", *tls, *extra], capture_output=True, timeout=15,
                          check=check)


class Watcher:
    """A paho subscriber on the plain listener, subscribed (SUBACK received) to `filt`."""

    def __init__(self, port, filt):
        import queue
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.got = queue.Queue()
        acked = queue.Queue()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="w-" + uuid.uuid4().hex[:8])
        self.c.on_message = lambda _c, _u, m: self.got.put((m.topic, m.payload.decode()))
        self.c.on_subscribe = lambda *a: acked.put(1)
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        self.c.subscribe(filt, 1)
        acked.get(timeout=WAIT)

    def until(self, topic):
        """Every message up to and including the first on `topic`."""
        seen = []
        while not seen or seen[-1][0] != topic:
            seen.append(self.got.get(timeout=WAIT))
        return seen

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def finish(p):
    out, err = p.communicate(timeout=15)
    return out.decode(), err.decode(), p.returncode


@pytest.mark.parametrize("version", ["tlsv1.2", "tlsv1.3"])
def test_mosquitto_clients_round_trip_over_tls(tls_broker, pki, version):
    b = tls_broker()
    t = topic(version)
    ca = ["--cafile", str(pki.ca), "--tls-version", version]
    s = sub_proc(b.tls, t, tls=ca)
    pub(b.tls, t, "over " + version, tls=ca)
    out, err, rc = finish(s)
    assert rc == 0, err
    assert out.strip() == f"{t} over {version}"


def test_tls_version_minimum_refuses_older_clients(tls_broker, pki):
    """mosquitto_pub's --tls-version is itself a minimum (it would negotiate 1.3), so the
    TLS 1.2-only client here is Python's."""
    b = tls_broker(extra_tls="tls_version tlsv1.3\n")
    with pytest.raises(ssl.SSLError):
        tls_client_socket(b.tls, pki.ca, max_version=ssl.TLSVersion.TLSv1_2)
    s = tls_client_socket(b.tls, pki.ca)
    assert s.version() == "TLSv1.3"
    s.close()


def test_cross_listener_delivery_tcp_to_tls_and_back(tls_broker, pki):
    b = tls_broker()
    t = topic("cross")
    ca = ["--cafile", str(pki.ca)]
    s = sub_proc(b.tls, t, tls=ca)
    s2 = sub_proc(b.plain, t)
    pub(b.plain, t, "from tcp")
    out, err, rc = finish(s)
    assert rc == 0 and out.strip() == f"{t} from tcp", err
    out2, _, _ = finish(s2)
    assert out2.strip() == f"{t} from tcp"


def test_paho_over_tls_with_a_large_message(tls_broker, pki):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    import queue

    b = tls_broker()
    t = topic("paho")
    got = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="p-" + uuid.uuid4().hex[:8])
    c.tls_set(ca_certs=str(pki.ca))
    c.on_message = lambda _c, _u, m: got.put(m)
    subscribed = queue.Queue()
    c.on_subscribe = lambda *a: subscribed.put(1)
    c.connect("localhost", b.tls, 30)
    c.loop_start()
    try:
        c.subscribe(t, 1)
        subscribed.get(timeout=WAIT)
        payload = os.urandom(300_000)  # many TLS records, partial reads on both sides
        c.publish(t, payload, qos=1)
        m = got.get(timeout=WAIT)
        assert m.payload == payload
    finally:
        c.loop_stop()
        c.disconnect()


def test_mutual_tls_cn_is_the_user_name_under_the_acl(tls_broker, pki):
    """The CONNECT user name `admin` (allowed everything by the ACL) is ignored: the
    certificate says sensor-1, who may only write sensors/sensor-1/#."""
    b = tls_broker()
    own, other = f"sensors/sensor-1/{uuid.uuid4().hex[:6]}", topic("forbidden")
    w = Watcher(b.plain, "#")
    mtls = ["--cafile", str(pki.ca), "--cert", str(pki.sensor[0]), "--key", str(pki.sensor[1])]
    pub(b.mtls, other, "must not arrive", tls=mtls, extra=["-u", "admin", "-P", "x"])
    pub(b.mtls, own, "allowed", tls=mtls, extra=["-u", "admin", "-P", "x"])
    end = topic("end")
    pub(b.plain, end, "end")  # in order after the two above (QoS 1, one subscriber)
    try:
        assert w.until(end) == [(own, "allowed"), (end, "end")]
    finally:
        w.close()


def test_subject_as_user_name_in_rfc2253_form(tls_broker, pki):
    """use_subject_as_username: the user is `CN=sensor-1,O=Wren` (last RDN first), the
    name Mosquitto gives it too."""
    b = tls_broker(identity="use_subject_as_username")
    own, other = f"subject/{uuid.uuid4().hex[:6]}", f"sensors/sensor-1/{uuid.uuid4().hex[:6]}"
    w = Watcher(b.plain, "#")
    mtls = ["--cafile", str(pki.ca), "--cert", str(pki.sensor[0]), "--key", str(pki.sensor[1])]
    pub(b.mtls, other, "user sensor-1 may, this user may not", tls=mtls)
    pub(b.mtls, own, "allowed", tls=mtls)
    end = topic("end")
    pub(b.plain, end, "end")
    try:
        assert w.until(end) == [(own, "allowed"), (end, "end")]
    finally:
        w.close()


@pytest.mark.parametrize("who", ["no certificate", "other CA", "expired", "no CN"])
def test_refused_clients_on_the_mutual_tls_listener(tls_broker, pki, who):
    b = tls_broker()
    ca = ["--cafile", str(pki.ca)]
    creds = {
        "no certificate": [],
        "other CA": ["--cert", str(pki.foreign[0]), "--key", str(pki.foreign[1])],
        "expired": ["--cert", str(pki.expired[0]), "--key", str(pki.expired[1])],
        "no CN": ["--cert", str(pki.nocn[0]), "--key", str(pki.nocn[1])],
    }[who]
    r = pub(b.mtls, "sensors/sensor-1/x", "x", tls=ca + creds, check=False)
    assert r.returncode != 0, f"{who} was admitted"
    # The broker is fine and a good client still gets in.
    good = ["--cert", str(pki.sensor[0]), "--key", str(pki.sensor[1])]
    r = pub(b.mtls, "sensors/sensor-1/x", "x", tls=ca + good, check=False)
    assert r.returncode == 0, r.stderr


def tls_client_socket(port, ca, max_version=None):
    ctx = ssl.create_default_context(cafile=str(ca))
    if max_version is not None:
        ctx.maximum_version = max_version
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def connect_packet(cid: str) -> bytes:
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid.encode()
    return bytes([0x10, len(body)]) + body


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_mqtt_round_trip_pinned_to_each_tls_version(tls_broker, pki, version):
    b = tls_broker()
    v = getattr(ssl.TLSVersion, version)
    s = tls_client_socket(b.tls, pki.ca, max_version=v)
    assert s.version() == version.replace("_", ".")
    s.sendall(connect_packet("pinned"))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    t = topic("pinned").encode()
    s.sendall(bytes([0x82, 5 + len(t)]) + b"\x00\x01" + len(t).to_bytes(2, "big") + t + b"\x00")
    assert s.recv(5) == b"\x90\x03\x00\x01\x00"
    s.sendall(bytes([0x30, 2 + len(t) + 5]) + len(t).to_bytes(2, "big") + t + b"hello")
    got = b""
    while len(got) < 2 + 2 + len(t) + 5:
        got += s.recv(100)
    assert got.endswith(t + b"hello")
    s.close()


def test_garbage_and_plain_mqtt_on_the_tls_port_close_only_that_connection(tls_broker, pki):
    b = tls_broker()
    good = tls_client_socket(b.tls, pki.ca)
    good.sendall(connect_packet("good"))
    assert good.recv(4) == b"\x20\x02\x00\x00"
    for junk in (connect_packet("plain"), os.urandom(4096), b"GET / HTTP/1.1\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", b.tls), timeout=WAIT)
        s.sendall(junk)
        # The broker answers with at most a TLS alert, then closes.
        data = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:  # Mosquitto resets instead of closing
                break
            if not chunk:
                break
            data += chunk
        assert len(data) < 100 and b"\x20\x02" not in data
        s.close()
    good.sendall(b"\xc0\x00")  # PINGREQ
    assert good.recv(2) == b"\xd0\x00"
    good.close()


@pytest.mark.wrenmq_only
def test_client_that_never_handshakes_is_closed_within_connect_timeout(tls_broker, pki):
    b = tls_broker(extra="connect_timeout 2\n")
    s = socket.create_connection(("127.0.0.1", b.tls), timeout=10)
    start = time.monotonic()
    assert s.recv(1) == b""  # closed by the broker
    assert time.monotonic() - start < 8
    # Half a handshake (a ClientHello's first bytes) is no different.
    s = socket.create_connection(("127.0.0.1", b.tls), timeout=10)
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert s.recv(1) == b""


def test_reload_uses_the_new_certificate_for_new_connections_only(tls_broker, pki):
    b = tls_broker()
    old = tls_client_socket(b.tls, pki.ca)
    old.sendall(connect_packet("old"))
    assert old.recv(4) == b"\x20\x02\x00\x00"
    # Swap in a certificate from another CA and reload.
    b.crt.write_bytes(pki.other.server_crt.read_bytes())
    b.key.write_bytes(pki.other.server_key.read_bytes())
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            tls_client_socket(b.tls, pki.other.ca).close()
            break
        except (ssl.SSLError, OSError):
            assert time.monotonic() < deadline, "new certificate not served"
            time.sleep(0.1)
    with pytest.raises(ssl.SSLError):
        tls_client_socket(b.tls, pki.ca)
    # The connection made before the reload still works.
    old.sendall(b"\xc0\x00")
    assert old.recv(2) == b"\xd0\x00"
    old.close()


@pytest.mark.wrenmq_only
def test_reload_with_a_bad_certificate_keeps_the_old_one(tls_broker, pki):
    b = tls_broker()
    b.crt.write_text("not a certificate\n")
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while "reload failed" not in b.stderr():
        assert time.monotonic() < deadline, b.stderr()
        time.sleep(0.05)
    assert "certfile" in b.stderr()
    s = tls_client_socket(b.tls, pki.ca)
    s.sendall(connect_packet("after-bad-reload"))
    assert s.recv(4) == b"\x20\x02\x00\x00"
    s.close()


@pytest.mark.wrenmq_only
def test_unreadable_certificate_refuses_to_start_naming_the_listener(tmp_path, pki):
    port = free_port()
    conf = tmp_path / "w.conf"
    conf.write_text(f"persistence false\nlistener {port} 127.0.0.1\n"
                    f"certfile {tmp_path / 'missing.crt'}\nkeyfile {pki.server_key}\n")
    r = subprocess.run([_find_wrenmq(), "-c", str(conf)], capture_output=True, timeout=10)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert f"127.0.0.1:{port}" in err and "missing.crt" in err and "w.conf:3" in err, err
