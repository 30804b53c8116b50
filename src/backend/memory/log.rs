//! The event log of the memory backend (the same behaviour as `redis::log`): guarded appends, published under
//! the state lock so bus order is append order.

use async_trait::async_trait;

use super::MemoryStore;
use crate::backend::*;
use crate::util::now_ms;

#[async_trait]
impl EventLog for MemoryStore {
    async fn append_guarded(&self, session_id: &str, events: Vec<String>, guard: Guard<'_>) -> BResult<Option<u64>> {
        let now = now_ms();
        let mut st = self.shared.state.lock();
        let live =
            |held: Option<&(TurnInfo, i64)>, turn_id: &str| held.is_some_and(|(i, d)| i.turn_id == turn_id && *d > now);
        match guard {
            Guard::None => {}
            Guard::Live if st.sessions.get(session_id).is_some_and(|(_, t)| now - t < self.shared.idle_ttl_ms) => {}
            Guard::Holder(t) | Guard::Release(t) if live(st.leases.get(session_id), t) => {}
            Guard::Lapsed(t)
                if st.leases.get(session_id).is_none_or(|(_, d)| *d <= now)
                    && st.turns.get(session_id).is_some_and(|(i, _)| i.turn_id == t) => {}
            Guard::Orphan(_)
                if st.leases.get(session_id).is_none_or(|(_, d)| *d <= now)
                    && !st.turns.contains_key(session_id)
                    && !st.ended.contains(session_id)
                    && st.sessions.contains_key(session_id) => {}
            _ => return Ok(None),
        }
        if let Guard::Release(_) | Guard::Lapsed(_) | Guard::Orphan(_) = guard {
            st.leases.remove(session_id);
            if st.turns.remove(session_id).is_some() || matches!(guard, Guard::Orphan(_)) {
                st.ended.insert(session_id.to_string());
            }
            st.steps.remove(session_id);
        }
        if events.is_empty() {
            return Ok(Some(0));
        }
        let log = st.logs.entry(session_id.to_string()).or_default();
        log.touched_ms = now_ms();
        let first = log.latest + 1;
        let message = crate::backend::framing::message(first, &log.epoch, &events.join("\n"));
        for event in events {
            log.latest += 1;
            log.entries.push_back((log.latest, event));
        }
        while log.entries.len() > self.shared.log_len {
            log.entries.pop_front();
        }
        // Publishing under the state lock keeps seq order on the bus equal to append order.
        self.shared.deliver(&st, &Channel::Session(session_id.to_string()), &message);
        Ok(Some(first))
    }

    async fn read_after(&self, session_id: &str, after: u64, max: usize) -> BResult<Vec<(u64, String)>> {
        let st = self.shared.state.lock();
        Ok(st
            .logs
            .get(session_id)
            .map(|l| l.entries.iter().filter(|(s, _)| *s > after).take(max).cloned().collect())
            .unwrap_or_default())
    }

    async fn epoch(&self, session_id: &str) -> BResult<Option<String>> {
        Ok(self.shared.state.lock().logs.get(session_id).map(|l| l.epoch.clone()))
    }

    async fn bounds(&self, session_id: &str) -> BResult<(u64, u64)> {
        let st = self.shared.state.lock();
        Ok(st
            .logs
            .get(session_id)
            .map(|l| (l.entries.front().map(|e| e.0).unwrap_or(l.latest + 1), l.latest))
            .map(|(o, l)| if l == 0 { (0, 0) } else { (o, l) })
            .unwrap_or((0, 0)))
    }
}
