//! Authentication (password files) and authorization (ACL files), Mosquitto-compatible.
//!
//! - `password`: the `$7$`/`$6$` password file format, hashing and verification.
//! - `passwd_file`: editing password files (set, delete, hash plain-text lines) and the
//!   atomic, owner- and mode-keeping write `wrenmq passwd` uses.
//! - `acl`: the ACL file format and the access check.
//! - `mod.rs` (this file): [`Auth`], what the broker asks at CONNECT, PUBLISH, SUBSCRIBE
//!   and delivery time, loaded from the files a [`Config`] names.
//!
//! Rules (Mosquitto 2.0): a client without user name is accepted only with
//! `allow_anonymous`; a client with a user name is checked against the password file when
//! there is one, and accepted without a check when there is none (Mosquitto does the
//! same). Without an ACL file every client may read and write every topic, and the broker
//! skips the check altogether.
//!
//! Verification cache: a `$7$` check costs a PBKDF2 run, so a reconnect storm of N clients
//! would cost N runs on one thread. A successful check is remembered as the user and a
//! keyed SHA-512 digest of the password (never the password itself); the same pair is then
//! accepted with one digest and a constant-time compare. The cache is bounded and is
//! thrown away with the `Auth` on reload, so a changed password file takes effect at once.
//!
//! Failure budget: a check that misses the cache runs on the event loop, and a peer that
//! tries password after password (or user after user: unknown users cost as much as real
//! ones, see `password`) would keep the loop hashing. Failed checks draw their cost (in
//! PBKDF2 iterations) from a token bucket refilled at [`FAILED_CHECK_BUDGET`] per second,
//! holding at most one second's worth. While the bucket is empty a CONNECT that misses the
//! cache is refused as not authorized without hashing ([`Refusal::Busy`]); cached
//! credentials still connect. So wrong passwords cost the loop a bounded share of each
//! second, whatever the number of peers.

pub mod acl;
pub mod passwd_file;
pub mod password;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::config::Config;
pub use acl::{Acl, Client, READ, WRITE};
pub use password::{Hash, PasswordFile};

/// Successful verifications remembered at most; past it the cache starts over.
const CACHE_CAPACITY: usize = 4096;

/// PBKDF2 iterations that failed password checks may cost per second: about 200 failed
/// checks at Mosquitto's 101 iterations, a few per cent of a Raspberry Pi core (one check
/// costs about 31 µs on an x86-64 desktop, roughly 10× that on a Pi).
pub const FAILED_CHECK_BUDGET: u64 = 20_000;

/// Why CONNECT is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No user name and anonymous clients are not allowed: 3.1.1 CONNACK 0x05,
    /// 5.0 0x87.
    NotAuthorized,
    /// Unknown user or wrong password. Answered like `NotAuthorized`, as Mosquitto 2.0
    /// does.
    BadCredentials,
    /// Too many failed checks this second: refused without checking (see the module
    /// docs). Answered like `NotAuthorized`.
    Busy,
}

/// Token bucket of the work failed checks may cost.
#[derive(Debug)]
struct Budget {
    /// Refill per second, and the most it holds ([`FAILED_CHECK_BUDGET`]; smaller in tests).
    per_second: u64,
    /// May go below zero: a check is allowed while this is positive and its cost is
    /// drawn afterwards.
    tokens: i64,
    refilled: Option<Instant>,
    /// Whether running out has been logged since the bucket last allowed a check.
    warned: bool,
}

/// The password and ACL files a configuration names, loaded.
#[derive(Debug)]
pub struct Auth {
    allow_anonymous: bool,
    passwords: Option<PasswordFile>,
    acl: Option<Acl>,
    cache: HashMap<Box<str>, [u8; 64]>,
    /// Key of the cache digests, random per `Auth`.
    cache_key: [u8; 32],
    budget: Budget,
}

/// A password or ACL file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthError {
    /// The configuration key naming the file: `password_file` or `acl_file`.
    pub key: &'static str,
    pub file: PathBuf,
    /// 1-based; 0 when the file cannot be read at all.
    pub line: usize,
    pub message: String,
}

