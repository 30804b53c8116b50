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

/// The ops hash of the slot `key` belongs to: the key up to its hash tag, plus `:ops`.
pub(super) fn ops_key(key: &str) -> String {
    match key.find('}') {
        Some(end) => format!("{}:ops", &key[..=end]),
        None => format!("{key}:ops"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Channel;

    #[test]
    fn keys_share_the_session_slot() {
        let k = Keys { prefix: "sb".into() };
        let slot = |s: &str| fred::util::redis_keyslot(s.as_bytes());
        let sid = "7d4c";
        let channel = Channel::Session(sid.into()).name("sb");
        for what in ["seq", "log", "confirm", "decided", "last", "lease", "turn", "session"] {
            assert_eq!(slot(&k.session_key(sid, what)), slot(&channel), "{what}");
        }
        assert_eq!(slot(&k.conv("c1")), slot(&k.msgs("c1")));
        assert_eq!(seq_of("42-0"), Some(42));
    }
}
