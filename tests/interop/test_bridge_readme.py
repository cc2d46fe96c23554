"""The README's bridge examples ("Bridging and scaling out"), run as written against a
Mosquitto 2.0 upstream: the upstream's host name, port and the certificate paths are
replaced by the test's, nothing else. The bridging broker is wrenmq (or Mosquitto with
`--broker mosquitto`: the examples use Mosquitto's keys with Mosquitto's meaning).

- the MQTT 5 example: TLS with a CA file, user name and password, topics remapped with
  prefixes out and in;
- the client-certificate example: 3.1.1, TLS with a client certificate
  (`require_certificate true` upstream), `notifications false`.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from certs import Pki
from conftest import REPO_ROOT, _find_mosquitto, _find_wrenmq, broker_is, free_port

WAIT = 20.0


def readme_examples() -> dict[str, str]:
    """The config blocks of the README's bridge section, by connection name."""
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("## Bridging and scaling out\n")
    section = text[start:text.index("\n## ", start + 1)]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    out = {}
    for b in blocks:
        m = re.search(r"^connection (\S+)$", b, re.M)
        if m:
            out[m.group(1)] = b
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("bridge-pki"))
    p.server_crt, p.server_key = p.server()
    p.site_crt, p.site_key = p.client("site-17", "/CN=site-17")
    return p


def wait_port(port: int, proc: subprocess.Popen, log: Path):
    import socket

    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)


def start(cmd, log: Path, port: int, cwd: Path) -> subprocess.Popen:
    p = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=cwd)
    wait_port(port, p, log)
    return p


def upstream(tmp: Path, pki, port: int, client_cert: bool) -> subprocess.Popen:
    """A Mosquitto 2.0 upstream on 127.0.0.1:`port`, TLS with the test CA; either user
    names and passwords (`site-17`, `cloud-app`) or client certificates (CN = user)."""
    conf = [f"listener {port} 127.0.0.1",
            f"cafile {pki.ca}", f"certfile {pki.server_crt}", f"keyfile {pki.server_key}",
            "allow_anonymous false", "persistence false"]
    if client_cert:
        conf += ["require_certificate true", "use_identity_as_username true"]
    else:
        pw = tmp / "passwd"
        pw.write_text("")
        for user, secret in (("site-17", "change-me"), ("cloud-app", "app-pw")):
            subprocess.run(["mosquitto_passwd", "-b", str(pw), user, secret], check=True,
                           capture_output=True, timeout=10)
        conf.append(f"password_file {pw}")
    if os.geteuid() == 0:
        conf.append("user root")
    (tmp / "upstream.conf").write_text("\n".join(conf) + "\n")
    return start([_find_mosquitto(), "-c", str(tmp / "upstream.conf")],
                 tmp / "upstream.log", port, tmp)


def bridging_broker(tmp: Path, example: str, pki, up_port: int) -> tuple[subprocess.Popen, int]:
    """The README example, copied: host, port and paths replaced by the test's."""
    local = free_port()
    certs = tmp / "certs"
    certs.mkdir(exist_ok=True)
    for src, dst in ((pki.ca, "upstream-ca.crt"), (pki.site_crt, "site-17.crt"),
                     (pki.site_key, "site-17.key")):
        (certs / dst).write_bytes(src.read_bytes())
    conf = (example
            .replace("mqtt.example.com:8883", f"localhost:{up_port}")
            .replace("/etc/ssl/certs/ca-certificates.crt", str(pki.ca))
            .replace("/etc/wrenmq/certs/", f"{certs}/")
            .replace("/var/lib/wrenmq/", f"{tmp / 'data'}/"))
    conf = re.sub(r"^listener 1883$", f"listener {local} 127.0.0.1", conf, flags=re.M)
    assert f"listener {local} 127.0.0.1" in conf and f"localhost:{up_port}" in conf
    (tmp / "data").mkdir(exist_ok=True)
    if broker_is("mosquitto"):
        conf += "user root\n" if os.geteuid() == 0 else ""
        cmd = [_find_mosquitto(), "-c", str(tmp / "bridge.conf")]
    else:
        cmd = [_find_wrenmq(), "-c", str(tmp / "bridge.conf")]
    (tmp / "bridge.conf").write_text(conf)
    return start(cmd, tmp / "bridge.log", local, tmp), local


