"""A thin, deadline-bounded wrapper around paho-mqtt 2.x (CallbackAPIVersion.VERSION2)."""

from __future__ import annotations

import queue
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

WAIT = 5.0


class Paho:
    def __init__(self, broker, client_id=None, clean_session=True, keepalive=60,
                 will=None, protocol=mqtt.MQTTv311, connect=True):
        if client_id is None:
            client_id = "p-" + uuid.uuid4().hex[:12]
        self.client_id = client_id
        self.broker = broker
        self.keepalive = keepalive
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean_session, protocol=protocol)
        # never let paho reconnect behind our back: it would fight takeover tests
        self.c.reconnect_delay_set(min_delay=60, max_delay=60)
        self.messages: queue.Queue = queue.Queue()
        self.connacks: queue.Queue = queue.Queue()
        self.subacks: dict = {}
        self.unsubacks: set = set()
        self.disconnected: queue.Queue = queue.Queue()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect
        if will is not None:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos, retain)
        if connect:
            self.connect()

    # callbacks (paho network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connacks.put((flags.session_present, reason_code))

    def _on_message(self, client, userdata, msg):
        self.messages.put(msg)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.subacks[mid] = [rc.value for rc in reason_codes]

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        self.unsubacks.add(mid)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnected.put(reason_code)

    # API
    def connect(self):
        self.c.connect(self.broker.host, self.broker.port, self.keepalive)
        self.c.loop_start()
        session_present, rc = self.connacks.get(timeout=WAIT)
        assert not rc.is_failure, f"CONNACK failure {rc}"
        self.session_present = bool(session_present)
        return self.session_present

    def subscribe(self, topic, qos=0):
        """Subscribe and wait for SUBACK; returns the granted QoS list."""
        topics = [(topic, qos)] if isinstance(topic, str) else topic
        rc, mid = self.c.subscribe(topics)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + WAIT
        while mid not in self.subacks:
            assert time.monotonic() < deadline, "no SUBACK"
            time.sleep(0.01)
        return self.subacks[mid]

    def unsubscribe(self, topic):
        rc, mid = self.c.unsubscribe(topic)
        deadline = time.monotonic() + WAIT
        while mid not in self.unsubacks:
            assert time.monotonic() < deadline, "no UNSUBACK"
            time.sleep(0.01)

    def publish(self, topic, payload, qos=0, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT)
        assert info.is_published(), f"publish to {topic} not completed"

    def get(self, timeout=WAIT):
        """Next message or AssertionError after timeout."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout}s") from None

    def get_n(self, n, timeout=WAIT):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            out.append(self.get(max(0.01, deadline - time.monotonic())))
        return out

    def none(self, seconds=0.5):
        """Assert nothing arrives within `seconds`; returns []."""
        try:
            m = self.messages.get(timeout=seconds)
        except queue.Empty:
            return []
        raise AssertionError(f"unexpected message {m.topic} {m.payload!r} qos={m.qos} retain={m.retain}")

    def drain(self, seconds=0.5):
        out = []
        deadline = time.monotonic() + seconds
        while True:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return out

    def disconnect(self):
        self.c.disconnect()
        self.c.loop_stop()

    def close(self):
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()