impl Auth {
    /// Everyone may connect, read and write: the broker without configuration.
    pub fn allow_all() -> Auth {
        Auth::new(true, None, None)
    }

    pub fn new(allow_anonymous: bool, passwords: Option<PasswordFile>, acl: Option<Acl>) -> Auth {
        let mut cache_key = [0; 32];
        // Without OS randomness the digests are still keyed per user and password; the
        // key only hardens a memory dump, so a failure here is not worth refusing to run.
        let _ = getrandom::getrandom(&mut cache_key);
        Auth {
            allow_anonymous,
            passwords,
            acl,
            cache: HashMap::new(),
            cache_key,
            budget: Budget {
                per_second: FAILED_CHECK_BUDGET,
                tokens: FAILED_CHECK_BUDGET as i64,
                refilled: None,
                warned: false,
            },
        }
    }

    /// Reads the password and ACL files `config` names.
    pub fn load(config: &Config) -> Result<Auth, AuthError> {
        let passwords = match &config.password_file {
            Some(path) => Some(load_file(path, "password_file", |text| {
                PasswordFile::parse(text).map_err(|e| (e.line, e.message))
            })?),
            None => None,
        };
        let acl = match &config.acl_file {
            Some(path) => Some(load_file(path, "acl_file", |text| {
                Acl::parse(text).map_err(|e| (e.line, e.message))
            })?),
            None => None,
        };
        Ok(Auth::new(config.allow_anonymous, passwords, acl))
    }

    /// The CONNECT check at `now` (which only paces the failure budget).
    pub fn authenticate(
        &mut self,
        username: Option<&str>,
        password: Option<&[u8]>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let Some(user) = username else {
            return if self.allow_anonymous {
                Ok(())
            } else {
                Err(Refusal::NotAuthorized)
            };
        };
        let Some(file) = &self.passwords else {
            return Ok(());
        };
        let password = password.unwrap_or_default();
        let digest = self.digest(user, password);
        if let Some(known) = self.cache.get(user) {
            if bool::from(known.ct_eq(&digest)) {
                return Ok(());
            }
        }
        self.budget.refill(now);
        if self.budget.tokens <= 0 {
            if !self.budget.warned {
                self.budget.warned = true;
                log::warn!(
                    "failed password checks are over their budget ({FAILED_CHECK_BUDGET} \
                     PBKDF2 iterations a second): refusing logins that are not cached, \
                     without checking, until it refills"
                );
            }
            return Err(Refusal::Busy);
        }
        self.budget.warned = false;
        if !file.verify(user, password) {
            let cost = i64::try_from(file.verify_cost(user)).unwrap_or(i64::MAX);
            self.budget.tokens = self.budget.tokens.saturating_sub(cost);
            return Err(Refusal::BadCredentials);
        }
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.insert(user.into(), digest);
        Ok(())
    }

    /// Whether a client admitted under `old` with `username` is still admitted under
    /// these (reloaded) files. No password is kept after CONNECT, so a user whose password
    /// file entry changed in any way is no longer admitted, like one whose entry is gone;
    /// a user name that met no password file then must meet this one, so it is not
    /// admitted either.
    pub fn still_admits(&self, old: &Auth, username: Option<&str>) -> bool {
        let Some(user) = username else {
            return self.allow_anonymous;
        };
        match (&self.passwords, &old.passwords) {
            (None, _) => true,
            (Some(new), Some(old)) => new.get(user).is_some_and(|h| old.get(user) == Some(h)),
            (Some(_), None) => false,
        }
    }

    /// Whether an ACL is in force. Callers skip building a [`Client`] when it is not.
    pub fn has_acl(&self) -> bool {
        self.acl.is_some()
    }

    /// Whether `client` may read or write `topic_name`; always true without an ACL file.
    pub fn check(&self, client: Client<'_>, topic_name: &str, access: u8) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.check(client, topic_name, access))
    }

    /// Whether `client` may subscribe to `filter`; always true without an ACL file.
    pub fn check_subscribe(&self, client: Client<'_>, filter: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.check_subscribe(client, filter))
    }

    /// The same `Auth` with a failure budget of `per_second` (tests use a small one).
    #[cfg(test)]
    pub(crate) fn with_failure_budget(mut self, per_second: u64) -> Auth {
        self.budget.per_second = per_second;
        self.budget.tokens = i64::try_from(per_second).unwrap_or(i64::MAX);
        self
    }

