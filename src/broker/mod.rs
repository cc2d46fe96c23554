//! The broker state machine: sessions, subscriptions, retained messages, wills, QoS flows
//! and timers. Sans-IO: it takes decoded packets and `now`, and produces bytes to send per
//! connection, connections to close, and the next deadline. No socket, no clock of its own.
//!
//! Vocabulary (after `quinn-proto`): `handle_*` feeds an input in; `poll_*` takes an output
//! out. The event loop calls `handle_*` for every input of a loop turn, then drains
//! `poll_close` and `poll_transmit`, and asks `poll_timeout` how long it may sleep.
//!
//! Module map (this file: [`Broker`], `Conn`, the `handle_*`/`poll_*` entry points,
//! PINGREQ, DISCONNECT and the timers' dispatch):
//! - `connect.rs`: CONNECT as named steps (refusal, id, auth, takeover, session, will and
//!   keepalive, CONNACK) and the resend of what was in flight on reconnect.
//! - `inbound.rs`: PUBLISH from a client: aliases, validation, inbound QoS 2 state,
//!   retained storage, wills, the `memory_limit` policy.
//! - `routing.rs`: the subscribers of a message, one member per shared group.
//! - `delivery.rs`: encoding a delivery, the inflight window, the queue behind it, the pump.
//! - `acks.rs`: the PUBACK, PUBREC, PUBREL and PUBCOMP flows.
//! - `subscribe.rs`: SUBSCRIBE/UNSUBSCRIBE and the retained messages a subscription is due.
//! - `output.rs`: every route bytes take to a client (send now, hold until durable, deliver
//!   by QoS) and the loop's side of the write buffers (`poll_transmit`, `handle_durable`).
//! - `close.rs`: ending connections and sessions.
//! - `bridge_session.rs`: a bridge's local side, whose queue is its outbound queue;
//!   `bridge_queue.rs`: that queue's caps and the policy at them.
//! - `error.rs`: why the broker refuses or closes, and every reason code it decides.
//! - `session.rs`: the per-client-id state; `subscriptions.rs`: the filter → session table;
//!   `retained.rs`: the retained store and retained-delivery jobs; `message.rs`: the shared
//!   [`Message`] and its memory [`Meter`]; `timers.rs`: the deadline heap; `sys.rs`:
//!   the counters and the `$SYS` tree; `client_ids.rs`: the client id → session index;
//!   `ondisk.rs`: queue entries whose payload stays in the data files; `memory.rs`: the
//!   `memory_limit` accounting; `reload.rs`: applying a reloaded configuration (SIGHUP).
//! - `journal.rs`: state changes as log records (and which batch durable output waits
//!   for); `restore.rs`: replaying the data files, and the snapshot of the live state.
//! - `fuzzing/` (only `cfg(fuzzing)` and tests): the `broker` and `topic` fuzz harnesses;
//!   `tests.rs`, `tests/`: in-process tests with a fake clock.
//!
//! Where this differs from `DESIGN.md`, on purpose:
//! - DESIGN draws `broker ──► store/`. The broker only *encodes* records (`journal.rs`);
//!   the loop takes each turn's batch (`poll_journal`) to the store's writer thread and
//!   reports durability back (`handle_durable`), so the broker stays sans-IO and never
//!   waits for a disk.
//! - Files are named after the flow, not one file per packet: PUBLISH is split by
//!   direction (`inbound`, `routing`, `delivery`, `acks`) because one file per packet held
//!   four concerns; keepalive has no file of its own (its deadline is one entry in
//!   `timers.rs`, its check a few lines in `handle_timeout`).
//! - Broker tests live in `tests.rs` and `tests/`, not at the bottom of each file: they
//!   drive the whole state machine through `handle_*`, across files.
//! - Reason codes are mapped in one place per layer (DESIGN says one place): decode errors
//!   in `protocol/error.rs`, which knows nothing of sessions; everything the broker decides
//!   in `error.rs`.
//!
//! Each connection owns its write buffer here, so the broker sees how far behind a client
//! is and applies the overflow policy itself (drop QoS 0 to a client whose buffer is over
//! `max_write_buffer`, stop reading a client until it drains), never the socket layer.
//!
//! Memory accounting (`memory_limit`, issue 11; `memory.rs`): [`Broker::memory_used`] is the sum of
//! O(1) counters: the live messages and the 16-byte entries of queues kept on disk (each
//! counted by its own creation and drop, `message.rs`, `ondisk.rs`), in-memory queue
//! entries ([`QUEUED_ENTRY`] each, where a queue gains or loses one), write buffers and
//! held output (reconciled per connection when the loop polls or drains it, and on close),
//! and what the loop reports (`account_input`). `handle_publish` consults it once per
//! PUBLISH; the policy at the limit is in `inbound.rs` (`refuse_over_memory`).

