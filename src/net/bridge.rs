//! Bridges on the loop (issue 14): one outbound connection per `connection` block, driven
//! by the sans-IO state machine in `crate::bridge`, its local side the broker's bridge
//! session (`broker/bridge_session.rs`).
//!
//! - Tokens: each bridge has a reserved token for its uplink and one for its primary
//!   probe, outside the client slab (`token.rs`).
//! - Dialing is a non-blocking `connect`; the socket's first writable event (or error)
//!   says how it went. Addresses must be IP literals or `localhost` for now: resolving a
//!   host name would block the loop, and is refused at start-up (see [`check`]).
//! - TLS bridges are refused at start-up for now ([`check`]): the transport seam's client
//!   side is not wired to this socket yet.
//! - The queue: [`SessionQueue`] is the state machine's view of the session. Messages are
//!   moved from the session's queue into its inflight list (`Broker::bridge_take`, which
//!   binds the packet id used upstream) a window's worth ahead of the uplink, and acks
//!   go back to the broker (`bridge_done`, `bridge_pubrec`) at the next sync, in the same
//!   loop turn, before the turn's journal batch is submitted.
//! - The queue's caps (`bridge_max_queued_*`) go to the broker at start
//!   (`Broker::bridge_queue_limits`), and every sync tells it whether QoS 0 is queued for
//!   the bridge now (`Broker::bridge_link`: link up, or `start_type lazy`). Staged
//!   messages keep the session's message when it expires, so the time left sent upstream
//!   is the broker's (`Message::remaining_expiry`).
//! - Inbound messages are published as the session; their acks upstream wait until the
//!   journal batch that holds them is durable (`BridgeDurable`).
//! - Every turn, [`Uplinks::turn`] syncs each bridge: O(bridges), nothing on the publish
//!   path; with no bridge configured the list is empty.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::token;
#[cfg(feature = "tls")]
use super::transport::tls::{ClientTls, ClientTlsSettings};
use super::transport::{ReadState, Transport};
use crate::bridge::{
    Action, Bridge, DropReason, InboundAck, OutboundQueue, QueueId, QueuedMessage, Settings,
    XorShift,
};
use crate::broker::{BridgeDurable, BridgeOut, Broker, Message, QueueLimits, SessionKey};
use crate::config::bridge::{BridgeConfig, StartType};
use crate::config::Config;
use crate::protocol::{PacketId, QoS};

/// Messages taken from the session ahead of the window, so one `pread` serves many.
const TAKE_AHEAD: usize = 32;
/// Most messages held in memory per bridge for the uplink (the window plus read-ahead).
const MAX_STAGED: usize = 4096;

/// Why a bridge cannot run in this version; checked before the broker starts.
pub fn check(b: &BridgeConfig) -> Result<(), &'static str> {
    if b.tls.is_some() && !cfg!(feature = "tls") {
        return Err("TLS bridges need wrenmq built with the `tls` feature");
    }
    if b.bind_address.is_some() {
        return Err("bridge_bind_address is not supported by this version of wrenmq yet");
    }
    if b.addresses.iter().any(|a| ip_of(&a.host).is_none()) {
        return Err("bridge addresses must be IP addresses (or localhost) in this version");
    }
    Ok(())
}