    /// Number of remembered verifications (for tests and logs).
    pub fn cached_verifications(&self) -> usize {
        self.cache.len()
    }

    fn digest(&self, user: &str, password: &[u8]) -> [u8; 64] {
        let mut h = Sha512::new();
        h.update(self.cache_key);
        // Length-prefixed so that ("ab", "c") and ("a", "bc") differ.
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(password);
        h.finalize().into()
    }
}

impl Budget {
    /// Adds what `now` earned since the last refill, up to one second's worth.
    fn refill(&mut self, now: Instant) {
        let Some(last) = self.refilled else {
            self.refilled = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(last).as_micros();
        let earned = elapsed.saturating_mul(u128::from(self.per_second)) / 1_000_000;
        if earned > 0 {
            let cap = i64::try_from(self.per_second).unwrap_or(i64::MAX);
            let earned = i64::try_from(earned).unwrap_or(cap);
            self.tokens = self.tokens.saturating_add(earned).min(cap);
            self.refilled = Some(now);
        }
    }
}

fn load_file<T>(
    path: &Path,
    key: &'static str,
    parse: impl FnOnce(&str) -> Result<T, (usize, String)>,
) -> Result<T, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthError {
        key,
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text).map_err(|(line, message)| AuthError {
        key,
        file: path.to_path_buf(),
        line,
        message,
    })
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotAuthorized => "not authorized (anonymous clients are not allowed)",
            Refusal::BadCredentials => "bad user name or password",
            Refusal::Busy => "too many failed password checks this second, not checked",
        })
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for AuthError {}

/// A listener's place in an [`AuthSet`]: `UNKNOWN_LISTENER` for a session restored from
/// disk that has not connected since, or whose listener a reload removed.
pub const UNKNOWN_LISTENER: u8 = u8::MAX;

/// The [`Auth`] of each listener: one for all of them (`per_listener_settings false`), or
/// one per listener block (`per_listener_settings true`), found by configured address.
/// A connection, and its session once offline, keeps the index of its listener's `Auth`
/// (a `u8`: at most 254 listener blocks with their own settings).
#[derive(Debug)]
pub struct AuthSet {
    /// Never empty.
    auths: Vec<Auth>,
    /// Configured address -> index in `auths`; empty when one `Auth` serves every listener.
    addrs: Vec<(SocketAddr, u8)>,
    /// Whether any of them has an ACL file (so the ACL checks stay free without one).
    any_acl: bool,
}

impl From<Auth> for AuthSet {
    fn from(auth: Auth) -> AuthSet {
        let any_acl = auth.has_acl();
        AuthSet {
            auths: vec![auth],
            addrs: Vec::new(),
            any_acl,
        }
    }
}

impl AuthSet {
    /// The files `config` names: the global ones, or each listener's.
    pub fn load(config: &Config) -> Result<AuthSet, AuthError> {
        if !config.per_listener_settings || config.listener_security.is_empty() {
            return Auth::load(config).map(AuthSet::from);
        }
        let mut auths = Vec::new();
        let mut addrs = Vec::new();
        for (i, sec) in config.listener_security.iter().enumerate() {
            let index = match u8::try_from(i) {
                Ok(index) if index < UNKNOWN_LISTENER => index,
                _ => {
                    return Err(AuthError {
                        key: "per_listener_settings",
                        file: PathBuf::new(),
                        line: 0,
                        message: format!(
                            "at most {} listeners with their own security settings",
                            UNKNOWN_LISTENER
                        ),
                    })
                }
            };
            let one = Config {
                allow_anonymous: sec.allow_anonymous,
                password_file: sec.password_file.clone(),
                acl_file: sec.acl_file.clone(),
                per_listener_settings: false,
                listener_security: Vec::new(),
                ..Config::in_memory()
            };
            auths.push(Auth::load(&one)?);
            addrs.extend(sec.addrs.iter().map(|&a| (a, index)));
        }
        Ok(AuthSet::per_listener(auths, addrs))
    }

