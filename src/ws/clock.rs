//! A socket's three deadlines on one timer: its token's expiry, its registry heartbeat and its keepalive (which
//! every write puts off). An idle socket is what a pod holds 10k of, and each tokio timer is ~100 bytes of it.

use std::time::Duration;

use tokio::time::Instant;

/// When each of a socket's timed duties is next due.
pub(super) struct Clock {
    expires_at: Instant,
    heartbeat_at: Instant,
    heartbeat_every: Duration,
    keepalive_at: Instant,
    keepalive_after: Duration,
}

/// What came due at a firing.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Due {
    pub expired: bool,
    pub heartbeat: bool,
    pub keepalive: bool,
}

impl Clock {
    pub(super) fn new(expires_in: Duration, heartbeat_every: Duration, keepalive_after: Duration) -> Clock {
        Clock::at(Instant::now(), expires_in, heartbeat_every, keepalive_after)
    }

    fn at(now: Instant, expires_in: Duration, heartbeat_every: Duration, keepalive_after: Duration) -> Clock {
        // A far-off expiry (a token without one) saturates instead of overflowing the instant.
        let later = |d: Duration| now.checked_add(d).unwrap_or(now + Duration::from_secs(86_400 * 365 * 30));
        Clock {
            expires_at: later(expires_in),
            heartbeat_at: later(heartbeat_every),
            heartbeat_every,
            keepalive_at: later(keepalive_after),
            keepalive_after,
        }
    }

    /// The earliest deadline: when the timer must fire next.
    pub(super) fn next(&self) -> Instant {
        self.expires_at.min(self.heartbeat_at).min(self.keepalive_at)
    }

    /// Something was written: no keepalive for another `keepalive_s`.
    pub(super) fn written(&mut self) {
        self.written_at(Instant::now());
    }

    fn written_at(&mut self, now: Instant) {
        self.keepalive_at = now + self.keepalive_after;
    }

    /// What is due at `now`; a due heartbeat is counted as done (the next one a period from now). The keepalive
    /// is put off by [`Clock::written`] once it is sent.
    pub(super) fn due(&mut self, now: Instant) -> Due {
        let due = Due {
            expired: now >= self.expires_at,
            heartbeat: now >= self.heartbeat_at,
            keepalive: now >= self.keepalive_at,
        };
        if due.heartbeat {
            self.heartbeat_at = now + self.heartbeat_every;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn each_duty_comes_due_at_its_own_time() {
        let t0 = Instant::now();
        let mut c = Clock::at(t0, S(100), S(10), S(25));
        assert_eq!(c.next(), t0 + S(10));
        assert_eq!(c.due(t0 + S(9)), Due::default(), "nothing before the first deadline");
        assert_eq!(c.due(t0 + S(10)), Due { heartbeat: true, ..Due::default() });
        assert_eq!(c.next(), t0 + S(20), "the next heartbeat is a period on");
        c.due(t0 + S(20));
        assert_eq!(c.next(), t0 + S(25));
        assert_eq!(c.due(t0 + S(25)), Due { keepalive: true, ..Due::default() });
        assert_eq!(c.due(t0 + S(100)), Due { expired: true, heartbeat: true, keepalive: true });
    }

    #[test]
    fn a_write_puts_the_keepalive_off() {
        let t0 = Instant::now();
        let mut c = Clock::at(t0, S(1_000), S(500), S(30));
        c.written_at(t0 + S(20));
        assert_eq!(c.next(), t0 + S(50), "30 s after the write, not after the start");
        assert!(!c.due(t0 + S(30)).keepalive, "the timer may fire at the old deadline: nothing is due then");
        assert!(c.due(t0 + S(50)).keepalive);
    }

    #[test]
    fn a_token_without_expiry_does_not_overflow() {
        let t0 = Instant::now();
        let c = Clock::at(t0, Duration::from_secs(u64::MAX / 4), S(10), S(30));
        assert_eq!(c.next(), t0 + S(10));
    }
}