mod acks;
mod bridge_queue;
mod bridge_session;
mod client_ids;
mod close;
mod connect;
mod delivery;
mod error;
#[cfg(any(fuzzing, test))]
pub(crate) mod fuzzing;
mod inbound;
mod journal;
mod memory;
mod message;
mod ondisk;
mod output;
mod reload;
mod restore;
mod retained;
mod routing;
mod session;
mod subscribe;
mod subscriptions;
mod sys;
mod timers;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use slab::Slab;

use crate::auth::{self, Auth, AuthSet};
use crate::config::Config;
use crate::protocol::{DecodeError, Packet, ProtocolVersion};

pub use bridge_session::{BridgeDurable, BridgeOut};
pub use error::{CloseReason, ProtocolViolation};
pub use journal::WallClock;
pub use message::{Message, Meter};
use output::{Outbox, Output};
pub use session::{Inflight, InflightState, QueueLimits, Queued, QueuedRef, Session, QUEUED_ENTRY};
pub use subscriptions::{SessionKey, Subscriber, SubscriptionTable};
pub use sys::Stats;

use retained::RetainedStore;
use timers::{Timer, Timers};

/// Identifies one network connection. `index` is the event loop's slab key (dense, reused);
/// `generation` makes an id of a closed connection differ from the next user of its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub index: u32,
    pub generation: u32,
}

/// Why the event loop ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The peer closed its side (read returned 0).
    PeerClosed,
    /// A socket error other than would-block.
    IoError,
    /// The broker is shutting down.
    Shutdown,
}

/// A connection the broker has ended: write `final_bytes` (best effort) and close.
#[derive(Debug)]
pub struct Close {
    pub id: ConnId,
    pub final_bytes: Vec<u8>,
}

/// What a reload changed, for the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Clients the new password file or `allow_anonymous` no longer admits.
    pub disconnected: usize,
    /// Subscriptions the new ACL no longer allows.
    pub subscriptions_removed: usize,
}

/// Topic aliases a 5.0 client may use towards the broker (Mosquitto's default, 10).
pub const TOPIC_ALIAS_MAXIMUM: u16 = 10;

/// What a 5.0 client said about itself at CONNECT, and its inbound topic aliases. Boxed in
/// [`Conn`] so that 3.1.1 connections do not pay for it.
#[derive(Debug, Default)]
struct V5Conn {
    /// The client's receive maximum: its limit on our QoS 1/2 sends in flight
    /// [MQTT-3.3.4-9].
    receive_maximum: u16,
    /// The client's maximum packet size: larger PUBLISHes are not sent to it
    /// [MQTT-3.1.2-25].
    maximum_packet_size: u32,
    /// Inbound topic aliases; index = alias - 1 [MQTT-3.3.2-12].
    aliases: Vec<Option<Box<str>>>,
    /// Session expiry interval from CONNECT: a DISCONNECT may not raise it from 0
    /// (5.0 §3.14.2.2.2).
    connect_expiry: u32,
    /// Will delay interval in seconds (a 5.0 will property).
    will_delay: u32,
}

