"""Load: 1,000 concurrent raw clients on one selector thread.

Needs `ulimit -n` >= ~2,100 for the test process plus the broker's own
descriptors (scripts/test.sh raises it to 20000). Bounded to well under 30 s.
"""

from __future__ import annotations

import resource
import selectors
import socket
import time
import uuid

import pytest

import mqttraw as r

N = 1000
DEADLINE = 30.0


class Conn:
    __slots__ = ("i", "sock", "buf", "packets")

    def __init__(self, i, sock):
        self.i, self.sock, self.buf, self.packets = i, sock, b"", []

    def parse(self):
        while len(self.buf) >= 2:
            mult, length, j = 1, 0, 1
            while True:
                if j >= len(self.buf):
                    return
                b = self.buf[j]
                length += (b & 0x7F) * mult
                mult *= 128
                j += 1
                if not b & 0x80:
                    break
            if len(self.buf) < j + length:
                return
            self.packets.append(r.Packet(self.buf[0], self.buf[j:j + length]))
            self.buf = self.buf[j + length:]


def pump(sel, conns, done, deadline, what):
    """Read from all sockets until done() or deadline; answer QoS 1 PUBLISH with PUBACK."""
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"load: timed out waiting for {what}")
        for key, _ in sel.select(timeout=min(left, 0.5)):
            c = key.data
            try:
                chunk = c.sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise AssertionError(f"load: connection {c.i} closed by broker while waiting for {what}")
            c.buf += chunk
            before = len(c.packets)
            c.parse()
            for p in c.packets[before:]:
                if p.type == 3 and p.qos == 1:
                    c.sock.sendall(r.puback(p.pid))


@pytest.mark.slow
def test_thousand_clients_fan_out_and_fan_in(broker):
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < N + 200:
        pytest.skip(f"ulimit -n is {soft}; need > {N + 200} (scripts/test.sh raises it)")
    run = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + DEADLINE
    sel = selectors.DefaultSelector()
    conns = []
    try:
        # 1. connect + subscribe N clients, each to its own topic
        for i in range(N):
            s = socket.create_connection(broker.addr, timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(r.connect(f"load-{run}-{i}", keepalive=120)
                      + r.subscribe(1, [(f"load/{run}/{i}", 1)]))
            s.setblocking(False)
            c = Conn(i, s)
            conns.append(c)
            sel.register(s, selectors.EVENT_READ, c)
        pump(sel, conns, lambda: all(len(c.packets) >= 2 for c in conns), deadline, "CONNACK+SUBACK")
        for c in conns:
            assert c.packets[0].raw == r.CONNACK_OK, (c.i, c.packets[0])
            assert c.packets[1].raw == b"\x90\x03\x00\x01\x01", (c.i, c.packets[1])
            c.packets.clear()

        # 2. fan-out: one publisher, one QoS 1 message per client topic
        pub = r.connected_client(broker.host, broker.port, f"load-{run}-pub", keepalive=120)
        pub.send(b"".join(r.publish(f"load/{run}/{i}", f"to-{i}".encode(), qos=1, pid=i + 1)
                          for i in range(N)))
        pump(sel, conns, lambda: all(c.packets for c in conns), deadline, "fan-out messages")
        for c in conns:
            assert [(p.topic, p.payload) for p in c.packets] == [(f"load/{run}/{c.i}", f"to-{c.i}".encode())]
            c.packets.clear()
        acks = set()
        while len(acks) < N:
            p = pub.read_packet(timeout=max(0.1, deadline - time.monotonic()))
            if p.type == 4:
                acks.add(p.pid)

        # 3. fan-in: every client publishes one QoS 1 message to a collector
        pub.subscribe([(f"load/{run}/in", 1)], pid=2)
        for c in conns:
            c.sock.setblocking(True)
            c.sock.sendall(r.publish(f"load/{run}/in", f"from-{c.i}".encode(), qos=1, pid=5))
            c.sock.setblocking(False)
        got = set()
        while len(got) < N:
            p = pub.read_packet(timeout=max(0.1, deadline - time.monotonic()))
            if p.type == 3:
                got.add(p.payload)
                pub.send(r.puback(p.pid))
        assert got == {f"from-{i}".encode() for i in range(N)}
        # every publisher got its PUBACK
        pump(sel, conns, lambda: all(any(p.type == 4 for p in c.packets) for c in conns), deadline,
             "fan-in PUBACKs")
        pub.close()
    finally:
        for c in conns:
            try:
                sel.unregister(c.sock)
            except Exception:
                pass
            c.sock.close()
        sel.close()
    assert broker.alive()
