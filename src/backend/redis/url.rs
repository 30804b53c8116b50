//! `redis_url` parsing: the kind of deployment (single, cluster, Sentinel) and the multi-host URL form fred's own
//! parser does not read. A leaf module: config validation uses it without depending on the Redis backend.

use percent_encoding::percent_decode_str;

/// A parsed `redis_url`.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisTarget {
    /// `redis://` or `rediss://`.
    Single(String),
    /// `redis-cluster://host:port[,host:port…]`.
    Cluster(String),
    /// `redis-sentinel://host:port[,host:port…]/service_name`.
    Sentinel(String),
}

impl RedisTarget {
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let (scheme, rest) = url.split_once("://").ok_or("expected a URL such as redis://host:6379")?;
        if rest.is_empty() {
            return Err("missing host".into());
        }
        match scheme {
            "redis" | "rediss" => Ok(RedisTarget::Single(url.to_string())),
            "redis-cluster" | "rediss-cluster" => {
                UrlParts::parse(url, None)?;
                Ok(RedisTarget::Cluster(url.to_string()))
            }
            "redis-sentinel" | "rediss-sentinel" => {
                let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
                if path.is_empty() {
                    return Err(
                        "redis-sentinel:// needs the master name as path, e.g. redis-sentinel://host:26379/mymaster"
                            .into(),
                    );
                }
                UrlParts::parse(url, Some(26379))?;
                Ok(RedisTarget::Sentinel(url.to_string()))
            }
            other => Err(format!("unsupported scheme `{other}` (redis, rediss, redis-cluster, redis-sentinel)")),
        }
    }

    /// The URL as configured (it may hold a password: never log it).
    pub(crate) fn url(&self) -> &str {
        match self {
            RedisTarget::Single(u) | RedisTarget::Cluster(u) | RedisTarget::Sentinel(u) => u,
        }
    }

    /// `rediss://`, `rediss-cluster://`, `rediss-sentinel://`: every connection over TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.url().split_once("://").is_some_and(|(s, _)| s.starts_with("rediss"))
    }

    /// The kind of target, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            RedisTarget::Single(_) => "single",
            RedisTarget::Cluster(_) => "cluster",
            RedisTarget::Sentinel(_) => "sentinel",
        }
    }
}

/// `scheme://[user[:password]@]host[:port][,host[:port]…][/path]`, the multi-host form fred's own URL parser
/// does not read (it wants `?node=`).
pub(super) struct UrlParts {
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) hosts: Vec<(String, u16)>,
    pub(super) path: String,
}

impl UrlParts {
    pub(super) fn parse(url: &str, default_port: Option<u16>) -> Result<UrlParts, String> {
        let (_, rest) = url.split_once("://").ok_or("expected scheme://host:port")?;
        if rest.contains('?') {
            return Err("query parameters are not supported in redis_url".into());
        }
        let (userinfo, rest) = split_userinfo(rest);
        let (hostlist, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => {
                    (Some(percent_decode(user)?).filter(|s| !s.is_empty()), Some(percent_decode(pass)?))
                }
                None => (Some(percent_decode(u)?).filter(|s| !s.is_empty()), None),
            },
        };
        let mut hosts = Vec::new();
        for item in hostlist.split(',') {
            hosts.push(parse_host_port(item, default_port)?);
        }
        Ok(UrlParts { username, password, hosts, path: path.trim_end_matches('/').to_string() })
    }
}

fn parse_host_port(item: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let item = item.trim();
    let (host, port) = if let Some(v6) = item.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or_else(|| format!("bad IPv6 host `{item}`"))?;
        (host, tail.strip_prefix(':'))
    } else {
        match item.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (item, None),
        }
    };
    if host.is_empty() {
        return Err(format!("missing host in `{item}`"));
    }
    let port = match (port, default_port) {
        (Some(p), _) => p.parse::<u16>().map_err(|_| format!("bad port in `{item}`"))?,
        (None, Some(d)) => d,
        (None, None) => return Err(format!("`{item}` needs a port (host:port)")),
    };
    Ok((host.to_string(), port))
}

