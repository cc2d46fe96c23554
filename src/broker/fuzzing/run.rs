//! The `broker` harness's operations: [`BrokerRun::step`] reads one opcode and its
//! arguments and drives the broker (connect, publish, subscribe, acks, time, restarts).

use super::*;
use crate::broker::QueuedRef;
use crate::broker::{Disconnect, InflightState};
use crate::protocol::{
    self, Ack, Connect, Packet, Publish, QoS, ReasonCode, RetainHandling, Status, Subscribe,
    SubscriptionOptions, Unsubscribe, Will,
};
use crate::store::record::decode_payload;

impl BrokerRun {
    fn is_v5(&self, s: usize) -> bool {
        self.slots[s].version == Some(ProtocolVersion::V5)
    }

    pub(super) fn step(&mut self, b: &mut Bytes<'_>) {
        let op = b.u8();
        let s = usize::from(op >> 4) % CLIENTS;
        let v5 = self.is_v5(s);
        match op & 0x0F {
            0 => self.open(s),
            1 => {
                let flags = b.u8();
                let version = [
                    ProtocolVersion::V311,
                    ProtocolVersion::V31,
                    ProtocolVersion::V311,
                    ProtocolVersion::V5,
                ][usize::from(flags & 3)];
                let client_id = if flags & 0x80 != 0 {
                    ""
                } else {
                    b.pick(&CLIENT_IDS)
                };
                let k = b.u8();
                let keep_alive = u16::from(k % 4);
                // 5.0 only: a selector byte, then one byte per property it selects.
                let (mut cp, mut wp) = (PropertiesBuf::new(), PropertiesBuf::new());
                if version == ProtocolVersion::V5 {
                    self.connect_properties(b, &mut cp, &mut wp);
                }
                let will = (flags & 0x08 != 0).then(|| Will {
                    topic: TOPICS[usize::from(flags >> 4) % TOPICS.len()],
                    payload: b"W",
                    qos: QoS::from_u8((flags >> 5) & 3).unwrap_or(QoS::AtMostOnce),
                    retain: flags & 0x40 != 0,
                    properties: wp.as_properties(),
                });
                let connect = Connect {
                    version,
                    clean_start: flags & 0x04 != 0,
                    keep_alive,
                    properties: cp.as_properties(),
                    client_id,
                    will,
                    username: None,
                    password: None,
                    // Mosquitto's bridge bit: subscriptions become No Local.
                    bridge: k & 4 != 0 && version != ProtocolVersion::V5,
                };
                self.packet(s, Packet::Connect(connect));
            }
            2 => {
                let n = usize::from(b.u8() % 3) + 1;
                let mut names: Vec<String> = Vec::with_capacity(n);
                let mut options = Vec::with_capacity(n);
                for _ in 0..n {
                    let f = b.pick(&FILTERS);
                    let qos = QoS::from_u8(b.u8() % 3).unwrap_or(QoS::AtMostOnce);
                    let mut o = SubscriptionOptions {
                        qos,
                        ..Default::default()
                    };
                    let mut name = f.to_string();
                    if v5 {
                        // Options byte: no local, retain as published, retain handling,
                        // shared (group g or h).
                        let x = b.u8();
                        o.no_local = x & 0x01 != 0;
                        o.retain_as_published = x & 0x02 != 0;
                        o.retain_handling = match (x >> 2) & 3 {
                            1 => RetainHandling::OnNewSubscribe,
                            2 => RetainHandling::Never,
                            _ => RetainHandling::OnSubscribe,
                        };
                        if x & 0x10 != 0 {
                            let group = if x & 0x20 != 0 { "h" } else { "g" };
                            name = format!("$share/{group}/{f}");
                        }
                    }
                    names.push(name);
                    options.push(o);
                }
                let packet_id = packet_id(b.u16());
                let mut sp = PropertiesBuf::new();
                if v5 {
                    // Subscription identifier (0: none; bit 7: the largest one).
                    let x = b.u8();
                    match (x & 0x3F, x & 0x80 != 0) {
                        (_, true) => sp.push(Property::SubscriptionIdentifier(268_435_455)),
                        (0, false) => {}
                        (id, false) => sp.push(Property::SubscriptionIdentifier(u32::from(id))),
                    }
                    if x & 0x40 != 0 {
                        sp.push(Property::UserProperty("k", "v"));
                    }
                }
                let filters = names.iter().map(String::as_str).zip(options).collect();
                self.packet(
                    s,
                    Packet::Subscribe(Subscribe {
                        packet_id,
                        properties: sp.as_properties(),
                        filters,
                    }),
                );
            }
            3 => {
                let f = b.pick(&FILTERS);
                let packet_id = packet_id(b.u16());
                let mut name = f.to_string();
                let mut up = PropertiesBuf::new();
                if v5 {
                    let x = b.u8();
                    if x & 0x01 != 0 {
                        let group = if x & 0x02 != 0 { "h" } else { "g" };
                        name = format!("$share/{group}/{f}");
                    }
                    if x & 0x04 != 0 {
                        up.push(Property::UserProperty("k", "v"));
                    }
                }
                self.packet(
                    s,
                    Packet::Unsubscribe(Unsubscribe {
                        packet_id,
                        properties: up.as_properties(),
                        filters: vec![&name],
                    }),
                );
            }
            4 | 5 => {
                let flags = b.u8();
                let qos = QoS::from_u8(flags % 3).unwrap_or(QoS::AtMostOnce);
                let topic = TOPICS[usize::from(flags >> 2) % TOPICS.len()];
                let retain = flags & 0x80 != 0;
                let id = b.u8() % 4 + 1;
                let mut pp = PropertiesBuf::new();
                let mut topic = topic;
                if v5 {
                    let x = b.u8();
                    let alias = u16::from((x >> 2) & 3) + 1;
                    match x & 3 {
                        // Set an alias [MQTT-3.3.2-12].
                        1 => pp.push(Property::TopicAlias(alias)),
                        // Use one: empty topic; unknown aliases are a protocol error.
                        2 => {
                            pp.push(Property::TopicAlias(alias));
                            topic = "";
                        }
                        // Out of range: above what the broker announced [MQTT-3.3.2-9].
                        3 => pp.push(Property::TopicAlias(
                            [11, 100, u16::MAX, 11][usize::from((x >> 2) & 3)],
                        )),
                        _ => {}
                    }
                    if x & 0x10 != 0 {
                        let expiry = [0, 1, 30, u32::MAX][usize::from((x >> 5) & 3)];
                        pp.push(Property::MessageExpiryInterval(expiry));
                    }
                    if x & 0x80 != 0 {
                        // Makes the packet larger than small maximum packet sizes.
                        pp.push(Property::UserProperty("key", "0123456789"));
                        pp.push(Property::PayloadFormatIndicator(1));
                    }
                }
                self.publish(s, topic, qos, retain, u16::from(id), &pp);
            }
            6..=9 => {
                // Acknowledge something the broker sent, or a made-up id.
                let pick = b.u8();
                let slot = &self.slots[s];
                let id = match slot.ids.get(usize::from(pick) % slot.ids.len().max(1)) {
                    Some(&(_, id)) if pick & 0x80 == 0 => id,
                    _ => u16::from(pick % 8) + 1,
                };
                let mut reason = ReasonCode::SUCCESS;
                let mut ap = PropertiesBuf::new();
                if v5 {
                    // A reason code (the decoder refuses those not allowed in this ack).
                    let x = b.u8();
                    reason = [
                        ReasonCode::SUCCESS,
                        ReasonCode::NO_MATCHING_SUBSCRIBERS,
                        ReasonCode::UNSPECIFIED_ERROR,
                        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                        ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                        ReasonCode::QUOTA_EXCEEDED,
                        ReasonCode::PAYLOAD_FORMAT_INVALID,
                        ReasonCode::SUCCESS,
                    ][usize::from(x & 7)];
                    if x & 0x08 != 0 {
                        ap.push(Property::ReasonString("r"));
                    }
                }
                let ack = Ack {
                    packet_id: packet_id(id),
                    reason,
                    properties: ap.as_properties(),
                };
                let kind = op & 0x0F;
                let packet = match kind {
                    6 => Packet::Puback(ack),
                    7 => Packet::Pubrec(ack),
                    8 => Packet::Pubrel(ack),
                    _ => Packet::Pubcomp(ack),
                };
                let slot = &mut self.slots[s];
                slot.ids.retain(|&(_, i)| i != id);
                // PUBACK and PUBCOMP end a delivery, so does a failing PUBREC
                // [MQTT-3.3.4-9].
                if kind == 6 || kind == 9 || (kind == 7 && reason.0 >= 0x80) {
                    slot.unacked.remove(&id);
                }
                self.packet(s, packet);
            }
            10 => self.packet(s, Packet::Pingreq),
            11 => {
                let mut reason = ReasonCode::NORMAL_DISCONNECTION;
                let mut dp = PropertiesBuf::new();
                let mut auth = None;
                if v5 {
                    let x = b.u8();
                    reason = [
                        ReasonCode::NORMAL_DISCONNECTION,
                        ReasonCode::DISCONNECT_WITH_WILL,
                        ReasonCode::UNSPECIFIED_ERROR,
                        ReasonCode::MESSAGE_RATE_TOO_HIGH,
                    ][usize::from(x & 3)];
                    match (x >> 2) & 3 {
                        // Raising it from 0 at CONNECT is a protocol error (5.0 §3.14.2.2.2).
                        1 => dp.push(Property::SessionExpiryInterval(0)),
                        2 => dp.push(Property::SessionExpiryInterval(30)),
                        3 => dp.push(Property::SessionExpiryInterval(u32::MAX)),
                        _ => {}
                    }
                    if x & 0x10 != 0 {
                        dp.push(Property::UserProperty("k", "v"));
                    }
                    // One in eight: AUTH instead (the broker offers no enhanced
                    // authentication, so it is a protocol error).
                    if x & 0xE0 == 0xE0 {
                        auth = Some(if x & 0x10 != 0 {
                            ReasonCode::REAUTHENTICATE
                        } else {
                            ReasonCode::CONTINUE_AUTHENTICATION
                        });
                    }
                }
                let packet = match auth {
                    Some(reason) => {
                        dp = props(&[Property::AuthenticationMethod("X")]);
                        Packet::Auth(protocol::Auth {
                            reason,
                            properties: dp.as_properties(),
                        })
                    }
                    None => Packet::Disconnect(protocol::Disconnect {
                        reason,
                        properties: dp.as_properties(),
                    }),
                };
                self.packet(s, packet);
            }
            12 => {
                // The socket ends under the broker.
                if let Some(id) = self.slots[s].id {
                    let why = [
                        Disconnect::PeerClosed,
                        Disconnect::IoError,
                        Disconnect::Shutdown,
                    ][usize::from(b.u8() % 3)];
                    self.broker.handle_disconnect(id, why, self.now);
                    if why == Disconnect::Shutdown {
                        // On shutdown the broker hands the connection back through
                        // `poll_close` (a 5.0 client gets DISCONNECT 0x8B): the slot is
                        // freed when that close is taken.
                        self.after_close_ops();
                    } else {
                        self.slots[s] = Slot::default();
                    }
                }
            }
            13 => {
                // Time passes; the loop fires the timers that are due.
                let ms = u64::from(b.u16()) * 16;
                self.now += Duration::from_millis(ms);
                if self.broker.poll_timeout().is_some_and(|d| d <= self.now) {
                    self.broker.handle_timeout(self.now);
                    if let Some(next) = self.broker.poll_timeout() {
                        // The loop would spin if the next deadline were already due.
                        assert!(
                            next > self.now,
                            "deadline {next:?} not after {:?}",
                            self.now
                        );
                    }
                }
            }
            14 => {
                // The socket accepted some of the pending output.
                if let Some(id) = self.slots[s].id {
                    let n = usize::from(b.u16());
                    self.check_output(s);
                    let n = n.min(self.broker.pending_output(id).len());
                    self.broker.consume_output(id, n);
                    let slot = &mut self.slots[s];
                    slot.checked = slot.checked.saturating_sub(n);
                }
            }
            _ => {
                // Raw bytes through the real decoder, as the loop would feed them.
                let len = usize::from(b.u8() % 64);
                let raw = b.take(len);
                let Some(id) = self.slots[s].id else { return };
                let version = self.broker.protocol_version(id);
                match protocol::decode(raw, version, u32::MAX) {
                    Ok(Status::Complete((Packet::Publish(p), _))) => {
                        let tag = self.tag(s, &p);
                        let p = Publish { payload: &tag, ..p };
                        self.packet(s, Packet::Publish(p));
                    }
                    Ok(Status::Complete((p, _))) => self.packet(s, p),
                    Ok(Status::Partial { .. }) => {}
                    Err(e) => {
                        self.broker.handle_decode_error(id, e, self.now);
                        self.after_close_ops();
                    }
                }
            }
        }
    }

