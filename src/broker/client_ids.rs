//! The client-id index: which session a client id names.
//!
//! A hash table of session keys (4 bytes a slot), with the id text read from the session
//! itself, instead of a map holding a second pointer to the text next to each key (24
//! bytes a slot): issue 11, per-connection memory, about 33 bytes per idle client at
//! 10,000 clients. `hashbrown`'s `HashTable` (the table under std's `HashMap`) is what
//! allows a table whose keys live elsewhere.
//!
//! Invariant: every listed key is a session in the slab passed to `get`/`insert`, under the
//! client id it was listed with (a session's client id never changes).
//!
//! Client ids come from clients, so the hash is keyed against collision floods: SipHash
//! (std's `DefaultHasher`) over a secret 64-bit key and then the id. The broker draws no
//! entropy itself (sans-IO): the key is a random value the event loop passes once at start
//! ([`super::Broker::seed_client_ids`]); tests and fuzzing run with key 0.

use std::hash::{DefaultHasher, Hash, Hasher};

use hashbrown::HashTable;
use slab::Slab;

use super::{Session, SessionKey};

#[derive(Debug, Default)]
pub(super) struct ClientIds {
    table: HashTable<u32>,
    key: u64,
}

fn hash(key: u64, client_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    h.write_u64(key);
    client_id.hash(&mut h);
    h.finish()
}

/// A session key as the table stores it: slab keys count live sessions, far below
/// `u32::MAX` (as for timer entries, see `timer_key`).
fn slot(key: SessionKey) -> u32 {
    u32::try_from(key).unwrap_or(u32::MAX)
}

impl ClientIds {
    /// Keys the hash with `key` (rehashing what is listed, normally nothing yet).
    pub(super) fn seed(&mut self, sessions: &Slab<Session>, key: u64) {
        self.key = key;
        let listed: Vec<u32> = self.table.drain().collect();
        for k in listed {
            self.insert(sessions, k as usize);
        }
    }

    /// The session of `client_id`.
    pub(super) fn get(&self, sessions: &Slab<Session>, client_id: &str) -> Option<SessionKey> {
        self.table
            .find(hash(self.key, client_id), |&k| {
                sessions
                    .get(k as usize)
                    .is_some_and(|s| &*s.client_id == client_id)
            })
            .map(|&k| k as usize)
    }

    pub(super) fn contains(&self, sessions: &Slab<Session>, client_id: &str) -> bool {
        self.get(sessions, client_id).is_some()
    }

    /// Lists session `key` (already in `sessions`) under its client id, which no listed
    /// session has.
    pub(super) fn insert(&mut self, sessions: &Slab<Session>, key: SessionKey) {
        let Some(session) = sessions.get(key) else {
            return;
        };
        let seed = self.key;
        let h = hash(seed, &session.client_id);
        self.table.insert_unique(h, slot(key), |&k| {
            sessions
                .get(k as usize)
                .map_or(0, |s| hash(seed, &s.client_id))
        });
    }

    /// Unlists session `key`, listed under `client_id` (the session may already be gone
    /// from the slab).
    pub(super) fn remove(&mut self, client_id: &str, key: SessionKey) {
        if let Ok(entry) = self
            .table
            .find_entry(hash(self.key, client_id), |&k| k == slot(key))
        {
            entry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn finds_inserted_ids_through_growth_and_forgets_removed_ones() {
        let mut sessions = Slab::new();
        let mut ids = ClientIds::default();
        let keys: Vec<SessionKey> = (0..1000)
            .map(|i| {
                let key = sessions.insert(Session::new(Arc::from(format!("c{i}")), true));
                ids.insert(&sessions, key);
                key
            })
            .collect();
        for (i, &key) in keys.iter().enumerate() {
            assert_eq!(ids.get(&sessions, &format!("c{i}")), Some(key));
        }
        assert!(!ids.contains(&sessions, "c1000"));
        for (i, &key) in keys.iter().enumerate().step_by(2) {
            let s = sessions.remove(key);
            ids.remove(&s.client_id, key);
            assert!(!ids.contains(&sessions, &format!("c{i}")));
        }
        // A reused slab key is listed under its new id only.
        let key = sessions.insert(Session::new(Arc::from("new"), true));
        ids.insert(&sessions, key);
        assert_eq!(ids.get(&sessions, "new"), Some(key));
        assert!(!ids.contains(&sessions, "c0"));
        assert_eq!(ids.get(&sessions, "c1"), Some(keys[1]));
        // Re-keyed: everything listed is still found.
        ids.seed(&sessions, 0x5eed);
        assert_eq!(ids.get(&sessions, "new"), Some(key));
        assert_eq!(ids.get(&sessions, "c3"), Some(keys[3]));
        assert!(!ids.contains(&sessions, "c2"));
    }
}
