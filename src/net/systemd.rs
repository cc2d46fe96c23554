//! systemd's service notification protocol (`sd_notify(3)`), without libsystemd.
//!
//! Under `Type=notify` systemd passes `$NOTIFY_SOCKET`, the address of a Unix datagram
//! socket: a filesystem path, or an abstract socket written `@name`. Each state change is
//! one datagram of `KEY=value` lines. The loop sends `READY=1` once its listeners are bound
//! (they are bound before `run` starts, so clients connecting after READY are accepted),
//! `STOPPING=1` when it starts shutting down, and, when `$WATCHDOG_USEC` is set, `WATCHDOG=1`
//! every half of that interval, as `sd_watchdog_enabled(3)` recommends.
//!
//! The watchdog is a deadline in the loop's timeout computation (see `Core::timeout`), so a
//! broker without a watchdog keeps sleeping without a timeout when idle. Notification is
//! best effort: a malformed variable or a failed send is logged, never fatal, because a
//! broker that serves clients is better than one that refuses to start over a status
//! message.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use log::{debug, warn};

/// A connection to systemd's notification socket.
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half of `$WATCHDOG_USEC`, when a watchdog is configured for this process.
    watchdog_interval: Option<Duration>,
    /// When the next `WATCHDOG=1` is due.
    next_watchdog: Option<Instant>,
    /// A send failure was logged; later ones go to debug, so that a vanished socket does
    /// not flood the log at every watchdog tick.
    send_failed: bool,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. `None` when there is no
    /// (usable) notification socket: not started by systemd, or a malformed address, which
    /// is logged.
    pub(crate) fn from_env(now: Instant) -> Option<Notifier> {
        let socket_var = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::new(
            socket_var.as_encoded_bytes(),
            watchdog_usec.as_deref(),
            watchdog_pid.as_deref(),
            now,
        )
    }

    fn new(
        socket_var: &[u8],
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        now: Instant,
    ) -> Option<Notifier> {
        let addr = match parse_address(socket_var) {
            Ok(addr) => addr,
            Err(why) => {
                warn!("NOTIFY_SOCKET ignored: {why}");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot create a socket for NOTIFY_SOCKET: {e}");
                return None;
            }
        };
        // A send to a full or stuck socket must not stall the event loop.
        if let Err(e) = socket.set_nonblocking(true) {
            warn!("cannot make the NOTIFY_SOCKET socket non-blocking: {e}");
            return None;
        }
        let watchdog_interval = watchdog_usec.and_then(|usec| {
            match parse_watchdog(usec, watchdog_pid, std::process::id()) {
                Ok(interval) => interval,
                Err(why) => {
                    warn!("watchdog disabled: {why}");
                    None
                }
            }
        });
        Some(Notifier {
            socket,
            addr,
            watchdog_interval,
            next_watchdog: watchdog_interval.map(|i| now + i),
            send_failed: false,
        })
    }

    /// Sends one notification datagram, e.g. `"READY=1"`.
    pub(crate) fn notify(&mut self, message: &str) {
        match self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            Ok(_) => debug!("sd_notify: {}", message.replace('\n', " ")),
            Err(e) if self.send_failed => debug!("NOTIFY_SOCKET send failed: {e}"),
            Err(e) => {
                warn!("NOTIFY_SOCKET send failed: {e}");
                self.send_failed = true;
            }
        }
    }

    /// When the loop must wake up next for the watchdog; `None` without a watchdog.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.next_watchdog
    }

    /// Sends `WATCHDOG=1` if it is due, and schedules the next one.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let (Some(due), Some(interval)) = (self.next_watchdog, self.watchdog_interval) else {
            return;
        };
        if due <= now {
            self.notify("WATCHDOG=1");
            self.next_watchdog = Some(now + interval);
        }
    }
}

