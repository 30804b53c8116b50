//! Page origins (`Origin` header) against allowed patterns: `http.allowed_origins` at the upgrade, an agent's
//! `allowed_origins` for its sessions, and the patterns' own check at boot.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
