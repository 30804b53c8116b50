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

/// A token bucket of `burst` tokens refilled at `rate` per second, counted in thousandths of a token (whole
/// numbers: no float drift).
#[derive(Debug)]
pub(crate) struct TokenBucket {
    milli: u64,
    last_ms: i64,
}

impl TokenBucket {
    pub(crate) fn full(burst: u32, now_ms: i64) -> TokenBucket {
        TokenBucket { milli: u64::from(burst) * 1_000, last_ms: now_ms }
    }

    /// Takes one token; when none is left, `Err(ms)` until one is (nothing taken).
    pub(crate) fn take(&mut self, now_ms: i64, rate: u32, burst: u32) -> Result<(), u64> {
        let elapsed = u64::try_from(now_ms.saturating_sub(self.last_ms)).unwrap_or(0);
        self.last_ms = self.last_ms.max(now_ms);
        // A token per second at `rate` is `rate` thousandths per millisecond.
        self.milli = self.milli.saturating_add(elapsed.saturating_mul(u64::from(rate))).min(u64::from(burst) * 1_000);
        if self.milli >= 1_000 {
            self.milli -= 1_000;
            return Ok(());
        }
        Err((1_000 - self.milli).div_ceil(u64::from(rate).max(1)))
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

/// Pushes onto a list that usually holds one item per idle socket (its sessions' cursors, its agents): the first
/// gets room for one, where `Vec` would make room for four; later pushes grow the list as usual.
pub(crate) fn push_sparing<T>(list: &mut Vec<T>, item: T) {
    if list.capacity() == 0 {
        list.reserve_exact(1);
    }
    list.push(item);
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh log epoch: 16 hex digits (no `:`, so it sits between the seq and the event on the bus).
pub(crate) fn new_epoch() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..16].to_string()
}

/// The bytes of lower-case hex (what [`hex`] writes); None for anything else (odd length, upper case, other
/// characters), so a signature has one spelling.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Lower-case hex of `bytes` (signatures and salts on the wire and in storage).
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Aborts a task when dropped: ties a helper task (a connection, a lease renewer) to the one that owns it, so it
/// never outlives it, however the owner ends.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl AbortOnDrop {
    pub(crate) fn spawn<F>(task: F) -> AbortOnDrop
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        AbortOnDrop(tokio::spawn(task).abort_handle())
    }

    pub(crate) fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::push_sparing;

    #[test]
    fn a_first_push_makes_room_for_one_only() {
        let mut v = Vec::new();
        push_sparing(&mut v, 1u64);
        assert_eq!((v.len(), v.capacity()), (1, 1));
        push_sparing(&mut v, 2);
        push_sparing(&mut v, 3);
        assert_eq!(v, [1, 2, 3]);
    }

    use super::*;

    #[test]
    fn a_token_bucket_allows_its_burst_then_its_rate() {
        let mut b = TokenBucket::full(4, 0);
        for _ in 0..4 {
            assert!(b.take(0, 2, 4).is_ok());
        }
        assert_eq!(b.take(0, 2, 4), Err(500), "2 per second: the next token in 500 ms");
        assert_eq!(b.take(250, 2, 4), Err(250));
        assert!(b.take(500, 2, 4).is_ok());
        assert!(b.take(500, 2, 4).is_err());
        // Idle for a long time: full again, never more than the burst.
        for _ in 0..4 {
            assert!(b.take(1_000_000, 2, 4).is_ok());
        }
        assert!(b.take(1_000_000, 2, 4).is_err());
    }

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

    #[tokio::test]
    async fn a_helper_task_stops_with_the_task_that_owns_it() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let owner = tokio::spawn(async move {
            let _helper = AbortOnDrop::spawn(async move {
                loop {
                    let _ = tx.send(());
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            });
            std::future::pending::<()>().await;
        });
        rx.recv().await.expect("the helper runs");
        owner.abort();
        let _ = owner.await;
        // Once its owner is gone the helper is aborted: its sender drops and the channel closes.
        while rx.recv().await.is_some() {}
    }
}
