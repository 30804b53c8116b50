//! Layering: defaults → TOML file → `SWITCHBOARD_*` environment (typed after the default at each path).

use super::{invalid, AgentConfig, Config, ConfigError};

const ENV_PREFIX: &str = "SWITCHBOARD_";

impl Config {
    /// Loads defaults, then the file (if any), then the given environment variables, and validates.
    /// The environment is passed in (not read here) so tests never need `std::env::set_var`.
    pub fn load<I>(file: Option<&str>, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_string(), source })?;
                Self::load_text(Some((path, &text)), env)
            }
            None => Self::load_text(None, env),
        }
    }

    /// [`Config::load`] with the file's text given (and its name, for messages).
    pub fn load_text<I>(file: Option<(&str, &str)>, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut tree = toml::Value::try_from(Config::default()).map_err(|e| invalid("(defaults)", e.to_string()))?;
        if let Some((path, text)) = file {
            let file_tree: toml::Value = text
                .parse::<toml::Table>()
                .map(toml::Value::Table)
                .map_err(|e| ConfigError::Syntax { path: path.to_string(), message: e.to_string() })?;
            merge(&mut tree, file_tree);
        }
        let defaults = toml::Value::try_from(Config::default()).map_err(|e| invalid("(defaults)", e.to_string()))?;
        let env_all: Vec<(String, String)> = env.into_iter().collect();
        let mut vars: Vec<(String, String)> =
            env_all.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX) && !is_service_link(k)).cloned().collect();
        vars.sort();
        // API keys are secrets named after their `[[auth.api_keys]]` entry, not config keys.
        let (key_vars, vars): (Vec<_>, Vec<_>) = vars.into_iter().partition(|(k, _)| k.starts_with(API_KEY_PREFIX));
        // So are agents' widget secrets (`SWITCHBOARD_WIDGET_SECRETS__<AGENT_ID>`), e.g. from a Kubernetes Secret.
        let (widget_vars, vars): (Vec<_>, Vec<_>) =
            vars.into_iter().partition(|(k, _)| k.starts_with(WIDGET_SECRET_PREFIX));
        for (var, value) in vars {
            apply_env(&mut tree, &defaults, &var, &value)?;
        }
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            invalid(&key, e.into_inner().to_string())
        })?;
        let mut config = config;
        for k in &mut config.auth.api_keys {
            let var = k.env_var();
            k.key = key_vars.iter().find(|(v, _)| *v == var).map(|(_, value)| value.trim().to_string()).ok_or_else(
                || ConfigError::Env {
                    var: var.clone(),
                    message: format!("holds the key of auth.api_keys `{}` and is not set", k.name),
                },
            )?;
        }
        // The org keys' variables are named in the config (they need not start with SWITCHBOARD_).
        for (org, var) in &config.llm.org_keys {
            let value = env_all.iter().find(|(k, _)| k == var).map(|(_, v)| v.trim().to_string()).unwrap_or_default();
            if value.is_empty() {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: format!("holds the model key of org `{org}` (llm.org_keys) and is not set"),
                });
            }
            config.llm.org_key_values.insert(org.clone(), value);
        }
        // MCP servers' header values come from the variables the config names.
        for server in &mut config.mcp.servers {
            for (header, var) in &server.headers {
                let value =
                    env_all.iter().find(|(k, _)| k == var).map(|(_, v)| v.trim().to_string()).unwrap_or_default();
                if value.is_empty() {
                    return Err(ConfigError::Env {
                        var: var.clone(),
                        message: format!("holds header `{header}` of MCP server `{}` and is not set", server.name),
                    });
                }
                server.header_values.insert(header.clone(), value);
            }
        }
        for (var, value) in &widget_vars {
            let agent = config.agents.iter_mut().find(|a| a.widget_secret_env() == *var).ok_or_else(|| {
                ConfigError::Env { var: var.clone(), message: "no [[agents]] entry has this id".into() }
            })?;
            agent.widget_secret = value.trim().to_string();
        }
        if let Some((var, _)) = key_vars.iter().find(|(v, _)| !config.auth.api_keys.iter().any(|k| k.env_var() == *v)) {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: "no [[auth.api_keys]] entry has this name".into(),
            });
        }
        config.validate()?;
        Ok(config)
    }
}

/// Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_8787_TCP…` for every Service in the
/// namespace; for a Service named `switchboard…` those share our prefix. No config key has these shapes, so
/// they are skipped instead of failing the boot as unknown keys.
fn is_service_link(var: &str) -> bool {
    let rest = &var[ENV_PREFIX.len() - 1..]; // keep the leading '_' so "_PORT" matches at the start too
    rest.ends_with("_PORT")
        || rest.contains("_PORT_")
        || rest.contains("_SERVICE_HOST")
        || rest.contains("_SERVICE_PORT")
}

/// Deep-merges `over` into `base` (tables merge, everything else replaces).
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Keys that are unset by default (so the defaults tree does not show their type) and take an integer.
/// Environment variables that hold API keys: `SWITCHBOARD_AUTH__API_KEYS__<NAME>`.
const API_KEY_PREFIX: &str = "SWITCHBOARD_AUTH__API_KEYS__";
/// Environment variables that hold agents' widget secrets: `SWITCHBOARD_WIDGET_SECRETS__<AGENT_ID>`.
pub(crate) const WIDGET_SECRET_PREFIX: &str = "SWITCHBOARD_WIDGET_SECRETS__";

const OPTIONAL_INTEGER_KEYS: &[&str] = &["llm.read_window_ms"];
/// Keys that are unset by default and take a boolean.
const OPTIONAL_BOOL_KEYS: &[&str] = &["widget.enabled"];

