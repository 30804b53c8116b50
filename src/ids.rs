//! The ids a turn is known by, as types: a session's id is never passed where a turn's or a request's is meant.
//! Each wraps its text (serialized as a plain string, so stored turns read the same) and reads as `&str` where
//! text is wanted (log keys, wire fields).

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub(crate) struct $name(String);

        impl $name {
            // Not every id is read as text by name (most are read through `Deref`).
            #[allow(dead_code)]
            pub(crate) fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

id! {
    /// A conversation session (a socket attaches to it; a namespace is one).
    SessionId
}
id! {
    /// One turn's run: its lease and its park are held under it (a resumed turn keeps it).
    TurnId
}
id! {
    /// A turn's identity on the wire (`requestId`): every event of the turn carries it.
    RequestId
}
id! {
    /// A conversation: the stored messages a session continues.
    ConversationId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_their_text_and_read_as_str() {
        let s = SessionId::from("s-1");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"s-1\"");
        assert_eq!(serde_json::from_str::<SessionId>("\"s-1\"").expect("read"), s);
        let text: &str = &s;
        assert_eq!(text, "s-1");
        assert!(s == "s-1" && s.as_str().len() == 3);
        assert_eq!(format!("{s}"), "s-1");
    }
}
