//! The event loop: the only module that touches sockets and the clock.
//!
//! One thread, one `mio::Poll`, connections in a `slab::Slab`. Module map:
//! - `mod.rs` (this file): [`Server`] and the loop turn.
//! - `bridge`: the bridges' uplinks (issue 14), on reserved tokens.
//! - `listener`: binding and accept-error policy.
//! - `connection`: per-connection socket state, reading and flushing.
//! - `input`: framing bytes into packets with a per-connection partial tail.
//! - `token`: the token space (slab keys vs reserved tokens).
//! - `transport`: sans-IO layers under the MQTT bytes (TLS, WebSocket); plain connections
//!   have none.
//! - `websocket`: the sans-IO WebSocket server layer (feature `websockets`).
//! - `linger`: the loop's side of lingering connections (graceful close).
//! - `output`: the loop's side of writing (flush, the transmit and close lists, resuming
//!   paused connections).
//! - `shutdown`: [`ShutdownHandle`].
//! - `reload`: SIGHUP (configuration, password and ACL files, listeners).
//! - `persistence`: opening the data directory, the end-of-turn hand-over of records to the
//!   writer thread, journal back-pressure.
//! - `sys_timer`: the one `$SYS` timer (none with `sys_interval 0`).
//! - `systemd`: `sd_notify` READY/STOPPING/WATCHDOG messages ([`Server::notify_systemd`]).
//! - `fuzzing` (only `cfg(fuzzing)` and tests): the `split` harness for `input`.
//!
//! A loop turn:
//! 1. Sleep in `poll` until an event, the broker's next deadline, or the accept backoff;
//!    with no deadline and no pending work the loop sleeps without a timeout, so an idle
//!    broker makes no syscalls. Leftover read work makes the timeout zero.
//! 2. Handle leftover read work from the last turn, then the events: accept, read (until
//!    `WouldBlock` or a 256 KiB per-connection budget), write on writable.
//! 3. Fire the broker's timers if the deadline has passed, and retry accepting when a
//!    resource backoff has expired.
//! 4. Drain `poll_close` and `poll_transmit` and write, at most once per connection. A
//!    connection the broker ended with final bytes lingers (see `connection`): FIN after
//!    its last bytes, input discarded until the peer closes, for at most [`LINGER_TIME`].
//! 5. Free the slab slots of connections closed in this turn.
//!
//! Journal back-pressure (persistence on, see `persistence`): while records wait for the disk
//! beyond `journal_queue_bytes`, every connection is paused like one whose write buffer
//! is full, until the writer catches up.
//!
//! Invariants:
//! - Slab slots are freed only at the end of a turn (step 5), so an event fetched for a
//!   closed connection can never reach a new one; events for slots that are gone or not
//!   open are ignored. `ConnId::generation` (a counter bumped per accept) additionally
//!   guards the work lists that outlive a turn and ids coming back from the broker.
//! - Events are hints: every handler copes with a spurious event (a read that would block,
//!   a write with nothing to write).
//! - `handle_disconnect` is called exactly once for connections the loop ends (EOF, socket
//!   error, shutdown) and never for connections the broker ended itself.
//! - `io::Error` does not leave this module except from [`Server::bind`] and from `poll`
//!   itself failing in [`Server::run`] (which no client can cause).

pub mod bridge;
mod connection;
#[cfg(any(fuzzing, test))]
pub(crate) mod fuzzing;
pub(crate) mod input;
mod linger;
mod listener;
mod output;
mod persistence;
mod reload;
mod shutdown;
mod sys_timer;
mod systemd;
mod token;
pub(crate) mod transport;
#[cfg(feature = "websockets")]
pub(crate) mod websocket;

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::auth::{Auth, AuthSet};
use crate::broker::{Broker, ConnId, Disconnect};
use crate::config::Config;
use crate::store::Store;
use connection::{Connection, Id, ReadCtx, ReadEnd, State};
use listener::{AcceptError, Listener};
use shutdown::Shared;
use token::Target;

pub use reload::Reload;
pub use shutdown::ShutdownHandle;

/// Size of the one read buffer the loop shares between all connections.
const SCRATCH_SIZE: usize = 64 * 1024;

