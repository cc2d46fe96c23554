"""Runs every tests/conformance/*.txt sequence against a fresh broker.

The format is documented in tests/conformance/README.md. A Rust runner will
execute the same files in-process later, so this parser is deliberately strict
and the format deliberately small.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import broker_name

CONF_DIR = Path(__file__).resolve().parents[1] / "conformance"
FILES = sorted(CONF_DIR.glob("*.txt"))

EXPECT_TIMEOUT = 3.0  # seconds for `expect` and `expect-close`
NAME = r"[A-Za-z][A-Za-z0-9_]*"
NORM_ID = re.compile(r"\[MQTT-[0-9.]+(-[0-9]+)?\]")


@dataclass
class Step:
    lineno: int
    client: str | None
    op: str
    arg: object = None


class FormatError(Exception):
    pass


def parse(path: Path):
    """-> (header, skips: {broker: reason}, steps)."""
    steps: list[Step] = []
    skips: dict[str, str] = {}
    header = None
    opened: set[str] = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if header is None and line.startswith("#"):
            header = line[1:].strip()
        code = line.split("#", 1)[0].strip()
        if not code:
            continue
        words = code.split()
        if words[0] == "skip":
            m = re.fullmatch(r"skip\s+(" + NAME + r")\s*:\s*(.+)", line.strip())
            if not m:
                raise FormatError(f"{path.name}:{n}: `skip BROKER: reason`")
            skips[m.group(1)] = m.group(2)
            continue
        if words[0] == "sleep":
            if len(words) != 2 or not words[1].isdigit():
                raise FormatError(f"{path.name}:{n}: `sleep MS`")
            steps.append(Step(n, None, "sleep", int(words[1])))
            continue
        if words[0] == "client":
            if len(words) != 3 or words[2] != "connect" or not re.fullmatch(NAME, words[1]):
                raise FormatError(f"{path.name}:{n}: `client NAME connect`")
            opened.add(words[1])
            steps.append(Step(n, words[1], "connect"))
            continue
        name, op, rest = words[0], words[1] if len(words) > 1 else "", words[2:]
        if name not in opened:
            raise FormatError(f"{path.name}:{n}: client {name!r} used before `client {name} connect`")
        if op in ("send", "expect"):
            try:
                data = bytes.fromhex("".join(rest))
            except ValueError as e:
                raise FormatError(f"{path.name}:{n}: bad hex: {e}") from None
            if not data:
                raise FormatError(f"{path.name}:{n}: `{op}` needs bytes")
            steps.append(Step(n, name, op, data))
        elif op in ("expect-close", "close") and not rest:
            steps.append(Step(n, name, op))
        elif op == "expect-none" and len(rest) == 1 and rest[0].isdigit():
            steps.append(Step(n, name, op, int(rest[0])))
        else:
            raise FormatError(f"{path.name}:{n}: unknown step {code!r}")
    if header is None or not NORM_ID.search(header) and "MQTT" not in header:
        raise FormatError(f"{path.name}: first line must be `# [MQTT-x.y.z-n] description`")
    return header, skips, steps


def run(path: Path, host: str, port: int):
    _, _, steps = parse(path)
    socks: dict[str, socket.socket] = {}
    bufs: dict[str, bytes] = {}

    def recv(name, deadline):
        s = socks[name]
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        s.settimeout(left)
        try:
            return s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    def where(st):
        return f"{path.name}:{st.lineno} ({st.client} {st.op})"

    try:
        for st in steps:
            if st.op == "sleep":
                time.sleep(st.arg / 1000)
            elif st.op == "connect":
                s = socket.create_connection((host, port), timeout=5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                socks[st.client], bufs[st.client] = s, b""
            elif st.op == "send":
                try:
                    socks[st.client].sendall(st.arg)
                except OSError as e:
                    raise AssertionError(f"{where(st)}: send failed: {e}") from None
            elif st.op == "close":
                socks[st.client].close()
            elif st.op == "expect":
                want = st.arg
                deadline = time.monotonic() + EXPECT_TIMEOUT
                while len(bufs[st.client]) < len(want):
                    try:
                        chunk = recv(st.client, deadline)
                    except socket.timeout:
                        raise AssertionError(f"{where(st)}: timeout; want {want.hex(' ')}, "
                                             f"got {bufs[st.client].hex(' ')}") from None
                    if not chunk:
                        raise AssertionError(f"{where(st)}: closed; want {want.hex(' ')}, "
                                             f"got {bufs[st.client].hex(' ')}")
                    bufs[st.client] += chunk
                got, bufs[st.client] = bufs[st.client][:len(want)], bufs[st.client][len(want):]
                assert got == want, f"{where(st)}:\n want {want.hex(' ')}\n  got {got.hex(' ')}"
            elif st.op == "expect-close":
                deadline = time.monotonic() + EXPECT_TIMEOUT
                extra = bufs[st.client]
                while True:
                    try:
                        chunk = recv(st.client, deadline)
                    except socket.timeout:
                        raise AssertionError(f"{where(st)}: still open after {EXPECT_TIMEOUT}s") from None
                    if not chunk:
                        break
                    extra += chunk
                assert not extra, f"{where(st)}: bytes before close: {extra.hex(' ')}"
                bufs[st.client] = b""
            elif st.op == "expect-none":
                deadline = time.monotonic() + st.arg / 1000
                extra = bufs[st.client]
                try:
                    chunk = recv(st.client, deadline)
                    extra += chunk
                    if not chunk:
                        raise AssertionError(f"{where(st)}: connection closed")
                except socket.timeout:
                    pass
                assert not extra, f"{where(st)}: unexpected bytes {extra.hex(' ')}"
    finally:
        for s in socks.values():
            s.close()


def test_conformance_files_exist():
    assert len(FILES) >= 25, f"expected >= 25 conformance files in {CONF_DIR}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_conformance_file_parses(path):
    """Broker-independent: every file is well-formed and names its normative ids."""
    header, _, steps = parse(path)
    assert NORM_ID.search(header) or "MQTT" in header
    assert steps


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_conformance(path, fresh_broker):
    _, skips, _ = parse(path)
    if broker_name() in skips:
        pytest.skip(f"{broker_name()}: {skips[broker_name()]}")
    run(path, fresh_broker.host, fresh_broker.port)
