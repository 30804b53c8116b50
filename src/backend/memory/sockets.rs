//! The socket registry and quota counters of the memory backend.

use async_trait::async_trait;

use super::MemoryStore;
use crate::backend::*;
use crate::util::now_ms;

#[async_trait]
impl Registry for MemoryStore {
    async fn upsert(&self, entry: &SocketEntry, ttl_ms: u64) -> BResult<()> {
        let deadline = now_ms() + ttl_ms as i64;
        let mut st = self.shared.state.lock();
        match st.registry.get_mut(&entry.connection_id) {
            // A heartbeat: the sessions stay as attached (nothing is copied per session).
            Some((held, d)) => {
                let sessions = std::mem::take(&mut held.sessions);
                *held = SocketEntry { sessions, ..entry.clone() };
                *d = deadline;
            }
            None => {
                let fresh = SocketEntry { sessions: Vec::new(), ..entry.clone() };
                st.registry.insert(entry.connection_id.clone(), (fresh, deadline));
            }
        }
        Ok(())
    }
    async fn attach(&self, connection_id: &str, session_id: &str, ttl_ms: u64) -> BResult<()> {
        let deadline = now_ms() + ttl_ms as i64;
        if let Some((entry, d)) = self.shared.state.lock().registry.get_mut(connection_id) {
            // The socket attaches a session once (its own set says so), so no duplicate check here.
            entry.sessions.push(session_id.to_string());
            *d = (*d).max(deadline);
        }
        Ok(())
    }
    async fn remove(&self, connection_id: &str) -> BResult<()> {
        self.shared.state.lock().registry.remove(connection_id);
        Ok(())
    }
    async fn count_user(&self, org_id: &str, user_id: &str) -> BResult<usize> {
        let now = now_ms();
        let st = self.shared.state.lock();
        Ok(st.registry.values().filter(|(e, d)| *d > now && e.user_id == user_id && e.org_id == org_id).count())
    }
    async fn forget_identity(&self, connection_id: &str, org_id: &str, user_id: &str) -> BResult<()> {
        // No index here: the entry is the truth. Until the next upsert it is listed under nobody.
        if let Some((e, _)) = self.shared.state.lock().registry.get_mut(connection_id) {
            if e.org_id == org_id && e.user_id == user_id {
                e.user_id.clear();
                e.org_id.clear();
            }
        }
        Ok(())
    }
    async fn list(&self, filter: &SocketFilter, max: usize) -> BResult<Vec<SocketEntry>> {
        let now = now_ms();
        let st = self.shared.state.lock();
        let mut out: Vec<SocketEntry> = st
            .registry
            .values()
            .filter(|(_, d)| *d > now)
            .map(|(e, _)| e)
            .filter(|e| filter.matches(e))
            .take(max)
            .cloned()
            .collect();
        for e in &mut out {
            e.sessions.sort();
        }
        out.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        Ok(out)
    }
}

#[async_trait]
impl QuotaStore for MemoryStore {
    async fn take_amount(&self, key: &str, amount: u64, limit: u64, window_ms: u64) -> BResult<bool> {
        let now = now_ms();
        let window = quota::window_of(now, window_ms);
        let mut st = self.shared.state.lock();
        // Windows that have ended go (their counts no longer matter).
        st.quotas.retain(|_, (len, w, _)| quota::window_of(now, *len) == *w);
        let (_, w, n) = st.quotas.entry(key.to_string()).or_insert((window_ms, window, 0));
        if *w != window {
            *w = window;
            *n = 0;
        }
        if n.saturating_add(amount) > limit {
            return Ok(false);
        }
        *n += amount;
        Ok(true)
    }
    async fn give_back(&self, key: &str, window_ms: u64) -> BResult<()> {
        let window = quota::window_of(now_ms(), window_ms);
        if let Some((_, w, n)) = self.shared.state.lock().quotas.get_mut(key) {
            if *w == window {
                *n = n.saturating_sub(1);
            }
        }
        Ok(())
    }
    async fn hold(&self, key: &str, holder: &str, limit: u64, ttl_ms: u64, now_ms: i64) -> BResult<bool> {
        let mut st = self.shared.state.lock();
        st.holds.retain(|_, h| {
            h.retain(|_, until| *until > now_ms);
            !h.is_empty()
        });
        let places = st.holds.entry(key.to_string()).or_default();
        if !places.contains_key(holder) && places.len() as u64 >= limit {
            return Ok(false);
        }
        places.insert(holder.to_string(), now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX)));
        Ok(true)
    }
    async fn release_hold(&self, key: &str, holder: &str) -> BResult<()> {
        if let Some(places) = self.shared.state.lock().holds.get_mut(key) {
            places.remove(holder);
        }
        Ok(())
    }
}
