//! The Lua scripts, one per file under `lua/` (read, highlighted and linted as Lua), compiled once per pod.
//!
//! Every script touches the keys of one slot only (one session, or one conversation, or one index), and KEYS
//! are always passed explicitly, so each runs unchanged on a single Redis and on a cluster. Scripts are sent
//! with EVALSHA and loaded on NOSCRIPT ([`super::conn::Shared::eval`]): a restarted or failed-over server has an
//! empty script cache.

use fred::types::scripts::Script;

/// How many recent replies a slot's ops hash keeps before it becomes the previous generation, and for how long
/// after its last write. fred resends a command whose connection dropped after the reconnect (seconds later at
/// most, bounded by the command timeout), so this only has to outlive that window: at least the last 64 writes
/// of one slot (a turn's emitter waits for each append's reply before the next; the other writers of a
/// session, lease renewals, publishes and decisions, write a few times a second at most). It was 1,000 with no
/// generations: a busy session held up to 1,000 replies (~85 KB) for as long as it kept writing, which the soak
/// showed as Redis memory growing for its whole half hour (docs/benchmarks.md); now at most 128 (~11 KB).
const OPS_CAP: u32 = 64;
const OPS_TTL_S: u32 = 60;

/// Makes a write script safe to resend (`lua/once.lua`): the last KEY is an ops hash (same slot) and the last
/// ARGV a token unique to this call. A resend of the same call (fred retries after a dropped connection, and
/// re-sends after a MOVED redirect) returns the recorded reply instead of appending, deciding or claiming twice.
fn once(body: &str) -> String {
    include_str!("lua/once.lua")
        .replace("__BODY__", body)
        .replace("__OPS_CAP__", &OPS_CAP.to_string())
        .replace("__OPS_TTL_S__", &OPS_TTL_S.to_string())
}

/// A script that takes a park (`decide`, `take`) with `lua/cut_hold.lua`, the cut of the taken park's hold, in
/// place of its `__CUT_HOLD__` line.
fn taking(body: &str) -> String {
    body.replace("__CUT_HOLD__", include_str!("lua/cut_hold.lua"))
}

/// The compiled scripts (hashes computed once; loaded lazily on NOSCRIPT). The ones marked resend-safe are
/// wrapped by [`once`] and called through [`super::conn::Shared::eval_once`].
pub(super) struct Scripts {
    /// Appends events with consecutive seqs and publishes them, atomically (guards its own resends).
    pub(super) append_batch: Script,
    /// Oldest retained and latest seq of a session log.
    pub(super) bounds: Script,
    /// Reads a session record, refreshing its TTL and its log's.
    pub(super) touch: Script,
    /// Takes one use of a quota window while under its limit.
    pub(super) quota_take: Script,
    /// Holds one of a limited number of places (concurrent turns per user).
    pub(super) hold: Script,
    /// Appends a conversation message and updates the conversation record (resend-safe).
    pub(super) append_message: Script,
    /// One page of a conversation's messages with its start index, read atomically.
    pub(super) messages_page: Script,
    /// Sets a field (title, supports) of a conversation that exists.
    pub(super) rename: Script,
    /// Sets a session's contact fields, clearing `verified` when the contact changes.
    pub(super) stamp: Script,
    /// Counts one OTP attempt and returns the code to compare against.
    pub(super) otp_attempt: Script,
    /// Stores a parked turn, replacing any previous one.
    pub(super) park: Script,
    /// First decision on a parked call wins (resend-safe).
    pub(super) decide: Script,
    /// Removes the parked turn for exactly one caller (resend-safe).
    pub(super) take: Script,
    /// Takes a free turn lease (resend-safe).
    pub(super) acquire: Script,
    /// Extends a turn lease that still belongs to the turn (compare-and-set on the turn id).
    pub(super) renew: Script,
    /// Takes the lease back for a parked turn whose record is still its own.
    pub(super) resume: Script,
    /// Hands a parked turn's lease over to its park while that call is still parked.
    pub(super) hand_over: Script,
    /// Records a running turn's durable step while it holds its lease.
    pub(super) checkpoint: Script,
    /// Takes a lapsed turn over under a new turn id from its last step (resend-safe).
    pub(super) take_over: Script,
    /// Frees whatever of the lease and turn record still belongs to the turn (resend-safe).
    pub(super) release: Script,
    /// Hands a lapsed turn to the one sweeper that won the deadline index entry (resend-safe).
    pub(super) claim: Script,
    /// Adds a socket to a registry index and prunes the expired members.
    pub(super) index_add: Script,
    /// Gives one use of a quota window back without ever recreating an expired counter.
    pub(super) quota_give: Script,
    /// Adds a new conversation to an index, prunes the expired and trims past the per-user cap.
    pub(super) index_conversation: Script,
    /// Whether the master holds a write whose connection was replaced before replicas had it (replicated.rs).
    pub(super) held: Script,
    /// A write that changes nothing, after a read of the log, for a `WAIT` to cover what the read saw (log.rs).
    pub(super) fence: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            append_batch: Script::from_lua(include_str!("lua/append_batch.lua")),
            held: Script::from_lua(include_str!("lua/held.lua")),
            fence: Script::from_lua(include_str!("lua/fence.lua")),
            bounds: Script::from_lua(include_str!("lua/bounds.lua")),
            touch: Script::from_lua(include_str!("lua/touch.lua")),
            quota_take: Script::from_lua(include_str!("lua/quota_take.lua")),
            hold: Script::from_lua(include_str!("lua/hold.lua")),
            append_message: Script::from_lua(include_str!("lua/append_message.lua")),
            messages_page: Script::from_lua(include_str!("lua/messages_page.lua")),
            rename: Script::from_lua(include_str!("lua/rename.lua")),
            stamp: Script::from_lua(include_str!("lua/stamp.lua")),
            otp_attempt: Script::from_lua(include_str!("lua/otp_attempt.lua")),
            park: Script::from_lua(include_str!("lua/park.lua")),
            decide: Script::from_lua(once(&taking(include_str!("lua/decide.lua")))),
            take: Script::from_lua(once(&taking(include_str!("lua/take.lua")))),
            acquire: Script::from_lua(include_str!("lua/acquire.lua")),
            renew: Script::from_lua(include_str!("lua/renew.lua")),
            resume: Script::from_lua(include_str!("lua/resume.lua")),
            hand_over: Script::from_lua(include_str!("lua/hand_over.lua")),
            checkpoint: Script::from_lua(include_str!("lua/checkpoint.lua")),
            take_over: Script::from_lua(once(include_str!("lua/take_over.lua"))),
            release: Script::from_lua(once(include_str!("lua/release.lua"))),
            claim: Script::from_lua(once(include_str!("lua/claim.lua"))),
            index_add: Script::from_lua(include_str!("lua/index_add.lua")),
            quota_give: Script::from_lua(include_str!("lua/quota_give.lua")),
            index_conversation: Script::from_lua(include_str!("lua/index_conversation.lua")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resend_wrapper_embeds_the_body_and_its_bounds() {
        let wrapped = once("return 42");
        assert!(wrapped.contains("local function run()\nreturn 42\nend"));
        assert!(wrapped.contains(">= 64 then") && wrapped.contains("EXPIRE', ops, 60)"));
        assert!(!wrapped.contains("__"), "every placeholder filled");
        for script in [include_str!("lua/decide.lua"), include_str!("lua/take.lua")] {
            let taking = taking(script);
            assert!(taking.contains("local function cut_hold") && !taking.contains("__"), "{taking}");
        }
    }
}
