"""Round trips with the stock Mosquitto command-line clients.

A drop-in replacement must work with the tools gateway owners already script
against: mosquitto_pub / mosquitto_sub (from the mosquitto-clients package).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
    reason="mosquitto-clients not installed",
)

FMT = "MSG|%t|%q|%r|%l|%p"


class Sub:
    """mosquitto_sub in the background; waits until the SUBACK is in."""

    def __init__(self, broker, topics, count, qos=0, version="mqttv311", timeout=15, extra=()):
        # stdbuf: mosquitto_sub's stdout is block-buffered on a pipe; we need
        # the "Subscribed" debug line as soon as the SUBACK arrives.
        cmd = ([shutil.which("stdbuf"), "-oL"] if shutil.which("stdbuf") else []) + ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-V", version,
               "-q", str(qos), "-C", str(count), "-W", str(timeout), "-d", "-F", FMT, *extra]
        for t in topics:
            cmd += ["-t", t]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.subscribed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.subscribed.wait(10):
            self.proc.kill()
            raise AssertionError(f"mosquitto_sub never got its SUBACK: {self.lines}")

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("Subscribed (mid:"):
                self.subscribed.set()

    def messages(self, timeout=20):
        """Wait for exit; return [(topic, qos, retain, length, payload)]."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.reader.join(5)
        self.rc = rc
        out = []
        for line in self.lines:
            if line.startswith("MSG|"):
                _, t, q, r, n, p = line.split("|", 5)
                out.append((t, int(q), int(r), int(n), p))
        return out


def pub(broker, topic, *args, version="mqttv311", timeout=20):
    cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-V", version, "-t", topic, *args]
    r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} failed: {r.stdout!r} {r.stderr!r}"


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", ["mqttv31", "mqttv311"])
def test_cli_round_trip(broker, prefix, qos, version):
    """mosquitto_pub -> broker -> mosquitto_sub at each QoS and protocol level 3/4."""
    topic = f"{prefix}/rt"
    s = Sub(broker, [topic], count=3, qos=qos, version=version)
    for i in range(3):
        pub(broker, topic, "-q", str(qos), "-m", f"msg-{i}", version=version)
    msgs = s.messages()
    assert s.rc == 0
    assert [m[4] for m in msgs] == ["msg-0", "msg-1", "msg-2"]
    # delivered QoS = min(publish QoS, subscription QoS), both equal here
    assert all(m[1] == qos and m[2] == 0 for m in msgs)


def test_cli_retained_set_and_clear(broker, prefix):
    """mosquitto_pub -r stores a retained message; -n -r clears it [MQTT-3.3.1-5/10/11]."""
    topic = f"{prefix}/ret"
    pub(broker, topic, "-r", "-q", "1", "-m", "kept")
    s = Sub(broker, [topic], count=1, timeout=5)
    assert [(m[4], m[2]) for m in s.messages()] == [("kept", 1)]
    pub(broker, topic, "-r", "-n")
    # after clearing, a new subscriber gets nothing: -W makes it exit (rc 27) with no message
    s = Sub(broker, [topic], count=1, timeout=2)
    assert s.messages() == []


def test_cli_wildcards(broker, prefix):
    """`+` matches one level, `#` many levels incl. the parent [MQTT-4.7.1-2/3]."""
    s_plus = Sub(broker, [f"{prefix}/+/temp"], count=2)
    s_hash = Sub(broker, [f"{prefix}/#"], count=4)
    for t in ("a/temp", "b/temp", "a/b/temp", "x"):
        pub(broker, f"{prefix}/{t}", "-m", t)
    assert [m[0] for m in s_plus.messages()] == [f"{prefix}/a/temp", f"{prefix}/b/temp"]
    assert [m[4] for m in s_hash.messages()] == ["a/temp", "b/temp", "a/b/temp", "x"]


@pytest.mark.parametrize("mode", ["-f", "-s"])
def test_cli_large_payload(broker, prefix, tmp_path, mode):
    """1 MB payload via -f (file) and -s (stdin), QoS 1, arrives intact."""
    topic = f"{prefix}/big"
    payload = ("0123456789abcdef" * 65536)  # 1 MiB of printable bytes
    s = Sub(broker, [topic], count=1, qos=1, timeout=20)
    if mode == "-f":
        f = tmp_path / "payload.bin"
        f.write_text(payload)
        pub(broker, topic, "-q", "1", "-f", str(f))
    else:
        cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-t", topic, "-q", "1", "-s"]
        r = subprocess.run(cmd, input=payload.encode(), capture_output=True, timeout=20)
        assert r.returncode == 0, r.stderr
    msgs = s.messages()
    assert len(msgs) == 1
    assert msgs[0][3] == len(payload)
    assert msgs[0][4] == payload


