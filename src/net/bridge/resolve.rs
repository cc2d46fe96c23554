//! Host names of bridge addresses, resolved off the loop.
//!
//! `getaddrinfo` (std's `ToSocketAddrs`) blocks, for seconds when a DNS server is slow,
//! so it never runs on the loop: helper threads take [`Request`]s from a channel, resolve
//! them and send each [`Answer`] back, then wake the loop through its `mio::Waker` (the
//! callback given to [`Resolver::start`], the same wake-up the journal writer uses). The
//! loop picks the answers up in its next turn ([`Resolver::answers`]).
//!
//! Bounds: the first thread starts once some bridge dials a host name (IP literals need
//! none); another starts when a request comes while every thread is in a lookup, up to
//! [`MAX_THREADS`], so one bridge's host stuck in a slow DNS server does not hold up
//! another bridge's lookup. Each bridge has at most one lookup outstanding
//! (`Uplink::lookup`), so the request channel, sized for twice the bridges a broker may
//! have (lookups of bridges a SIGHUP removed may still be in it), never fills in practice,
//! and a full channel is a failed lookup, never a blocked loop. The threads end when the
//! [`Resolver`] is dropped and their current lookups return.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};

use crate::net::token;

/// Requests the channel holds at most.
const MAX_PENDING: usize = 2 * token::MAX_BRIDGES;

/// Lookup threads at most.
pub(super) const MAX_THREADS: usize = 4;

/// The loop's wake-up.
pub(crate) type Wake = Arc<dyn Fn() + Send + Sync>;

/// What resolves a host name (`getaddrinfo`; something slower in tests).
type Lookup = fn(&str, u16) -> Result<Vec<SocketAddr>, String>;

/// One lookup: `host` (a name, not an IP literal) and the port to pair its addresses with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Request {
    /// Unique per request, so an answer for a bridge that is gone is recognised as such.
    pub id: u64,
    pub host: String,
    pub port: u16,
}

/// The addresses `getaddrinfo` returned, in its order, without duplicates; or why none.
#[derive(Debug)]
pub(super) struct Answer {
    pub id: u64,
    pub result: Result<Vec<SocketAddr>, String>,
}

/// The helper threads' channels.
pub(super) struct Resolver {
    requests: SyncSender<Request>,
    answers: Receiver<Answer>,
    /// What a new thread needs: the shared inbox, the answers' sender, the wake-up.
    inbox: Arc<Mutex<Receiver<Request>>>,
    outbox: Sender<Answer>,
    wake: Wake,
    lookup: Lookup,
    threads: usize,
    /// Threads waiting for a request (not in a lookup).
    idle: Arc<AtomicUsize>,
}

impl Resolver {
    /// Starts the first helper thread; `wake` is called after every answer.
    pub(super) fn start(wake: Wake) -> io::Result<Resolver> {
        Resolver::start_with(wake, lookup)
    }

