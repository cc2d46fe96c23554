#!/usr/bin/env python3
"""Closed-loop load for scripts/measure-profile.sh: PORT PID N.

One raw MQTT 3.1.1 publisher and one subscriber on 127.0.0.1:PORT. The publisher sends
QoS 0 PUBLISHes (topic "bench", 64-byte payload) in batches of 256 and waits until the
subscriber has received the whole batch, so no message is ever dropped by the broker's
slow-consumer policy and the work is the same for every binary. Prints the broker's user
CPU time per message in nanoseconds (the code's own cost), its user+sys CPU time per
message in nanoseconds (with the kernel's TCP work), and messages per second.
"""
import os
import socket
import sys
import time

port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
BATCH = 256


def client(cid):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(cid).to_bytes(2, "big") + cid
    s.sendall(bytes([0x10, len(body)]) + body)
    assert recv_exact(s, 4) == b"\x20\x02\x00\x00"
    return s


def recv_exact(s, k):
    buf = bytearray()
    while len(buf) < k:
        chunk = s.recv(k - len(buf))
        if not chunk:
            raise SystemExit("broker closed the connection")
        buf += chunk
    return bytes(buf)


def cpu_seconds():
    """(user, user+sys) CPU seconds of the broker process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, (int(fields[11]) + int(fields[12])) / tick


sub = client(b"bench-sub")
sub.sendall(b"\x82\x0a\x00\x01\x00\x05bench\x00")
assert recv_exact(sub, 5) == b"\x90\x03\x00\x01\x00"
pub = client(b"bench-pub")
payload = b"x" * 64
packet = bytes([0x30, 2 + 5 + len(payload)]) + b"\x00\x05bench" + payload
batch = packet * BATCH

cpu0, t0 = cpu_seconds(), time.perf_counter()
sent = 0
while sent < n:
    pub.sendall(batch)
    recv_exact(sub, len(batch))
    sent += BATCH
cpu1, t1 = cpu_seconds(), time.perf_counter()
print(
    f"{(cpu1[0] - cpu0[0]) / sent * 1e9:.0f} {(cpu1[1] - cpu0[1]) / sent * 1e9:.0f} "
    f"{int(sent / (t1 - t0))}"
)