/// The URL with the password of its userinfo replaced, for every form (`redis://`, `rediss://`, the multi-host
/// `redis-cluster://` and `redis-sentinel://`, which a standard URL parser does not read).
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (Some(userinfo), hosts_and_path) = split_userinfo(rest) else { return url.to_string() };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:redacted"),
        // `redis://secret@host`: a lone userinfo is the password to Redis (AUTH <password>).
        None => "redacted".to_string(),
    };
    format!("{scheme}://{user}@{hosts_and_path}")
}

/// `[userinfo@]hosts[/path]` split at the last `@` before the hosts: a password written as is may hold `/`,
/// `@` or `:` (hosts and paths never hold `@`), and all of it is the userinfo, never a host or a path.
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, rest),
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let decoded = percent_decode_str(s);
    // `percent_decode_str` passes a malformed escape through as text; a credential with one is a typo.
    if s.split('%').skip(1).any(|h| !h.get(..2).is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))) {
        return Err("bad percent-encoding in redis_url".into());
    }
    decoded.decode_utf8().map(|c| c.into_owned()).map_err(|_| "redis_url credentials are not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert!(matches!(RedisTarget::parse("redis://127.0.0.1:6379"), Ok(RedisTarget::Single(_))));
        assert!(matches!(RedisTarget::parse("redis-cluster://a:1,b:2"), Ok(RedisTarget::Cluster(_))));
        assert!(RedisTarget::parse("redis-cluster://a").is_err(), "cluster seeds need ports");
        assert!(matches!(RedisTarget::parse("redis-sentinel://s1,s2:26380/mymaster"), Ok(RedisTarget::Sentinel(_))));
        assert!(RedisTarget::parse("redis-sentinel://s1:26379").is_err());
        assert!(RedisTarget::parse("http://x").is_err());
    }

    #[test]
    fn every_url_form_is_redacted() {
        for (url, want) in [
            ("redis://:s3cret@h:6379/0", "redis://:redacted@h:6379/0"),
            ("rediss://user:s3cret@h:6380", "rediss://user:redacted@h:6380"),
            ("redis-cluster://:s3cret@a:7000,b:7001", "redis-cluster://:redacted@a:7000,b:7001"),
            ("redis-sentinel://u:p%40ss@s1:26379,s2/mymaster", "redis-sentinel://u:redacted@s1:26379,s2/mymaster"),
            ("redis://s3cret@h:6379", "redis://redacted@h:6379"),
            // A password with `/` (and `@`) written as is: all of it is the userinfo.
            ("redis://:pa/ss@h:6379/0", "redis://:redacted@h:6379/0"),
            ("rediss://u:a/b@c@h:6380", "rediss://u:redacted@h:6380"),
            ("redis-cluster://:x/y@a:1,b:2", "redis-cluster://:redacted@a:1,b:2"),
            ("redis://h:6379", "redis://h:6379"),
            ("", ""),
        ] {
            assert_eq!(redact(url), want, "{url}");
        }
    }

    #[test]
    fn url_parts() {
        let p = UrlParts::parse("redis-sentinel://user:p%40ss@[::1]:26379,h2/mymaster", Some(26379)).expect("parse");
        assert_eq!(p.username.as_deref(), Some("user"));
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert_eq!(p.hosts, vec![("::1".to_string(), 26379), ("h2".to_string(), 26379)]);
        assert_eq!(p.path, "mymaster");
        assert!(UrlParts::parse("redis-cluster://u:p%zz@h:1", None).is_err(), "bad escape");
        let p = UrlParts::parse("redis-cluster://:pa/ss@a:1,b:2", None).expect("a password with a slash");
        assert_eq!((p.password.as_deref(), p.hosts.len()), (Some("pa/ss"), 2));
        // An error never quotes the userinfo.
        let e = UrlParts::parse("redis-cluster://:s3cret/x@", None).err().unwrap_or_default();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
