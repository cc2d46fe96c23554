"""MQTT 5.0 will messages: Will Delay Interval, will properties, DISCONNECT
reason codes 0x00 and 0x04."""

from __future__ import annotations

import time
import uuid

import pytest

import mqtt5raw as m
from mqtt5raw import raw5  # noqa: F401  (fixture)


def uid(tag="c"):
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def watcher(broker, raw5, prefix):
    w = raw5(broker, uid("watch"), timeout=10)
    w.subscribe5([(f"{prefix}/will/#", 1)])
    return w


def test_will_properties_forwarded(broker, raw5, prefix):
    """[MQTT-3.1.2-8] an ungraceful close publishes the will at once (no delay);
    the Will Properties (3.1.3.2) - Payload Format Indicator, Message Expiry,
    Content Type, Response Topic, Correlation Data, User Properties in order - are
    the PUBLISH properties of the will message; Will QoS and payload are kept.
    The Will Delay Interval itself is not forwarded."""
    w = watcher(broker, raw5, prefix)
    wprops = [
        (m.WILL_DELAY, 0),
        (m.PAYLOAD_FORMAT, 1),
        (m.MESSAGE_EXPIRY, 100),
        (m.CONTENT_TYPE, "text/plain"),
        (m.RESPONSE_TOPIC, f"{prefix}/resp"),
        (m.CORRELATION_DATA, b"\x01\x02"),
        (m.USER_PROPERTY, ("z", "1")),
        (m.USER_PROPERTY, ("a", "2")),
    ]
    c = raw5(broker, uid("dying"), will=dict(topic=f"{prefix}/will/x", payload=b"bye", qos=1, props=wprops))
    c.close()
    msg = w.read_until(m.PUBLISH, timeout=5)
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (f"{prefix}/will/x", b"bye", 1, False)
    assert msg.p[m.PAYLOAD_FORMAT] == 1
    assert msg.p[m.MESSAGE_EXPIRY] in (99, 100)
    assert msg.p[m.CONTENT_TYPE] == "text/plain"
    assert msg.p[m.RESPONSE_TOPIC] == f"{prefix}/resp"
    assert msg.p[m.CORRELATION_DATA] == b"\x01\x02"
    assert msg.p[m.USER_PROPERTY] == [("z", "1"), ("a", "2")]
    assert m.WILL_DELAY not in msg.p
    w.send(m.puback(msg.pid))


def test_will_delay_interval_MQTT_3_1_2_8(broker, raw5, prefix):
    """Will Delay Interval 2 s (session expiry 30 s so the session outlives it):
    after an ungraceful close the will is published only once the delay has
    passed [MQTT-3.1.2-8]; a client that reconnects within the delay suppresses
    its will (3.1.3.2.2). Mosquitto 2.0.11 (1-second timer) publishes it about
    3.0 s after the close."""
    w = watcher(broker, raw5, prefix)
    late = uid("late")
    back = uid("back")
    a = raw5(broker, late, props=[(m.SESSION_EXPIRY, 30)],
             will=dict(topic=f"{prefix}/will/late", payload=b"late", props=[(m.WILL_DELAY, 2)]))
    b = raw5(broker, back, props=[(m.SESSION_EXPIRY, 30)],
             will=dict(topic=f"{prefix}/will/back", payload=b"back", props=[(m.WILL_DELAY, 2)]))
    t0 = time.monotonic()
    a.close()
    b.close()
    time.sleep(0.5)
    b2 = raw5(broker, back, clean_start=False, props=[(m.SESSION_EXPIRY, 30)])
    assert b2.connack.session_present
    msg = w.read_until(m.PUBLISH, timeout=8)
    elapsed = time.monotonic() - t0
    assert (msg.topic, msg.payload) == (f"{prefix}/will/late", b"late")
    assert elapsed >= 1.5, f"will published {elapsed:.2f}s after close, delay was 2 s"
    assert elapsed <= 6.0
    # b's will must not follow (its delay has passed by now)
    assert m.collect(w, quiet=0.8, ptype=m.PUBLISH) == []
    b2.send(m.disconnect(0x00, [(m.SESSION_EXPIRY, 0)]))
    raw5(broker, late, clean_start=True).send(m.disconnect())


@pytest.mark.wrenmq_only
def test_will_published_when_session_ends_before_delay_MQTT_3_1_2_8(broker, raw5, prefix):
    """[MQTT-3.1.2-8] the will is published when the delay has elapsed OR the
    session ends, whichever comes first: Session Expiry 0 with Will Delay 5 s ->
    the session ends at the close, so the will is published at once.

    wrenmq-only: Mosquitto 2.0.11 waits the full Will Delay (observed ~5.4 s)
    even though the session ended at the close."""
    w = watcher(broker, raw5, prefix)
    c = raw5(broker, uid("sx0"), will=dict(topic=f"{prefix}/will/now", payload=b"now",
                                         props=[(m.WILL_DELAY, 5)]))
    t0 = time.monotonic()
    c.close()
    msg = w.read_until(m.PUBLISH, timeout=8)
    assert msg.payload == b"now"
    assert time.monotonic() - t0 < 2.0


def test_disconnect_0x04_publishes_will(broker, raw5, prefix):
    """3.14.2.1: DISCONNECT with 0x04 (Disconnect with Will Message) -> the will is
    published, retained flag as requested [MQTT-3.1.2-17]."""
    w = watcher(broker, raw5, prefix)
    c = raw5(broker, uid("d4"), will=dict(topic=f"{prefix}/will/d4", payload=b"d4", qos=0, retain=True))
    c.send(m.disconnect(0x04))
    msg = w.read_until(m.PUBLISH, timeout=5)
    assert (msg.topic, msg.payload) == (f"{prefix}/will/d4", b"d4")
    # it was stored as retained: a new subscriber gets it with RETAIN 1
    n = raw5(broker, uid("n"))
    n.subscribe5([(f"{prefix}/will/d4", 0)])
    r = n.read_until(m.PUBLISH)
    assert (r.payload, r.retain) == (b"d4", True)
    n.send(m.publish(f"{prefix}/will/d4", b"", retain=True))


def test_normal_disconnect_discards_will_MQTT_3_1_2_10(broker, raw5, prefix):
    """[MQTT-3.1.2-10] DISCONNECT 0x00 deletes the will: nothing is published, not
    even after its delay."""
    w = watcher(broker, raw5, prefix)
    c = raw5(broker, uid("d0"), will=dict(topic=f"{prefix}/will/d0", payload=b"no"))
    c.send(m.disconnect(0x00))
    c2 = raw5(broker, uid("d0b"), will=dict(topic=f"{prefix}/will/d0b", payload=b"no"))
    c2.send(m.disconnect(0x00, [(m.REASON_STRING, "bye")]))
    assert m.collect(w, quiet=1.0, ptype=m.PUBLISH) == []


def test_takeover_with_clean_start_publishes_will(broker, raw5, prefix):
    """3.1.3.2.2: on takeover the old connection's will is sent unless the new
    connection has Clean Start 0 and the Will Delay is > 0. Clean Start 1, no
    delay -> published."""
    w = watcher(broker, raw5, prefix)
    cid = uid("tw")
    raw5(broker, cid, will=dict(topic=f"{prefix}/will/tw", payload=b"taken"))
    raw5(broker, cid)
    msg = w.read_until(m.PUBLISH, timeout=5)
    assert msg.payload == b"taken"