    /// One `Auth` per listener, `addrs` mapping configured addresses to them (tests build
    /// them directly). An empty `auths` gets one that admits nobody.
    pub fn per_listener(mut auths: Vec<Auth>, addrs: Vec<(SocketAddr, u8)>) -> AuthSet {
        if auths.is_empty() {
            auths.push(Auth::new(false, None, None));
        }
        let any_acl = auths.iter().any(Auth::has_acl);
        AuthSet {
            auths,
            addrs,
            any_acl,
        }
    }

    /// The index of the listener configured as `addr`; with one `Auth` for all, 0.
    /// `UNKNOWN_LISTENER` for an address it does not know.
    pub fn index_of(&self, addr: SocketAddr) -> u8 {
        if self.addrs.is_empty() {
            return 0;
        }
        self.addrs
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or(UNKNOWN_LISTENER, |&(_, i)| i)
    }

    /// A configured address of listener `index` (for remapping on reload); `None` with one
    /// `Auth` for all.
    pub fn addr_of(&self, index: u8) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(_, i)| *i == index)
            .map(|&(a, _)| a)
    }

    /// Whether settings are per listener.
    pub fn is_per_listener(&self) -> bool {
        !self.addrs.is_empty()
    }

    /// The `Auth` of listener `index`; `None` for an unknown listener (which admits nobody
    /// and, with any ACL configured, may read and write nothing).
    pub fn get(&self, index: u8) -> Option<&Auth> {
        if self.addrs.is_empty() {
            return self.auths.first();
        }
        self.auths.get(usize::from(index))
    }

    pub fn get_mut(&mut self, index: u8) -> Option<&mut Auth> {
        if self.addrs.is_empty() {
            return self.auths.first_mut();
        }
        self.auths.get_mut(usize::from(index))
    }

    /// [`Auth::check`] with listener `index`'s ACL; false for an unknown listener
    /// (Mosquitto 2.0 denies a client without a listener too).
    pub fn check(&self, index: u8, client: Client<'_>, topic_name: &str, access: u8) -> bool {
        self.get(index)
            .is_some_and(|a| a.check(client, topic_name, access))
    }

    /// [`Auth::check_subscribe`] with listener `index`'s ACL; false for an unknown one.
    pub fn check_subscribe(&self, index: u8, client: Client<'_>, filter: &str) -> bool {
        self.get(index)
            .is_some_and(|a| a.check_subscribe(client, filter))
    }

    /// Whether any listener has an ACL file.
    pub fn has_acl(&self) -> bool {
        self.any_acl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        Instant::now()
    }

    fn file(users: &[(&str, &str)]) -> PasswordFile {
        file_at(users, 10)
    }

    fn file_at(users: &[(&str, &str)], iterations: u32) -> PasswordFile {
        let text: String = users
            .iter()
            .map(|(u, p)| {
                let hash = Hash::new(p.as_bytes(), iterations).unwrap();
                format!("{}\n", password::format_line(u, &hash))
            })
            .collect();
        PasswordFile::parse(&text).unwrap()
    }

    #[test]
    fn connect_paths() {
        let mut a = Auth::new(false, Some(file(&[("alice", "pw")])), None);
        assert_eq!(
            a.authenticate(None, None, now()),
            Err(Refusal::NotAuthorized)
        );
        assert_eq!(a.authenticate(Some("alice"), Some(b"pw"), now()), Ok(()));
        assert_eq!(
            a.authenticate(Some("alice"), Some(b"nope"), now()),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            a.authenticate(Some("alice"), None, now()),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            a.authenticate(Some("mallory"), Some(b"pw"), now()),
            Err(Refusal::BadCredentials)
        );
        let mut open = Auth::new(true, Some(file(&[("alice", "pw")])), None);
        assert_eq!(open.authenticate(None, None, now()), Ok(()));
        assert_eq!(
            open.authenticate(Some("alice"), Some(b"x"), now()),
            Err(Refusal::BadCredentials)
        );
        // Mosquitto: a user name without a password file is not checked.
        let mut none = Auth::new(false, None, None);
        assert_eq!(none.authenticate(Some("anyone"), None, now()), Ok(()));
        assert_eq!(
            none.authenticate(None, None, now()),
            Err(Refusal::NotAuthorized)
        );
    }

    #[test]
    fn successful_verifications_are_cached_per_user_and_password() {
        let mut a = Auth::new(false, Some(file(&[("alice", "pw"), ("bob", "pw2")])), None);
        assert_eq!(a.cached_verifications(), 0);
        a.authenticate(Some("alice"), Some(b"pw"), now()).unwrap();
        a.authenticate(Some("alice"), Some(b"pw"), now()).unwrap();
        assert_eq!(a.cached_verifications(), 1);
        // A cached user with another password is verified again, and refused.
        assert!(a.authenticate(Some("alice"), Some(b"pw2"), now()).is_err());
        assert!(a.authenticate(Some("bob"), Some(b"pw"), now()).is_err());
        a.authenticate(Some("bob"), Some(b"pw2"), now()).unwrap();
        assert_eq!(a.cached_verifications(), 2);
    }

    fn hashes() -> u64 {
        password::HASHES.with(|h| h.get())
    }

    #[test]
    fn unknown_users_cost_a_hash_like_the_files_entries() {
        let f = file_at(&[("alice", "pw"), ("bob", "pw"), ("carol", "pw")], 37);
        let before = hashes();
        assert!(!f.verify("mallory", b"pw"));
        assert_eq!(hashes() - before, 1, "an unknown user is hashed too");
        assert_eq!(
            f.verify_cost("mallory"),
            37,
            "at the file's iteration count"
        );
        assert_eq!(f.verify_cost("alice"), 37);
        let before = hashes();
        let mut a = Auth::new(false, Some(f), None);
        assert_eq!(
            a.authenticate(Some("mallory"), Some(b"pw"), now()),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(hashes() - before, 1);
    }

    #[test]
    fn failed_checks_over_budget_are_refused_without_hashing() {
        // A budget of 100 iterations a second; each failed check costs 50.
        let f = file_at(&[("alice", "pw")], 50);
        let mut a = Auth::new(false, Some(f), None).with_failure_budget(100);
        let t0 = now();
        let at = |ms| t0 + std::time::Duration::from_millis(ms);
        a.authenticate(Some("alice"), Some(b"pw"), t0).unwrap(); // cached from now on
        for user in ["alice", "mallory"] {
            assert_eq!(
                a.authenticate(Some(user), Some(b"guess"), t0),
                Err(Refusal::BadCredentials)
            );
        }
        let before = hashes();
        assert_eq!(
            a.authenticate(Some("alice"), Some(b"guess"), t0),
            Err(Refusal::Busy)
        );
        assert_eq!(
            a.authenticate(Some("nobody"), Some(b"x"), t0),
            Err(Refusal::Busy)
        );
        assert_eq!(hashes(), before, "refused without hashing");
        // Cached credentials still connect while the budget is spent.
        assert_eq!(a.authenticate(Some("alice"), Some(b"pw"), t0), Ok(()));
        assert_eq!(hashes(), before);
        // The budget comes back with time: 10 ms earn one iteration, so one more check
        // after 10 ms, which puts the bucket 49 in debt, repaid 490 ms later.
        assert_eq!(
            a.authenticate(Some("alice"), Some(b"guess"), at(10)),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            a.authenticate(Some("alice"), Some(b"guess"), at(490)),
            Err(Refusal::Busy)
        );
        assert_eq!(
            a.authenticate(Some("alice"), Some(b"guess"), at(510)),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(hashes() - before, 2);
    }

    #[test]
    fn load_errors_name_key_file_and_line() {
        let dir = std::env::temp_dir().join(format!("wrenmq-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let acl = dir.join("acl");
        std::fs::write(&acl, "topic read a\nbogus\n").unwrap();
        let config = Config {
            acl_file: Some(acl.clone()),
            ..Config::default()
        };
        let e = Auth::load(&config).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "acl_file {}:2: unknown keyword 'bogus' (expected topic, pattern or user)",
                acl.display()
            )
        );
        let missing = Config {
            password_file: Some(dir.join("missing")),
            ..Config::default()
        };
        let e = Auth::load(&missing).unwrap_err();
        assert_eq!(e.key, "password_file");
        assert!(e.to_string().contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
