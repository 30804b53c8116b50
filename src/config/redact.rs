//! What `check-config` and the startup log show of a configuration: every key with the value in effect, and
//! every secret replaced.

use super::Config;

impl Config {
    /// The effective configuration with secrets replaced, for `check-config` and the startup log.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        let hide = |s: &mut String| {
            if !s.is_empty() {
                *s = "<redacted>".into();
            }
        };
        hide(&mut c.llm.api_key);
        for v in c.llm.org_key_values.values_mut() {
            hide(v);
        }
        hide(&mut c.auth.jwt_hs256_secret);
        hide(&mut c.auth.resume_secret);
        hide(&mut c.tools.signing_secret);
        for k in &mut c.auth.api_keys {
            hide(&mut k.key);
        }
        for a in &mut c.agents {
            hide(&mut a.widget_secret);
        }
        for s in &mut c.mcp.servers {
            s.header_values.clear();
        }
        for k in &mut c.auth.publish_keys {
            *k = "<redacted>".into();
        }
        c.redis_url = crate::backend::redis::url::redact(&c.redis_url);
        // Keys whose value is derived when unset are shown with the value in effect.
        c.llm.read_window_ms = Some(self.read_window().as_millis() as u64);
        c.widget.enabled = Some(self.widget_page());
        c
    }
}