/// Per-connection state.
#[derive(Debug)]
struct Conn {
    generation: u32,
    /// Known once CONNECT has been decoded.
    version: Option<ProtocolVersion>,
    /// Set once CONNECT was accepted: its session's key + 1 (4 bytes instead of 16 for
    /// an `Option<SessionKey>`, issue 11); see [`Conn::session`].
    session_plus_one: Option<std::num::NonZeroU32>,
    /// 1.5 × the keepalive the client asked for, in milliseconds; `None` when keepalive is 0.
    keep_alive: Option<std::num::NonZeroU32>,
    /// When it last sent a packet, as a [`Stamps`] value (8 bytes, not an `Instant`'s 16,
    /// issue 11).
    last_activity: u64,
    /// Its write buffer and held output (see `output.rs`).
    out: Outbox,
    will: Option<Arc<Message>>,
    /// Whether the current slow-consumer episode has been logged.
    slow_logged: bool,
    /// The keepalive has a timer entry of its own (else the connect-timeout entry checks it).
    keepalive_entry: bool,
    /// MQTT 5 connection state; `None` for 3.1/3.1.1.
    v5: Option<Box<V5Conn>>,
    /// Its user name is its TLS certificate's (`use_identity_as_username`/
    /// `use_subject_as_username`): no password was checked, so a reload does not check
    /// one either.
    cert_identity: bool,
}

impl Conn {
    /// Its session, once CONNECT was accepted.
    fn session(&self) -> Option<SessionKey> {
        self.session_plus_one.map(|k| k.get() as usize - 1)
    }

    /// Attaches session `key` (slab keys count live sessions, far below `u32::MAX`).
    fn set_session(&mut self, key: SessionKey) {
        self.session_plus_one = u32::try_from(key)
            .ok()
            .and_then(|k| std::num::NonZeroU32::new(k.wrapping_add(1)));
    }

    /// 5.0 will delay interval in seconds (0 for 3.1.1).
    fn will_delay(&self) -> u32 {
        self.v5.as_ref().map_or(0, |v| v.will_delay)
    }

    /// The largest packet this client accepts.
    fn max_packet(&self) -> u32 {
        self.v5.as_ref().map_or(u32::MAX, |v| v.maximum_packet_size)
    }
}