    /// The properties of a 5.0 CONNECT (`cp`) and of its will (`wp`): a selector byte,
    /// then a byte for each property it selects. Values include invalid ones (receive
    /// maximum and maximum packet size 0), which the decoder refuses.
    fn connect_properties(
        &mut self,
        b: &mut Bytes<'_>,
        cp: &mut PropertiesBuf,
        wp: &mut PropertiesBuf,
    ) {
        let sel = b.u8();
        if sel & 0x01 != 0 {
            let v = [0, 1, 30, u32::MAX][usize::from(b.u8() & 3)];
            cp.push(Property::SessionExpiryInterval(v));
        }
        if sel & 0x02 != 0 {
            let v = [0, 1, 1, 2, 2, 3, 5, u16::MAX][usize::from(b.u8() & 7)];
            cp.push(Property::ReceiveMaximum(v));
        }
        if sel & 0x04 != 0 {
            let v = [0, 16, 20, 24, 32, 48, 64, 1024][usize::from(b.u8() & 7)];
            cp.push(Property::MaximumPacketSize(v));
        }
        if sel & 0x08 != 0 {
            cp.push(Property::TopicAliasMaximum(u16::from(b.u8() & 3)));
        }
        if sel & 0x10 != 0 {
            cp.push(Property::UserProperty("k", "v"));
        }
        if sel & 0x20 != 0 {
            // Will delay and will message expiry.
            let x = b.u8();
            let delay = [0, 1, 30, u32::MAX][usize::from(x & 3)];
            wp.push(Property::WillDelayInterval(delay));
            if x & 0x04 != 0 {
                let expiry = [0, 1, 30, u32::MAX][usize::from((x >> 3) & 3)];
                wp.push(Property::MessageExpiryInterval(expiry));
            }
        }
        if sel & 0x40 != 0 {
            // Enhanced authentication, which the broker does not offer.
            cp.push(Property::AuthenticationMethod("X"));
        }
        if sel & 0x80 != 0 {
            cp.push(Property::RequestProblemInformation(0));
            cp.push(Property::RequestResponseInformation(1));
        }
    }

