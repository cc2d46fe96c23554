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
