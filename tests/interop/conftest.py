"""Broker fixtures for the black-box suite.

Choose the broker with `--broker=wrenmq|mosquitto` or the BROKER env var
(default: wrenmq). wrenmq is started from $WRENMQ_BIN or target/debug/wrenmq
(relative to the repo root); mosquitto from $MOSQUITTO_BIN or `mosquitto` on
PATH (/usr/sbin is searched too).

Fixtures:
  broker         (module scope) shared broker, returns a Broker with .host/.port
  fresh_broker   (function scope) a broker of its own for tests that need a
                 clean slate (retained store, sessions, $SYS, ...)
  prefix         a unique topic prefix for the current test
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKERS = ("wrenmq", "mosquitto")


def pytest_addoption(parser):
    parser.addoption(
        "--broker",
        default=None,
        choices=BROKERS,
        help="broker under test (default: $BROKER or wrenmq)",
    )


def pytest_configure(config):
    name = config.getoption("--broker") or os.environ.get("BROKER", "wrenmq")
    if name not in BROKERS:
        raise pytest.UsageError(f"BROKER must be one of {BROKERS}, not {name!r}")
    config._broker_name = name
    config.addinivalue_line("markers", "wrenmq_only: intended wrenmq behaviour that Mosquitto lacks")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_report_header(config):
    return f"broker under test: {config._broker_name}"


_BROKER_NAME = None


def broker_name() -> str:
    return _BROKER_NAME or os.environ.get("BROKER", "wrenmq")


def broker_is(name: str) -> bool:
    return broker_name() == name


def pytest_sessionstart(session):
    global _BROKER_NAME
    _BROKER_NAME = session.config._broker_name


def pytest_collection_modifyitems(config, items):
    if config._broker_name == "mosquitto":
        skip = pytest.mark.skip(reason="wrenmq-only behaviour (Mosquitto intentionally differs)")
        for item in items:
            if "wrenmq_only" in item.keywords:
                item.add_marker(skip)


# ------------------------------------------------------------------ process


_given_ports: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this run handed out before: the kernel may return
    the same port to two binds in a row once the first socket is closed (a five-listener
    config once got one port twice)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def _find_mosquitto() -> str:
    env = os.environ.get("MOSQUITTO_BIN")
    if env:
        return env
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        pytest.fail("mosquitto not found (install the `mosquitto` package or set MOSQUITTO_BIN)")
    return found


def _find_wrenmq() -> str:
    p = Path(os.environ.get("WRENMQ_BIN", "target/debug/wrenmq"))
    if not p.is_absolute():
        p = REPO_ROOT / p
    if not p.exists():
        pytest.fail(f"wrenmq binary not found at {p} (run `cargo build` or set WRENMQ_BIN)")
    return str(p)


class Broker:
    def __init__(self, name: str, workdir: Path):
        self.name = name
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / "broker.stderr"
        self.proc = None

    @property
    def addr(self):
        return (self.host, self.port)

    def start(self, timeout=10.0):
        if self.name == "mosquitto":
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} {self.host}\n"
                "allow_anonymous true\n"
                "persistence false\n"
                # wrenmq's default limit; Mosquitto's default is unlimited
                "max_packet_size 2000000\n"
                "log_dest stderr\n"
                "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            )
            cmd = [_find_mosquitto(), "-c", str(conf)]
        else:
            cmd = [_find_wrenmq(), "-l", f"{self.host}:{self.port}", "-v"]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                socket.create_connection(self.addr, timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not accept connections within {timeout}s:\n{self.stderr()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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

    def stderr(self, tail=8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for fname in ("fresh_broker", "broker"):
            b = item.funcargs.get(fname) if hasattr(item, "funcargs") else None
            if isinstance(b, Broker):
                state = "running" if b.alive() else f"EXITED rc={b.proc.returncode}"
                rep.sections.append((f"{b.name} stderr ({state}, tail)", b.stderr()))


def _make_broker(tmp_path_factory):
    name = broker_name()
    b = Broker(name, Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_path_factory.getbasetemp())))
    return b.start()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = _make_broker(tmp_path_factory)
    yield b
    crashed = not b.alive()
    b.stop()
    if crashed:
        pytest.fail(f"{b.name} died during the module:\n{b.stderr()}")


@pytest.fixture
def fresh_broker(tmp_path_factory):
    b = _make_broker(tmp_path_factory)
    yield b
    b.stop()


@pytest.fixture
def prefix(request):
    """Unique topic prefix so tests sharing a broker never see each other's traffic."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:40]
    return f"t/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def paho_factory():
    """paho(broker, **kw) -> connected pahoutil.Paho; all closed at teardown."""
    from pahoutil import Paho

    made = []

    def make(b, **kw):
        p = Paho(b, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        try:
            p.close()
        except Exception:
            pass


@pytest.fixture
def raw_factory():
    """raw(broker) -> mqttraw.RawClient (not yet connected); all closed at teardown."""
    from mqttraw import RawClient

    made = []

    def make(b, timeout=5.0):
        c = RawClient(b.host, b.port, timeout=timeout)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
