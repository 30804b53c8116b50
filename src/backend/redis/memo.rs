//! What one pod remembers about sessions to spare Redis a command: a small value per session, keyed by a hash
//! of the session id (16 bytes an entry, not the id), bounded (emptied when full, which only costs the commands
//! it spared). Never a source of truth: every use is safe when an entry is missing or stale (see its users:
//! `get_session` in `sessions.rs`, the appends in `log.rs`).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use parking_lot::Mutex;

/// Entries a memo holds before it starts over.
const MAX: usize = 50_000;

pub(super) struct SessionMemo<V> {
    /// Owned by the memo's users (see the module docs); held for one map operation, never across an await.
    map: Mutex<HashMap<u64, V>>,
    hasher: RandomState,
}

impl<V> Default for SessionMemo<V> {
    fn default() -> Self {
        Self { map: Mutex::new(HashMap::new()), hasher: RandomState::new() }
    }
}

impl<V: Copy> SessionMemo<V> {
    pub(super) fn get(&self, session_id: &str) -> Option<V> {
        self.map.lock().get(&self.hasher.hash_one(session_id)).copied()
    }

    pub(super) fn set(&self, session_id: &str, value: V) {
        let key = self.hasher.hash_one(session_id);
        let mut map = self.map.lock();
        if map.len() >= MAX && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, value);
    }

    pub(super) fn forget(&self, session_id: &str) {
        self.map.lock().remove(&self.hasher.hash_one(session_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_and_stays_bounded() {
        let memo = SessionMemo::<u64>::default();
        memo.set("a", 7);
        assert_eq!(memo.get("a"), Some(7));
        assert_eq!(memo.get("b"), None);
        memo.forget("a");
        assert_eq!(memo.get("a"), None);
        for i in 0..=MAX {
            memo.set(&i.to_string(), 1);
        }
        assert!(memo.map.lock().len() <= MAX, "bounded");
        assert_eq!(memo.get(&MAX.to_string()), Some(1), "the newest entry is kept");
    }
}
