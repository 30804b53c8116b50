//! Small shared helpers with no single owner: clocks, ids, hex, backoff, the per-minute window.

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 timestamp with nanoseconds, as the reference server writes `createdAt`.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// RFC 3339 form of a Unix-ms time.
pub(crate) fn rfc3339_from_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A per-minute budget: the times of the events of the last minute (few: bounded by the budget).
#[derive(Debug, Default)]
pub(crate) struct MinuteWindow(std::collections::VecDeque<i64>);

impl MinuteWindow {
    /// Takes one from a budget of `max` per minute; false (and nothing taken) when it is spent.
    pub(crate) fn take(&mut self, now_ms: i64, max: usize) -> bool {
        while self.0.front().is_some_and(|t| now_ms - *t >= 60_000) {
            self.0.pop_front();
        }
        if self.0.len() >= max {
            return false;
        }
        self.0.push_back(now_ms);
        true
    }

    /// Gives back the last one taken (its request was refused for another reason and did nothing).
    pub(crate) fn give_back(&mut self) {
        self.0.pop_back();
    }

    /// Nothing taken in the last minute.
    pub(crate) fn is_idle(&self, now_ms: i64) -> bool {
        self.0.back().is_none_or(|t| now_ms - *t >= 60_000)
    }
}

/// Exponential backoff with jitter: the delay doubles from `first` up to `max`, plus up to `jitter` at random
/// (so pods that failed together do not retry together). One helper for every retry loop.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: std::time::Duration,
    max: std::time::Duration,
    jitter: std::time::Duration,
}

impl Backoff {
    pub(crate) fn new(first: std::time::Duration, max: std::time::Duration) -> Backoff {
        Backoff { next: first, max, jitter: std::time::Duration::ZERO }
    }

    pub(crate) fn with_jitter(self, jitter: std::time::Duration) -> Backoff {
        Backoff { jitter, ..self }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> std::time::Duration {
        let jitter_ms = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms == 0 { 0 } else { rand::random::<u64>() % jitter_ms };
        let delay = (self.next + std::time::Duration::from_millis(extra)).min(self.max);
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Sleeps for [`Backoff::next_delay`].
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh log epoch: 16 hex digits (no `:`, so it sits between the seq and the event on the bus).
pub(crate) fn new_epoch() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..16].to_string()
}

/// Lower-case hex of `bytes` (signatures and salts on the wire and in storage).
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_bounded_jitter() {
        use std::time::Duration;
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let plain: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(plain, [50, 100, 200, 300, 300]);
        let mut j =
            Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).with_jitter(Duration::from_millis(100));
        let d = j.next_delay().as_millis();
        assert!((200..300).contains(&d), "{d}");
    }
}