/// `$NOTIFY_SOCKET` as a socket address: `@name` is an abstract socket (Linux), anything
/// else a filesystem path.
fn parse_address(var: &[u8]) -> Result<SocketAddr, String> {
    match var {
        [] => Err("empty address".into()),
        [b'@', name @ ..] => abstract_address(name),
        path => {
            let path = std::str::from_utf8(path)
                .map_err(|_| format!("{:?} is not valid UTF-8", String::from_utf8_lossy(path)))?;
            SocketAddr::from_pathname(path).map_err(|e| format!("{path:?}: {e}"))
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> Result<SocketAddr, String> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
        .map_err(|e| format!("@{}: {e}", String::from_utf8_lossy(name)))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(name: &[u8]) -> Result<SocketAddr, String> {
    Err(format!(
        "@{}: abstract sockets exist only on Linux",
        String::from_utf8_lossy(name)
    ))
}

/// The interval between `WATCHDOG=1` messages: half of `$WATCHDOG_USEC`. `Ok(None)` when
/// `$WATCHDOG_PID` names another process (the watchdog is then not ours to feed).
fn parse_watchdog(usec: &str, pid: Option<&str>, own_pid: u32) -> Result<Option<Duration>, String> {
    if let Some(pid) = pid {
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| format!("WATCHDOG_PID={pid:?} is not a process id"))?;
        if pid != own_pid {
            return Ok(None);
        }
    }
    let usec: u64 = usec
        .trim()
        .parse()
        .map_err(|_| format!("WATCHDOG_USEC={usec:?} is not a number of microseconds"))?;
    if usec == 0 {
        return Err("WATCHDOG_USEC=0".into());
    }
    // At least 1 ms, so that a tiny value cannot turn the loop into a busy wait.
    Ok(Some(
        Duration::from_micros(usec / 2).max(Duration::from_millis(1)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec() {
        assert_eq!(
            parse_watchdog("30000000", None, 7),
            Ok(Some(Duration::from_secs(15)))
        );
        assert_eq!(
            parse_watchdog("200000", Some("7"), 7),
            Ok(Some(Duration::from_millis(100)))
        );
        assert_eq!(
            parse_watchdog("1", None, 7),
            Ok(Some(Duration::from_millis(1)))
        );
    }

    #[test]
    fn watchdog_for_another_pid_is_not_ours() {
        assert_eq!(parse_watchdog("200000", Some("8"), 7), Ok(None));
    }

    #[test]
    fn malformed_watchdog_variables_are_errors_not_panics() {
        for (usec, pid) in [
            ("", None),
            ("abc", None),
            ("-5", None),
            ("0", None),
            ("99999999999999999999999", None),
            ("100", Some("x")),
        ] {
            assert!(parse_watchdog(usec, pid, 7).is_err(), "{usec:?} {pid:?}");
        }
    }

    #[test]
    fn notify_socket_addresses() {
        assert!(parse_address(b"").is_err());
        assert!(parse_address(b"/run/systemd/notify").is_ok());
        assert!(parse_address(b"@wrenmq-test").is_ok());
        assert!(parse_address(b"\xff\xfe").is_err());
        // Longer than sun_path (108 bytes).
        assert!(parse_address(&[b'a'; 200]).is_err());
    }

    #[test]
    fn malformed_notify_socket_gives_no_notifier() {
        assert!(Notifier::new(b"", None, None, Instant::now()).is_none());
        let n = Notifier::new(b"@x", Some("junk"), None, Instant::now());
        assert!(n.is_some_and(|n| n.next_deadline().is_none()));
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("wrenmq-notify-test-{}", std::process::id());
        let addr = abstract_address(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let now = Instant::now();
        let var = format!("@{name}");
        let mut n = Notifier::new(var.as_bytes(), Some("2000"), None, now).unwrap();
        n.notify("READY=1");
        assert_eq!(n.next_deadline(), Some(now + Duration::from_millis(1)));
        n.handle_timeout(now); // not due yet: nothing sent
        n.handle_timeout(now + Duration::from_millis(1));
        let mut buf = [0u8; 64];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1");
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"WATCHDOG=1");
        assert_eq!(n.next_deadline(), Some(now + Duration::from_millis(2)));
    }
}
