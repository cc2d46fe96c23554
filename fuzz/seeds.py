#!/usr/bin/env python3
"""Regenerates the committed seed corpus in fuzz/corpus/<target>/ (deterministic).

- decode: every codec vector of tests/data/codec/*.txt as a binary file.
- split:  the valid vectors of one protocol version concatenated into a stream (a CONNECT
          first), with the harness's prefix (size-limit selector, split points).
- broker: hand-written operation sequences (format: src/broker/fuzzing/mod.rs, `broker`).
- topic:  0xFF-separated filters and topics.
- websocket: raw client streams after the harness's upgrade request (mode byte 0), a raw
          request (mode 4/6), and generated frames (mode 1; format: net/websocket/fuzzing.rs).

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

    # 5.0: operations on a slot whose client connected with 5.0 read extra bytes (see
    # `BrokerRun::step`); flags & 3 == 3 picks 5.0 in CONNECT, which then reads a property
    # selector and one byte per selected property.
    def connect5(slot, flags, cid, keepalive=0, sel=0, *vals):
        return [slot << 4 | 1, flags | 3, cid, keepalive, sel, *vals]
    def sub5(slot, entries, pid=1, sid=0):
        out = [slot << 4 | 2, len(entries) - 1]
        for filt, qos, opts in entries:
            out += [filt, qos, opts]
        return out + [pid, 0, sid]
    def pub5(slot, topic, qos, x=0, retain=False, pid=1):
        return pub(slot, topic, qos, retain, pid) + [x]
    def ack5(slot, kind, pick=0, x=0):
        return [slot << 4 | kind, pick, x]
    NO_LOCAL, RAP, SHARED_G, SHARED_H = 0x01, 0x02, 0x10, 0x30
    SET_ALIAS, USE_ALIAS, BAD_ALIAS = 0x01, 0x02, 0x03
    # No local, shared groups, subscription identifiers, topic aliases, user properties, a
    # receive maximum of 2 and a maximum packet size of 64.
    share = [0x00, open0, open1, open2] \
        + connect5(0, 0x04, 0, 0, 0x06, 3, 6) + connect5(1, 0x04, 1) + connect5(2, 0x04, 2) \
        + sub5(0, [(1, 1, NO_LOCAL), (0, 2, SHARED_G)], sid=5) \
        + sub5(1, [(0, 1, SHARED_G), (3, 1, 0)], pid=2, sid=7) \
        + sub5(2, [(0, 2, SHARED_H | RAP)], pid=3) \
        + pub5(0, 0, 1) + pub5(0, 1, 2, SET_ALIAS | 1 << 2, pid=2) + pub5(0, 1, 1, USE_ALIAS | 1 << 2, pid=3) \
        + pub5(1, 1, 1, 0x80, pid=1) + pub5(1, 0, 2, 0x10 | 2 << 5, retain=True, pid=2) \
        + ack5(0, 6) + ack5(0, 7) + ack5(0, 9) + ack5(1, 6) + ack5(1, 7) + ack5(1, 8) + ack5(1, 9) \
        + ack5(2, 7) + ack5(2, 9) + pub5(2, 0, 1, BAD_ALIAS)
    write("broker", "v5-shared-no-local-aliases", bytes(share))
    # Session expiry, will delay, DISCONNECT with will and a new expiry, a restart (open on
    # a slot that has a socket) and the session resumed.
    will = 0x08 | 0x10  # will on "a/b", QoS 0
    expiry = [0x00, open0, open1] \
        + connect5(0, will, 0, 0, 0x21, 2, 0x0E) + connect5(1, 0x04, 1) \
        + sub5(1, [(1, 1, 0)]) + sub5(0, [(9, 1, RAP)], pid=2) \
        + [0x0B, 0x01 | 2 << 2] \
        + pub5(1, 4, 1, retain=True) + pub5(1, 4, 2, 0x10 | 3 << 5, pid=2) \
        + [0x0D, 0x7D, 0x00] + [open1] + [open0] \
        + connect5(0, 0x00, 0, 0, 0x01, 3) + ack5(0, 6) + ack5(0, 7) + ack5(0, 9) \
        + [0x0D, 0x00, 0x10] + [open0] + [open0] + connect5(0, 0x00, 0) + [0x0B, 0x04]
    write("broker", "v5-expiry-will-restart", bytes(expiry))
    # Limits: receive maximum 1 and maximum packet size 24 against large PUBLISHes, an
    # invalid receive maximum, AUTH, raising the session expiry from 0, takeover.
    limits = [0x01, open0, open1, open2] \
        + connect5(0, 0x04, 0, 0, 0x06, 1, 2) + connect5(1, 0x04, 1, 0, 0x02, 0) \
        + [open1] + connect5(1, 0x04, 1, 0, 0x98, 1) \
        + sub5(0, [(3, 2, 0)]) + pub5(1, 1, 1) + pub5(1, 1, 1, 0x80, pid=2) + pub5(1, 2, 2, pid=3) \
        + pub5(1, 0, 1, pid=4) + ack5(0, 6) + ack5(0, 7) + ack5(0, 9) + ack5(0, 6, 1) \
        + [0x1B, 0xE0] + connect5(2, 0x00, 0, 0, 0x01, 0) + [0x2B, 0x08] \
        + [open1] + connect5(1, 0x04, 1) + sub5(1, [(1, 1, NO_LOCAL)]) + pub5(1, 1, 1)
    write("broker", "v5-limits-auth-takeover", bytes(limits))

    topics = [
        ["a/b", "a/#", "+", "#", "a", "$SYS/x", "$SYS/#", "+/b", "a/+", "/", "a//b", "a/+/b"],
        ["#", "+/+", "/+", "/a", "+", "a/", "a/+", "$a", "$a/+", "+/#", "a/b/c", "a/#"],
    ]
    for i, words in enumerate(topics):
        write("topic", f"words-{i}", b"\xff".join(w.encode() for w in words))

    websocket_seeds(connects["3.1.1"])


def ws_frame(b0, payload, mask=b"\x37\xfa\x21\x3d"):
    """A masked client frame with first byte b0 (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def websocket_seeds(connect):
    cuts = [3, 9, 40]
    split = bytes([len(cuts)]) + b"".join(struct.pack("<H", c) for c in cuts)
    ping_req = b"\xc0\x00"
    frames = ws_frame(0x82, connect + ping_req) + ws_frame(0x02, connect[:4]) \
        + ws_frame(0x89, b"ping") + ws_frame(0x80, connect[4:]) + ws_frame(0x82, bytes(300)) \
        + ws_frame(0x88, b"\x03\xe8bye")
    write("websocket", "frames", bytes([0]) + split + frames)
    write("websocket", "unmasked", bytes([0, 0]) + b"\x82\x02\xc0\x00")
    write("websocket", "text", bytes([0, 0]) + ws_frame(0x81, b"hello"))
    write("websocket", "length-2-pow-63",
          bytes([0, 0]) + b"\x82\xff" + struct.pack(">Q", 1 << 63) + b"\x00" * 4)
    write("websocket", "control-126", bytes([0, 0]) + ws_frame(0x89, bytes(126)))
    request = (b"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqttv3.1\r\n\r\n")
    write("websocket", "raw-request", bytes([4]) + split + request + ws_frame(0x82, connect))
    write("websocket", "raw-request-over-64", bytes([6, 0]) + request)
    write("websocket", "plain-http", bytes([4, 0]) + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    # Generated: ping + 3-byte fragment, then a final 5-byte continuation.
    write("websocket", "generated", bytes([1, 0, 0xC3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                           0x05, 0, 0, 0, 0, 20, 21, 22, 23, 24]))


if __name__ == "__main__":
    main()
