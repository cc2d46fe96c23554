//! Bridges on the loop (issue 14): one outbound connection per `connection` block, driven
//! by the sans-IO state machine in `crate::bridge`, its local side the broker's bridge
//! session (`broker/bridge_session.rs`).
//!
//! - Tokens: each bridge has a slot with a reserved token for its uplink and one for its
//!   primary probe, outside the client slab (`token.rs`). A slot stays with its bridge
//!   across SIGHUPs; events are hints, so one fetched for a socket a reload closed is
//!   harmless to the bridge that takes the slot next.
//! - Dialing (`dial`): IP literals are dialed at once; host names are resolved by a
//!   helper thread (`resolve`) that answers through the loop's waker, at most one lookup
//!   per bridge, again at every dial (cloud brokers change addresses). The resolved
//!   addresses are tried in order; a lookup that fails, or a list that is exhausted, is a
//!   failed attempt for the state machine (next address, then backoff), logged with the
//!   host and the error. The socket is bound to `bridge_bind_address` first when set. The
//!   state machine never sees a host name resolved: TLS checks the configured name.
//! - TLS goes through the transport seam's client side (`Transport::tls_client`), its
//!   server name the configured host (SNI and certificate check), not the address dialed.
//! - The queue: [`SessionQueue`] (`queue`) is the state machine's view of the session.
//!   Messages are moved from the session's queue into its inflight list
//!   (`Broker::bridge_take`, which binds the packet id used upstream) a window's worth
//!   ahead of the uplink, and acks go back to the broker (`bridge_done`, `bridge_pubrec`)
//!   at the next sync, in the same loop turn, before the turn's journal batch is
//!   submitted.
//! - The queue's caps (`bridge_max_queued_*`) go to the broker when a bridge starts
//!   (`Broker::bridge_queue_limits`).
//! - Inbound messages are published as the session; their acks upstream wait until the
//!   journal batch that holds them is durable (`BridgeDurable`). Inbound QoS 2 ids are
//!   the session's awaiting-PUBREL list (journaled with the message, given back to the
//!   state machine after a restart); a PUBCOMP waits until the id's release is durable.
//! - SIGHUP (`reload`): unchanged bridges keep their link; changed ones are stopped
//!   (DISCONNECT) and started again on the same local session; removed ones are stopped
//!   and their session stops collecting; new ones are started.
//! - Every turn, [`Uplinks::turn`] syncs each bridge: O(bridges), nothing on the publish
//!   path; with no bridge configured the list is empty and no thread exists.
//!
//! What remains: lookups run one after the other on the one thread, so a DNS server that
//! does not answer delays the other bridges' lookups by its timeout (glibc: 5 s per try),
//! and a lookup cannot be cancelled (one for a bridge a SIGHUP removed runs to its end,
//! its answer dropped). Host names in `bridge_bind_address` are not resolved.

mod dial;
mod queue;
mod reload;
pub(crate) mod resolve;

use std::io::{self, Read, Write};
use std::time::Instant;

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::Registry;

use super::token;
#[cfg(feature = "tls")]
use super::transport::tls::{ClientTls, ClientTlsSettings};
use super::transport::{ReadState, Transport};
use crate::bridge::{Action, Bridge, DropReason, InboundAck, Settings, XorShift};
use crate::broker::{BridgeDurable, BridgeOut, Broker, QueueLimits, SessionKey};
use crate::config::bridge::BridgeConfig;
use crate::protocol::{PacketId, QoS};
use dial::{Dialing, Dns};
use queue::upstream;
pub use queue::SessionQueue;
use resolve::Wake;

/// Messages taken from the session ahead of the window, so one `pread` serves many.
const TAKE_AHEAD: usize = 32;
/// Most messages held in memory per bridge for the uplink (the window plus read-ahead).
const MAX_STAGED: usize = 4096;

/// Why a bridge cannot run in this version; checked before the broker starts.
pub fn check(b: &BridgeConfig) -> Result<(), &'static str> {
    if b.tls.is_some() && !cfg!(feature = "tls") {
        return Err("TLS bridges need wrenmq built with the `tls` feature");
    }
    Ok(())
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

