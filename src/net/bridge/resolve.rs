//! Host names of bridge addresses, resolved off the loop.
//!
//! `getaddrinfo` (std's `ToSocketAddrs`) blocks, for seconds when a DNS server is slow,
//! so it never runs on the loop: one helper thread takes [`Request`]s over a channel,
//! resolves them one after the other and sends each [`Answer`] back, then wakes the loop
//! through its `mio::Waker` (the callback given to [`Resolver::start`], the same wake-up
//! the journal writer uses). The loop picks the answers up in its next turn
//! ([`Resolver::answers`]).
//!
//! Bounds: the thread exists only once some bridge dials a host name (IP literals need
//! none); each bridge has at most one lookup outstanding (`Uplink::lookup`), so the
//! request channel, sized for twice the bridges a broker may have (lookups of bridges a
//! SIGHUP removed may still be in it), never fills in practice, and a full channel is a
//! failed lookup, never a blocked loop. The thread ends when the [`Resolver`] is dropped
//! and its current lookup returns.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

use crate::net::token;

/// Requests the channel holds at most.
const MAX_PENDING: usize = 2 * token::MAX_BRIDGES;

/// The loop's wake-up.
pub(crate) type Wake = Arc<dyn Fn() + Send + Sync>;

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

/// The helper thread's channels.
pub(super) struct Resolver {
    requests: SyncSender<Request>,
    answers: Receiver<Answer>,
}

impl Resolver {
    /// Starts the helper thread; `wake` is called after every answer.
    pub(super) fn start(wake: Wake) -> io::Result<Resolver> {
        let (requests, inbox) = mpsc::sync_channel::<Request>(MAX_PENDING);
        let (outbox, answers) = mpsc::channel();
        std::thread::Builder::new()
            .name("wrenmq-resolve".into())
            .spawn(move || {
                for req in inbox {
                    let result = lookup(&req.host, req.port);
                    if outbox.send(Answer { id: req.id, result }).is_err() {
                        return; // the loop is gone
                    }
                    wake();
                }
            })?;
        Ok(Resolver { requests, answers })
    }

    /// Queues a lookup; false if the thread is gone or (never in practice) the channel
    /// is full.
    pub(super) fn ask(&self, req: Request) -> bool {
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
        let r = Resolver::start(Arc::new(move || {
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

    #[test]
    fn a_full_channel_is_a_refused_request_not_a_blocked_loop() {
        // A thread that never answers stands in for one stuck in a slow lookup.
        let (requests, _inbox) = mpsc::sync_channel(1);
        let (_outbox, answers) = mpsc::channel::<Answer>();
        let r = Resolver { requests, answers };
        let req = |id| Request {
            id,
            host: "slow.example".into(),
            port: 1,
        };
        assert!(r.ask(req(1)));
        assert!(!r.ask(req(2)));
    }
}
