//! Mosquitto password files: `user:$7$<iterations>$<b64 salt>$<b64 hash>` lines.
//!
//! `$7$` is PBKDF2-HMAC-SHA512 over the password bytes with the decoded salt, 64-byte
//! output; Mosquitto 2.0 writes 101 iterations and a 12-byte salt. `$6$` is the legacy
//! form `SHA512(password ‖ salt)`. Base64 is the standard alphabet with padding. Comparison
//! is constant-time (`subtle`), and an unknown user costs a hash too, against a dummy entry
//! shaped like the file's most common one (same kind, same iteration count), so timing
//! tells neither which part of a hash matched nor whether the user exists.

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Iterations `wrenmq passwd` uses by default: Mosquitto 2.0's, so both tools write the
/// same cost.
pub const DEFAULT_ITERATIONS: u32 = 101;

/// Salt length `wrenmq passwd` writes (Mosquitto 2.0's).
pub const SALT_LEN: usize = 12;

/// Length of a `$7$` hash: the SHA-512 output size, as Mosquitto writes it.
const PBKDF2_LEN: usize = 64;

/// One stored password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// `$6$`: SHA512(password ‖ salt).
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
}

/// Why a hash string cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashError {
    /// Neither `$6$` nor `$7$`.
    UnknownFormat,
    /// The right prefix, but a field is missing or does not decode.
    Malformed,
}

/// The users of one password file, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
    /// What an unknown user is checked against: the file's typical entry with a fixed
    /// salt and a hash no password produces. `None` for an empty file (then the default
    /// `$7$` cost is used).
    dummy: Option<Hash>,
}

/// A password file line that cannot be used; the caller adds the file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl Hash {
    /// Parses the part after `user:`.
    pub fn parse(s: &str) -> Result<Hash, HashError> {
        let mut fields = s.split('$');
        if fields.next() != Some("") {
            return Err(HashError::UnknownFormat);
        }
        let kind = fields.next().ok_or(HashError::UnknownFormat)?;
        let b64 = |f: Option<&str>| {
            f.and_then(|f| B64.decode(f).ok())
                .filter(|v| !v.is_empty())
                .ok_or(HashError::Malformed)
        };
        let hash = match kind {
            "7" => {
                let iterations = fields
                    .next()
                    .and_then(|i| i.parse::<u32>().ok())
                    .filter(|&i| i > 0)
                    .ok_or(HashError::Malformed)?;
                let salt = b64(fields.next())?;
                let hash = b64(fields.next())?;
                Hash::Pbkdf2 {
                    iterations,
                    salt,
                    hash,
                }
            }
            "6" => {
                let salt = b64(fields.next())?;
                let hash = b64(fields.next())?;
                Hash::Sha512 { salt, hash }
            }
            _ => return Err(HashError::UnknownFormat),
        };
        if fields.next().is_some() {
            return Err(HashError::Malformed);
        }
        Ok(hash)
    }

    /// A new `$7$` hash of `password` with a random salt.
    pub fn new(password: &[u8], iterations: u32) -> Result<Hash, getrandom::Error> {
        let mut salt = vec![0; SALT_LEN];
        getrandom::getrandom(&mut salt)?;
        let hash = pbkdf2(password, &salt, iterations);
        Ok(Hash::Pbkdf2 {
            iterations,
            salt,
            hash,
        })
    }

    /// Whether `password` matches, in time independent of where the bytes differ.
    pub fn verify(&self, password: &[u8]) -> bool {
        let (computed, stored) = match self {
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => (pbkdf2(password, salt, *iterations), hash),
            Hash::Sha512 { salt, hash } => {
                count_hash();
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                (h.finalize().to_vec(), hash)
            }
        };
        // ct_eq on slices of different lengths is false without looking at the bytes.
        computed.ct_eq(stored).into()
    }

    /// The work one verification costs, in PBKDF2 iterations (a `$6$` check is one
    /// SHA-512, counted as 1).
    pub fn cost(&self) -> u64 {
        match self {
            Hash::Pbkdf2 { iterations, .. } => u64::from(*iterations),
            Hash::Sha512 { .. } => 1,
        }
    }

    /// A hash of the same kind and cost as `self` that no password matches (its stored
    /// value is all zeros), for checking unknown users at the same cost.
    fn dummy_like(&self) -> Hash {
        match self {
            Hash::Pbkdf2 { iterations, .. } => Hash::Pbkdf2 {
                iterations: *iterations,
                salt: vec![0; SALT_LEN],
                hash: vec![0; PBKDF2_LEN],
            },
            Hash::Sha512 { .. } => Hash::Sha512 {
                salt: vec![0; SALT_LEN],
                hash: vec![0; PBKDF2_LEN],
            },
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Hash computations on this thread: lets tests see that a path hashes (or does not)
    /// without measuring time.
    pub(crate) static HASHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts one hash computation for the tests (nothing outside tests).
fn count_hash() {
    #[cfg(test)]
    HASHES.with(|h| h.set(h.get() + 1));
}

fn pbkdf2(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    count_hash();
    let mut out = vec![0; PBKDF2_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

impl std::fmt::Display for Hash {
    /// The file form, exactly as Mosquitto writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                B64.encode(salt),
                B64.encode(hash)
            ),
            Hash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", B64.encode(salt), B64.encode(hash))
            }
        }
    }
}