/// One bridge and its sockets.
struct Uplink {
    bridge: Bridge<SessionQueue>,
    key: SessionKey,
    /// Which pair of reserved tokens is this bridge's (`token::bridge`).
    slot: usize,
    stream: Option<TcpStream>,
    /// The dial is in progress (waiting for the first writable event).
    dialing: bool,
    probe: Option<TcpStream>,
    /// Addresses still to try, lookups waited for (`dial`).
    dial: Dialing,
    /// Bytes for the uplink not yet written.
    out: Vec<u8>,
    /// Inbound acks waiting for their journal batch to be durable: PUBACK/PUBREC
    /// (`released` false) or PUBCOMP (true).
    acks: Vec<(u64, InboundAck, bool)>,
    /// Outbound QoS 2 flows whose PUBREC record waits for its journal batch: their PUBREL
    /// goes once it is durable (`Bridge::handle_release_durable`).
    pubrels: Vec<(u64, PacketId)>,
    up_logged: bool,
    /// The uplink was up at the last turn (`Broker::bridge_link`: QoS 0 is forwarded).
    live: bool,
    /// TLS settings (`bridge_cafile` ...), when the bridge uses TLS.
    #[cfg(feature = "tls")]
    tls: Option<ClientTls>,
    /// The layers under the MQTT bytes of the current link (TLS), if any.
    transport: Option<Box<Transport>>,
    /// Plaintext out of the transport, reused.
    plain: Vec<u8>,
    /// What `sync_queue` takes from the session, reused.
    taken: Vec<BridgeOut>,
}

/// Every bridge of the broker.
pub struct Uplinks {
    links: Vec<Uplink>,
    /// Host name lookups (the helper thread, started on first use).
    dns: Dns,
    /// This machine's host name, for the default client ids.
    host: String,
}

impl Uplinks {
    /// No bridge yet; `wake` wakes the loop from the resolver thread.
    pub(crate) fn new(wake: Wake) -> Uplinks {
        Uplinks {
            links: Vec::new(),
            dns: Dns::new(wake),
            host: hostname(),
        }
    }

    /// Creates (or restores) the local session of every configured bridge and its state
    /// machine; what the last run left in flight is resent first.
    pub fn start(
        &mut self,
        broker: &mut Broker,
        bridges: &[BridgeConfig],
        max_inflight: u16,
        now: Instant,
    ) {
        for b in bridges {
            let settings = Settings::new(b.clone(), &self.host, max_inflight);
            self.start_one(broker, settings, None, now);
        }
    }

    /// Starts one bridge in `slot` (or the lowest free one); false if every slot is taken
    /// or its TLS files cannot be loaded.
    fn start_one(
        &mut self,
        broker: &mut Broker,
        settings: Settings,
        slot: Option<usize>,
        now: Instant,
    ) -> bool {
        let b = settings.bridge.clone();
        let free = (0..token::MAX_BRIDGES).find(|i| self.links.iter().all(|l| l.slot != *i));
        let Some(slot) = slot.or(free) else {
            warn!(
                "bridge {}: more than {} bridges; this one is not started",
                b.name,
                token::MAX_BRIDGES
            );
            return false;
        };
        #[cfg(feature = "tls")]
        let tls = match load_tls(&b) {
            Ok(t) => t,
            Err(e) => {
                // Checked by `main` at start-up and reload; a file changed since.
                warn!("{e}: this bridge will not connect");
                return false;
            }
        };
        let host = &self.host;
        let filters: Vec<(String, QoS)> = b
            .topics
            .iter()
            .filter(|t| t.is_out())
            .map(|t| (t.local_filter(), t.qos))
            .collect();
        let key = broker.bridge_session(
            &b.local_clientid(host),
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
                    let id = queue.stage(o.packet_id, m.clone(), 0);
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
        queue.holds = broker.persistent();
        let limits = QueueLimits {
            max_messages: b.max_queued_messages,
            max_bytes: b.max_queued_bytes,
        };
        broker.bridge_queue_limits(key, &b.name, limits);
        // Backoff jitter differs per bridge and per start (Mosquitto jitters too).
        let mut seed = [0u8; 8];
        let _ = getrandom::getrandom(&mut seed);
        let seed = u64::from_le_bytes(seed) ^ (slot as u64 + 1);
        let mut bridge = Bridge::new(settings, queue, Box::new(XorShift::new(seed)), now);
        let n = resumed.len();
        for (id, pid, m, released) in resumed {
            bridge.resume_flow(id, pid, m, released);
        }
        for pid in broker.bridge_awaiting_pubrel(key) {
            bridge.resume_inbound(pid);
        }
        broker.bridge_link(key, false);
        info!(
            "bridge {}: {} messages queued, {n} in flight from the last run",
            b.name,
            broker.bridge_queued(key)
        );
        self.links.push(Uplink {
            bridge,
            key,
            slot,
            stream: None,
            dialing: false,
            probe: None,
            dial: Dialing::default(),
            out: Vec::new(),
            acks: Vec::new(),
            pubrels: Vec::new(),
            up_logged: false,
            live: false,
            #[cfg(feature = "tls")]
            tls,
            transport: None,
            plain: Vec::new(),
            taken: Vec::new(),
        });
        true
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
        let Some(l) = self.links.iter_mut().find(|l| l.slot == i) else {
            return;
        };
        if probe {
            l.handle_probe_event(registry, now);
        } else if l.stream.is_some() {
            if l.dialing {
                if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
                    return;
                }
                l.handle_dial_event(registry, now);
            } else {
                l.read(registry, scratch, now);
            }
        }
        l.service(broker, registry, &mut self.dns, now);
    }

