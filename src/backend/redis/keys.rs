//! Key and channel names (the map is in the module docs of [`super`]). Everything of one session carries the
//! session id as a hash tag, so its keys and its sharded channel share one cluster slot.

/// Key names under one prefix (`redis_key_prefix`).
pub(super) struct Keys {
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn session_key(&self, sid: &str, what: &str) -> String {
        format!("{}:{{{sid}}}:{what}", self.prefix)
    }
    pub(super) fn conv(&self, cid: &str) -> String {
        format!("{}:conv:{{{cid}}}", self.prefix)
    }
    pub(super) fn msgs(&self, cid: &str) -> String {
        format!("{}:conv:{{{cid}}}:msgs", self.prefix)
    }
    /// The conversations of a user of an org (see [`crate::backend::user_key`]).
    pub(super) fn user_convs(&self, org: &str, uid: &str) -> String {
        let uid = &crate::backend::user_key(org, uid);
        format!("{}:user:{{{uid}}}:convs", self.prefix)
    }
    /// Every conversation of an org (the admin API's listing).
    pub(super) fn org_convs(&self, org: &str) -> String {
        let org = org.replace('%', "%25").replace('/', "%2F");
        format!("{}:org:{{{org}}}:convs", self.prefix)
    }
    pub(super) fn settings(&self, org: &str) -> String {
        format!("{}:settings:{org}", self.prefix)
    }
    /// A deployment-wide secret (no TTL: the deployment's, not a session's).
    pub(super) fn deployment_key(&self, name: &str) -> String {
        format!("{}:key:{name}", self.prefix)
    }
    /// An org's usage counters of one UTC day (a hash; kept `USAGE_KEEP_S`).
    pub(super) fn usage(&self, org: &str, day: &str) -> String {
        format!("{}:usage:{org}:{day}", self.prefix)
    }
    /// An org's spend of one UTC month (micro-USD).
    pub(super) fn spend(&self, org: &str, month: &str) -> String {
        format!("{}:spend:{org}:{month}", self.prefix)
    }
    pub(super) fn confirm_expiry(&self) -> String {
        format!("{}:confirm:expiry", self.prefix)
    }
    pub(super) fn turns_deadline(&self) -> String {
        format!("{}:turns:deadline", self.prefix)
    }
    pub(super) fn sock(&self, conn: &str) -> String {
        format!("{}:sock:{conn}", self.prefix)
    }
    /// The sessions a socket follows (a set, TTL'd with the entry).
    pub(super) fn sock_sessions(&self, conn: &str) -> String {
        format!("{}:sock:{conn}:sessions", self.prefix)
    }
    pub(super) fn idx(&self, kind: &str, id: &str) -> String {
        format!("{}:idx:{kind}:{id}", self.prefix)
    }
    pub(super) fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }
    pub(super) fn idx_all(&self) -> String {
        format!("{}:idx:all", self.prefix)
    }
}

/// The ops hash of the slot `key` belongs to and its previous generation (see `lua/once.lua`): the key up to
/// its hash tag plus `:ops` (and `:ops:prev`). An untagged key becomes the tag, so both land in its slot.
pub(super) fn ops_keys(key: &str) -> (String, String) {
    // Redis's rule: the tag is between the first `{` and the first `}` after it, when not empty.
    let tag_end = key.find('{').and_then(|open| {
        let close = open + 1 + key[open + 1..].find('}')?;
        (close > open + 1).then_some(close)
    });
    let ops = match tag_end {
        Some(end) => format!("{}:ops", &key[..=end]),
        None => format!("{{{key}}}:ops"),
    };
    let prev = format!("{ops}:prev");
    (ops, prev)
}

/// The expiry index member of one parked call: both ids, so a stale entry (the call was replaced or decided)
/// is recognised and never removes a newer park of the same session.
pub(super) fn expiry_member(session_id: &str, call_id: &str) -> String {
    serde_json::json!([session_id, call_id]).to_string()
}

/// Parses `<seq>-0`.
pub(super) fn seq_of(id: &str) -> Option<u64> {
    id.split_once('-').map(|(s, _)| s).unwrap_or(id).parse().ok()
}

/// A turn's member of the lapsed-lease index: `<sid>|<turn id>`, so a turn that ends removes its own entry
/// and never the one of a turn that took the slot after it.
pub(super) fn deadline_member(session_id: &str, turn_id: &str) -> String {
    format!("{session_id}|{turn_id}")
}

/// The session and the turn (none in entries written before turns had their own) of an index member.
pub(super) fn parse_deadline_member(member: &str) -> (&str, Option<&str>) {
    match member.split_once('|') {
        Some((sid, turn)) => (sid, Some(turn)),
        None => (member, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Channel;

    #[test]
    fn ops_hashes_share_the_slot_of_their_key() {
        let (ops, prev) = ops_keys("sb:{abc}:log");
        assert_eq!((ops.as_str(), prev.as_str()), ("sb:{abc}:ops", "sb:{abc}:ops:prev"));
        let (ops, prev) = ops_keys("sb:idx:all");
        assert_eq!((ops.as_str(), prev.as_str()), ("{sb:idx:all}:ops", "{sb:idx:all}:ops:prev"));
        // `{}` is no hash tag (Redis hashes the whole name then), so the whole key becomes the tag.
        assert_eq!(ops_keys("sb:{}:x").0, "{sb:{}:x}:ops");
    }

    #[test]
    fn keys_share_the_session_slot() {
        let k = Keys { prefix: "sb".into() };
        let slot = |s: &str| fred::util::redis_keyslot(s.as_bytes());
        let sid = "7d4c";
        let channel = Channel::Session(sid.into()).name("sb");
        for what in ["seq", "log", "confirm", "decided", "last", "lease", "turn", "step", "session"] {
            assert_eq!(slot(&k.session_key(sid, what)), slot(&channel), "{what}");
        }
        assert_eq!(slot(&k.conv("c1")), slot(&k.msgs("c1")));
        assert_eq!(seq_of("42-0"), Some(42));
    }
}
