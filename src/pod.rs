//! Messages from one pod to another over the pod's own bus channel: a cancel for a turn running there, or an
//! event for one of its connections. Typed here, encoded once by the sender and decoded once by the receiver's
//! control loop (`app`), so neither side walks JSON by hand.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message on a `pod:<id>` channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum PodMessage {
    /// Cancel the session's turn if it runs on the receiving pod and is still `turn_id`.
    #[serde(rename_all = "camelCase")]
    Cancel {
        session_id: String,
        turn_id: String,
        /// W3C traceparent of the cancelling request, so the receiving pod's span joins its trace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// Offer `event` to the receiving pod's connection `connection_id` (`/admin/publish` to a connection).
    #[serde(rename_all = "camelCase")]
    Deliver { connection_id: String, event: Value },
}

impl PodMessage {
    pub(crate) fn encode(&self) -> String {
        // A tagged enum of strings and a JSON value always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// None for a message this build does not know (a newer pod's); the caller ignores it.
    pub(crate) fn decode(text: &str) -> Option<PodMessage> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_keep_their_wire_shape() {
        let cancel = PodMessage::Cancel { session_id: "s".into(), turn_id: "t".into(), traceparent: None };
        let wire: Value = serde_json::from_str(&cancel.encode()).expect("json");
        assert_eq!(wire, json!({"kind": "cancel", "sessionId": "s", "turnId": "t"}));
        assert_eq!(PodMessage::decode(&cancel.encode()), Some(cancel));
        let deliver = PodMessage::Deliver { connection_id: "c".into(), event: json!({"type": "x"}) };
        let wire: Value = serde_json::from_str(&deliver.encode()).expect("json");
        assert_eq!(wire, json!({"kind": "deliver", "connectionId": "c", "event": {"type": "x"}}));
        assert_eq!(PodMessage::decode(r#"{"kind":"reboot"}"#), None, "unknown kinds are ignored");
        assert_eq!(PodMessage::decode("not json"), None);
    }
}