/// Readiness events fetched per `poll`.
const EVENTS_CAPACITY: usize = 256;

/// Pause before accepting again after running out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Per-connection accept failures in a row after which the loop backs off as well.
const MAX_ACCEPT_SKIPS: usize = 64;

/// Longest a lingering connection (final bytes sent, input discarded) stays open, so that
/// a peer that neither reads nor closes holds its descriptor only briefly.
const LINGER_TIME: Duration = Duration::from_secs(1);

/// The MQTT server: listeners, connections and the broker, driven by one `mio` loop.
pub struct Server {
    poll: Poll,
    events: Events,
    core: Core,
}

/// Everything but the poller, so that event handlers can borrow it mutably while the
/// events and the registry are borrowed too.
struct Core {
    broker: Broker,
    listeners: Vec<Listener>,
    conns: Slab<Connection>,
    scratch: Box<[u8]>,
    /// Plaintext out of transports (TLS), shared like `scratch`; empty between reads.
    plain: Vec<u8>,
    /// Handshake steps left in this turn ([`transport::HANDSHAKES_PER_TURN`]).
    handshakes: usize,
    shared: Arc<Shared>,
    max_packet_size: u32,
    max_connections: usize,
    /// Bumped per accept; the `generation` of the next `ConnId`.
    generation: u32,
    /// Connections not in state `Closed`.
    open: usize,
    /// Slots closed in this turn, freed at its end.
    closed: Vec<usize>,
    /// Connections the broker ended in this turn, waiting for their `poll_close`.
    ending: Vec<usize>,
    /// Connections with input left in the kernel (budget spent or reading resumed).
    readable: Vec<(usize, ConnId)>,
    /// Spare list swapped with `readable` each turn, to keep its allocation.
    readable_spare: Vec<(usize, ConnId)>,
    /// Connections whose reading is paused by back-pressure.
    paused: Vec<(usize, ConnId)>,
    /// Lingering connections and when they are closed at the latest. Every entry gets the
    /// same `LINGER_TIME` from a monotonic `now`, so the front is the earliest deadline;
    /// entries of connections closed sooner are skipped when they reach the front.
    lingering: VecDeque<(Instant, usize, ConnId)>,
    /// The persistence writer, when persistence is on.
    store: Option<Store>,
    /// Since when the journal queue has been full (reading paused), if it is.
    journal_full_since: Option<Instant>,
    /// When a journal back-pressure episode was last logged as a warning.
    journal_warned_at: Option<Instant>,
    /// Where the writer's batches landed, handed to the broker each turn (reused).
    located: Vec<(u64, crate::store::Location)>,
    /// SIGTERM/SIGINT/SIGHUP, when [`Server::handle_signals`] was called.
    signals: Option<Signals>,
    /// What SIGHUP re-reads ([`Server::set_reload`]); `None` = nothing to reload.
    reload: Option<Reload>,
    /// systemd notification, when [`Server::notify_systemd`] found `$NOTIFY_SOCKET`.
    notify: Option<systemd::Notifier>,
    /// Accepting is suspended until then (out of descriptors or memory).
    accept_backoff: Option<Instant>,
    /// The next `$SYS` update; `None` with `sys_interval 0` (see `sys_timer`).
    sys_due: Option<Instant>,
    /// A resource warning was logged in the current burst of accept failures (a burst
    /// ends when a listener's backlog has been drained).
    accept_warned: bool,
    /// The bridges (none without `connection` blocks: then they cost nothing).
    bridges: bridge::Uplinks,
}

impl Server {
    /// Binds every listener in `config.listeners` and builds the broker. An IPv6 listener
    /// on a host without IPv6 is skipped with a warning; any other bind failure, or none
    /// bound at all, is an error naming the address.
    pub fn bind(config: Config) -> io::Result<Server> {
        let auth = Auth::new(config.allow_anonymous, None, None);
        Server::bind_with(config, auth)
    }