fn ip_of(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Loads what a bridge reads from files (its TLS certificates), so that a bad file stops
/// the start-up with the file's name instead of leaving the bridge unconnected.
pub fn check_files(b: &BridgeConfig) -> Result<(), String> {
    #[cfg(feature = "tls")]
    load_tls(b)?;
    let _ = b;
    Ok(())
}

/// The bridge's TLS client configuration (`bridge_cafile` ...), loaded once.
#[cfg(feature = "tls")]
pub(crate) fn load_tls(b: &BridgeConfig) -> Result<Option<ClientTls>, String> {
    let Some(t) = &b.tls else { return Ok(None) };
    let settings = ClientTlsSettings {
        cafile: t.cafile.clone(),
        capath: t.capath.clone(),
        certfile: t.certfile.clone(),
        keyfile: t.keyfile.clone(),
        insecure: t.insecure,
        alpn: t.alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
        min_version: match t.min_version {
            crate::config::bridge::TlsVersion::V12 => crate::config::TlsVersion::Tls12,
            crate::config::bridge::TlsVersion::V13 => crate::config::TlsVersion::Tls13,
        },
    };
    ClientTls::load(&settings)
        .map(Some)
        .map_err(|e| format!("bridge {} TLS: {e}", b.name))
}

/// This machine's host name, for the default client ids (as Mosquitto does).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A message handed to the uplink, with the packet id the session bound to it.
struct Staged {
    id: QueueId,
    pid: Option<PacketId>,
    msg: QueuedMessage,
    /// The journal batch that moved it into flight: a QoS 2 message is not handed to the
    /// uplink before that batch is durable (`Broker::bridge_pending_batch`).
    batch: u64,
    /// The session's message when it has an MQTT 5 expiry: the time it has left is the
    /// broker's ([`Message::remaining_expiry`], counted across restarts).
    expiring: Option<Arc<Message>>,
}

/// The bridge state machine's view of its session's queue (see the module docs).
#[derive(Default)]
pub struct SessionQueue {
    staged: VecDeque<Staged>,
    next_id: QueueId,
    /// Acknowledged upstream, not yet told to the broker.
    done: Vec<PacketId>,
    released: Vec<PacketId>,
    /// Messages still in the session's queue at the last sync.
    waiting: usize,
    /// The highest journal batch known durable at the last sync.
    durable: u64,
}

impl SessionQueue {
    fn find(&self, id: QueueId) -> Option<usize> {
        self.staged.binary_search_by_key(&id, |s| s.id).ok()
    }

    fn stage(
        &mut self,
        pid: Option<PacketId>,
        msg: QueuedMessage,
        batch: u64,
        expiring: Option<Arc<Message>>,
    ) -> QueueId {
        self.next_id += 1;
        let id = self.next_id;
        self.staged.push_back(Staged {
            id,
            pid,
            msg,
            batch,
            expiring,
        });
        id
    }

    /// Whether a staged QoS 2 message waits for its batch to be durable.
    fn holds_back(&self) -> bool {
        self.staged
            .iter()
            .any(|s| s.msg.qos == QoS::ExactlyOnce && s.batch > self.durable)
    }
}

impl OutboundQueue for SessionQueue {
    fn peek(&self, after: Option<QueueId>, n: usize) -> Vec<(QueueId, QueuedMessage)> {
        let from = after.map_or(0, |a| self.staged.partition_point(|s| s.id <= a));
        // In order: nothing passes a QoS 2 message still waiting for the log.
        self.staged
            .range(from..)
            .take_while(|s| s.msg.qos != QoS::ExactlyOnce || s.batch <= self.durable)
            .take(n)
            .map(|s| (s.id, s.msg.clone()))
            .collect()
    }

    fn ack(&mut self, id: QueueId) {
        if let Some(i) = self.find(id) {
            if let Some(s) = self.staged.remove(i) {
                self.done.extend(s.pid);
            }
        }
    }

    fn len(&self) -> usize {
        self.staged.len() + self.waiting
    }

    fn packet_id(&self, id: QueueId) -> Option<PacketId> {
        self.find(id).and_then(|i| self.staged[i].pid)
    }

    fn holds_packet_id(&self, pid: u16) -> bool {
        self.staged
            .iter()
            .any(|s| s.pid.is_some_and(|p| p.get() == pid))
    }

    fn released(&mut self, id: QueueId) {
        if let Some(pid) = self.find(id).and_then(|i| self.staged[i].pid) {
            self.released.push(pid);
        }
    }

    fn expiry_left(&self, id: QueueId, now: Instant) -> Option<u32> {
        let i = self.find(id)?;
        self.staged[i].expiring.as_ref()?.remaining_expiry(now)
    }
}

/// One bridge and its sockets.
struct Uplink {
    bridge: Bridge<SessionQueue>,
    key: SessionKey,
    stream: Option<TcpStream>,
    /// The dial is in progress (waiting for the first writable event).
    dialing: bool,
    probe: Option<TcpStream>,
    /// Bytes for the uplink not yet written.
    out: Vec<u8>,
    /// Inbound messages waiting for their journal batch to be durable.
    acks: Vec<(u64, InboundAck)>,
    up_logged: bool,
    /// TLS settings (`bridge_cafile` ...), when the bridge uses TLS.
    #[cfg(feature = "tls")]
    tls: Option<ClientTls>,
    /// The layers under the MQTT bytes of the current link (TLS), if any.
    transport: Option<Box<Transport>>,
    /// Plaintext out of the transport, reused.
    plain: Vec<u8>,
}

/// Every bridge of the broker.
#[derive(Default)]
pub struct Uplinks {
    links: Vec<Uplink>,
}

/// Converts a session message to what goes upstream: `None` if no `out` line maps it
/// (the configuration changed since it was queued).
fn upstream(s: &Settings, o: &BridgeOut) -> Option<QueuedMessage> {
    let (topic, qos) = s.route_out(&o.msg.topic, o.qos)?;
    Some(QueuedMessage {
        topic,
        payload: o.msg.payload.to_vec(),
        qos,
        retain: o.retain,
        properties: o.msg.properties.to_vec(),
    })
}

/// The session's message, for the time it has left, when it has an MQTT 5 expiry.
fn expiring(o: &BridgeOut) -> Option<Arc<Message>> {
    o.msg.expires_at.is_some().then(|| o.msg.clone())
}

impl Uplinks {
    /// Creates (or restores) the local session of every configured bridge and its state
    /// machine; what the last run left in flight is resent first.
    pub fn new(broker: &mut Broker, config: &Config, now: Instant) -> Uplinks {
        let host = hostname();
        let mut links = Vec::new();
        for (i, b) in config.bridges.iter().enumerate() {
            if i >= token::MAX_BRIDGES {
                warn!(
                    "bridge {}: more than {} bridges",
                    b.name,
                    token::MAX_BRIDGES
                );
                break;
            }
            let settings = Settings::new(b.clone(), &host, config.max_inflight_messages);
            let filters: Vec<(String, QoS)> = b
                .topics
                .iter()
                .filter(|t| t.is_out())
                .map(|t| (t.local_filter(), t.qos))
                .collect();
            let key = broker.bridge_session(
                &b.local_clientid(&host),
                b.local_username.as_deref(),
                b.local_clean_session(),
                &filters,
                now,
            );
            let mut queue = SessionQueue::default();
            let mut resumed = Vec::new();
            for o in broker.bridge_inflight(key) {
                match upstream(&settings, &o) {
                    Some(m) => {
                        let id = queue.stage(o.packet_id, m.clone(), 0, expiring(&o));
                        if let Some(pid) = o.packet_id {
                            resumed.push((id, pid, m, o.released));
                        }
                    }
                    None => {
                        if let Some(pid) = o.packet_id {
                            broker.bridge_done(key, pid);
                        }
                    }
                }
            }
            queue.waiting = broker.bridge_queued(key);
            let limits = QueueLimits {
                max_messages: b.max_queued_messages,
                max_bytes: b.max_queued_bytes,
            };
            broker.bridge_queue_limits(key, &b.name, limits);
            // Backoff jitter differs per bridge and per start (Mosquitto jitters too).
            let mut seed = [0u8; 8];
            let _ = getrandom::getrandom(&mut seed);
            let seed = u64::from_le_bytes(seed) ^ (i as u64 + 1);
            let mut bridge = Bridge::new(settings, queue, Box::new(XorShift::new(seed)), now);
            let n = resumed.len();
            for (id, pid, m, released) in resumed {
                bridge.resume_flow(id, pid, m, released);
            }
            info!(
                "bridge {}: {} messages queued, {n} in flight from the last run",
                b.name,
                broker.bridge_queued(key)
            );
            links.push(Uplink {
                bridge,
                key,
                stream: None,
                dialing: false,
                probe: None,
                out: Vec::new(),
                acks: Vec::new(),
                up_logged: false,
                #[cfg(feature = "tls")]
                tls: match load_tls(b) {
                    Ok(t) => t,
                    Err(e) => {
                        // Checked at start-up by `main`; a file changed since: no uplink.
                        warn!("{e}: this bridge will not connect");
                        continue;
                    }
                },
                transport: None,
                plain: Vec::new(),
            });
        }
        Uplinks { links }
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// The earliest bridge deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.links
            .iter()
            .filter_map(|l| l.bridge.poll_timeout())
            .min()
    }

    /// A readiness event on bridge `i`'s uplink (`probe` false) or probe socket.
    #[allow(clippy::too_many_arguments)] // the loop's disjoint borrows
    pub fn handle_event(
        &mut self,
        broker: &mut Broker,
        registry: &Registry,
        i: usize,
        probe: bool,
        event: &mio::event::Event,
        scratch: &mut [u8],
        now: Instant,
    ) {
        let Some(l) = self.links.get_mut(i) else {
            return;
        };
        if probe {
            if let Some(mut s) = l.probe.take() {
                let ok = s.take_error().ok().flatten().is_none() && s.peer_addr().is_ok();
                let _ = registry.deregister(&mut s);
                l.bridge.handle_probe(now, ok);
            }
        } else if l.stream.is_some() {
            if l.dialing {
                if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
                    return;
                }
                let ok = l.stream.as_mut().is_some_and(|s| {
                    s.take_error().ok().flatten().is_none() && s.peer_addr().is_ok()
                });
                l.dialing = false;
                let ok = ok && l.start_transport();
                if ok {
                    l.bridge.handle_connected(now);
                } else {
                    debug!("bridge {}: dial failed", l.name());
                    l.drop_stream(registry);
                    l.bridge.handle_closed(now);
                }
            } else {
                l.read(registry, scratch, now);
            }
        }
        l.service(broker, registry, i, now);
    }

    /// Once per loop turn, after the events and timers and before the turn's journal
    /// batch goes to the store: timers, acks to the broker, new messages from the
    /// session, inbound acks now durable, actions and writes.
    pub fn turn(&mut self, broker: &mut Broker, registry: &Registry, now: Instant) {
        for (i, l) in self.links.iter_mut().enumerate() {
            if l.bridge.poll_timeout().is_some_and(|t| t <= now) {
                l.bridge.handle_timeout(now);
            }
            l.service(broker, registry, i, now);
        }
    }

    /// Whether some bridge waits for a journal batch that is durable by now (an inbound
    /// ack, a QoS 2 message held back): the loop runs [`Uplinks::turn`] again after it
    /// learned of durability, instead of waiting for the next event.
    pub fn waits_for(&self, durable: u64) -> bool {
        self.links.iter().any(|l| {
            let q = l.bridge.queue();
            l.acks.iter().any(|(seq, _)| *seq <= durable)
                || q.staged
                    .iter()
                    .any(|s| s.batch > q.durable && s.batch <= durable)
        })
    }

    /// Closes every uplink (shutdown): a DISCONNECT first when one is up.
    pub fn shutdown(&mut self, registry: &Registry) {
        for l in &mut self.links {
            l.bridge.poll_transmit(&mut l.out);
            l.flush();
            l.drop_stream(registry);
            if let Some(mut p) = l.probe.take() {
                let _ = registry.deregister(&mut p);
            }
        }
    }
}

