//! Parked turns and turn leases of the memory backend (the same behaviour as `redis::{confirms, leases}`).

use async_trait::async_trait;

use super::MemoryStore;
use crate::backend::*;
use crate::util::now_ms;

#[async_trait]
impl ConfirmStore for MemoryStore {
    async fn park(&self, parked: &ParkedTurn) -> BResult<()> {
        self.shared.state.lock().parked.insert(parked.session_id.clone(), parked.clone());
        Ok(())
    }
    async fn get(&self, session_id: &str) -> BResult<Option<ParkedTurn>> {
        Ok(self.shared.state.lock().parked.get(session_id).cloned())
    }
    async fn decide(&self, session_id: &str, tool_call_id: Option<&str>, approved: bool) -> BResult<Decided> {
        let mut st = self.shared.state.lock();
        if let Some(id) = tool_call_id {
            if let Some((first, req)) = st.decided.get(session_id).and_then(|d| d.get(id)) {
                return Ok(Decided::AlreadyDecided {
                    tool_call_id: id.to_string(),
                    approved: *first,
                    request_id: req.clone(),
                });
            }
        }
        let matches = match (st.parked.get(session_id), tool_call_id) {
            (Some(p), _) if p.gate != Gate::Confirm => false,
            (Some(p), Some(id)) => p.call.tool_call_id == id,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !matches {
            return Ok(Decided::NoPending);
        }
        let Some(parked) = st.parked.remove(session_id) else {
            return Ok(Decided::NoPending);
        };
        let call_id = parked.call.tool_call_id.clone();
        st.decided
            .entry(session_id.to_string())
            .or_default()
            .insert(call_id.clone(), (approved, parked.request_id.clone()));
        st.last_decision.insert(session_id.to_string(), (call_id, approved, parked.request_id.clone()));
        Ok(Decided::Claimed(Box::new(parked)))
    }
    async fn last_decision(&self, session_id: &str) -> BResult<Option<(String, bool, String)>> {
        Ok(self.shared.state.lock().last_decision.get(session_id).cloned())
    }
    async fn take(&self, session_id: &str, call: Option<&str>) -> BResult<Option<ParkedTurn>> {
        let mut st = self.shared.state.lock();
        let matches = st.parked.get(session_id).is_some_and(|p| call.is_none_or(|c| p.call.tool_call_id == c));
        Ok(if matches { st.parked.remove(session_id) } else { None })
    }
    async fn expired(&self, now: i64, max: usize) -> BResult<Vec<String>> {
        let st = self.shared.state.lock();
        Ok(st.parked.values().filter(|p| p.expires_at_ms <= now).take(max).map(|p| p.session_id.clone()).collect())
    }
    async fn pending_count(&self) -> BResult<u64> {
        Ok(self.shared.state.lock().parked.len() as u64)
    }
}

#[async_trait]
impl TurnLease for MemoryStore {
    async fn acquire(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool> {
        let now = now_ms();
        let mut st = self.shared.state.lock();
        if matches!(st.leases.get(session_id), Some((_, d)) if *d > now) {
            return Ok(false);
        }
        let deadline = now + ttl_ms as i64;
        st.leases.insert(session_id.to_string(), (info.clone(), deadline));
        st.turns.insert(session_id.to_string(), (info.clone(), deadline));
        st.ended.remove(session_id);
        Ok(true)
    }
    async fn renew(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool> {
        let now = now_ms();
        let mut st = self.shared.state.lock();
        match st.leases.get(session_id) {
            Some((held, d)) if held.turn_id == info.turn_id && *d > now => {
                let deadline = now + ttl_ms as i64;
                st.leases.insert(session_id.to_string(), (info.clone(), deadline));
                st.turns.insert(session_id.to_string(), (info.clone(), deadline));
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn resume(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<Resumed> {
        let now = now_ms();
        let mut st = self.shared.state.lock();
        match st.turns.get(session_id) {
            None => return Ok(Resumed::Ended),
            Some((record, _)) if record.turn_id != info.turn_id => return Ok(Resumed::Replaced),
            Some(_) => {}
        }
        if matches!(st.leases.get(session_id), Some((held, d)) if *d > now && held.turn_id != info.turn_id) {
            return Ok(Resumed::Replaced);
        }
        let deadline = now + ttl_ms as i64;
        st.leases.insert(session_id.to_string(), (info.clone(), deadline));
        st.turns.insert(session_id.to_string(), (info.clone(), deadline));
        Ok(Resumed::Held)
    }
    async fn hand_over(&self, session_id: &str, info: &TurnInfo, call: &str, ttl_ms: u64) -> BResult<bool> {
        let now = now_ms();
        let mut st = self.shared.state.lock();
        let parked = st.parked.get(session_id).is_some_and(|p| p.call.tool_call_id == call);
        let held = matches!(st.leases.get(session_id), Some((held, d)) if *d > now && held.turn_id == info.turn_id);
        if !(parked && held) {
            return Ok(false);
        }
        let deadline = now + ttl_ms as i64;
        st.leases.insert(session_id.to_string(), (info.clone(), deadline));
        st.turns.insert(session_id.to_string(), (info.clone(), deadline));
        Ok(true)
    }
    async fn release(&self, session_id: &str, turn_id: &str) -> BResult<bool> {
        let mut st = self.shared.state.lock();
        let mut released = false;
        if matches!(st.leases.get(session_id), Some((held, _)) if held.turn_id == turn_id) {
            st.leases.remove(session_id);
            released = true;
        }
        if matches!(st.turns.get(session_id), Some((held, _)) if held.turn_id == turn_id) {
            st.turns.remove(session_id);
            st.steps.remove(session_id);
            released = true;
        }
        Ok(released)
    }
    async fn checkpoint(&self, session_id: &str, turn_id: &str, state: &str) -> BResult<bool> {
        let now = now_ms();
        let mut st = self.shared.state.lock();
        if !matches!(st.leases.get(session_id), Some((held, d)) if *d > now && held.turn_id == turn_id) {
            return Ok(false);
        }
        let seq = st.logs.get(session_id).map_or(0, |l| l.latest);
        let takeovers = match st.steps.get(session_id) {
            Some((t, c)) if t == turn_id => c.takeovers,
            _ => 0,
        };
        let checkpoint = Checkpoint { seq, state: state.to_string(), takeovers };
        st.steps.insert(session_id.to_string(), (turn_id.to_string(), checkpoint));
        Ok(true)
    }
    async fn take_over(
        &self,
        session_id: &str,
        lapsed: &str,
        info: &TurnInfo,
        ttl_ms: u64,
        max: u32,
    ) -> BResult<TakeOver> {
        let now = now_ms();
        let mut st = self.shared.state.lock();
        let live = st.leases.get(session_id).is_some_and(|(_, d)| *d > now);
        if live || st.turns.get(session_id).is_none_or(|(i, _)| i.turn_id != lapsed) {
            return Ok(TakeOver::Gone);
        }
        let Some(checkpoint) = st.steps.get(session_id).filter(|(t, _)| t == lapsed).map(|(_, c)| c.clone()) else {
            return Ok(TakeOver::Unsaved);
        };
        if checkpoint.takeovers >= max {
            return Ok(TakeOver::Exhausted);
        }
        let checkpoint = Checkpoint { takeovers: checkpoint.takeovers + 1, ..checkpoint };
        let deadline = now + ttl_ms as i64;
        st.leases.insert(session_id.to_string(), (info.clone(), deadline));
        st.turns.insert(session_id.to_string(), (info.clone(), deadline));
        st.steps.insert(session_id.to_string(), (info.turn_id.clone(), checkpoint.clone()));
        let log = st.logs.get(session_id);
        let from_seq = log.map_or(0, |l| l.latest) + 1;
        let sent = log
            .map(|l| l.entries.iter().filter(|(s, _)| *s > checkpoint.seq).map(|(_, e)| e.clone()).collect())
            .unwrap_or_default();
        Ok(TakeOver::Taken { checkpoint, from_seq, sent })
    }
    async fn current(&self, session_id: &str) -> BResult<Option<TurnInfo>> {
        let now = now_ms();
        let st = self.shared.state.lock();
        Ok(st.leases.get(session_id).filter(|(_, d)| *d > now).map(|(i, _)| i.clone()))
    }
    async fn rewatch(&self, session_id: &str) -> BResult<bool> {
        let now = now_ms();
        let st = self.shared.state.lock();
        // Sweepers here look at the records themselves ([`TurnLease::claim_lapsed`]): nothing to put back.
        let leased = st.leases.get(session_id).is_some_and(|(_, d)| *d > now);
        Ok(!leased && st.turns.contains_key(session_id))
    }
    async fn claim_lapsed(&self, now: i64, max: usize) -> BResult<Vec<(String, TurnInfo)>> {
        let mut st = self.shared.state.lock();
        let lapsed: Vec<String> =
            st.turns.iter().filter(|(_, (_, d))| *d <= now).take(max).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::new();
        for sid in lapsed {
            if let Some((info, deadline)) = st.turns.get_mut(&sid) {
                // Handed out again only if the caller does not end it (see `LAPSED_RETRY_MS`).
                *deadline = now + LAPSED_RETRY_MS;
                out.push((sid, info.clone()));
            }
        }
        Ok(out)
    }
}