    /// [`Server::bind`] with password and ACL checks (see [`Auth::load`]).
    pub fn bind_with(config: Config, auth: impl Into<AuthSet>) -> io::Result<Server> {
        if config.listeners.len() > token::MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} listeners configured, at most {} supported",
                    config.listeners.len(),
                    token::MAX_LISTENERS
                ),
            ));
        }
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), token::WAKER)?;
        let addrs = config.listeners.clone();
        let layers = listener::load_layers(&config, &addrs)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (max_packet_size, max_connections) = (config.max_packet_size, config.max_connections);
        let mut broker = Broker::with_auth(config, auth);
        // The broker is sans-IO and draws no entropy; assigned client ids must differ
        // across restarts (a 5.0 client may resume a session under one).
        let mut seed = [0u8; 16];
        getrandom::getrandom(&mut seed)
            .map_err(|e| io::Error::other(format!("no OS randomness for client ids: {e}")))?;
        let seed = u128::from_le_bytes(seed);
        broker.seed_client_ids(seed as u64, (seed >> 64) as u64);
        let shared = Arc::new(Shared::new(waker));
        let woken = Arc::clone(&shared);
        let bridges = bridge::Uplinks::new(Arc::new(move || woken.wake()));
        let core = Core {
            max_packet_size,
            max_connections,
            broker,
            listeners: Vec::new(),
            conns: Slab::new(),
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            plain: Vec::new(),
            shared,
            generation: 0,
            handshakes: transport::HANDSHAKES_PER_TURN,
            open: 0,
            closed: Vec::new(),
            ending: Vec::new(),
            readable: Vec::new(),
            readable_spare: Vec::new(),
            paused: Vec::new(),
            lingering: VecDeque::new(),
            store: None,
            journal_full_since: None,
            journal_warned_at: None,
            located: Vec::new(),
            signals: None,
            reload: None,
            notify: None,
            accept_backoff: None,
            sys_due: None,
            accept_warned: false,
            bridges,
        };
        let mut core = core;
        // Recover first, listen second: a client that can connect finds its session.
        core.open_store()?;
        // After recovery, so that each bridge takes back its session and queue.
        if !core.broker.config().bridges.is_empty() {
            let config = core.broker.config();
            let (bridges, inflight) = (config.bridges.clone(), config.max_inflight_messages);
            let now = Instant::now();
            core.bridges
                .start(&mut core.broker, &bridges, inflight, now);
        }
        let mut listeners = listener::bind_all(&addrs)?;
        listener::set_layers(&mut listeners, &layers);
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(&mut l.socket, token::listener(i), Interest::READABLE)?;
        }
        core.listeners = listeners;
        Ok(Server {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            core,
        })
    }

    /// The addresses actually bound (port 0 resolved), in configuration order, without
    /// the skipped ones.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.core.listeners.iter().map(|l| l.addr).collect()
    }

    /// Makes the loop itself handle SIGTERM and SIGINT (clean shutdown, as a
    /// [`ShutdownHandle`] does) and SIGHUP (reload). Only the binary calls this: a test
    /// running servers in threads keeps the process's default signal handling.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        self.poll
            .registry()
            .register(&mut signals, token::SIGNALS, Interest::READABLE)?;
        self.core.signals = Some(signals);
        Ok(())
    }

    /// Installs what SIGHUP (with [`Server::handle_signals`]) re-reads; see `reload`.
    pub fn set_reload(&mut self, reload: Reload) {
        self.core.reload = Some(reload);
    }

    /// Reloads now, as SIGHUP does (for tests and embedders without signals).
    pub fn reload_now(&mut self) {
        let Server { poll, core, .. } = self;
        core.reload(poll.registry(), Instant::now());
    }

    /// Makes the loop report to systemd (`Type=notify`) when `$NOTIFY_SOCKET` is set:
    /// `READY=1` when [`Server::run`] starts (the listeners are bound by then),
    /// `STOPPING=1` at shutdown, `WATCHDOG=1` every half of `$WATCHDOG_USEC`. Malformed
    /// variables are logged and ignored. Only the binary calls this.
    pub fn notify_systemd(&mut self) {
        self.core.notify = systemd::Notifier::from_env(Instant::now());
    }

    /// Waits until the store's writer has done everything submitted so far, the start-up
    /// compaction included. `main` calls it before handing the data directory to `user`,
    /// so that the files that compaction creates are not left root's; other starts do
    /// not wait (the loop serves while the snapshot is written).
    pub fn wait_for_store(&self) {
        if let Some(store) = &self.core.store {
            store.wait_idle();
        }
    }

    /// A handle that makes [`Server::run`] return; see [`ShutdownHandle`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle::new(Arc::clone(&self.core.shared))
    }

    /// Runs the loop until a [`ShutdownHandle`] asks it to stop. Errors only if the
    /// poller itself fails, which no client can cause.
    pub fn run(mut self) -> io::Result<()> {
        let Server { poll, events, core } = &mut self;
        if let Some(n) = core.notify.as_mut() {
            n.notify("READY=1\nSTATUS=accepting connections");
        }
        core.handle_sys(Instant::now());
        // The bridges' first dials, before the first sleep (no event may come for long).
        if !core.bridges.is_empty() {
            core.bridges
                .turn(&mut core.broker, poll.registry(), Instant::now());
            core.sync_store();
        }
        loop {
            if core.shared.stop_requested() {
                if let Some(n) = core.notify.as_mut() {
                    n.notify("STOPPING=1");
                }
                core.shutdown(poll.registry());
                return Ok(());
            }
            let timeout = core.timeout(Instant::now());
            if let Err(e) = poll.poll(events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            core.handshakes = transport::HANDSHAKES_PER_TURN;
            let now = Instant::now();
            let registry = poll.registry();
            core.handle_readable_work(registry, now);
            for event in events.iter() {
                core.handle_event(registry, event, now);
            }
            core.handle_timers(registry, now);
            if !core.bridges.is_empty() {
                core.bridges.turn(&mut core.broker, registry, now);
            }
            core.sync_store();
            if core.bridges.waits_for(core.broker.durable_batch()) {
                // Durability learned in this turn releases bridge output now.
                core.bridges.turn(&mut core.broker, registry, now);
                core.sync_store();
            }
            if let Some(n) = core.notify.as_mut() {
                n.handle_timeout(now);
            }
            core.transmit(registry, now);
            core.resume_paused();
            core.free_closed();
        }
    }
}