impl Uplink {
    fn drop_stream(&mut self, registry: &Registry) {
        if let Some(mut s) = self.stream.take() {
            let _ = registry.deregister(&mut s);
        }
        self.dialing = false;
        self.out.clear();
        self.transport = None;
    }

    /// The TLS layer of a new link, when the bridge uses TLS; false if it cannot start.
    fn start_transport(&mut self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let host = self
                .bridge
                .phase()
                .dialing_index()
                .and_then(|i| self.bridge.address(i))
                .map_or("localhost", |a| a.host.as_str());
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match Transport::tls_client(tls, host) {
                Ok(t) => self.transport = Some(Box::new(t)),
                Err(e) => {
                    warn!("bridge {}: TLS: {e}", self.name());
                    return false;
                }
            }
        }
        true
    }

    /// Reads until the socket would block; EOF or an error is a lost link.
    fn read(&mut self, registry: &Registry, scratch: &mut [u8], now: Instant) {
        loop {
            let Some(s) = self.stream.as_mut() else {
                return;
            };
            match s.read(scratch) {
                Ok(0) => break,
                Ok(n) => match self.transport.as_mut() {
                    None => self.bridge.handle_bytes(now, &scratch[..n]),
                    Some(t) => {
                        self.plain.clear();
                        let state = t.read(&scratch[..n], &mut self.plain);
                        if !self.plain.is_empty() {
                            self.bridge.handle_bytes(now, &self.plain);
                        }
                        self.plain = Vec::new();
                        match state {
                            Ok(ReadState::Open) => {}
                            Ok(ReadState::Closed) => break,
                            Err(e) => {
                                debug!("bridge {}: {e}", self.name());
                                // The alert, best effort.
                                self.flush();
                                break;
                            }
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("bridge {}: read: {e}", self.name());
                    break;
                }
            }
        }
        self.drop_stream(registry);
        self.bridge.handle_closed(now);
    }

    fn name(&self) -> &str {
        &self.bridge.settings().bridge.name
    }

    /// Writes what is pending until the socket would block.
    fn flush(&mut self) -> bool {
        let Some(s) = self.stream.as_mut() else {
            self.out.clear();
            return true;
        };
        if self.dialing {
            return true;
        }
        if let Some(t) = self.transport.as_mut() {
            loop {
                if !self.out.is_empty() {
                    let n = t.write(&self.out);
                    self.out.drain(..n);
                }
                if !t.wants_write() {
                    break;
                }
                match t.write_to(s) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            return true;
        }
        while !self.out.is_empty() {
            match s.write(&self.out) {
                Ok(0) => return false,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.out.capacity() > 64 * 1024 && self.out.is_empty() {
            self.out = Vec::new();
        }
        true
    }

    /// Syncs the queue with the session, runs the state machine's actions and writes.
    fn service(&mut self, broker: &mut Broker, registry: &Registry, i: usize, now: Instant) {
        for _ in 0..64 {
            self.sync_queue(broker, now);
            let durable = broker.durable_batch();
            let mut k = 0;
            while k < self.acks.len() {
                if self.acks[k].0 <= durable {
                    let (_, ack) = self.acks.swap_remove(k);
                    self.bridge.handle_local_durable(now, ack);
                } else {
                    k += 1;
                }
            }
            let mut acted = false;
            while let Some(action) = self.bridge.poll_action() {
                acted = true;
                self.act(broker, registry, i, action, now);
            }
            self.bridge.poll_transmit(&mut self.out);
            if !self.flush() {
                self.drop_stream(registry);
                self.bridge.handle_closed(now);
                continue;
            }
            let q = self.bridge.queue();
            if !acted && q.done.is_empty() && q.released.is_empty() {
                break;
            }
        }
        self.sync_queue(broker, now);
    }

    /// Acks to the broker, then new messages from the session into the staged window.
    fn sync_queue(&mut self, broker: &mut Broker, now: Instant) {
        let key = self.key;
        // QoS 0 is queued for the bridge while its link is up, and always for a lazy
        // bridge, whose threshold counts it (as Mosquitto does; `broker/bridge_queue.rs`).
        let up = matches!(self.bridge.phase(), crate::bridge::Phase::Up { .. });
        let lazy = self.bridge.settings().bridge.start_type == StartType::Lazy;
        broker.bridge_link(key, up || lazy);
        let q = self.bridge.queue_mut();
        for pid in q.released.drain(..) {
            broker.bridge_pubrec(key, pid);
        }
        for pid in q.done.drain(..) {
            broker.bridge_done(key, pid);
        }
        let window = usize::from(self.bridge.limits().window).min(MAX_STAGED);
        let room = (window + TAKE_AHEAD).saturating_sub(self.bridge.queue().staged.len());
        let mut added = false;
        if room > 0 && broker.bridge_queued(key) > 0 {
            let taken = broker.bridge_take(key, room, now);
            let batch = broker.bridge_pending_batch().unwrap_or(0);
            let mapped: Vec<(&BridgeOut, Option<QueuedMessage>)> = taken
                .iter()
                .map(|o| (o, upstream(self.bridge.settings(), o)))
                .collect();
            let q = self.bridge.queue_mut();
            for (o, m) in mapped {
                match m {
                    Some(m) => {
                        q.stage(o.packet_id, m, batch, expiring(o));
                        added = true;
                    }
                    None => q.done.extend(o.packet_id),
                }
            }
        }
        let q = self.bridge.queue_mut();
        q.waiting = broker.bridge_queued(key);
        let durable = broker.durable_batch();
        if durable > q.durable {
            // QoS 2 messages held back for the log may go now.
            added |= q.holds_back();
            q.durable = durable;
        }
        if added {
            self.bridge.handle_queued(now);
        }
    }

    fn act(
        &mut self,
        broker: &mut Broker,
        registry: &Registry,
        i: usize,
        action: Action,
        now: Instant,
    ) {
        match action {
            Action::Dial { index } => {
                self.drop_stream(registry);
                match self.dial(registry, index, token::bridge(i, false)) {
                    Ok(s) => {
                        self.stream = Some(s);
                        self.dialing = true;
                    }
                    Err(e) => {
                        debug!("bridge {}: dial: {e}", self.name());
                        self.bridge.handle_closed(now);
                    }
                }
            }
            Action::Close => {
                self.bridge.poll_transmit(&mut self.out);
                self.flush();
                self.drop_stream(registry);
                if self.up_logged {
                    self.up_logged = false;
                    info!("bridge {}: uplink closed", self.name());
                }
            }
            Action::Probe { index } => {
                if self.probe.is_none() {
                    match self.dial(registry, index, token::bridge(i, true)) {
                        Ok(s) => self.probe = Some(s),
                        Err(_) => self.bridge.handle_probe(now, false),
                    }
                }
            }
            Action::PublishLocal(m) => {
                let d = broker.bridge_publish(
                    self.key,
                    &m.topic,
                    &m.payload,
                    m.qos,
                    m.retain,
                    &m.properties,
                    now,
                );
                if let Some(ack) = m.ack {
                    match d {
                        BridgeDurable::Now => self.bridge.handle_local_durable(now, ack),
                        BridgeDurable::After(seq) => self.acks.push((seq, ack)),
                    }
                }
            }
            // [MQTT-3.3.2-5] an expired message is dropped as the broker drops one for a
            // client: quietly.
            Action::Dropped {
                id,
                why: DropReason::Expired,
            } => debug!("bridge {}: message {id} expired in the queue", self.name()),
            Action::Dropped { id, why } => {
                warn!("bridge {}: message {id} dropped: {why:?}", self.name());
            }
            Action::SubscriptionRefused { filter, code } => {
                warn!(
                    "bridge {}: the upstream refused the subscription to {filter} ({code:?})",
                    self.name()
                );
            }
        }
        if !self.up_logged && matches!(self.bridge.phase(), crate::bridge::Phase::Up { .. }) {
            self.up_logged = true;
            info!("bridge {}: uplink up", self.name());
        }
    }

    fn dial(&self, registry: &Registry, index: usize, token: Token) -> io::Result<TcpStream> {
        let a = self
            .bridge
            .address(index)
            .ok_or_else(|| io::Error::other("no such address"))?;
        let ip = ip_of(&a.host).ok_or_else(|| io::Error::other("not an IP address"))?;
        let addr = SocketAddr::new(ip, a.port);
        let mut s = TcpStream::connect(addr)?;
        let _ = s.set_nodelay(true);
        registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(qos: QoS, p: &str) -> QueuedMessage {
        QueuedMessage {
            topic: "t".into(),
            payload: p.as_bytes().to_vec(),
            qos,
            retain: false,
            properties: Vec::new(),
        }
    }

    fn payloads(v: &[(QueueId, QueuedMessage)]) -> Vec<String> {
        v.iter()
            .map(|(_, m)| String::from_utf8(m.payload.clone()).unwrap())
            .collect()
    }

    #[test]
    fn session_queue_holds_qos2_until_its_batch_is_durable_and_keeps_order() {
        let mut q = SessionQueue::default();
        let a = q.stage(PacketId::new(1), m(QoS::AtLeastOnce, "a"), 5, None);
        q.stage(PacketId::new(2), m(QoS::ExactlyOnce, "b"), 5, None);
        q.stage(PacketId::new(3), m(QoS::AtLeastOnce, "c"), 6, None);
        q.durable = 4;
        // QoS 1 may go before its record is durable (a duplicate at worst); nothing
        // passes the QoS 2 message that waits.
        assert_eq!(payloads(&q.peek(None, 10)), ["a"]);
        assert!(q.holds_back());
        q.durable = 5;
        assert_eq!(payloads(&q.peek(Some(a), 10)), ["b", "c"]);
        assert_eq!(q.packet_id(a).map(PacketId::get), Some(1));
        assert!(q.holds_packet_id(3) && !q.holds_packet_id(4));
        q.ack(a);
        q.ack(a);
        assert_eq!(q.done.iter().map(|p| p.get()).collect::<Vec<_>>(), [1]);
        assert_eq!(q.len(), 2);
    }
}
