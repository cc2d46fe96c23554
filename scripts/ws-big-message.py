"""Times one QoS 1 message (1 MiB by default) over WebSockets, publish -> subscriber.

Usage: python3 scripts/ws-big-message.py WS_PORT [BYTES]  (a broker with a websockets
listener on 127.0.0.1:WS_PORT; e.g. wrenmq or mosquitto with `protocol websockets`)
"""
import os, sys, time, queue, uuid
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port = int(sys.argv[1]); size = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 20
def client():
    q = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="b-"+uuid.uuid4().hex[:8], transport="websockets")
    c.on_connect = lambda *a: q.put("c")
    c.on_subscribe = lambda *a: q.put("s")
    c.on_message = lambda c_, u, m: q.put(m)
    c.connect("127.0.0.1", port); c.loop_start(); assert q.get(timeout=10) == "c"
    return c, q
sub, sq = client(); pub, pq = client()
sub.subscribe("big", 1); assert sq.get(timeout=10) == "s"
payload = os.urandom(size)
t0 = time.monotonic()
pub.publish("big", payload, 1)
m = sq.get(timeout=120)
t1 = time.monotonic()
assert m.payload == payload
print(f"{size} bytes over ws: {t1 - t0:.3f} s")
sub.loop_stop(); pub.loop_stop()