pub struct Broker {
    config: Config,
    /// Password and ACL checks, per listener or for all; replaced as a whole on reload.
    auth: AuthSet,
    /// Indexed by `ConnId::index`.
    conns: Vec<Option<Conn>>,
    /// With `per_listener_settings true`: the listener (`AuthSet` index) of connections not
    /// yet past CONNECT (`set_listener`); CONNECT moves it to the session, so `Conn` does
    /// not grow.
    conn_listeners: HashMap<ConnId, u8>,
    /// User names from TLS client certificates, taken by CONNECT (see `connect.rs`).
    cert_identities: HashMap<ConnId, Option<Arc<str>>>,
    /// 3.1/3.1.1 bridges (CONNECT level byte with the bridge bit): their subscriptions get
    /// No Local and Retain As Published (`subscribe.rs`). A side table, rare, so that
    /// `Conn` does not grow.
    bridge_conns: HashSet<ConnId>,
    /// Bridge sessions whose uplink is up (`bridge_link`): QoS 0 is queued for them then,
    /// and forwarded, as Mosquitto forwards QoS 0 over a connected bridge.
    bridges_up: Vec<SessionKey>,
    sessions: Slab<Session>,
    client_ids: client_ids::ClientIds,
    subscriptions: SubscriptionTable,
    retained: RetainedStore,
    timers: Timers,
    /// Every route bytes take to a client (see `output.rs`).
    output: Output,
    closes: Vec<Close>,
    /// Reused for every routing decision so routing does not allocate.
    matches: Vec<Subscriber>,
    stats: Stats,
    /// What `$SYS` last published (`sys.rs`).
    sys: sys::SysTree,
    journal: journal::Journal,
    /// Lookup tables used only while replaying the data files.
    restoring: Option<restore::Tables>,
    /// Reused to build the properties of each outbound 5.0 PUBLISH.
    scratch_props: crate::protocol::PropertiesBuf,
    /// Source of `Session::epoch` values.
    epoch: u32,
    /// Retained messages still to send per connection (see `retained.rs`).
    retained_jobs: HashMap<ConnId, retained::RetainedJob>,
    /// Connections whose retained job can make progress now.
    retained_ready: Vec<ConnId>,
    /// Unfinished retained jobs of persistent sessions whose connection ended, until the
    /// session resumes on a new connection or ends (in memory only: not across a restart).
    retained_parked: HashMap<SessionKey, retained::RetainedJob>,
    /// Peer addresses of connections not yet past CONNECT, for its log line (`set_peer`).
    peers: HashMap<ConnId, Box<str>>,
    /// Reused by each step of a retained job.
    retained_batch: Vec<Arc<Message>>,
    /// Retained store slots the jobs may still examine this turn.
    retained_budget: usize,
    /// Open connections (for bounding the timer heap).
    live_conns: usize,
    /// Source of server-assigned client ids ([`Broker::seed_client_ids`]).
    id_rng: IdRng,
    /// Bytes of the live messages (see `message.rs`).
    meter: Arc<Meter>,
    /// Bytes of the connections' write buffers and held output, as last reconciled
    /// (`Outbox::counted`).
    out_bytes: usize,
    /// Entries in all sessions' queues (each costs [`QUEUED_ENTRY`]).
    queued_entries: usize,
    /// Bytes of partial input the event loop holds (`account_input`).
    input_bytes: usize,
    /// Whether the broker is over `memory_limit` (an episode: logged on entry and exit).
    memory_full: bool,
    /// Whether the current episode of a full retained store has been logged.
    retained_full_logged: bool,
    /// Whether the current episode of `max_sessions` refusals has been logged.
    sessions_full_logged: bool,
    /// Queues kept on disk: the reader and the sessions to move there (`ondisk.rs`).
    disk: ondisk::DiskState,
    /// Instants as 8-byte stamps, for `Conn::last_activity`.
    stamps: Stamps,
    /// The bridges' sessions with their queue caps (`bridge_queue.rs`); empty without
    /// bridges.
    bridge_queues: Vec<bridge_queue::BridgeQueue>,
}

/// Instants as nanoseconds after the first one seen (an `Instant` takes 16 bytes). The
/// last conversion is remembered: every packet of a loop turn comes with the same `now`.
#[derive(Debug, Default)]
struct Stamps {
    base: Option<Instant>,
    last: Option<(Instant, u64)>,
}

impl Stamps {
    /// `now` as a stamp; an instant before the first one seen (only a test clock goes
    /// back) counts as that one, which can only delay what is measured from it.
    #[inline]
    fn stamp(&mut self, now: Instant) -> u64 {
        match self.last {
            Some((at, stamp)) if at == now => stamp,
            _ => self.new_stamp(now),
        }
    }

    #[cold]
    fn new_stamp(&mut self, now: Instant) -> u64 {
        let base = *self.base.get_or_insert(now);
        let nanos = now.saturating_duration_since(base).as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX);
        self.last = Some((now, stamp));
        stamp
    }

    /// The instant of `stamp`; `None` past what `Instant` holds.
    fn instant(&self, stamp: u64) -> Option<Instant> {
        self.base?.checked_add(Duration::from_nanos(stamp))
    }
}

/// A session key as a timer stores it: slab keys count live sessions, far below `u32::MAX`
/// (keeping timer entries at 32 bytes instead of 40).
fn timer_key(key: SessionKey) -> u32 {
    u32::try_from(key).unwrap_or(u32::MAX)
}