impl Core {
    /// How long `poll` may sleep: until the broker's deadline, the accept backoff or the
    /// systemd watchdog, zero with read work pending, forever otherwise.
    fn timeout(&mut self, now: Instant) -> Option<Duration> {
        if !self.readable.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut deadline = self.broker.poll_timeout();
        while let Some(&(at, key, id)) = self.lingering.front() {
            if self.is_lingering(key, id) {
                deadline = Some(deadline.map_or(at, |d| d.min(at)));
                break;
            }
            self.lingering.pop_front();
        }
        // The watchdog deadline exists only when systemd configured one, so an idle
        // broker without a watchdog still sleeps without a timeout.
        let watchdog = self
            .notify
            .as_ref()
            .and_then(systemd::Notifier::next_deadline);
        for extra in [
            self.accept_backoff,
            watchdog,
            self.sys_due,
            self.bridges.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        {
            deadline = Some(deadline.map_or(extra, |d| d.min(extra)));
        }
        deadline.map(|d| d.saturating_duration_since(now))
    }

    /// Reads the connections left with input by the previous turn.
    fn handle_readable_work(&mut self, registry: &Registry, now: Instant) {
        mem::swap(&mut self.readable, &mut self.readable_spare);
        let mut work = mem::take(&mut self.readable_spare);
        for &(key, id) in &work {
            if let Some(conn) = self.conns.get_mut(key) {
                if conn.id == id {
                    conn.queued = false;
                    self.read(registry, key, now);
                }
            }
        }
        work.clear();
        self.readable_spare = work;
    }

    fn handle_event(&mut self, registry: &Registry, event: &mio::event::Event, now: Instant) {
        match token::target(event.token()) {
            // The stop flag is checked at the top of every turn.
            Target::Waker => {}
            Target::Signals => self.handle_signals(registry, now),
            Target::Listener(i) => self.accept(registry, i, now),
            Target::Bridge(i, probe) => {
                let scratch = &mut self.scratch;
                self.bridges.handle_event(
                    &mut self.broker,
                    registry,
                    i,
                    probe,
                    event,
                    scratch,
                    now,
                );
            }
            Target::Connection(key) => {
                let state = self.conns.get(key).map(|c| c.state);
                if state == Some(State::Lingering) {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.drain(registry, key);
                    }
                    if event.is_writable() || event.is_write_closed() {
                        self.linger_write(registry, key);
                    }
                    return;
                }
                let open = state == Some(State::Open);
                if !open {
                    return; // closed earlier in this batch, or a stale event
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(registry, key, now);
                }
                if event.is_writable() || event.is_write_closed() {
                    self.flush(registry, key, now);
                }
            }
        }
    }