    /// Once per loop turn, after the events and timers and before the turn's journal
    /// batch goes to the store: timers, acks to the broker, new messages from the
    /// session, inbound acks now durable, actions and writes.
    pub fn turn(&mut self, broker: &mut Broker, registry: &Registry, now: Instant) {
        for answer in self.dns.answers() {
            if let Some(l) = self.links.iter_mut().find(|l| l.dial.asked(answer.id)) {
                l.handle_answer(registry, &mut self.dns, answer, now);
            }
        }
        for l in &mut self.links {
            if l.bridge.poll_timeout().is_some_and(|t| t <= now) {
                l.bridge.handle_timeout(now);
            }
            l.service(broker, registry, &mut self.dns, now);
            let up = matches!(l.bridge.phase(), crate::bridge::Phase::Up { .. });
            if up != l.live {
                l.live = up;
                broker.bridge_link(l.key, up);
            }
        }
    }

    /// Whether some bridge waits for a journal batch that is durable by now (an inbound
    /// ack, a QoS 2 message held back): the loop runs [`Uplinks::turn`] again after it
    /// learned of durability, instead of waiting for the next event.
    pub fn waits_for(&self, durable: u64) -> bool {
        self.links.iter().any(|l| {
            let q = l.bridge.queue();
            l.acks.iter().any(|(seq, _, _)| *seq <= durable)
                || l.pubrels.iter().any(|(seq, _)| *seq <= durable)
                || q.staged
                    .iter()
                    .any(|s| s.batch > q.durable && s.batch <= durable)
        })
    }

    /// Closes every uplink (shutdown): the "0" state and a DISCONNECT first when one is
    /// up (`Bridge::stop`), written best effort.
    pub fn shutdown(&mut self, registry: &Registry) {
        for l in &mut self.links {
            l.bridge.stop();
            l.bridge.poll_transmit(&mut l.out);
            l.flush();
            l.drop_stream(registry);
            l.drop_probe(registry);
        }
    }
}