    fn open(&mut self, s: usize) {
        if self.slots[s].id.is_some() {
            // A socket on a slot that has one: the process dies and starts again.
            self.restart();
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        let id = ConnId {
            index: s as u32,
            generation: self.generation,
        };
        self.slots[s] = Slot {
            id: Some(id),
            ..Slot::default()
        };
        self.broker.handle_open(id, self.now);
    }

    /// The process dies (every connection with it) and starts again from what the journal
    /// made durable, alternately by replaying the log and a snapshot (compaction); every
    /// persistent session comes back with the same subscriptions and messages.
    fn restart(&mut self) {
        self.after_close_ops();
        self.restarts += 1;
        let config = self.broker.config().clone();
        let fresh = new_broker(config, self.start, &self.files);
        let old = std::mem::replace(&mut self.broker, fresh);
        if self.restarts.is_multiple_of(2) {
            // Compaction: a snapshot (pointing into older files for queues on disk) and a
            // new log.
            self.gen += 1;
            let (snapshot, _keep) = old.snapshot_keeping(self.now);
            self.files.append(self.gen, true, &snapshot);
        }
        let frames = [true, false]
            .into_iter()
            .flat_map(|snapshot| self.files.frames(self.gen, snapshot));
        for (at, payload) in frames {
            let record = decode_payload(&payload)
                .unwrap_or_else(|e| panic!("the journal wrote an undecodable record: {e:?}"));
            self.broker.restore_record_at(record, Some(at), self.now);
        }
        self.broker.finish_restore(self.now);
        for s in 0..CLIENTS {
            self.slots[s] = Slot::default();
        }
        for c in &self.clients {
            let before = old.session(c).filter(|s| !s.clean);
            let after = self.broker.session(c);
            let subs = |s: &crate::broker::Session| {
                let mut v: Vec<_> = s
                    .subscriptions
                    .iter()
                    .map(|x| (x.filter.clone(), x.options, x.id))
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            };
            match (before, after) {
                (None, None) => {}
                (Some(x), Some(y)) => {
                    assert_eq!(subs(x), subs(y), "{c}: subscriptions changed by a restart");
                    // Expired messages may wait in the live broker until they would be
                    // sent; replay drops them, except those kept on disk (their expiry is
                    // known once they are read back): (at least, at most) what is live.
                    let now = self.now;
                    let live = |s: &crate::broker::Session| {
                        let (mut queued, mut expired) = (0, 0);
                        s.for_each_queued(|q| match q {
                            QueuedRef::Memory(q) if !q.msg.is_expired(now) => queued += 1,
                            _ => expired += 1, // or not known yet, on disk
                        });
                        let inflight = s.inflight().iter().filter(|i| {
                            i.state == InflightState::AwaitingPubcomp
                                || !i.delivery.msg.is_expired(now)
                        });
                        let live = queued + inflight.count();
                        (live, live + expired)
                    };
                    let ((x_live, x_all), (y_live, y_all)) = (live(x), live(y));
                    assert!(
                        x_live <= y_all && y_live <= x_all,
                        "{c}: queued + in flight changed by a restart: {x_live}..={x_all} \
                         -> {y_live}..={y_all}, {} -> {} queued: {:?} {:?} -> {:?} {:?}",
                        x.queued_len(),
                        y.queued_len(),
                        x.queue(),
                        x.inflight(),
                        y.queue(),
                        y.inflight()
                    );
                }
                (x, y) => panic!(
                    "{c}: persistent session {} before a restart, {} after",
                    x.is_some(),
                    y.is_some()
                ),
            }
        }
    }

    /// Publishes with a payload that tags the message with the subscriptions of the moment.
    fn publish(
        &mut self,
        s: usize,
        topic: &str,
        qos: QoS,
        retain: bool,
        id: u16,
        pp: &PropertiesBuf,
    ) {
        let p = Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then(|| packet_id(id)),
            properties: pp.as_properties(),
            payload: &[],
        };
        let tag = self.tag(s, &p);
        self.packet(s, Packet::Publish(Publish { payload: &tag, ..p }));
    }

