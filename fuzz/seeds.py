#!/usr/bin/env python3
"""Regenerates the committed seed corpus in fuzz/corpus/<target>/ (deterministic).

- decode: every codec vector of tests/data/codec/*.txt as a binary file.
- split:  the valid vectors of one protocol version concatenated into a stream (a CONNECT
          first), with the harness's prefix (size-limit selector, split points).
- broker: hand-written operation sequences (format: src/fuzzing.rs, `broker`).
- topic:  0xFF-separated filters and topics.

Run from anywhere: python3 fuzz/seeds.py
"""
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def vectors(path):
    """Yields (name, version, bytes) for each `=== name` vector of a codec vector file."""
    name, version, hexs = None, None, []
    for line in list(path.read_text().splitlines()) + ["=== end"]:
        line = line.split("#", 1)[0].strip()
        if line.startswith("=== ") or line.startswith("==="):
            if name and hexs:
                yield name, version, bytes.fromhex("".join(hexs))
            name, version, hexs = line[3:].split()[0], None, []
        elif re.match(r"^[a-z_]+:", line):
            key, value = line.split(":", 1)
            if key == "version":
                version = value.strip()
        elif line:
            hexs.append(line.replace(" ", ""))


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main():
    streams = {"3.1.1": [], "5.0": []}
    connects = {}
    for f in sorted((ROOT / "tests" / "data" / "codec").glob("*.txt")):
        for name, version, data in vectors(f):
            write("decode", f"{f.stem}-{name}", data)
            if f.stem.startswith("valid") and version in streams:
                streams[version].append(data)
            if f.stem.startswith("valid") and name.startswith(("connect_v311", "connect_v5")):
                # The first CONNECT of each version opens that version's stream.
                connects.setdefault("5.0" if "v5" in name else "3.1.1", data)
    for version in ("3.1.1", "5.0"):
        stream = connects[version] + b"".join(streams[version])
        cuts = [1, len(stream) // 3, len(stream) // 2, len(stream) - 1]
        prefix = bytes([0, len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts)
        write("split", f"stream-{version}", prefix + stream)
        # The same stream under a 64-byte packet limit: ends at the first large packet.
        write("split", f"stream-{version}-limit64", bytes([2]) + prefix[1:] + stream)

    # broker: see `BrokerRun::step`. Opcode low nibble = operation, high nibble = slot.
    open0, open1, open2 = 0x00, 0x10, 0x20
    def connect(slot, flags, cid, keepalive=0):
        return [slot << 4 | 1, flags, cid, keepalive]
    def sub(slot, filt, qos, pid=1):
        return [slot << 4 | 2, 0, filt, qos, pid, 0]
    def pub(slot, topic, qos, retain=False, pid=1):
        return [slot << 4 | 4, (topic << 2) | qos | (0x80 if retain else 0), pid]
    def ack(slot, kind, pick=0):
        return [slot << 4 | kind, pick]
    round_trip = [0x01, open0, open1] + connect(0, 0x04, 0) + connect(1, 0x04, 1) \
        + sub(1, 3, 1) + pub(0, 0, 1) + pub(0, 1, 2) + ack(1, 6) + ack(1, 7) + ack(1, 9)
    write("broker", "round-trip", bytes(round_trip))
    # Persistent session, offline queue over the limits, reconnect, drain.
    offline = [0x05, open0, open1] + connect(0, 0x00, 0) + sub(0, 1, 2) + [0x0B] \
        + connect(1, 0x04, 1) \
        + pub(1, 1, 1) + pub(1, 2, 2, pid=2) + pub(1, 0, 1, pid=3) + pub(1, 1, 0) \
        + [open0] + connect(0, 0x00, 0) + ack(0, 6) + ack(0, 7) + ack(0, 9) + [0x0E, 0xFF, 0xFF]
    write("broker", "offline-queue", bytes(offline))
    # Retained messages, wills, takeover, keepalive timeout and a slow consumer.
    wills = [0x43, open0, open1, open2] + connect(0, 0x4C | 0x10, 0, 1) + connect(1, 0x04, 1) \
        + sub(1, 3, 2) + pub(1, 0, 1, retain=True) + connect(2, 0x04, 0) \
        + [0x0D, 0x00, 0x10] + [0x2C, 0x00] + sub(2, 0, 1) + [0x1A, 0x1E, 0x40, 0x00]
    write("broker", "retained-will-takeover", bytes(wills))
    raw = [0x00, open0] + [0x0F, 14] + list(bytes.fromhex("100c00044d5154540402000000023031")[:14]) \
        + [0x0F, 2, 0xC0, 0x00] + [0x0F, 2, 0x00, 0x00]
    write("broker", "raw-packets", bytes(raw))

    topics = [
        ["a/b", "a/#", "+", "#", "a", "$SYS/x", "$SYS/#", "+/b", "a/+", "/", "a//b", "a/+/b"],
        ["#", "+/+", "/+", "/a", "+", "a/", "a/+", "$a", "$a/+", "+/#", "a/b/c", "a/#"],
    ]
    for i, words in enumerate(topics):
        write("topic", f"words-{i}", b"\xff".join(w.encode() for w in words))


if __name__ == "__main__":
    main()
