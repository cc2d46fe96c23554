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

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use slab::Slab;

use super::{Session, SessionKey};

#[derive(Debug, Default)]
pub(super) struct ClientIds {
    table: HashTable<u32>,
    hasher: RandomState,
}

/// A session key as the table stores it: slab keys count live sessions, far below
/// `u32::MAX` (as for timer entries, see `timer_key`).
fn slot(key: SessionKey) -> u32 {
    u32::try_from(key).unwrap_or(u32::MAX)
}

impl ClientIds {
    /// The session of `client_id`.
    pub(super) fn get(&self, sessions: &Slab<Session>, client_id: &str) -> Option<SessionKey> {
        let hash = self.hasher.hash_one(client_id);
        self.table
            .find(hash, |&k| {
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
        let hasher = &self.hasher;
        let hash = hasher.hash_one(&*session.client_id);
        self.table.insert_unique(hash, slot(key), |&k| {
            sessions
                .get(k as usize)
                .map_or(0, |s| hasher.hash_one(&*s.client_id))
        });
    }

    /// Unlists session `key`, listed under `client_id` (the session may already be gone
    /// from the slab).
    pub(super) fn remove(&mut self, client_id: &str, key: SessionKey) {
        let hash = self.hasher.hash_one(client_id);
        if let Ok(entry) = self.table.find_entry(hash, |&k| k == slot(key)) {
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
    }
}