    /// A payload `P` + index of a snapshot of every session's subscriptions, taken now.
    fn tag(&mut self, s: usize, p: &Publish<'_>) -> Vec<u8> {
        let mut subs = HashMap::new();
        for c in &self.clients {
            if let Some(session) = self.broker.session(c) {
                let list = session.subscriptions.iter().map(|x| SubSnap {
                    filter: Arc::from(&*x.filter),
                    no_local: x.options.no_local,
                    id: x.id,
                });
                subs.insert(c.clone(), list.collect());
            }
        }
        let n = self.snapshots.len() as u32;
        self.snapshots.push(Snap {
            publisher: self.slots[s].client.clone(),
            expiry: p.properties.message_expiry_interval(),
            subs,
        });
        let mut tag = vec![b'P'];
        tag.extend_from_slice(&n.to_le_bytes());
        tag
    }

    fn packet(&mut self, s: usize, packet: Packet<'_>) {
        let Some(id) = self.slots[s].id else { return };
        // 5.0 packets go through the real encoder and decoder, as the loop would get them,
        // so that values the decoder refuses (receive maximum 0, topic alias 0, a reason
        // code not allowed in a packet) end the connection as they would.
        let v5 = match &packet {
            Packet::Connect(c) => c.version == ProtocolVersion::V5,
            _ => self.is_v5(s),
        };
        if v5 {
            let mut wire = Vec::new();
            packet.encode(ProtocolVersion::V5, &mut wire);
            let version = self.broker.protocol_version(id);
            match protocol::decode(&wire, version, u32::MAX) {
                Ok(Status::Complete((p, _))) => self.handle(s, id, p),
                Ok(Status::Partial { .. }) => panic!("encoded {packet:?} decodes partially"),
                Err(e) => {
                    if let Packet::Connect(c) = &packet {
                        self.slots[s].version = self.slots[s].version.or(Some(c.version));
                    }
                    self.broker.handle_decode_error(id, e, self.now);
                    self.after_close_ops();
                }
            }
        } else {
            self.handle(s, id, packet);
        }
    }