    fn start_with(wake: Wake, lookup: Lookup) -> io::Result<Resolver> {
        let (requests, inbox) = mpsc::sync_channel::<Request>(MAX_PENDING);
        let (outbox, answers) = mpsc::channel();
        let mut r = Resolver {
            requests,
            answers,
            inbox: Arc::new(Mutex::new(inbox)),
            outbox,
            wake,
            lookup,
            threads: 0,
            idle: Arc::new(AtomicUsize::new(0)),
        };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let (inbox, outbox) = (self.inbox.clone(), self.outbox.clone());
        let (wake, lookup, idle) = (self.wake.clone(), self.lookup, self.idle.clone());
        // Counted idle from the start, so that the next `ask` does not start another.
        idle.fetch_add(1, Ordering::SeqCst);
        let started = std::thread::Builder::new()
            .name("wrenmq-resolve".into())
            .spawn(move || loop {
                // One thread waits on the channel, the others on the lock.
                let req = match inbox.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(req) = req else { return }; // the loop is gone
                idle.fetch_sub(1, Ordering::SeqCst);
                let result = lookup(&req.host, req.port);
                if outbox.send(Answer { id: req.id, result }).is_err() {
                    return;
                }
                idle.fetch_add(1, Ordering::SeqCst);
                wake();
            });
        match started {
            Ok(_) => {
                self.threads += 1;
                Ok(())
            }
            Err(e) => {
                self.idle.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Queues a lookup, starting another thread when all are busy (up to
    /// [`MAX_THREADS`]); false if the threads are gone or (never in practice) the
    /// channel is full.
    pub(super) fn ask(&mut self, req: Request) -> bool {
        if self.idle.load(Ordering::SeqCst) == 0 && self.threads < MAX_THREADS {
            // Without another thread the request still waits for a busy one.
            let _ = self.spawn();
        }
        match self.requests.try_send(req) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// The answers that arrived since the last call.
    pub(super) fn answers(&self) -> Vec<Answer> {
        let mut out = Vec::new();
        loop {
            match self.answers.try_recv() {
                Ok(a) => out.push(a),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
            }
        }
    }
}

/// The address of an `address` entry that needs no lookup: an IP literal.
pub(super) fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// `getaddrinfo` through std; runs on the helper thread (and in tests).
fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in (host, port).to_socket_addrs().map_err(|e| e.to_string())? {
        // One entry per socket type comes back on some systems: keep the first.
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err("no addresses".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn wait_answers(r: &Resolver, n: usize) -> Vec<Answer> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < n {
            assert!(Instant::now() < deadline, "no answer from the resolver");
            got.extend(r.answers());
            std::thread::sleep(Duration::from_millis(5));
        }
        got
    }

    #[test]
    fn literals_need_no_lookup() {
        assert_eq!(literal("127.0.0.1"), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(literal("::1"), Some("::1".parse().unwrap()));
        assert_eq!(literal("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(literal("localhost"), None);
        assert_eq!(literal("broker.example.com"), None);
    }

    #[test]
    fn the_thread_answers_each_request_and_wakes_the_loop() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = wakes.clone();
        let mut r = Resolver::start(Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
        assert!(r.ask(Request {
            id: 7,
            host: "localhost".into(),
            port: 1883,
        }));
        // RFC 2606/6761: `.invalid` never resolves.
        assert!(r.ask(Request {
            id: 8,
            host: "nonexistent.invalid".into(),
            port: 1883,
        }));
        let mut got = wait_answers(&r, 2);
        got.sort_by_key(|a| a.id);
        let addrs = got[0].result.as_ref().unwrap();
        assert_eq!(got[0].id, 7);
        assert!(!addrs.is_empty(), "localhost resolves");
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 1883));
        assert_eq!(got[1].id, 8);
        assert!(got[1].result.is_err(), "{:?}", got[1].result);
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
        assert!(r.answers().is_empty());
    }

    /// Lookups of `stuck.example` block until `UNSTICK` is set: a DNS server that does
    /// not answer.
    static UNSTICK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static STUCK: AtomicUsize = AtomicUsize::new(0);

    fn slow_lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if host == "stuck.example" {
            STUCK.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(20);
            while !UNSTICK.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            return Err("timed out".into());
        }
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    fn req(id: u64, host: &str) -> Request {
        Request {
            id,
            host: host.into(),
            port: 1883,
        }
    }

    #[test]
    fn a_lookup_stuck_in_dns_does_not_hold_up_the_others_and_threads_are_bounded() {
        let mut r = Resolver::start_with(Arc::new(|| {}), slow_lookup).unwrap();
        // More stuck lookups than threads: the last ones wait, the threads stay bounded.
        for id in 0..MAX_THREADS as u64 - 1 {
            assert!(r.ask(req(id, "stuck.example")));
            let deadline = Instant::now() + Duration::from_secs(20);
            while STUCK.load(Ordering::SeqCst) <= id as usize {
                assert!(Instant::now() < deadline, "lookup {id} not started");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert!(r.ask(req(100, "broker.example")));
        let got = wait_answers(&r, 1);
        assert_eq!(got[0].id, 100, "answered while the others are stuck");
        assert_eq!(r.threads, MAX_THREADS);
        assert!(r.ask(req(200, "stuck.example")));
        assert!(r.ask(req(201, "broker.example")));
        assert_eq!(r.threads, MAX_THREADS, "no thread beyond the bound");
        UNSTICK.store(true, Ordering::SeqCst);
        let mut got = wait_answers(&r, MAX_THREADS + 1);
        got.sort_by_key(|a| a.id);
        let ids: Vec<u64> = got.iter().map(|a| a.id).collect();
        let mut want: Vec<u64> = (0..MAX_THREADS as u64 - 1).collect();
        want.extend([200, 201]);
        assert_eq!(ids, want);
    }

    #[test]
    fn a_full_channel_is_a_refused_request_not_a_blocked_loop() {
        // Threads that never answer stand in for ones stuck in slow lookups.
        let mut r = Resolver::start_with(Arc::new(|| {}), slow_lookup).unwrap();
        let (requests, _inbox) = mpsc::sync_channel(1);
        r.requests = requests;
        r.threads = MAX_THREADS;
        assert!(r.ask(req(1, "stuck.example")));
        assert!(!r.ask(req(2, "stuck.example")));
    }
}
