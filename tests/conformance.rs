//! Runs the byte-exact conformance sequences in `tests/conformance/*.txt` in-process: the
//! broker state machine with a fake clock, fed through the real codec, no sockets. The
//! same files run over TCP against the broker binary in `tests/interop/test_conformance.py`
//! (format: `tests/conformance/README.md`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use wrenmq::broker::{Broker, ConnId, Disconnect};
use wrenmq::config::Config;
use wrenmq::protocol::{decode, Status};

struct Client {
    id: ConnId,
    /// Bytes sent by the test and not yet decoded (a partial packet).
    input: Vec<u8>,
    /// Bytes the broker wrote and the test has not matched yet.
    received: Vec<u8>,
    closed: bool,
}

struct Run {
    broker: Broker,
    now: Instant,
    clients: HashMap<String, Client>,
    next: u32,
}

impl Run {
    fn new() -> Run {
        Run {
            broker: Broker::new(Config::in_memory()),
            now: Instant::now(),
            clients: HashMap::new(),
            next: 0,
        }
    }

    /// Moves everything the broker produced into the clients' `received` buffers.
    fn collect(&mut self) {
        while let Some(close) = self.broker.poll_close() {
            if let Some(c) = self.clients.values_mut().find(|c| c.id == close.id) {
                c.received.extend_from_slice(&close.final_bytes);
                c.closed = true;
            }
        }
        while let Some(id) = self.broker.poll_transmit() {
            let bytes = self.broker.pending_output(id).to_vec();
            self.broker.consume_output(id, bytes.len());
            if let Some(c) = self.clients.values_mut().find(|c| c.id == id) {
                c.received.extend_from_slice(&bytes);
            }
        }
    }

    fn send(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let c = self
            .clients
            .get_mut(name)
            .ok_or_else(|| format!("no client {name}"))?;
        if c.closed {
            return Ok(()); // the socket is gone; the bytes go nowhere
        }
        c.input.extend_from_slice(bytes);
        let id = c.id;
        let mut input = std::mem::take(&mut c.input);
        let mut used = 0;
        loop {
            let version = self.broker.protocol_version(id);
            match decode(
                &input[used..],
                version,
                self.broker.config().max_packet_size,
            ) {
                Ok(Status::Complete((packet, n))) => {
                    used += n;
                    if !self.broker.handle_packet(id, packet, self.now) {
                        break;
                    }
                }
                Ok(Status::Partial { .. }) => break,
                Err(e) => {
                    self.broker.handle_decode_error(id, e, self.now);
                    break;
                }
            }
        }
        input.drain(..used);
        if let Some(c) = self.clients.get_mut(name) {
            c.input = input;
        }
        self.collect();
        Ok(())
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.broker.handle_timeout(self.now);
        self.collect();
    }
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits in {s:?}"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| format!("{e} in {s:?}")))
        .collect()
}

fn run_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut run = Run::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("skip ") {
            continue;
        }
        let at = format!("{}:{}", path.display(), n + 1);
        let mut words = line.splitn(3, ' ');
        let (first, second, rest) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        match (first, second) {
            ("client", name) => {
                run.next += 1;
                let id = ConnId {
                    index: run.next,
                    generation: run.next,
                };
                run.broker.handle_open(id, run.now);
                run.clients.insert(
                    name.to_string(),
                    Client {
                        id,
                        input: Vec::new(),
                        received: Vec::new(),
                        closed: false,
                    },
                );
            }
            ("sleep", ms) => run.advance(ms.parse().map_err(|e| format!("{at}: {e}"))?),
            (name, "send") => run.send(name, &hex(rest).map_err(|e| format!("{at}: {e}"))?)?,
            (name, "expect") => {
                let want = hex(rest).map_err(|e| format!("{at}: {e}"))?;
                let c = run
                    .clients
                    .get_mut(name)
                    .ok_or_else(|| format!("{at}: no client {name}"))?;
                if !c.received.starts_with(&want) {
                    return Err(format!(
                        "{at}: want {want:02x?}\n got {:02x?} (closed: {})",
                        c.received, c.closed
                    ));
                }
                c.received.drain(..want.len());
            }
            (name, "expect-close") => {
                let c = run
                    .clients
                    .get(name)
                    .ok_or_else(|| format!("{at}: no client {name}"))?;
                if !c.closed || !c.received.is_empty() {
                    return Err(format!(
                        "{at}: want close, got closed={} bytes {:02x?}",
                        c.closed, c.received
                    ));
                }
            }
            (name, "expect-none") => {
                run.advance(rest.parse().map_err(|e| format!("{at}: {e}"))?);
                let c = run
                    .clients
                    .get(name)
                    .ok_or_else(|| format!("{at}: no client {name}"))?;
                if c.closed || !c.received.is_empty() {
                    return Err(format!(
                        "{at}: want nothing, got closed={} bytes {:02x?}",
                        c.closed, c.received
                    ));
                }
            }
            (name, "close") => {
                let c = run
                    .clients
                    .get_mut(name)
                    .ok_or_else(|| format!("{at}: no client {name}"))?;
                if !c.closed {
                    c.closed = true;
                    let id = c.id;
                    run.broker
                        .handle_disconnect(id, Disconnect::PeerClosed, run.now);
                    run.collect();
                }
            }
            _ => return Err(format!("{at}: unknown step {line:?}")),
        }
    }
    Ok(())
}

#[test]
fn conformance_sequences_pass_in_process() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/conformance exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "expected the conformance corpus, found {} files",
        files.len()
    );
    let failures: Vec<String> = files.iter().filter_map(|f| run_file(f).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} sequences failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
