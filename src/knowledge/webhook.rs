//! The retrieval webhook, for hosts with their own search: `POST knowledge.search_url` with
//! `{"query", "k", "orgId", "agentId", "sets"?}` answered by `200 {"results": [{id, title, url?, snippet, score}]}`.
//! Every failure (non-2xx, timeout, a body over 1 MiB, a body of another shape) is one short
//! `KnowledgeError::Webhook` that never carries the URL, which may hold a secret.

use std::time::Duration;

use serde_json::json;

use super::{Hit, KnowledgeError, Retriever, Scope};
use crate::webhook::{http_failure, read_capped, BodyError};

/// k passages of a few hundred chars fit many times over; more is a misbehaving host.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

pub(crate) struct WebhookRetriever {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
}

#[derive(serde::Deserialize)]
struct Answer {
    results: Vec<Hit>,
}

impl WebhookRetriever {
    /// `timeout` bounds the whole call: connecting, the answer and reading its body.
    pub(crate) fn new(url: impl Into<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(60)).build().unwrap_or_default();
        Self { http, url: url.into(), timeout }
    }

    async fn call(&self, body: &serde_json::Value) -> Result<Vec<Hit>, String> {
        let resp = self
            .http
            .post(&self.url)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("unreachable: {}", http_failure(e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let bytes = read_capped(resp, MAX_RESPONSE_BYTES).await.map_err(|e| match e {
            BodyError::Broken(why) => format!("response broken: {why}"),
            BodyError::TooLarge => format!("response over {MAX_RESPONSE_BYTES} bytes"),
        })?;
        // Position only: serde's message would echo the host's data.
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| {
            format!("response is not {{\"results\": [...]}} (line {}, column {})", e.line(), e.column())
        })?;
        Ok(answer.results)
    }
}

#[async_trait::async_trait]
impl Retriever for WebhookRetriever {
    async fn search(&self, query: &str, k: usize, scope: &Scope<'_>) -> Result<Vec<Hit>, KnowledgeError> {
        // Some(empty) = an agent allowed no set, as with the built-in index; the host need not know that rule.
        if query.trim().is_empty() || k == 0 || scope.sets.is_some_and(<[String]>::is_empty) {
            return Ok(Vec::new());
        }
        let mut body = json!({ "query": query, "k": k, "orgId": scope.org_id, "agentId": scope.agent_id });
        if let Some(sets) = scope.sets {
            body["sets"] = json!(sets);
        }
        match tokio::time::timeout(self.timeout, self.call(&body)).await {
            Ok(Ok(mut hits)) => {
                hits.retain(|h| !h.id.is_empty());
                hits.truncate(k);
                Ok(hits)
            }
            Ok(Err(msg)) => Err(KnowledgeError::Webhook(msg)),
            Err(_) => Err(KnowledgeError::Webhook(format!("timed out after {} ms", self.timeout.as_millis()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn response(status: &str, body: &str) -> Option<String> {
        let head = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}", body.len());
        Some(format!("{head}\r\nConnection: close\r\n\r\n{body}"))
    }

    /// Serves one request and hands back its body; answers with `answer`, or never when it is None.
    async fn serve_once(answer: Option<String>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/search?token=secret", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let body = read_request(&mut socket).await;
            match answer {
                Some(answer) => {
                    // The client may hang up first (an answer over the limit); that is its right.
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                }
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
            body
        });
        (url, task)
    }

    async fn read_request(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return buf[end + 4..end + 4 + len].to_vec();
                }
            }
            let n = socket.read(&mut chunk).await.expect("read");
            if n == 0 {
                return buf;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn scope<'a>(sets: Option<&'a [String]>) -> Scope<'a> {
        Scope { org_id: "org-1", agent_id: "agent-1", sets }
    }

    /// The error's message, checked to be free of the URL.
    async fn failure(answer: Option<String>, timeout: Duration) -> String {
        let (url, task) = serve_once(answer).await;
        let result = WebhookRetriever::new(url, timeout).search("refunds", 3, &scope(None)).await;
        task.abort();
        match result {
            Err(KnowledgeError::Webhook(msg)) => {
                assert!(!msg.contains("127.0.0.1") && !msg.contains("secret"), "{msg}");
                msg
            }
            other => panic!("expected a webhook error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn good_answer_is_cut_to_k_without_empty_ids() {
        let body = r#"{"results": [
            {"id": "a", "title": "A", "url": "https://docs.example/a", "snippet": "one", "score": 2.5},
            {"id": "", "title": "nameless", "snippet": "dropped", "score": 2},
            {"id": "b", "title": "B", "snippet": "two", "score": 1.5, "extra": true},
            {"id": "c", "title": "C", "url": null, "snippet": "three", "score": 1}
        ]}"#;
        let (url, task) = serve_once(response("200 OK", body)).await;
        let hits = WebhookRetriever::new(url, Duration::from_secs(5)).search("refunds?", 2, &scope(None)).await;
        let hits = hits.expect("hits");
        assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((hits[0].url.as_deref(), hits[0].score), (Some("https://docs.example/a"), 2.5));
        assert_eq!((hits[1].url.as_deref(), hits[1].snippet.as_str()), (None, "two"));
        let sent: serde_json::Value = serde_json::from_slice(&task.await.expect("server")).expect("request json");
        assert_eq!(sent, json!({ "query": "refunds?", "k": 2, "orgId": "org-1", "agentId": "agent-1" }));
    }

    #[tokio::test]
    async fn sets_are_sent_only_when_chosen() {
        let (url, task) = serve_once(response("200 OK", r#"{"results": []}"#)).await;
        let sets = ["billing".to_string()];
        let hits = WebhookRetriever::new(url, Duration::from_secs(5)).search("q", 4, &scope(Some(&sets[..]))).await;
        assert!(hits.expect("hits").is_empty());
        let sent: serde_json::Value = serde_json::from_slice(&task.await.expect("server")).expect("request json");
        assert_eq!(sent["sets"], json!(["billing"]));
    }

    #[tokio::test]
    async fn failures_are_short_errors_without_the_url() {
        let patient = Duration::from_secs(5);
        assert_eq!(failure(response("500 Internal Server Error", "{}"), patient).await, "HTTP 500");
        assert!(failure(response("200 OK", "<html>oops</html>"), patient).await.starts_with("response is not"));
        assert!(failure(response("200 OK", r#"{"results": "none"}"#), patient).await.starts_with("response is not"));
        let missing_score = r#"{"results": [{"id": "a", "title": "A", "snippet": "s"}]}"#;
        assert!(failure(response("200 OK", missing_score), patient).await.starts_with("response is not"));
        let huge = format!(r#"{{"results": [], "pad": "{}"}}"#, "x".repeat(MAX_RESPONSE_BYTES));
        assert!(failure(response("200 OK", &huge), patient).await.contains("over"));
        let started = std::time::Instant::now();
        assert_eq!(failure(None, Duration::from_millis(200)).await, "timed out after 200 ms");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn blank_query_or_no_sets_asks_nobody() {
        // Nothing listens on the discard port: a call would fail.
        let hook = WebhookRetriever::new("http://127.0.0.1:9/", Duration::from_millis(200));
        for blank in ["", "  \t\n"] {
            assert!(hook.search(blank, 3, &scope(None)).await.expect("no call").is_empty());
        }
        assert!(hook.search("q", 0, &scope(None)).await.expect("no call").is_empty());
        let none: &[String] = &[];
        assert!(hook.search("q", 3, &scope(Some(none))).await.expect("no call").is_empty());
        assert!(hook.search("q", 3, &scope(None)).await.is_err());
    }
}