impl Uplink {
    /// Ends the link or the dial, with the rest of the dial's addresses.
    fn drop_stream(&mut self, registry: &Registry) {
        if let Some(mut s) = self.stream.take() {
            let _ = registry.deregister(&mut s);
        }
        self.dial.abandon();
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
    fn service(&mut self, broker: &mut Broker, registry: &Registry, dns: &mut Dns, now: Instant) {
        for _ in 0..64 {
            self.sync_queue(broker, now);
            let durable = broker.durable_batch();
            let mut k = 0;
            while k < self.acks.len() {
                if self.acks[k].0 <= durable {
                    // In arrival order: a PUBCOMP never passes the PUBREC before it.
                    let (_, ack, released) = self.acks.remove(k);
                    if released {
                        self.bridge.handle_released(now, ack);
                    } else {
                        self.bridge.handle_local_durable(now, ack);
                    }
                } else {
                    k += 1;
                }
            }
            // In PUBREC order, as the journal batches are. An id listed again later is a
            // newer flow under a reused id (the upstream lost the session in between):
            // its own entry releases it.
            while self.pubrels.first().is_some_and(|(seq, _)| *seq <= durable) {
                let (_, pid) = self.pubrels.remove(0);
                if !self.pubrels.iter().any(|(_, p)| *p == pid) {
                    self.bridge.handle_release_durable(now, pid);
                }
            }
            let mut acted = false;
            while let Some(action) = self.bridge.poll_action() {
                acted = true;
                self.act(broker, registry, dns, action, now);
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
        let mut released = std::mem::take(&mut self.bridge.queue_mut().released);
        for pid in released.drain(..) {
            broker.bridge_pubrec(key, pid);
            match broker.bridge_pending_batch(true) {
                Some(seq) => self.pubrels.push((seq, pid)),
                None => self.bridge.handle_release_durable(now, pid),
            }
        }
        let q = self.bridge.queue_mut();
        q.released = released;
        for pid in q.done.drain(..) {
            broker.bridge_done(key, pid);
        }
        let window = usize::from(self.bridge.limits().window).min(MAX_STAGED);
        let room = (window + TAKE_AHEAD).saturating_sub(self.bridge.queue().staged.len());
        let mut added = false;
        if room > 0 && broker.bridge_queued(key) > 0 {
            // Reused: a vector per call was an allocation per few forwarded messages.
            let mut taken = std::mem::take(&mut self.taken);
            broker.bridge_take_into(key, room, now, &mut taken);
            let qos2 = taken.iter().any(|o| o.qos == QoS::ExactlyOnce);
            let batch = broker.bridge_pending_batch(qos2).unwrap_or(0);
            for o in taken.drain(..) {
                match upstream(self.bridge.settings(), &o) {
                    Some(m) => {
                        self.bridge.queue_mut().stage(o.packet_id, m, batch);
                        added = true;
                    }
                    None => self.bridge.queue_mut().done.extend(o.packet_id),
                }
            }
            self.taken = taken;
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
        dns: &mut Dns,
        action: Action,
        now: Instant,
    ) {
        match action {
            Action::Dial { index } => self.dial(registry, dns, index, now),
            Action::Close => {
                self.bridge.poll_transmit(&mut self.out);
                self.flush();
                self.drop_stream(registry);
                if self.up_logged {
                    self.up_logged = false;
                    info!("bridge {}: uplink closed", self.name());
                }
            }
            Action::Probe { index } => self.probe(registry, dns, index, now),
            Action::PublishLocal(m) => {
                // An inbound QoS 2 id is recorded with the message (same journal batch);
                // one recorded already is a redelivery the state machine did not know of.
                let fresh = match m.ack {
                    Some(a) if a.qos == QoS::ExactlyOnce => {
                        broker.bridge_receive_qos2(self.key, a.packet_id)
                    }
                    _ => true,
                };
                let d = if fresh {
                    broker.bridge_publish(
                        self.key,
                        &m.topic,
                        &m.payload,
                        m.qos,
                        m.retain,
                        &m.properties,
                        now,
                    )
                } else {
                    broker.bridge_barrier()
                };
                if let Some(ack) = m.ack {
                    match d {
                        BridgeDurable::Now => self.bridge.handle_local_durable(now, ack),
                        BridgeDurable::After(seq) => self.acks.push((seq, ack, false)),
                    }
                }
            }
            Action::Released(ack) => match broker.bridge_released(self.key, ack.packet_id) {
                BridgeDurable::Now => self.bridge.handle_released(now, ack),
                BridgeDurable::After(seq) => self.acks.push((seq, ack, true)),
            },
            Action::InboundReset => broker.bridge_inbound_reset(self.key),
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
            match self.dial.current() {
                Some(a) => info!("bridge {}: uplink up ({a})", self.name()),
                None => info!("bridge {}: uplink up", self.name()),
            }
        }
    }
}
