//! Small shared helpers: clocks, ids, titles, globs.

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 timestamp with nanoseconds, as the reference server writes `createdAt`.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// RFC 3339 form of a Unix-ms time.
pub(crate) fn rfc3339_from_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A per-minute budget: the times of the events of the last minute (few: bounded by the budget).
#[derive(Debug, Default)]
pub(crate) struct MinuteWindow(std::collections::VecDeque<i64>);

impl MinuteWindow {
    /// Takes one from a budget of `max` per minute; false (and nothing taken) when it is spent.
    pub(crate) fn take(&mut self, now_ms: i64, max: usize) -> bool {
        while self.0.front().is_some_and(|t| now_ms - *t >= 60_000) {
            self.0.pop_front();
        }
        if self.0.len() >= max {
            return false;
        }
        self.0.push_back(now_ms);
        true
    }

    /// Gives back the last one taken (its request was refused for another reason and did nothing).
    pub(crate) fn give_back(&mut self) {
        self.0.pop_back();
    }

    /// Nothing taken in the last minute.
    pub(crate) fn is_idle(&self, now_ms: i64) -> bool {
        self.0.back().is_none_or(|t| now_ms - *t >= 60_000)
    }
}

/// Exponential backoff with jitter: the delay doubles from `first` up to `max`, plus up to `jitter` at random
/// (so pods that failed together do not retry together). One helper for every retry loop.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: std::time::Duration,
    max: std::time::Duration,
    jitter: std::time::Duration,
}

impl Backoff {
    pub(crate) fn new(first: std::time::Duration, max: std::time::Duration) -> Backoff {
        Backoff { next: first, max, jitter: std::time::Duration::ZERO }
    }

    pub(crate) fn with_jitter(self, jitter: std::time::Duration) -> Backoff {
        Backoff { jitter, ..self }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> std::time::Duration {
        let jitter_ms = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms == 0 { 0 } else { rand::random::<u64>() % jitter_ms };
        let delay = (self.next + std::time::Duration::from_millis(extra)).min(self.max);
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Sleeps for [`Backoff::next_delay`].
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh log epoch: 16 hex digits (no `:`, so it sits between the seq and the event on the bus).
pub(crate) fn new_epoch() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..16].to_string()
}

/// A conversation title from its first message: first line, at most 60 characters, on a word boundary.
pub(crate) fn title_from(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    if line.chars().count() <= 60 {
        return line.to_string();
    }
    let cut: String = line.chars().take(60).collect();
    let trimmed = match cut.rfind(' ') {
        Some(i) if i > 20 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{}…", trimmed.trim_end())
}

/// Lower-case hex of `bytes` (signatures and salts on the wire and in storage).
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

const CURSOR_ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// An opaque paging cursor: a position `n` in a listing of `kind`.
pub(crate) fn encode_cursor(kind: &str, n: u64) -> String {
    use base64::Engine;
    CURSOR_ENGINE.encode(format!("{kind}:{n}"))
}

/// The position in a cursor made by [`encode_cursor`] for the same `kind`; `None` for anything else.
pub(crate) fn decode_cursor(kind: &str, cursor: &str) -> Option<u64> {
    use base64::Engine;
    let text = String::from_utf8(CURSOR_ENGINE.decode(cursor).ok()?).ok()?;
    text.strip_prefix(kind)?.strip_prefix(':')?.parse().ok()
}

/// Whether `pattern` is an origin pattern: `*`, an origin (`scheme://host[:port]`), or a wildcard host
/// (`https://*.example.com`).
pub(crate) fn origin_pattern_ok(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((scheme, host)) = pattern.split_once("://") else { return false };
    let host = host.strip_prefix("*.").unwrap_or(host);
    matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains(['/', '*', '?', '#', ' ', '@'])
}

/// A webhook call's failure in words without its URL (a URL may carry a secret): only the kind of failure.
pub(crate) fn http_failure(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        e.without_url().to_string()
    }
}

/// Why [`read_capped`] stopped.
pub(crate) enum BodyError {
    /// The body broke off (the kind, from [`http_failure`]).
    Broken(String),
    /// The body was longer than allowed; nothing past the limit was kept.
    TooLarge,
}

/// A webhook's answer body, read up to `max` bytes: a host cannot make the pod hold more than that.
pub(crate) async fn read_capped(resp: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    use futures_util::StreamExt;
    let mut bytes = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(http_failure(e)))?;
        if bytes.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The page origin to refuse, if any: `patterns` restrict origins only when not empty, and a request without
/// `Origin` (not a browser) has nothing to check.
pub(crate) fn origin_refused<'a>(patterns: &[String], origin: Option<&'a str>) -> Option<&'a str> {
    origin.filter(|o| !patterns.is_empty() && !origin_allowed(patterns, o))
}

/// Whether a page `origin` (the `Origin` header: `scheme://host[:port]`, compared case-insensitively) matches
/// one of `patterns`. `https://*.example.com` matches its subdomains (any depth), not `example.com` itself.
pub(crate) fn origin_allowed(patterns: &[String], origin: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    patterns.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        if p == "*" || p == origin {
            return true;
        }
        match p.split_once("://*.") {
            Some((scheme, suffix)) => origin
                .strip_prefix(scheme)
                .and_then(|r| r.strip_prefix("://"))
                .and_then(|host| host.strip_suffix(suffix))
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
            None => false,
        }
    })
}

/// Glob match with `*` (any run) and `?` (one char), used for `confirm_tools`.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_bounded_jitter() {
        use std::time::Duration;
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let plain: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(plain, [50, 100, 200, 300, 300]);
        let mut j =
            Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).with_jitter(Duration::from_millis(100));
        let d = j.next_delay().as_millis();
        assert!((200..300).contains(&d), "{d}");
    }

    #[test]
    fn globs() {
        assert!(glob_match("delete_*", "delete_record"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("delete_*", "get_record"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*_record", "delete_record"));
        assert!(glob_match("issue_refund", "issue_refund"));
    }

    #[test]
    fn origins() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let shop = p(&["https://shop.example", "https://*.example.com"]);
        assert!(origin_allowed(&shop, "https://shop.example"));
        assert!(origin_allowed(&shop, "HTTPS://Shop.Example"));
        assert!(origin_allowed(&shop, "https://a.example.com") && origin_allowed(&shop, "https://a.b.example.com"));
        assert!(!origin_allowed(&shop, "https://example.com"), "the wildcard is for subdomains");
        assert!(!origin_allowed(&shop, "https://evilexample.com"));
        assert!(!origin_allowed(&shop, "http://a.example.com"), "the scheme counts");
        assert!(!origin_allowed(&shop, "https://shop.example:8443"), "the port counts");
        assert!(!origin_allowed(&shop, "https://shop.example.evil.io"));
        assert!(origin_allowed(&p(&["*"]), "https://anything.io"));
        for ok in ["*", "https://shop.example", "http://localhost:3000", "https://*.example.com"] {
            assert!(origin_pattern_ok(ok), "{ok}");
        }
        for bad in ["shop.example", "https://", "ftp://x", "https://a/b", "https://*", "https://x.*.com"] {
            assert!(!origin_pattern_ok(bad), "{bad}");
        }
    }

    #[test]
    fn titles() {
        assert_eq!(title_from("  hi there \nsecond"), "hi there");
        let long = "word ".repeat(30);
        let t = title_from(&long);
        assert!(t.chars().count() <= 61 && t.ends_with('…'), "{t}");
    }
}