def test_cli_v31_and_v311_interoperate(broker, prefix):
    """A 3.1 (MQIsdp) subscriber receives from a 3.1.1 publisher and vice versa."""
    topic = f"{prefix}/mix"
    s31 = Sub(broker, [topic], count=2, qos=1, version="mqttv31")
    s311 = Sub(broker, [topic], count=2, qos=1, version="mqttv311")
    pub(broker, topic, "-q", "1", "-m", "from-311", version="mqttv311")
    pub(broker, topic, "-q", "1", "-m", "from-31", version="mqttv31")
    for s in (s31, s311):
        assert [m[4] for m in s.messages()] == ["from-311", "from-31"]


def test_cli_time_bound_exit(broker, prefix):
    """mosquitto_sub -W exits when nothing arrives (sanity of the harness)."""
    t0 = time.monotonic()
    s = Sub(broker, [f"{prefix}/nothing"], count=1, timeout=1)
    assert s.messages() == []
    assert time.monotonic() - t0 < 10


# ------------------------------------------------- wrenmq's own command line and config
#
# These start wrenmq themselves (flags and config files are wrenmq's), each bounded in
# time, listening on loopback only.

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

from conftest import REPO_ROOT, _find_wrenmq, free_port  # noqa: E402


class Wren:
    """A wrenmq process started with the given arguments in `workdir`."""

    def __init__(self, workdir: Path, args, port, host="127.0.0.1"):
        self.host, self.port, self.workdir = host, port, workdir
        self.log_path = workdir / f"wrenmq-{port}.stderr"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([_find_wrenmq(), *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=workdir)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"wrenmq exited {self.proc.returncode}:\n{self.logs()}")
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"wrenmq not listening on {host}:{port}:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def wren(tmp_path):
    made = []

    def start(args, port, host="127.0.0.1", workdir=None):
        w = Wren(workdir or tmp_path, args, port, host)
        made.append(w)
        return w

    yield start
    for w in made:
        w.stop()


def run_wrenmq(*args, cwd=None, input=None):
    return subprocess.run([_find_wrenmq(), *args], capture_output=True, text=True, timeout=15,
                          cwd=cwd, input=input)


def round_trip(b, topic, version="mqttv311"):
    s = Sub(b, [topic], count=1, qos=1, version=version, timeout=10)
    pub(b, topic, "-q", "1", "-m", "hello", version=version)
    assert [m[4] for m in s.messages()] == ["hello"]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.wrenmq_only
def test_listen_flag_accepts_localhost_host_port(wren, prefix):
    """`-l localhost:PORT` listens on both loopback addresses, as `listener PORT localhost`
    does (it used to be refused: 'expected IP:PORT')."""
    port = free_port()
    w = wren(["-l", f"localhost:{port}", "--no-persistence"], port)
    round_trip(w, f"{prefix}/v4")
    if ipv6_loopback():
        class V6:
            host, port = "::1", w.port
        round_trip(V6, f"{prefix}/v6")
    assert w.proc.poll() is None


@pytest.mark.wrenmq_only
def test_listen_flag_errors_name_the_flag():
    p = run_wrenmq("-l", "broker.example:1883")
    assert p.returncode == 2
    assert "-l/--listen" in p.stderr and "localhost:PORT" in p.stderr


@pytest.mark.wrenmq_only
def test_help_lists_config_flag():
    p = run_wrenmq("--help")
    assert p.returncode == 0
    assert "-c, --config FILE" in p.stdout


@pytest.mark.wrenmq_only
def test_every_config_error_is_reported_with_did_you_mean(tmp_path):
    """All bad lines at once, not one per restart; misspelt keys get a suggestion."""
    conf = tmp_path / "w.conf"
    conf.write_text("listener 1883 127.0.0.1\n"
                    "persistance_location /tmp/x\n"
                    "allow_anonymous maybe\n"
                    "lisetner 1884\n")
    p = run_wrenmq("-c", str(conf))
    assert p.returncode == 1
    lines = [l for l in p.stderr.splitlines() if l.startswith("wrenmq: ")]
    assert lines == [
        f"wrenmq: {conf}:2: persistance_location: unknown configuration key (did you mean `persistence_location`?)",
        f"wrenmq: {conf}:3: allow_anonymous: invalid value 'maybe' (expected true or false)",
        f"wrenmq: {conf}:4: lisetner: unknown configuration key (did you mean `listener`?)",
    ], p.stderr


@pytest.mark.wrenmq_only
def test_huge_persistent_client_expiration_is_refused_at_load(tmp_path):
    """300000000000y used to load, then abort the broker (Instant overflow) at the first
    persistent disconnect and again at every start."""
    conf = tmp_path / "w.conf"
    conf.write_text(f"listener {free_port()} 127.0.0.1\npersistent_client_expiration 300000000000y\n")
    p = run_wrenmq("-c", str(conf))
    assert p.returncode == 1
    assert f"{conf}:2: persistent_client_expiration: invalid value '300000000000y'" in p.stderr


