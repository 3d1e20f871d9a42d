//! The sessions a server holds in its own memory, bounded three ways: in number, in bytes in
//! all, and in bytes per owner (a session's id is `OWNER/ID`: the server scopes ids by caller).
//! Past a bound the least recently used go first — the owner's own first when it is the owner
//! that is over — so one caller cannot push everyone else's sessions out, and no caller can
//! make the server hold more than the bounds.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Instant;

use crate::cache::{session_bytes, Session};

/// A held session.
pub(crate) struct Entry {
    /// When it expires.
    pub expires: Instant,
    pub session: Session,
    /// Written while Redis was away: newer than Redis's copy, to be written back.
    pub unsynced: bool,
    bytes: usize,
}

/// How much the table may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub sessions: NonZeroUsize,
    pub total_bytes: usize,
    pub bytes_per_owner: usize,
}

pub(crate) struct SessionTable {
    entries: lru::LruCache<String, Entry>,
    bounds: Bounds,
    total: usize,
    by_owner: HashMap<String, usize>,
}

/// The owner part of a session key (`OWNER/ID`).
fn owner(key: &str) -> &str {
    key.split_once('/').map_or(key, |(owner, _)| owner)
}

impl SessionTable {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            entries: lru::LruCache::new(bounds.sessions),
            bounds,
            total: 0,
            by_owner: HashMap::new(),
        }
    }

    /// The session under `key`, now the most recently used.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.get_mut(key)
    }

    /// Removes `key`'s session.
    pub fn pop(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.pop(key)?;
        self.forget(key, entry.bytes);
        Some(entry)
    }

    /// Holds `session` under `key` (replacing what was there), making room first: the owner's
    /// least recently used sessions while the owner would be over its share, then anyone's
    /// while the table would be over its total or its number.
    pub fn put(&mut self, key: String, expires: Instant, session: Session, unsynced: bool) {
        self.pop(&key);
        let bytes = session_bytes(&session);
        let owner_name = owner(&key).to_string();
        while self.held_by(&owner_name).saturating_add(bytes) > self.bounds.bytes_per_owner {
            let oldest = self
                .entries
                .iter()
                .rev()
                .find(|(other, _)| owner(other) == owner_name)
                .map(|(other, _)| other.clone());
            match oldest {
                Some(other) => {
                    self.pop(&other);
                }
                None => break,
            }
        }
        while self.total.saturating_add(bytes) > self.bounds.total_bytes {
            match self.entries.pop_lru() {
                Some((other, entry)) => self.forget(&other, entry.bytes),
                None => break,
            }
        }
        self.total = self.total.saturating_add(bytes);
        let held = self.by_owner.entry(owner_name).or_default();
        *held = held.saturating_add(bytes);
        let entry = Entry {
            expires,
            session,
            unsynced,
            bytes,
        };
        if let Some((other, pushed_out)) = self.entries.push(key, entry) {
            self.forget(&other, pushed_out.bytes);
        }
    }

    /// Bytes held in all.
    #[cfg(test)]
    pub fn total_bytes(&self) -> usize {
        self.total
    }

    fn held_by(&self, owner: &str) -> usize {
        self.by_owner.get(owner).copied().unwrap_or(0)
    }

    fn forget(&mut self, key: &str, bytes: usize) {
        self.total = self.total.saturating_sub(bytes);
        let owner = owner(key);
        if let Some(held) = self.by_owner.get_mut(owner) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.by_owner.remove(owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::SessionMessage;

    fn session(text_bytes: usize) -> Session {
        Session {
            messages: vec![SessionMessage {
                role: "user".to_string(),
                content: "x".repeat(text_bytes),
            }],
            data: serde_json::Value::Null,
        }
    }

    fn table(sessions: usize, total_bytes: usize, bytes_per_owner: usize) -> SessionTable {
        SessionTable::new(Bounds {
            sessions: NonZeroUsize::new(sessions).unwrap(),
            total_bytes,
            bytes_per_owner,
        })
    }

    fn put(table: &mut SessionTable, key: &str, text_bytes: usize) {
        table.put(key.to_string(), Instant::now(), session(text_bytes), false);
    }

    fn held(table: &mut SessionTable, key: &str) -> bool {
        table.get_mut(key).is_some()
    }

    #[test]
    fn an_owner_over_its_share_loses_its_own_oldest_sessions_not_others() {
        let one = session_bytes(&session(1000));
        let mut table = table(100, 100 * one, 3 * one);
        put(&mut table, "alice/1", 1000);
        put(&mut table, "bob/1", 1000);
        put(&mut table, "bob/2", 1000);
        put(&mut table, "bob/3", 1000);
        put(&mut table, "bob/4", 1000);
        assert!(held(&mut table, "alice/1"));
        assert!(!held(&mut table, "bob/1"), "bob's oldest went");
        assert!(held(&mut table, "bob/2") && held(&mut table, "bob/4"));
        assert_eq!(table.total_bytes(), 4 * one);
    }

    #[test]
    fn the_total_is_bounded_and_the_least_recently_used_go_first() {
        let one = session_bytes(&session(1000));
        let mut table = table(100, 3 * one, 100 * one);
        put(&mut table, "a/1", 1000);
        put(&mut table, "b/1", 1000);
        put(&mut table, "c/1", 1000);
        // Used again: now the most recent.
        assert!(held(&mut table, "a/1"));
        put(&mut table, "d/1", 1000);
        assert!(!held(&mut table, "b/1"));
        assert!(held(&mut table, "a/1") && held(&mut table, "c/1") && held(&mut table, "d/1"));
        assert_eq!(table.total_bytes(), 3 * one);
    }

    #[test]
    fn replacing_and_removing_keep_the_count_right() {
        let mut table = table(2, usize::MAX, usize::MAX);
        put(&mut table, "a/1", 10);
        put(&mut table, "a/1", 500);
        assert_eq!(table.total_bytes(), session_bytes(&session(500)));
        put(&mut table, "a/2", 10);
        put(&mut table, "a/3", 10);
        assert!(
            !held(&mut table, "a/1"),
            "the number bound pushed the oldest out"
        );
        assert_eq!(table.total_bytes(), 2 * session_bytes(&session(10)));
        table.pop("a/2");
        table.pop("a/3");
        assert_eq!(table.total_bytes(), 0);
        assert!(table.by_owner.is_empty());
    }
}
