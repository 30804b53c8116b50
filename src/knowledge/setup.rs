//! The one place the knowledge backend is chosen from config: the retrieval webhook when `knowledge.search_url`
//! is set, else the built-in index of `knowledge.documents` and `knowledge.dir` (nothing when both are empty).
//! The offline demo (no agents, no model URL) indexes two bundled sample documents so the quick start can show
//! citations.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::builtin::{load_dir, BuiltinIndex, Document};
use super::webhook::WebhookRetriever;
use super::Retriever;
use crate::config::Config;

/// The bundled sample documents of the offline demo.
fn demo_documents() -> Vec<Document> {
    let doc = |id: &str, title: &str, content: &str| Document {
        id: id.into(),
        title: title.into(),
        url: None,
        content: content.into(),
        sets: Vec::new(),
    };
    vec![
        doc("demo/returns-policy.md", "Returns policy (demo)", include_str!("demo/returns-policy.md")),
        doc("demo/shipping.md", "Shipping (demo)", include_str!("demo/shipping.md")),
    ]
}

/// The pod's retriever, or `None` without knowledge. Errors name the key (they fail the boot).
pub(crate) fn from_config(config: &Config) -> Result<Option<Arc<dyn Retriever>>, String> {
    let k = &config.knowledge;
    if !k.search_url.is_empty() {
        let timeout = Duration::from_millis(k.timeout_ms);
        return Ok(Some(Arc::new(WebhookRetriever::new(k.search_url.clone(), timeout))));
    }
    // The configured documents are indexed where they are (no copy of their content); files and the demo's
    // samples are loaded beside them.
    let mut loaded: Vec<Document> = Vec::new();
    if !k.dir.is_empty() {
        loaded = load_dir(Path::new(&k.dir), k.max_document_bytes).map_err(|e| format!("knowledge.dir: {e}"))?;
        if loaded.is_empty() {
            tracing::warn!(dir = %k.dir, "knowledge.dir holds no documents");
        }
    }
    let none = k.documents.is_empty() && loaded.is_empty();
    if none && k.dir.is_empty() && config.agents.is_empty() && config.llm.base_url.is_empty() {
        loaded = demo_documents();
    }
    let documents = k.documents.len() + loaded.len();
    if documents == 0 {
        return Ok(None);
    }
    let index = BuiltinIndex::build(k.documents.iter().chain(&loaded)).map_err(|e| format!("knowledge: {e}"))?;
    tracing::info!(documents, chunks = index.chunk_count(), "knowledge indexed");
    Ok(Some(Arc::new(index)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_has_sample_documents_an_empty_dir_has_none_and_a_huge_file_fails_the_boot() {
        let demo = Config::default();
        assert!(from_config(&demo).expect("demo").is_some(), "the offline demo indexes its samples");
        let dir = tempfile::tempdir().expect("dir");
        let mut c = Config::default();
        c.llm.base_url = "http://model.internal/v1".into();
        c.knowledge.dir = dir.path().to_string_lossy().into_owned();
        assert!(from_config(&c).expect("empty dir boots").is_none(), "no documents, no knowledge tool");
        std::fs::write(dir.path().join("huge.md"), vec![b'a'; 10 * 1024 * 1024]).expect("write");
        let err = from_config(&c).err().expect("a 10 MB document is refused");
        assert!(err.starts_with("knowledge.dir:") && err.contains("huge.md"), "{err}");
    }
}