/// Sets one `SWITCHBOARD_A__B` variable into the tree, typed after the default value at that path.
fn apply_env(tree: &mut toml::Value, defaults: &toml::Value, var: &str, raw: &str) -> Result<(), ConfigError> {
    let env_err = |m: String| ConfigError::Env { var: var.to_string(), message: m };
    let path: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path == ["agents"] {
        let agents: Vec<AgentConfig> =
            serde_json::from_str(raw).map_err(|e| env_err(format!("not a JSON array of agents: {e}")))?;
        let v = toml::Value::try_from(agents).map_err(|e| env_err(e.to_string()))?;
        if let toml::Value::Table(t) = tree {
            t.insert("agents".into(), v);
        }
        return Ok(());
    }
    let mut default = defaults;
    let optional_integer = toml::Value::Integer(0);
    let optional_bool = toml::Value::Boolean(false);
    for seg in &path {
        default = match default.get(seg) {
            Some(d) => d,
            // Unset by default, so absent from the defaults tree, but an integer (a boolean) when set.
            None if OPTIONAL_INTEGER_KEYS.contains(&path.join(".").as_str()) => &optional_integer,
            None if OPTIONAL_BOOL_KEYS.contains(&path.join(".").as_str()) => &optional_bool,
            None => return Err(env_err(format!("unknown key `{}`", path.join(".")))),
        };
    }
    let value = match default {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.trim().parse::<i64>().map_err(|_| env_err(format!("`{raw}` is not an integer")))?)
        }
        toml::Value::Boolean(_) => toml::Value::Boolean(
            raw.trim().parse::<bool>().map_err(|_| env_err(format!("`{raw}` is not true or false")))?,
        ),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
        ),
        _ => return Err(env_err(format!("`{}` is a section, set its keys instead", path.join(".")))),
    };
    let mut node = tree;
    for seg in &path[..path.len() - 1] {
        node = node.get_mut(seg).ok_or_else(|| env_err(format!("unknown key `{}`", path.join("."))))?;
    }
    if let toml::Value::Table(t) = node {
        t.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resume secret every Redis deployment needs.
    const SECRET: (&str, &str) = ("SWITCHBOARD_AUTH__RESUME_SECRET", "resume-secret-0123456789abcdef-0123");

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid_and_match_the_design_table() {
        let c = Config::load(None, env(&[])).expect("defaults load");
        assert_eq!(c.bind, "127.0.0.1:8787");
        assert_eq!(c.llm.model, "gpt-4o-mini");
        assert_eq!((c.llm.timeout_s, c.llm.max_retries), (60, 2));
        assert_eq!((c.turn.max_iterations, c.turn.history_messages, c.turn.lease_ms), (8, 50, 10_000));
        assert_eq!(c.turn.coalesce_ms, 50);
        assert_eq!(c.confirm.timeout_s, 300);
        assert_eq!((c.tools.timeout_ms, c.tools.max_output_bytes), (10_000, 65_536));
        assert_eq!(
            (c.limits.max_frame_bytes, c.limits.outbound_queue, c.limits.log_len, c.limits.messages_per_minute),
            (65_536, 256, 1000, 60)
        );
        assert_eq!(c.session.idle_ttl_s, 86_400);
        assert_eq!((c.drain.timeout_s, c.drain.pre_stop_s), (25, 5));
        assert_eq!(c.keepalive_s, 30);
    }

    #[test]
    fn api_keys_come_from_the_environment_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[[auth.api_keys]]\nname = \"billing-svc\"\norg = \"acme\"\n").expect("write");
        let file = path.to_str();
        let e = Config::load(file, env(&[])).unwrap_err().to_string();
        assert!(e.contains("SWITCHBOARD_AUTH__API_KEYS__BILLING_SVC"), "{e}");
        let key = ("SWITCHBOARD_AUTH__API_KEYS__BILLING_SVC", "k-0123456789abcdef");
        let c = Config::load(file, env(&[key])).expect("load");
        assert_eq!((c.auth.api_keys[0].org.as_str(), c.auth.api_keys[0].key.as_str()), ("acme", "k-0123456789abcdef"));
        assert!(!format!("{:?}", toml::Value::try_from(c.redacted()).expect("toml")).contains("k-0123"));
        let e = Config::load(file, env(&[key, ("SWITCHBOARD_AUTH__API_KEYS__OTHER", "x")])).unwrap_err().to_string();
        assert!(e.contains("SWITCHBOARD_AUTH__API_KEYS__OTHER"), "{e}");
        std::fs::write(&path, "[[auth.api_keys]]\nname = \"a\"\norg = \"o\"\nkey = \"in-the-file\"\n").expect("write");
        assert!(Config::load(file, env(&[])).is_err(), "a key in the file is refused");
    }

    #[test]
    fn waiting_for_replicas_needs_redis_and_a_bounded_timeout() {
        let e = Config::load(None, env(&[("SWITCHBOARD_REDIS_WAIT_REPLICAS", "1")])).unwrap_err().to_string();
        assert!(e.contains("redis_wait_replicas"), "{e}");
        let redis = ("SWITCHBOARD_REDIS_URL", "redis://h:6379");
        let e = Config::load(None, env(&[redis, ("SWITCHBOARD_AUTH__RESUME_SECRET", "short")])).unwrap_err();
        assert!(e.to_string().contains("auth.resume_secret"), "{e}");
        let c = Config::load(None, env(&[redis, SECRET, ("SWITCHBOARD_REDIS_WAIT_REPLICAS", "2")])).expect("load");
        assert_eq!((c.redis_wait_replicas, c.redis_wait_timeout_ms), (2, 1_000));
        let long = ("SWITCHBOARD_REDIS_WAIT_TIMEOUT_MS", "60001");
        let e = Config::load(None, env(&[redis, SECRET, ("SWITCHBOARD_REDIS_WAIT_REPLICAS", "1"), long])).unwrap_err();
        assert!(e.to_string().contains("redis_wait_timeout_ms"), "{e}");
    }

    #[test]
    fn check_config_refuses_what_serve_refuses_and_hides_every_redis_password() {
        for (url, ca, key) in [
            ("rediss://h:6380", "/no/such/ca.pem", "redis_tls_ca_file"),
            ("redis://h:6379", "Cargo.toml", "redis_tls_ca_file"),
        ] {
            let vars = [("SWITCHBOARD_REDIS_URL", url), ("SWITCHBOARD_REDIS_TLS_CA_FILE", ca)];
            let e = Config::load(None, env(&vars)).unwrap_err().to_string();
            assert!(e.contains(key), "{url} {ca}: {e}");
        }
        for url in ["rediss://h:6380", "rediss-cluster://a:1,b:2", "rediss-sentinel://s:26379/m"] {
            assert!(
                Config::load(None, env(&[("SWITCHBOARD_REDIS_URL", url), SECRET])).is_ok(),
                "{url}: TLS is supported"
            );
        }
        for url in ["redis-cluster://:pw-123@a:7000,b:7001", "redis-sentinel://u:pw-123@s1:26379,s2:26380/mymaster"] {
            let c = Config::load(None, env(&[("SWITCHBOARD_REDIS_URL", url), SECRET])).expect("load");
            let shown = toml::to_string(&c.redacted()).expect("toml");
            assert!(!shown.contains("pw-123") && shown.contains("redacted"), "{shown}");
            assert!(!shown.contains("resume-secret"), "{shown}");
        }
        // Keys derived when unset are shown with the value in effect, as the new keys are.
        let shown: toml::Value =
            toml::from_str(&toml::to_string(&Config::default().redacted()).expect("toml")).expect("reads back");
        assert_eq!(shown["llm"]["read_window_ms"].as_integer(), Some(50), "{shown}");
        assert_eq!(shown["widget"]["enabled"].as_bool(), Some(true), "{shown}");
        assert_eq!(shown["http"]["header_read_timeout_ms"].as_integer(), Some(10_000));
        assert_eq!(shown["limits"]["connections_per_pod"].as_integer(), Some(20_000));
    }

    #[test]
    fn anonymous_auth_is_for_loopback_unless_allowed() {
        assert!(Config::load(None, env(&[("SWITCHBOARD_BIND", "127.0.0.1:8787")])).is_ok());
        assert!(Config::load(None, env(&[("SWITCHBOARD_BIND", "[::1]:8787")])).is_ok());
        let e = Config::load(None, env(&[("SWITCHBOARD_BIND", "0.0.0.0:8787")])).unwrap_err().to_string();
        assert!(e.contains("auth.allow_anonymous"), "{e}");
        let allowed = [("SWITCHBOARD_BIND", "0.0.0.0:8787"), ("SWITCHBOARD_AUTH__ALLOW_ANONYMOUS", "true")];
        assert!(Config::load(None, env(&allowed)).is_ok());
        let jwt = [
            ("SWITCHBOARD_BIND", "0.0.0.0:8787"),
            ("SWITCHBOARD_AUTH__MODE", "jwt"),
            ("SWITCHBOARD_AUTH__JWT_HS256_SECRET", "a-secret-of-thirty-two-bytes-0123"),
        ];
        assert!(Config::load(None, env(&jwt)).is_ok());
    }

    #[test]
    fn read_window_follows_coalescing_unless_set() {
        let c = Config::load(None, env(&[("SWITCHBOARD_TURN__COALESCE_MS", "20")])).expect("load");
        assert_eq!(c.read_window().as_millis(), 20);
        let c = Config::load(None, env(&[("SWITCHBOARD_LLM__READ_WINDOW_MS", "0")])).expect("load");
        assert_eq!((c.read_window().as_millis(), c.turn.coalesce_ms), (0, 50));
        let e = Config::load(None, env(&[("SWITCHBOARD_LLM__READ_WINDOW_MS", "5000")])).unwrap_err().to_string();
        assert!(e.contains("llm.read_window_ms"), "{e}");
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[llm]\nmodel = \"from-file\"\ntimeout_s = 5\n[auth]\npublish_keys = [\"aaaaaaaaaaaaaaaa\"]\n",
        )
        .expect("write");
        let c = Config::load(
            path.to_str(),
            env(&[
                ("SWITCHBOARD_LLM__MODEL", "from-env"),
                ("SWITCHBOARD_AUTH__PUBLISH_KEYS", "bbbbbbbbbbbbbbbb, cccccccccccccccc"),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .expect("load");
        assert_eq!(c.llm.model, "from-env");
        assert_eq!(c.llm.timeout_s, 5);
        assert_eq!(c.auth.publish_keys, vec!["bbbbbbbbbbbbbbbb", "cccccccccccccccc"]);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(None, env(&[("SWITCHBOARD_TURN__LEASE_MS", "abc")])).unwrap_err().to_string();
        assert!(e.contains("SWITCHBOARD_TURN__LEASE_MS"), "{e}");
        // Kubernetes service links for a Service named `switchboard` are not config keys and are skipped.
        let links = [
            ("SWITCHBOARD_PORT", "tcp://10.0.0.1:8787"),
            ("SWITCHBOARD_PORT_8787_TCP_ADDR", "10.0.0.1"),
            ("SWITCHBOARD_SERVICE_HOST", "10.0.0.1"),
            ("SWITCHBOARD_SERVICE_PORT_HTTP", "8787"),
            ("SWITCHBOARD_REDIS_SERVICE_HOST", "10.0.0.2"),
            ("SWITCHBOARD_REDIS_PORT", "tcp://10.0.0.2:6379"),
        ];
        Config::load(None, env(&links)).expect("service links are ignored");
        let e = Config::load(None, env(&[("SWITCHBOARD_NOPE", "1")])).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = Config::load(None, env(&[("SWITCHBOARD_AUTH__MODE", "jwt")])).unwrap_err().to_string();
        assert!(e.contains("auth.mode"), "{e}");
        let e = Config::load(None, env(&[("SWITCHBOARD_REDIS_URL", "http://x")])).unwrap_err().to_string();
        assert!(e.contains("redis_url"), "{e}");
        let e = Config::load(None, env(&[("SWITCHBOARD_TURN__COALESCE_MS", "5000")])).unwrap_err().to_string();
        assert!(e.contains("turn.coalesce_ms"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[llm]\ntimeout_s = \"soon\"\n").expect("write");
        let e = Config::load(path.to_str(), env(&[])).unwrap_err().to_string();
        assert!(e.contains("llm.timeout_s"), "{e}");
        std::fs::write(&path, "[limits]\nmax_frame = 1\n").expect("write");
        let e = Config::load(path.to_str(), env(&[])).unwrap_err().to_string();
        assert!(e.contains("max_frame"), "{e}");
        // Modes are enums: a value that is none of them names its key and the values it may take.
        for (var, value, key) in [
            ("SWITCHBOARD_AUTH__MODE", "oauth", "auth.mode"),
            ("SWITCHBOARD_LOG_FORMAT", "xml", "log_format"),
            ("SWITCHBOARD_OTP__DELIVERY", "sms", "otp.delivery"),
        ] {
            let e = Config::load(None, env(&[(var, value)])).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(value), "{e}");
        }
        let agent = |extra: &str| format!("[[agents]]\nid = \"a\"\nname = \"A\"\n{extra}\n");
        for (extra, key) in [
            ("visibility = \"secret\"", "agents[0].visibility"),
            ("interactions = [\"survey\"]", "agents[0].interactions[0]"),
            (
                "[[agents.tools]]\nname = \"t\"\nurl = \"http://127.0.0.1:1/t\"\nauth_level = \"root\"",
                "agents[0].tools[0].auth_level",
            ),
        ] {
            std::fs::write(&path, agent(extra)).expect("write");
            let e = Config::load(path.to_str(), env(&[])).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn agents_from_json_env_and_tool_validation() {
        let agents = r#"[{"id":"a1","name":"A","tools":[{"name":"t","url":"http://x/t"}]}]"#;
        let c = Config::load(None, env(&[("SWITCHBOARD_AGENTS", agents)])).expect("load");
        assert_eq!(c.agents[0].tools[0].name, "t");
        let bad = r#"[{"id":"a1","name":"A","tools":[{"name":"bad name","url":"http://x/t"}]}]"#;
        let e = Config::load(None, env(&[("SWITCHBOARD_AGENTS", bad)])).unwrap_err().to_string();
        assert!(e.contains("agents[0].tools[0].name"), "{e}");
    }

    #[test]
    fn redaction_hides_secrets() {
        let mut c = Config::default();
        c.llm.api_key = "sk-secret".into();
        c.auth.publish_keys = vec!["pppppppppppppppp".into()];
        c.redis_url = "redis://:hunter2@localhost:6379".into();
        let text = toml::to_string(&c.redacted()).expect("toml");
        assert!(!text.contains("sk-secret") && !text.contains("pppp") && !text.contains("hunter2"), "{text}");
    }
}