/// The live connection of `id`, if its slot still holds that generation.
fn conn_slot(conns: &mut [Option<Conn>], id: ConnId) -> Option<&mut Conn> {
    match conns.get_mut(id.index as usize) {
        Some(Some(c)) if c.generation == id.generation => Some(c),
        _ => None,
    }
}

/// SplitMix64: a tiny, seedable generator for server-assigned client ids. Uniqueness on
/// one broker is all they need; no cryptographic strength is claimed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdRng(u64);

impl IdRng {
    pub(crate) fn new(seed: u64) -> IdRng {
        IdRng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Broker {
    /// A broker whose only access rule is `config.allow_anonymous` (no password or ACL
    /// file: the broker does no I/O, so files are loaded by the caller, see
    /// [`Broker::with_auth`]).
    pub fn new(config: Config) -> Broker {
        let auth = Auth::new(config.allow_anonymous, None, None);
        Broker::with_auth(config, auth)
    }

    /// A broker that checks passwords and ACLs with `auth` (see [`Auth::load`]).
    pub fn with_auth(config: Config, auth: impl Into<AuthSet>) -> Broker {
        let auth = auth.into();
        let journal = journal::Journal::new(config.persistence);
        Broker {
            config,
            auth,
            conns: Vec::new(),
            sessions: Slab::new(),
            client_ids: client_ids::ClientIds::default(),
            subscriptions: SubscriptionTable::default(),
            retained: RetainedStore::default(),
            timers: Timers::default(),
            output: Output::default(),
            closes: Vec::new(),
            matches: Vec::new(),
            stats: Stats::default(),
            sys: sys::SysTree::default(),
            journal,
            restoring: None,
            scratch_props: crate::protocol::PropertiesBuf::new(),
            epoch: 0,
            retained_jobs: HashMap::new(),
            retained_ready: Vec::new(),
            retained_parked: HashMap::new(),
            peers: HashMap::new(),
            retained_batch: Vec::new(),
            retained_budget: subscribe::RETAINED_TURN_BUDGET,
            live_conns: 0,
            cert_identities: HashMap::new(),
            bridge_conns: HashSet::new(),
            bridges_up: Vec::new(),
            conn_listeners: HashMap::new(),
            id_rng: IdRng::new(0),
            meter: Arc::default(),
            out_bytes: 0,
            queued_entries: 0,
            input_bytes: 0,
            memory_full: false,
            retained_full_logged: false,
            sessions_full_logged: false,
            disk: ondisk::DiskState::default(),
            stamps: Stamps::default(),
            bridge_queues: Vec::new(),
        }
    }

    /// Seeds the assigned-client-id generator and keys the client-id index's hash, once at
    /// start (the broker draws no OS randomness itself). Independent values: an assigned
    /// id reveals the generator's state, which must not give away the hash key.
    pub fn seed_client_ids(&mut self, seed: u64, hash_key: u64) {
        self.id_rng = IdRng::new(seed);
        self.client_ids.seed(&self.sessions, hash_key);
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the session `key` may read (`auth::READ`) or write (`auth::WRITE`)
    /// `topic`. Free without an ACL file.
    fn allowed(&self, key: SessionKey, topic: &str, access: u8) -> bool {
        if !self.auth.has_acl() {
            return true;
        }
        self.sessions.get(key).is_some_and(|s| {
            let client = auth::Client {
                username: s.username.as_deref(),
                client_id: &s.client_id,
            };
            self.auth.check(s.listener, client, topic, access)
        })
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of sessions (online and offline).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// A session by client id, for inspection.
    pub fn session(&self, client_id: &str) -> Option<&Session> {
        self.client_ids
            .get(&self.sessions, client_id)
            .and_then(|k| self.sessions.get(k))
    }

    /// Connection `id` came in on the listener configured as `addr`: its CONNECT and ACL
    /// checks use that listener's settings (`per_listener_settings true`). Call right
    /// after [`Broker::handle_open`].
    pub fn set_listener(&mut self, id: ConnId, addr: std::net::SocketAddr) {
        if self.auth.is_per_listener() && conn_slot(&mut self.conns, id).is_some() {
            self.conn_listeners.insert(id, self.auth.index_of(addr));
        }
    }

    /// The listener of connection `id`, not yet past CONNECT: with one `Auth` for every
    /// listener, 0.
    fn pending_listener(&self, id: ConnId) -> u8 {
        if !self.auth.is_per_listener() {
            return 0;
        }
        self.conn_listeners
            .get(&id)
            .copied()
            .unwrap_or(auth::UNKNOWN_LISTENER)
    }

    /// A new network connection was accepted.
    pub fn handle_open(&mut self, id: ConnId, now: Instant) {
        let idx = id.index as usize;
        if self.conns.len() <= idx {
            self.conns.resize_with(idx + 1, || None);
        }
        let last_activity = self.stamps.stamp(now);
        self.conns[idx] = Some(Conn {
            generation: id.generation,
            version: None,
            session_plus_one: None,
            keep_alive: None,
            last_activity,
            out: Outbox::default(),
            will: None,
            slow_logged: false,
            keepalive_entry: false,
            v5: None,
            cert_identity: false,
        });
        self.stats.connections_accepted += 1;
        self.live_conns += 1;
        self.timers
            .schedule_in(now, self.config.connect_timeout, Timer::ConnectTimeout(id));
    }

    /// A decoded packet from `id`. Returns `false` if the connection is closed (or was
    /// closed while handling it): the caller must not feed it more packets.
    pub fn handle_packet(&mut self, id: ConnId, packet: Packet<'_>, now: Instant) -> bool {
        let stamp = self.stamps.stamp(now);
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        conn.last_activity = stamp;
        self.stats.packets_received += 1;
        let connected = conn.session().is_some();
        match packet {
            Packet::Connect(c) if !connected => self.handle_connect(id, c, now),
            Packet::Connect(_) => self.violation(id, ProtocolViolation::SecondConnect, now),
            p if !connected => {
                let v = ProtocolViolation::FirstPacketNotConnect(p.packet_type());
                self.violation(id, v, now)
            }
            Packet::Publish(p) => self.handle_publish(id, p, now),
            Packet::Puback(a) => self.handle_puback(id, a, now),
            Packet::Pubrec(a) => self.handle_pubrec(id, a, now),
            Packet::Pubrel(a) => self.handle_pubrel(id, a),
            Packet::Pubcomp(a) => self.handle_pubcomp(id, a, now),
            Packet::Subscribe(s) => self.handle_subscribe(id, s, now),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(id, u),
            Packet::Pingreq => {
                self.send_now(id, &Packet::Pingresp);
                true
            }
            Packet::Disconnect(d) => self.handle_client_disconnect(id, &d, now),
            // No enhanced authentication method is configured, so a client never has a
            // reason to send AUTH [MQTT-4.12.0-1].
            Packet::Auth(_) => self.violation(id, ProtocolViolation::UnexpectedAuth, now),
            p @ (Packet::Connack(_)
            | Packet::Suback(_)
            | Packet::Unsuback(_)
            | Packet::Pingresp) => {
                let v = ProtocolViolation::ServerOnlyPacket(p.packet_type());
                self.violation(id, v, now)
            }
        }
    }

    /// DISCONNECT from the client: the will is discarded [MQTT-3.14.4-3], unless a 5.0 client
    /// asks for it with reason 0x04; a 5.0 client may change its session expiry interval,
    /// but not from 0 (5.0 §3.14.2.2.2). Always returns false (the connection ends).
    fn handle_client_disconnect(
        &mut self,
        id: ConnId,
        d: &crate::protocol::Disconnect<'_>,
        now: Instant,
    ) -> bool {
        let Some(conn) = conn_slot(&mut self.conns, id) else {
            return false;
        };
        let (key, connect_expiry) = (conn.session(), conn.v5.as_ref().map(|v| v.connect_expiry));
        if let (Some(expiry), Some(key), Some(connect_expiry)) =
            (d.properties.session_expiry_interval(), key, connect_expiry)
        {
            if connect_expiry == 0 && expiry != 0 {
                return self.violation(id, ProtocolViolation::SessionExpiryRaised, now);
            }
            self.set_session_expiry(key, expiry);
        }
        let reason = CloseReason::of_client_disconnect(d.reason, connect_expiry.is_some());
        self.close(id, reason, now, true);
        false
    }

    /// Sets a session's expiry interval (5.0), journaling it for a stored session.
    fn set_session_expiry(&mut self, key: SessionKey, interval: u32) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let changed = session.expiry_interval != interval;
        session.expiry_interval = interval;
        session.clean = interval == 0;
        if changed {
            self.journal
                .session(session, |session| crate::store::Record::SessionExpiry {
                    session,
                    interval,
                });
        }
    }

    /// The bytes from `id` could not be decoded: the connection is closed and its will
    /// published. A CONNECT with an unsupported protocol level is answered first with
    /// CONNACK 0x01 [MQTT-3.1.2-2] (see `CloseReason::last_packet`).
    pub fn handle_decode_error(&mut self, id: ConnId, err: DecodeError, now: Instant) {
        self.close(id, CloseReason::Decode(err), now, true);
    }

    /// The event loop saw the connection end (EOF, socket error), or the broker is shutting
    /// down. After `Shutdown` the connection comes back through `poll_close` with its final
    /// bytes (DISCONNECT 0x8B for a 5.0 client); after the others it is simply gone.
    pub fn handle_disconnect(&mut self, id: ConnId, why: Disconnect, now: Instant) {
        let reason = match why {
            Disconnect::PeerClosed => CloseReason::PeerClosed,
            Disconnect::IoError => CloseReason::IoError,
            Disconnect::Shutdown => CloseReason::Shutdown,
        };
        // On shutdown the loop still writes what the broker hands back: a 5.0 client gets
        // DISCONNECT 0x8B. Otherwise the socket is already gone.
        self.close(id, reason, now, reason == CloseReason::Shutdown);
    }

    /// Fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_retained_jobs(now);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::KeepAlive(id) => {
                    let Some(conn) = conn_slot(&mut self.conns, id) else {
                        continue;
                    };
                    let Some(limit) = conn.keep_alive else {
                        continue;
                    };
                    let after = Duration::from_millis(u64::from(limit.get()));
                    // Checked: past what `Instant` holds, the deadline is never reached.
                    let last = self.stamps.instant(conn.last_activity);
                    let Some(due) = last.and_then(|t| t.checked_add(after)) else {
                        continue;
                    };
                    if due <= now {
                        self.close(id, CloseReason::KeepAliveTimeout, now, true);
                    } else {
                        // Traffic moved the deadline since this entry was armed.
                        self.timers.schedule(due, timer);
                    }
                }
                Timer::ConnectTimeout(id) => {
                    let Some(conn) = conn_slot(&mut self.conns, id) else {
                        continue;
                    };
                    match conn.keep_alive {
                        _ if conn.session().is_none() => {
                            self.close(id, CloseReason::ConnectTimeout, now, true);
                        }
                        // Connected: the entry goes on as the keepalive check, so a
                        // connection holds one timer entry, not two (see
                        // `arm_will_and_keepalive`).
                        Some(_) if !conn.keepalive_entry => {
                            self.timers.schedule(now, Timer::KeepAlive(id))
                        }
                        Some(_) => {}
                        None => {}
                    }
                }
                Timer::SessionExpiry(key, epoch) => {
                    let key = key as SessionKey;
                    if self
                        .sessions
                        .get(key)
                        .is_some_and(|s| s.epoch == epoch && s.conn().is_none())
                    {
                        if let Some(c) = self.sessions.get(key).map(|s| s.client_id.clone()) {
                            info!("session of {c} expired");
                        }
                        self.stats.sessions_expired += 1;
                        self.end_session(key, now);
                    }
                }
                Timer::WillDelay(key, epoch) => {
                    let key = key as SessionKey;
                    let will = self
                        .sessions
                        .get_mut(key)
                        .filter(|s| s.epoch == epoch && s.conn().is_none())
                        .and_then(|s| s.take_pending_will());
                    if let Some(will) = will {
                        self.publish_will(&will, now);
                    }
                }
            }
        }
    }

    /// The earliest pending deadline; `None` when nothing is scheduled.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let conns = &mut self.conns;
        let sessions = &self.sessions;
        let mut stale = |t: &Timer| match *t {
            Timer::KeepAlive(id) => conn_slot(conns, id).is_none_or(|c| c.keep_alive.is_none()),
            Timer::ConnectTimeout(id) => conn_slot(conns, id).is_none_or(|c| {
                c.session().is_some() && (c.keep_alive.is_none() || c.keepalive_entry)
            }),
            Timer::SessionExpiry(key, epoch) | Timer::WillDelay(key, epoch) => sessions
                .get(key as SessionKey)
                .is_none_or(|s| s.epoch != epoch),
        };
        // Keeps the heap O(live connections + sessions) however many have come and gone.
        self.timers
            .compact(self.live_conns + sessions.len(), &mut stale);
        self.timers.discard_front_while(stale);
        if self.memory_full {
            // Logs the end of the episode as soon as memory frees, not at the next publish.
            self.check_memory();
        }
        let next = self.timers.next_deadline();
        match self.retained_deadline() {
            Some(at) => Some(next.map_or(at, |n| n.min(at))),
            None => next,
        }
    }

    /// The protocol version the connection speaks (after CONNECT), for decoding.
    pub fn protocol_version(&self, id: ConnId) -> Option<ProtocolVersion> {
        match self.conns.get(id.index as usize) {
            Some(Some(c)) if c.generation == id.generation => c.version,
            _ => None,
        }
    }

    /// Next connection the broker has ended.
    pub fn poll_close(&mut self) -> Option<Close> {
        self.closes.pop()
    }

    /// The records of this loop turn, to be appended to the log as batch `.0`. Call once
    /// per turn, after the turn's inputs and before transmitting.
    pub fn poll_journal(&mut self) -> Option<(u64, Vec<u8>)> {
        self.journal.take_batch()
    }

    /// Whether somebody waits for the batch [`Broker::poll_journal`] returned last: it
    /// goes to the store for an fsync at once; otherwise it may be fsynced lazily.
    pub fn journal_awaited(&self) -> bool {
        self.journal.taken_awaited
    }

    /// Whether somebody now waits for a batch submitted lazily: the store should fsync
    /// it at once. Answers true once per request.
    pub fn journal_wants_sync(&self) -> bool {
        self.journal.take_sync()
    }

    /// Bytes of records this turn has journaled so far (the batch `poll_journal` returns
    /// next): the loop counts them against its journal budget while it reads.
    pub fn journal_bytes(&self) -> usize {
        self.journal.open_bytes()
    }

    /// Whether persistence is on.
    pub fn persistent(&self) -> bool {
        self.journal.enabled
    }

    /// Ends `id` for a protocol violation; always returns false (the connection is gone).
    fn violation(&mut self, id: ConnId, v: ProtocolViolation, now: Instant) -> bool {
        self.close(id, CloseReason::Protocol(v), now, true);
        false
    }

    fn next_epoch(&mut self) -> u32 {
        // Wrapping: a stale timer could only be mistaken for a live one after 2^32
        // epochs, and then only for the same session slot.
        self.epoch = self.epoch.wrapping_add(1);
        self.epoch
    }

    fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_messages: self.config.max_queued_messages,
            max_bytes: self.config.max_queued_bytes,
        }
    }
}

#[cfg(test)]
mod tests;