@pytest.mark.wrenmq_only
def test_max_v5_time_values_disconnect_cleanly_and_the_broker_keeps_serving(wren, tmp_path, prefix):
    """Session expiry, will delay and message expiry 0xFFFFFFFF, keepalive 65535, with the
    longest persistent_client_expiration accepted: the clean disconnect, a restart on the
    same data and the broker's service afterwards must all survive."""
    import mqtt5raw as m

    port = free_port()
    conf = tmp_path / "w.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    f"persistent_client_expiration 136y\npersistence_location {tmp_path / 'data'}\n")
    w = wren(["-c", str(conf)], port)
    forever = 0xFFFFFFFF
    c = m.Raw5(w.host, w.port, timeout=5)
    ack = c.connect5("forever", clean_start=False, keepalive=65535,
                     props=[(m.SESSION_EXPIRY, forever)],
                     will=dict(topic=f"{prefix}/will", payload="bye", props=[(m.WILL_DELAY, forever)]))
    assert ack.reason == 0
    c.send(m.publish(f"{prefix}/kept", "long", qos=0, retain=True, props=[(m.MESSAGE_EXPIRY, forever)]))
    c.send(m.disconnect(0x00))
    c.close()
    round_trip(w, f"{prefix}/after")
    assert w.proc.poll() is None, w.logs()
    assert w.stop() == 0, w.logs()
    # The restart restores the session and re-arms its expiry from the same values.
    w = wren(["-c", str(conf)], port)
    s = Sub(w, [f"{prefix}/kept"], count=1, timeout=10, version="mqttv5")
    assert [m_[4] for m_ in s.messages()] == ["long"]
    c = m.Raw5(w.host, w.port, timeout=5)
    assert c.connect5("forever", clean_start=False, keepalive=0).session_present
    c.close()
    round_trip(w, f"{prefix}/after-restart")
    assert w.stop() == 0, w.logs()


@pytest.mark.wrenmq_only
def test_log_dest_file_is_written_and_reopened_on_sighup(wren, tmp_path):
    """`log_dest file PATH` (Debian's stock config has it) used to be refused."""
    port = free_port()
    log = tmp_path / "wrenmq.log"
    conf = tmp_path / "w.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"log_dest file {log}\n")
    w = wren(["-c", str(conf)], port)
    deadline = time.monotonic() + 5
    while "started" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "started" in log.read_text()
    assert oct(log.stat().st_mode & 0o777) == "0o640"
    # logrotate: move the file away, SIGHUP, and the next lines go to a new file.
    log.rename(tmp_path / "wrenmq.log.1")
    w.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    w.stop()
    assert "stopped" in log.read_text()
    assert "stopped" not in (tmp_path / "wrenmq.log.1").read_text()


@pytest.mark.wrenmq_only
def test_debian_stock_mosquitto_conf_starts(wren, tmp_path, prefix):
    """Debian's /etc/mosquitto/mosquitto.conf, with its paths moved into a temporary
    directory: it loads, logs to its file, and a missing pid file directory is a warning."""
    stock = (REPO_ROOT / "tests/data/config/debian-mosquitto.conf").read_text()
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "README").write_text("Any files placed in this directory ...\n")
    text = (stock.replace("/run/mosquitto/", f"{tmp_path}/no-such-dir/")
                 .replace("/var/lib/mosquitto/", f"{tmp_path}/data/")
                 .replace("/var/log/mosquitto/", f"{tmp_path}/")
                 .replace("/etc/mosquitto/conf.d", str(confd)))
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(text)
    port = free_port()
    w = wren(["-c", str(conf), "-l", f"127.0.0.1:{port}"], port)
    round_trip(w, f"{prefix}/stock")
    assert w.stop() == 0
    log = (tmp_path / "mosquitto.log").read_text()
    assert "started" in log and "pid_file" in log


@pytest.mark.wrenmq_only
def test_world_readable_password_file_warns(tmp_path):
    """As Mosquitto 2.0: `wrenmq passwd` and the broker warn about a world-readable file."""
    pw = tmp_path / "pw"
    assert run_wrenmq("passwd", "-c", "-b", str(pw), "alice", "s3").returncode == 0
    assert oct(pw.stat().st_mode & 0o777) == "0o600"
    os.chmod(pw, 0o644)
    p = run_wrenmq("passwd", "-b", str(pw), "bob", "s3")
    assert p.returncode == 0
    assert "world readable" in p.stderr
    assert oct(pw.stat().st_mode & 0o777) == "0o644", "the mode is kept"
    assert not [f for f in os.listdir(tmp_path) if f != "pw"], "no temporary file left"
    port = free_port()
    conf = tmp_path / "w.conf"
    conf.write_text(f"listener {port} 127.0.0.1\npassword_file {pw}\npersistence false\n")
    w = Wren(tmp_path, ["-c", str(conf)], port)
    try:
        assert "world readable" in w.logs()
    finally:
        w.stop()
