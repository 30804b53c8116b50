//! The configuration's modes as enums: serde refuses a value that is not one of them and names the key (through
//! `serde_path_to_error` in `load`), and code matches on them instead of comparing strings.

use serde::{Deserialize, Serialize};

macro_rules! mode {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// The spelling in the configuration (and on the wire where it is shown).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

mode! {
    /// `auth.mode`: who a connection is.
    AuthMode {
        /// Everyone is one anonymous user in org `default` (local use and the demo).
        #[default]
        None = "none",
        /// A JWT (HS256, RS256 or JWKS) on every connection and request.
        Jwt = "jwt",
    }
}

mode! {
    /// `log_format`.
    LogFormat {
        /// Pretty on a terminal, JSON otherwise.
        #[default]
        Auto = "auto",
        Json = "json",
        Pretty = "pretty",
    }
}

mode! {
    /// `otp.delivery`: how codes reach the person.
    OtpDeliveryMode {
        /// A webhook when `otp.delivery_url` is set, else the log with anonymous auth, else none.
        #[default]
        Auto = "auto",
        Webhook = "webhook",
        /// The code is written to the server log: local demos only.
        Log = "log",
    }
}

mode! {
    /// `agents[].visibility`.
    Visibility {
        /// `end_user` tools need an OTP-verified session; `admin` tools never run.
        #[default]
        Public = "public",
        /// Every tool level passes.
        Internal = "internal",
    }
}

mode! {
    /// `tools[].auth_level`: who may run a tool on a public agent.
    AuthLevel {
        #[default]
        None = "none",
        /// An OTP-verified session.
        EndUser = "end_user",
        /// Never on a public agent.
        Admin = "admin",
    }
}

mode! {
    /// `agents[].interactions`: the interaction kinds whose raise tools the model is offered.
    InteractionKind {
        #[default]
        IdentityIntake = "identity_intake",
        Choices = "choices",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_and_refuse_by_their_spelling() {
        #[derive(Deserialize)]
        struct T {
            level: AuthLevel,
        }
        let t: T = toml::from_str("level = \"end_user\"").expect("known");
        assert_eq!(t.level, AuthLevel::EndUser);
        let e = toml::from_str::<T>("level = \"root\"").err().expect("refused").to_string();
        assert!(e.contains("root") && e.contains("end_user"), "{e}");
        assert_eq!(AuthMode::Jwt.as_str(), "jwt");
        assert_eq!(LogFormat::default(), LogFormat::Auto);
    }
}
