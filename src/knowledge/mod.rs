//! Knowledge retrieval and citations (README, "Interactions, the OTP gate and knowledge"). Before each turn the user's message is searched in the
//! agent's knowledge and the hits are handed to the model as context; the model may search again through the
//! `knowledge_search` tool. Two backends sit behind [`Retriever`], picked once from config by `setup`: `builtin`
//! (documents from config and files, chunked and indexed in memory at boot with BM25 and English stemming) and
//! `webhook` (the host's own search over HTTP). `citations` turns the hits a turn actually used into the
//! bounded, client-safe list that goes on `eventual_response`, and renders them for the model.

pub(crate) mod builtin;
pub(crate) mod citations;
pub(crate) mod setup;
pub(crate) mod webhook;

/// One retrieved passage.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Hit {
    /// The source document's id; several passages of one document share it.
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The passage text the model reads.
    pub snippet: String,
    /// Higher is more relevant; only comparable within one search.
    pub score: f64,
}

/// Whose knowledge a search may read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope<'a> {
    pub org_id: &'a str,
    pub agent_id: &'a str,
    /// The agent's `knowledge_sets`; None = every set.
    pub sets: Option<&'a [String]>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum KnowledgeError {
    #[error("knowledge index: {0}")]
    Index(String),
    #[error("retrieval webhook: {0}")]
    Webhook(String),
}

#[async_trait::async_trait]
pub(crate) trait Retriever: Send + Sync {
    /// The best `k` passages for `query` within `scope`, best first. An empty or blank query finds nothing.
    async fn search(&self, query: &str, k: usize, scope: &Scope<'_>) -> Result<Vec<Hit>, KnowledgeError>;
}
