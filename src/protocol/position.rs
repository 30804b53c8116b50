//! A client's position in a session's log: a `seq` and the epoch it counts in. One rule, [`recovered`], says
//! whether the log still reaches back to a position; the socket's `resume_session` and the SSE
//! `Last-Event-ID` resume both use it, so a client gets the same answer from every door: a position from
//! another epoch (the log was lost and restarted) or one trimmed away is not recovered, and the replay starts at
//! the oldest event kept.

use std::fmt;

/// A position in a session's log: the last `seq` a client saw, in `epoch` (`None`: the client did not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamPosition {
    pub(crate) seq: u64,
    pub(crate) epoch: Option<String>,
}

/// What the log holds now: its epoch (`None` before its first event) and its oldest and latest seq.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogNow<'a> {
    pub(crate) epoch: Option<&'a str>,
    pub(crate) oldest: u64,
    pub(crate) latest: u64,
}

impl StreamPosition {
    /// Whether this position counts in the log's epoch `epoch` (a position that names none is taken to).
    pub(crate) fn in_epoch(&self, epoch: Option<&str>) -> bool {
        self.epoch.is_none() || self.epoch.as_deref() == epoch
    }

    /// An SSE event id or `Last-Event-ID`: `"<seq>:<epoch>"`, or a bare `"<seq>"` (same epoch assumed, as a
    /// socket resume without `epoch`). None when it is neither.
    pub(crate) fn parse(text: &str) -> Option<StreamPosition> {
        let text = text.trim();
        let (seq, epoch) = match text.split_once(':') {
            Some((seq, epoch)) if !epoch.is_empty() => (seq, Some(epoch.to_string())),
            Some(_) => return None,
            None => (text, None),
        };
        let seq = seq.parse().ok()?;
        Some(StreamPosition { seq, epoch })
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.epoch {
            Some(epoch) => write!(f, "{}:{epoch}", self.seq),
            None => write!(f, "{}", self.seq),
        }
    }
}

/// Whether the log reaches back to `pos`: the position counts in the log's epoch (the client's, when it says
/// one; otherwise it must not be newer than anything the log has) and nothing after it was trimmed.
pub(crate) fn recovered(pos: &StreamPosition, log: LogNow<'_>) -> bool {
    // A log with no event yet has no epoch: only "nothing seen" is a position in it.
    let same_epoch = pos.in_epoch(log.epoch) || (log.epoch.is_none() && pos.seq == 0);
    same_epoch && pos.seq <= log.latest && (log.latest == 0 || pos.seq + 1 >= log.oldest)
}

/// A live reader's position once it sees the log in `epoch` (an event's, or the log's now): unchanged in the
/// epoch it knew (or when it knew none yet), 0 in another: the log restarted, so every event of the new epoch is
/// new to the reader however low its seq. The socket's delivery and catch-up and the gateway's log watch follow
/// a log with it.
pub(crate) fn rebase(known_epoch: Option<&str>, seq: u64, epoch: &str) -> u64 {
    match known_epoch {
        Some(known) if known != epoch => 0,
        _ => seq,
    }
}

/// Where a replay for `pos` starts (the events after the returned seq): `pos` itself when recovered, else just
/// before the oldest event kept.
pub(crate) fn replay_from(pos: &StreamPosition, log: LogNow<'_>) -> (u64, bool) {
    if recovered(pos, log) {
        (pos.seq, true)
    } else {
        (log.oldest.saturating_sub(1), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, epoch: Option<&str>) -> StreamPosition {
        StreamPosition { seq, epoch: epoch.map(str::to_string) }
    }

    #[test]
    fn ids_round_trip_and_bad_ones_are_refused() {
        assert_eq!(StreamPosition::parse("12:ab12"), Some(at(12, Some("ab12"))));
        assert_eq!(StreamPosition::parse(&at(12, Some("ab12")).to_string()), Some(at(12, Some("ab12"))));
        assert_eq!(StreamPosition::parse(" 7 "), Some(at(7, None)), "a bare seq (older clients)");
        for bad in ["", "abc", "-1", "12:", ":ep", "1.5"] {
            assert_eq!(StreamPosition::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_rule_for_every_resume() {
        let log = LogNow { epoch: Some("e1"), oldest: 5, latest: 20 };
        assert!(recovered(&at(10, Some("e1")), log));
        assert!(recovered(&at(4, Some("e1")), log), "the next event (5) is still kept");
        assert!(!recovered(&at(3, Some("e1")), log), "events after it were trimmed");
        assert!(!recovered(&at(21, Some("e1")), log), "newer than the log");
        assert!(!recovered(&at(10, Some("e0")), log), "another epoch");
        assert!(recovered(&at(10, None), log), "no epoch said: same epoch assumed");
        assert_eq!(replay_from(&at(10, Some("e0")), log), (4, false), "from the oldest kept");
        assert_eq!(replay_from(&at(10, Some("e1")), log), (10, true));
        let empty = LogNow { epoch: None, oldest: 0, latest: 0 };
        assert!(recovered(&at(0, Some("e1")), empty));
        assert!(!recovered(&at(3, Some("e1")), empty));
        assert_eq!(rebase(Some("e1"), 9, "e1"), 9);
        assert_eq!(rebase(None, 9, "e2"), 9, "no epoch known yet: the position stands");
        assert_eq!(rebase(Some("e1"), 9, "e2"), 0, "a new log: from its start");
    }
}