    /// Drains pending signals: SIGTERM/SIGINT stop the loop at the top of the next turn;
    /// SIGHUP reloads.
    fn handle_signals(&mut self, registry: &Registry, now: Instant) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let mut reload = false;
        for signal in signals.pending() {
            match signal {
                SIGHUP => reload = true,
                _ => {
                    info!("signal {signal} received: shutting down");
                    self.shared.request_stop();
                }
            }
        }
        if reload {
            self.reload(registry, now);
        }
    }

    /// Fires the broker's timers once the deadline has passed, and retries accepting when
    /// the backoff is over.
    fn handle_timers(&mut self, registry: &Registry, now: Instant) {
        if self.broker.poll_timeout().is_some_and(|d| d <= now) {
            self.broker.handle_timeout(now);
        }
        self.handle_sys(now);
        while let Some(&(at, key, id)) = self.lingering.front() {
            if at > now {
                break;
            }
            self.lingering.pop_front();
            if self.is_lingering(key, id) {
                self.close(registry, key, "linger time over", &[]);
            }
        }
        if self.accept_backoff.is_some_and(|t| t <= now) {
            self.accept_backoff = None;
            // Edge-triggered: connections already in the backlog raise no new event.
            for i in 0..self.listeners.len() {
                self.accept(registry, i, now);
            }
        }
    }

    /// Accepts from listener `i` until its backlog is empty.
    fn accept(&mut self, registry: &Registry, i: usize, now: Instant) {
        let mut skips = 0;
        while self.accept_backoff.is_none() {
            let Some(l) = self.listeners.get(i) else {
                return; // a stale or foreign token
            };
            let addr = l.addr;
            let e = match l.socket.accept() {
                Ok((stream, peer)) => {
                    self.admit(registry, stream, peer, addr, now);
                    continue;
                }
                Err(e) => e,
            };
            match listener::classify_accept_error(&e) {
                AcceptError::Drained => {
                    // The backlog is empty: the burst, if any, is over.
                    self.accept_warned = false;
                    return;
                }
                AcceptError::Retry => {}
                AcceptError::Skip if skips < MAX_ACCEPT_SKIPS => {
                    skips += 1;
                    debug!("accept on {addr} failed: {e}");
                }
                AcceptError::Skip | AcceptError::Resources => {
                    if !self.accept_warned {
                        warn!(
                            "accept on {addr} failed: {e}; pausing accepts for {} ms",
                            ACCEPT_BACKOFF.as_millis()
                        );
                        self.accept_warned = true;
                    }
                    self.accept_backoff = Some(now + ACCEPT_BACKOFF);
                }
            }
        }
    }

    /// Takes an accepted socket into the slab, or drops it when over the limit.
    fn admit(
        &mut self,
        registry: &Registry,
        mut stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        now: Instant,
    ) {
        if self.max_connections > 0 && self.open >= self.max_connections {
            debug!(
                "refused {peer} on {local}: max_connections ({}) reached",
                self.max_connections
            );
            return;
        }
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let (Some(token), Ok(index)) = (token::connection(key), u32::try_from(key)) else {
            warn!("refused {peer} on {local}: connection table full");
            return;
        };
        let Ok(transport) = listener::transport_for(&self.listeners, local)
            .map_err(|e| warn!("refused {peer} on {local}: {e}"))
        else {
            return;
        };
        if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
            warn!("refused {peer} on {local}: cannot register socket: {e}");
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        let id = ConnId {
            index,
            generation: self.generation,
        };
        entry.insert(Connection::new(id, stream, transport));
        self.open += 1;
        debug!("accepted {peer} on {local} as {}", Id(id));
        if self.broker.config().connection_messages {
            // Mosquitto's line, word for word (log tools match it).
            info!(
                "New connection from {} on port {}.",
                listener::peer_text(peer),
                local.port()
            );
        }
        self.broker.handle_open(id, now);
        if let Some(configured) = listener::configured_for(&self.listeners, local) {
            self.broker.set_listener(id, configured);
        }
        self.broker.set_peer(id, listener::peer_text(peer));
    }

    /// Reads one open connection and acts on how the read ended.
    fn read(&mut self, registry: &Registry, key: usize, now: Instant) {
        let journal_room = self.journal_room();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state == State::Lingering {
            self.drain(registry, key);
            return;
        }
        if !conn.is_open() {
            return;
        }
        let mut cx = ReadCtx {
            broker: &mut self.broker,
            scratch: &mut self.scratch,
            max_packet_size: self.max_packet_size,
            now,
            journal_room,
            plain: &mut self.plain,
            handshakes: &mut self.handshakes,
        };
        let id = conn.id;
        match conn.read(&mut cx) {
            ReadEnd::Drained => {}
            ReadEnd::Capped | ReadEnd::HandshakeDeferred => {
                if !conn.queued {
                    conn.queued = true;
                    self.readable.push((key, id));
                }
            }
            ReadEnd::Paused => {
                if !conn.paused {
                    conn.paused = true;
                    self.paused.push((key, id));
                }
            }
            ReadEnd::PeerClosed => {
                self.broker
                    .handle_disconnect(id, Disconnect::PeerClosed, now);
                self.close(registry, key, "closed by peer", &[]);
            }
            ReadEnd::Failed(e) => {
                self.broker.handle_disconnect(id, Disconnect::IoError, now);
                self.close(registry, key, &format!("read error: {e}"), &[]);
            }
            ReadEnd::BrokerClosed => {
                conn.state = State::Ending;
                self.ending.push(key);
            }
            ReadEnd::CodecBug => {
                error!("{}: decoder reported an impossible length; closing", Id(id));
                self.broker.handle_disconnect(id, Disconnect::IoError, now);
                self.close(registry, key, "decoder error", &[]);
            }
        }
        self.flush_own_output(registry, key, id, now);
    }

    /// Frees the slots of connections closed in this turn.
    fn free_closed(&mut self) {
        for key in self.closed.drain(..) {
            self.conns.try_remove(key);
        }
    }

    /// The slab key of a connection the broker still knows (open or ending) with this
    /// exact id.
    fn key_of(&self, id: ConnId) -> Option<usize> {
        let key = usize::try_from(id.index).ok()?;
        let conn = self.conns.get(key)?;
        (conn.id == id && matches!(conn.state, State::Open | State::Ending)).then_some(key)
    }

    /// Closes a connection's socket; its slot is freed at the end of the turn.
    fn close(&mut self, registry: &Registry, key: usize, why: &str, final_bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state == State::Closed {
            return;
        }
        // Its partial input and lingering final bytes go with it (`memory_limit` counts them).
        let held = conn.tail_bytes() + conn.linger_bytes();
        self.broker.account_input(held, 0);
        conn.close(registry, final_bytes, &mut self.scratch);
        self.open -= 1;
        self.closed.push(key);
        debug!("closed {}: {why}", Id(conn.id));
    }

    /// Disconnects every client with `Disconnect::Shutdown`, flushes best effort and
    /// closes every socket.
    fn shutdown(&mut self, registry: &Registry) {
        let now = Instant::now();
        info!("shutting down ({} connections)", self.open);
        self.transmit(registry, now);
        let live: Vec<(usize, ConnId, State)> = self
            .conns
            .iter()
            .map(|(key, c)| (key, c.id, c.state))
            .collect();
        for &(_, id, state) in &live {
            if state == State::Open {
                self.broker.handle_disconnect(id, Disconnect::Shutdown, now);
            }
        }
        self.bridges.shutdown(registry);
        self.sync_store();
        self.transmit(registry, now);
        for &(key, ..) in &live {
            self.close(registry, key, "shutdown", &[]);
        }
        self.free_closed();
        if let Some(store) = self.store.take() {
            // Writes and fsyncs what is left before `run` returns.
            store.close();
        }
        for l in &mut self.listeners {
            let _ = registry.deregister(&mut l.socket);
        }
    }
}