impl PasswordFile {
    /// Parses a password file. Blank lines and `#` lines are skipped; every other line
    /// must be `user:hash`.
    pub fn parse(text: &str) -> Result<PasswordFile, LineError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| LineError {
                line: i + 1,
                message,
            };
            let Some((user, hash)) = line.split_once(':') else {
                return Err(err("expected user:password-hash".to_string()));
            };
            if user.is_empty() {
                return Err(err("empty user name".to_string()));
            }
            let hash = Hash::parse(hash).map_err(|e| {
                err(match e {
                    HashError::UnknownFormat => format!(
                        "user '{user}': not a hashed password (expected $7$ or $6$; \
                         hash plain-text files with 'wrenmq passwd -U')"
                    ),
                    HashError::Malformed => format!("user '{user}': malformed password hash"),
                })
            })?;
            users.insert(user.to_string(), hash);
        }
        let dummy = typical(users.values()).map(Hash::dummy_like);
        Ok(PasswordFile { users, dummy })
    }

    pub fn get(&self, user: &str) -> Option<&Hash> {
        self.users.get(user)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` exists and `password` is theirs. An unknown user costs one hash
    /// like the file's typical entry, so the answer's timing does not reveal which users
    /// exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                match &self.dummy {
                    Some(dummy) => {
                        let _ = dummy.verify(password);
                    }
                    None => {
                        let _ = pbkdf2(password, &[0; SALT_LEN], DEFAULT_ITERATIONS);
                    }
                }
                false
            }
        }
    }

    /// The work [`PasswordFile::verify`] costs for `user` (see [`Hash::cost`]).
    pub fn verify_cost(&self, user: &str) -> u64 {
        match self.users.get(user).or(self.dummy.as_ref()) {
            Some(hash) => hash.cost(),
            None => u64::from(DEFAULT_ITERATIONS),
        }
    }
}

/// The most common kind and cost among `hashes` (the higher cost on a tie), so that the
/// dummy costs what most real entries cost.
fn typical<'a>(hashes: impl Iterator<Item = &'a Hash>) -> Option<&'a Hash> {
    let mut counts: HashMap<u64, (usize, &Hash)> = HashMap::new();
    for h in hashes {
        let key = match h {
            Hash::Pbkdf2 { iterations, .. } => u64::from(*iterations),
            Hash::Sha512 { .. } => 0,
        };
        counts.entry(key).or_insert((0, h)).0 += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(key, (n, _))| (n, key))
        .map(|(_, (_, h))| h)
}

/// One password file line, as `wrenmq passwd` writes it.
pub fn format_line(user: &str, hash: &Hash) -> String {
    let mut s = String::with_capacity(user.len() + 128);
    let _ = write!(s, "{user}:{hash}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -b` 2.0.11 for alice/secret.
    const MOSQUITTO_7: &str = "$7$101$i+GCn/r9pasATRmQ$WTKZ9YxTr+O21FhpmYYe+A4yfFdfYJwYE3m+IXoI0pEcTQEH2E6H8vOcm6ccbpIZdfLBr2+2nI10DlB7Na4pFA==";

    #[test]
    fn mosquitto_pbkdf2_hash_verifies() {
        let h = Hash::parse(MOSQUITTO_7).unwrap();
        assert!(h.verify(b"secret"));
        assert!(!h.verify(b"secreT"));
        assert!(!h.verify(b""));
        assert_eq!(h.to_string(), MOSQUITTO_7); // round trip, padding kept
    }

    #[test]
    fn legacy_sha512_hash_verifies() {
        let salt = b"0123456789ab";
        let mut d = Sha512::new();
        d.update(b"pw");
        d.update(salt);
        let line = format!("$6${}${}", B64.encode(salt), B64.encode(d.finalize()));
        let h = Hash::parse(&line).unwrap();
        assert!(h.verify(b"pw"));
        assert!(!h.verify(b"pw2"));
    }

    #[test]
    fn new_hashes_have_mosquittos_shape() {
        let h = Hash::new(b"hunter2", 1000).unwrap();
        let s = h.to_string();
        let parts: Vec<&str> = s.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "1000"]);
        assert_eq!(B64.decode(parts[3]).unwrap().len(), SALT_LEN);
        assert_eq!(B64.decode(parts[4]).unwrap().len(), 64);
        assert!(Hash::parse(&s).unwrap().verify(b"hunter2"));
        assert_ne!(Hash::new(b"x", 1).unwrap(), Hash::new(b"x", 1).unwrap()); // salted
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "plain",
            "$5$abc$def",
            "$7$x$c2FsdA==$aGFzaA==",
            "$7$0$c2FsdA==$aGFzaA==",
        ] {
            assert!(Hash::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Hash::parse("$7$101$!!$aGFzaA=="), Err(HashError::Malformed));
        assert_eq!(Hash::parse("$7$101$c2FsdA=="), Err(HashError::Malformed));
        assert_eq!(
            Hash::parse("$6$c2FsdA==$aGFzaA==$x"),
            Err(HashError::Malformed)
        );
        assert_eq!(Hash::parse("secret"), Err(HashError::UnknownFormat));
    }

    #[test]
    fn files_parse_and_errors_name_the_line() {
        let text = format!("# users\n\nalice:{MOSQUITTO_7}\r\n");
        let f = PasswordFile::parse(&text).unwrap();
        assert_eq!(f.len(), 1);
        assert!(f.verify("alice", b"secret"));
        assert!(!f.verify("bob", b"secret"));
        let e = PasswordFile::parse("alice:secret\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(
            e.message.contains("user 'alice': not a hashed password"),
            "{e:?}"
        );
        let e = PasswordFile::parse(&format!("a:{MOSQUITTO_7}\nbob\n")).unwrap_err();
        assert_eq!(
            e,
            LineError {
                line: 2,
                message: "expected user:password-hash".into()
            }
        );
    }

    #[test]
    fn unknown_users_are_checked_against_the_most_common_entry() {
        let line = |u: &str, i: u32| format_line(u, &Hash::new(b"pw", i).unwrap());
        let text = [line("a", 3), line("b", 7), line("c", 7), line("d", 5)].join("\n");
        let f = PasswordFile::parse(&text).unwrap();
        assert_eq!(f.verify_cost("nobody"), 7);
        let salt = b"0123456789ab";
        let legacy = format!("x:$6${}${}\n", B64.encode(salt), B64.encode([1u8; 64]));
        assert_eq!(PasswordFile::parse(&legacy).unwrap().verify_cost("y"), 1);
        let empty = PasswordFile::parse("").unwrap();
        assert_eq!(empty.verify_cost("y"), u64::from(DEFAULT_ITERATIONS));
        let before = HASHES.with(|h| h.get());
        assert!(!empty.verify("y", b"pw"));
        assert_eq!(HASHES.with(|h| h.get()) - before, 1);
    }

    /// The cost of one verification at the default iteration count. Run with
    /// `cargo test --release --lib verify_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn verify_cost() {
        let h = Hash::new(b"password", DEFAULT_ITERATIONS).unwrap();
        let n = 2000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(h.verify(b"password"));
        }
        let per = start.elapsed() / n;
        println!("one $7$ verification at {DEFAULT_ITERATIONS} iterations: {per:?}");
    }
}