    fn handle(&mut self, s: usize, id: ConnId, packet: Packet<'_>) {
        let connect = match &packet {
            Packet::Connect(c) => Some((Arc::<str>::from(c.client_id), c.version, c.properties)),
            _ => None,
        };
        if let Some((_, version, props)) = &connect {
            // What the client announced holds from its CONNECT on (for the first CONNECT;
            // a second one is a violation that closes the connection).
            let slot = &mut self.slots[s];
            if slot.version.is_none() && *version == ProtocolVersion::V5 {
                slot.v5 = Some(V5Client {
                    receive_maximum: props.receive_maximum().unwrap_or(u16::MAX),
                    maximum_packet_size: props.maximum_packet_size().unwrap_or(u32::MAX),
                });
            }
        }
        self.note_subscriptions();
        let open = self.broker.handle_packet(id, packet, self.now);
        self.note_subscriptions();
        if let Some((client, version, _)) = connect {
            // A second CONNECT is a violation that closes the connection; keep the first.
            let slot = &mut self.slots[s];
            slot.version = slot.version.or(Some(version));
            slot.anonymous |= client.is_empty();
            let attached = self
                .broker
                .session(&client)
                .is_some_and(|ss| ss.conn == Some(id));
            if attached {
                self.clients.insert(client.clone());
                self.slots[s].client = Some(client);
                self.note_subscriptions();
            }
        }
        if open {
            self.check_output(s);
        }
        self.after_close_ops();
    }

    /// Records every filter each known session has now in `ever`.
    fn note_subscriptions(&mut self) {
        for c in &self.clients {
            if let Some(session) = self.broker.session(c) {
                let ever = self.ever.entry(c.clone()).or_default();
                ever.extend(session.subscriptions.iter().map(|s| Arc::from(&*s.filter)));
            }
        }
    }

    /// Takes the broker's closes: checks their final bytes and frees the slots.
    pub(super) fn after_close_ops(&mut self) {
        if let Some((seq, bytes)) = self.broker.poll_journal() {
            // Written at once: queues of offline sessions move to disk.
            if let Some(at) = self.files.append(self.gen, false, &bytes) {
                self.broker.handle_written(&[(seq, at)], self.now);
            }
            self.broker.handle_durable(seq);
        }
        while let Some(close) = self.broker.poll_close() {
            let Some(s) = self.slots.iter().position(|sl| sl.id == Some(close.id)) else {
                panic!("poll_close for unknown or already closed {:?}", close.id);
            };
            let checked = self.slots[s].checked.min(close.final_bytes.len());
            let bytes = close.final_bytes[checked..].to_vec();
            self.check_bytes(s, &bytes);
            self.slots[s] = Slot::default();
        }
    }
}