class Sub:
    def __init__(self, port: int, topic: str, tls=None, auth=None):
        self.q: queue.Queue = queue.Queue()
        self.subscribed = queue.Queue()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        if tls:
            self.c.tls_set(ca_certs=str(tls[0]), certfile=tls[1] and str(tls[1]),
                           keyfile=tls[2] and str(tls[2]))
        if auth:
            self.c.username_pw_set(*auth)
        self.c.on_message = lambda c, u, m: self.q.put((m.topic, m.payload.decode(), m.retain))
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.put(rcs)
        self.c.connect("localhost", port, 30)
        self.c.loop_start()
        rcs = self.subscribed.get(timeout=WAIT)
        assert not rcs[0].is_failure, rcs

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def publish(port: int, topic: str, payload: str, tls=None, auth=None):
    args = ["mosquitto_pub", "-h", "localhost", "-p", str(port), "-q", "1", "-t", topic,
            "-m", payload]
    if tls:
        args += ["--cafile", str(tls[0])]
        if tls[1]:
            args += ["--cert", str(tls[1]), "--key", str(tls[2])]
    if auth:
        args += ["-u", auth[0], "-P", auth[1]]
    subprocess.run(args, check=True, capture_output=True, timeout=10)


def until_delivered(sub: Sub, send, want_topic: str) -> tuple[str, str, bool]:
    """Sends (again, every second) until `sub` gets a message on `want_topic`: the bridge
    connects and subscribes on its own schedule."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        send()
        try:
            while True:
                got = sub.q.get(timeout=1.0)
                if got[0] == want_topic:
                    return got
        except queue.Empty:
            continue
    pytest.fail(f"nothing arrived on {want_topic}")


def test_readme_mqtt5_example_with_user_name_forwards_out_and_in(tmp_path, pki):
    example = readme_examples()["cloud"]
    up_port = free_port()
    up = upstream(tmp_path, pki, up_port, client_cert=False)
    bridge, local = bridging_broker(tmp_path, example, pki, up_port)
    tls = (pki.ca, None, None)
    app = ("cloud-app", "app-pw")
    cloud = Sub(up_port, "sites/site-17/#", tls=tls, auth=app)
    site = Sub(local, "commands/#")
    try:
        # out: telemetry/... arrives upstream under the site's prefix.
        got = until_delivered(cloud, lambda: publish(local, "telemetry/temp", "21.5"),
                              "sites/site-17/telemetry/temp")
        assert got[1] == "21.5"
        # in: the upstream's sites/site-17/commands/... arrives locally without it.
        got = until_delivered(
            site, lambda: publish(up_port, "sites/site-17/commands/reboot", "now", tls=tls,
                                  auth=app), "commands/reboot")
        assert got[1] == "now"
        # The bridge's state, retained upstream (notifications default true).
        state = Sub(up_port, "$SYS/broker/connection/site-17/state", tls=tls, auth=app)
        assert state.q.get(timeout=WAIT) == ("$SYS/broker/connection/site-17/state", "1", True)
        state.close()
    finally:
        cloud.close()
        site.close()
        for p in (bridge, up):
            p.terminate()
            p.wait(timeout=10)


def test_readme_client_certificate_example_forwards_out(tmp_path, pki):
    example = readme_examples()["uplink"]
    up_port = free_port()
    up = upstream(tmp_path, pki, up_port, client_cert=True)
    bridge, local = bridging_broker(tmp_path, example, pki, up_port)
    # A cloud-side consumer with its own certificate (CN = its user name).
    app_crt, app_key = pki.client("cloud-app", "/CN=cloud-app")
    cloud = Sub(up_port, "#", tls=(pki.ca, app_crt, app_key))
    try:
        got = until_delivered(cloud, lambda: publish(local, "sites/site-17/door", "open"),
                              "sites/site-17/door")
        assert got[1] == "open"
        # notifications false: no (retained) state message went upstream.
        state = Sub(up_port, "$SYS/broker/connection/#", tls=(pki.ca, app_crt, app_key))
        time.sleep(1.0)
        assert state.q.empty(), state.q.get()
        state.close()
    finally:
        cloud.close()
        for p in (bridge, up):
            p.terminate()
            p.wait(timeout=10)
