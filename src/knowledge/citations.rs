//! What a turn's hits become: the citations on `eventual_response` (README, "Interactions, the OTP gate and knowledge"), the context message the model
//! reads before the turn, and the `knowledge_search` tool's result. Hits come from a backend that may be a
//! host's webhook, so everything shown to a client is bounded here and links are limited to http(s).

use std::collections::HashSet;

use serde_json::{json, Value};

use super::Hit;

pub(crate) const MAX_CITATIONS: usize = 8;
pub(crate) const MAX_SNIPPET_CHARS: usize = 280;

/// Citations for a turn: `auto` (auto-context hits) first, then `tool` (knowledge_search hits), de-duplicated by
/// id (first wins), at most 8, snippet ≤ 280 chars (a longer one is cut to 279 chars + "…", at a char boundary,
/// counting chars not bytes), `url` kept only when it starts with "http://" or "https://" (case-insensitive), as
/// JSON objects {id,title,url?,snippet,score}. None when there are none (so the caller leaves the key out).
pub(crate) fn citations(auto: &[Hit], tool: &[Hit]) -> Option<Value> {
    let mut seen = HashSet::new();
    let list: Vec<Value> = auto
        .iter()
        .chain(tool)
        .filter(|h| seen.insert(h.id.as_str()))
        .take(MAX_CITATIONS)
        .map(|h| {
            // The schema wants a number; JSON has none for NaN or infinity.
            let score = if h.score.is_finite() { h.score } else { 0.0 };
            let mut c = json!({ "id": h.id, "title": h.title, "snippet": clip(&h.snippet), "score": score });
            if let Some(url) = web_url(h) {
                c["url"] = json!(url);
            }
            c
        })
        .collect();
    (!list.is_empty()).then_some(Value::Array(list))
}

/// The context message given to the model before a turn: "[Relevant knowledge]\n" then, per hit,
/// "[<n>] <title>\n<snippet>\n" (n from 1). None when hits is empty.
pub(crate) fn context_message(hits: &[Hit]) -> Option<String> {
    if hits.is_empty() {
        return None;
    }
    let mut text = String::from("[Relevant knowledge]\n");
    for (n, h) in hits.iter().enumerate() {
        text.push_str(&format!("[{}] {}\n{}\n", n + 1, h.title, h.snippet));
    }
    Some(text)
}

/// What the `knowledge_search` tool returns to the model: JSON text {"results":[{id,title,snippet}]} (url when
/// http(s)).
pub(crate) fn tool_result(hits: &[Hit]) -> String {
    let results: Vec<Value> = hits
        .iter()
        .map(|h| {
            let mut r = json!({ "id": h.id, "title": h.title, "snippet": h.snippet });
            if let Some(url) = web_url(h) {
                r["url"] = json!(url);
            }
            r
        })
        .collect();
    json!({ "results": results }).to_string()
}

/// The hit's link when a browser may follow it safely: `javascript:`, `file:` and the like are dropped.
fn web_url(h: &Hit) -> Option<&str> {
    let url = h.url.as_deref()?;
    let scheme_is = |scheme: &str| url.get(..scheme.len()).is_some_and(|p| p.eq_ignore_ascii_case(scheme));
    (scheme_is("http://") || scheme_is("https://")).then_some(url)
}

fn clip(snippet: &str) -> String {
    match snippet.char_indices().nth(MAX_SNIPPET_CHARS - 1) {
        Some((cut, _)) if snippet.chars().nth(MAX_SNIPPET_CHARS).is_some() => format!("{}…", &snippet[..cut]),
        _ => snippet.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, url: Option<&str>) -> Hit {
        let (title, snippet) = (format!("T {id}"), format!("S {id}"));
        Hit { id: id.into(), title, url: url.map(str::to_string), snippet, score: 1.5 }
    }

    fn ids(v: &Value) -> Vec<&str> {
        v.as_array().expect("array").iter().map(|c| c["id"].as_str().expect("id")).collect()
    }

    #[test]
    fn auto_first_then_tool_deduplicated_by_id() {
        let auto = [hit("a", None), hit("b", None), hit("a", Some("https://x/second-a"))];
        let mut tool_b = hit("b", None);
        tool_b.title = "from the tool".into();
        let v = citations(&auto, &[hit("c", None), tool_b]).expect("some");
        assert_eq!(ids(&v), ["a", "b", "c"]);
        assert_eq!(v[1]["title"], "T b");
        assert!(v[0].get("url").is_none());
        assert_eq!(v[0], json!({ "id": "a", "title": "T a", "snippet": "S a", "score": 1.5 }));
    }

    #[test]
    fn at_most_eight() {
        let many: Vec<Hit> = (0..9).map(|i| hit(&i.to_string(), None)).collect();
        let v = citations(&many[..5], &many[5..]).expect("some");
        assert_eq!(ids(&v), ["0", "1", "2", "3", "4", "5", "6", "7"]);
    }

    #[test]
    fn snippets_are_cut_by_chars() {
        let mut long = hit("a", None);
        long.snippet = "é".repeat(300);
        let mut exact = hit("b", None);
        exact.snippet = "ü".repeat(MAX_SNIPPET_CHARS);
        let v = citations(&[long, exact.clone()], &[]).expect("some");
        let cut = v[0]["snippet"].as_str().expect("snippet");
        assert_eq!(cut.chars().count(), MAX_SNIPPET_CHARS);
        assert_eq!(cut, format!("{}…", "é".repeat(MAX_SNIPPET_CHARS - 1)));
        assert_eq!(v[1]["snippet"].as_str(), Some(exact.snippet.as_str()));
        assert_eq!(clip(""), "");
    }

    #[test]
    fn only_web_urls_are_kept() {
        let urls = ["ftp://x", "file:///etc/passwd", "javascript:alert(1)", "http:/x", "h", "HTTPS://x", "http://y"];
        let hits: Vec<Hit> = urls.into_iter().enumerate().map(|(i, u)| hit(&i.to_string(), Some(u))).collect();
        let v = citations(&hits, &[]).expect("some");
        let kept: Vec<_> = v.as_array().expect("array").iter().filter_map(|c| c.get("url")?.as_str()).collect();
        assert_eq!(kept, ["HTTPS://x", "http://y"]);
        let tool: Value = serde_json::from_str(&tool_result(&hits)).expect("json");
        let kept: Vec<_> = tool["results"].as_array().expect("array").iter().filter_map(|r| r.get("url")).collect();
        assert_eq!(kept, [&json!("HTTPS://x"), &json!("http://y")]);
    }

    #[test]
    fn nothing_is_none() {
        assert_eq!(citations(&[], &[]), None);
        assert_eq!(context_message(&[]), None);
        assert_eq!(tool_result(&[]), r#"{"results":[]}"#);
    }

    #[test]
    fn context_and_tool_text() {
        let hits = [hit("a", None), hit("b", Some("https://x/b"))];
        assert_eq!(context_message(&hits).as_deref(), Some("[Relevant knowledge]\n[1] T a\nS a\n[2] T b\nS b\n"));
        let tool: Value = serde_json::from_str(&tool_result(&hits)).expect("json");
        let b = json!({ "id": "b", "title": "T b", "snippet": "S b", "url": "https://x/b" });
        assert_eq!(tool, json!({ "results": [{ "id": "a", "title": "T a", "snippet": "S a" }, b] }));
    }
}
