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
        for d in &mut loaded {
            d.sets = vec![k.dir_set.clone()];
        }
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
    let index = BuiltinIndex::build(k.documents.iter().chain(&loaded))
        .map_err(|e| format!("knowledge: {e}"))?
        .with_thresholds(k.min_score, k.min_relative_score);
    tracing::info!(documents, chunks = index.chunk_count(), "knowledge indexed");
    for (agent, sets) in unreachable_sets(config, k.documents.iter().chain(&loaded)) {
        tracing::warn!(
            %agent,
            sets = %sets.join(", "),
            "this agent's knowledge_sets match no document: it will never find any (knowledge.dir files are in \
             set knowledge.dir_set; [[knowledge.documents]] in their `sets`, or `default`)"
        );
    }
    Ok(Some(Arc::new(index)))
}

/// Agents whose `knowledge_sets` name no set any document is in, with those sets.
fn unreachable_sets<'a>(config: &Config, docs: impl Iterator<Item = &'a Document>) -> Vec<(String, Vec<String>)> {
    let mut present = std::collections::HashSet::new();
    for d in docs {
        if d.sets.is_empty() {
            present.insert("default".to_string());
        }
        present.extend(d.sets.iter().cloned());
    }
    config
        .agents
        .iter()
        .filter_map(|a| {
            let sets = a.knowledge_sets.as_ref()?;
            (!sets.is_empty() && !sets.iter().any(|s| present.contains(s))).then(|| (a.id.clone(), sets.clone()))
        })
        .collect()
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

    #[tokio::test]
    async fn unrelated_messages_cite_nothing_from_the_demo() {
        let demo = from_config(&Config::default()).expect("demo").expect("indexed");
        let scope = crate::knowledge::Scope::default();
        let found = |q: &'static str| {
            let demo = demo.clone();
            let scope = scope.clone();
            async move {
                let hits = demo.search(q, 3, &scope).await.expect("search");
                hits.into_iter().map(|h| h.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(found("please delete record 7").await, Vec::<String>::new(), "a number alone is no match");
        assert_eq!(found("thanks, that's all").await, Vec::<String>::new());
        assert_eq!(
            found("what is your returns policy?").await.first().map(String::as_str),
            Some("demo/returns-policy.md")
        );
        assert_eq!(found("how long does shipping take").await.first().map(String::as_str), Some("demo/shipping.md"));
        assert!(found("7 days").await.iter().all(|id| id == "demo/shipping.md" || id == "demo/returns-policy.md"));
    }

    #[tokio::test]
    async fn dir_files_take_the_dir_set_and_an_agent_that_reaches_no_set_is_named() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("billing.md"), "Invoices are sent monthly by email.").expect("write");
        let mut c = Config::default();
        c.llm.base_url = "http://model.internal/v1".into();
        c.knowledge.dir = dir.path().to_string_lossy().into_owned();
        c.knowledge.dir_set = "billing".into();
        let index = from_config(&c).expect("boots").expect("indexed");
        let sets = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let billing = sets(&["billing"]);
        let scope = crate::knowledge::Scope { sets: Some(&billing), ..Default::default() };
        assert_eq!(index.search("invoices", 3, &scope).await.expect("search")[0].id, "billing.md");
        let default = sets(&["default"]);
        let scope = crate::knowledge::Scope { sets: Some(&default), ..Default::default() };
        assert!(index.search("invoices", 3, &scope).await.expect("search").is_empty(), "not in `default`");
        let agents: Vec<crate::config::AgentConfig> = serde_json::from_value(serde_json::json!([
            {"id": "support", "name": "S", "knowledge_sets": ["support"]},
            {"id": "billing", "name": "B", "knowledge_sets": ["billing"]},
            {"id": "all", "name": "A"}
        ]))
        .expect("agents");
        c.agents = agents;
        let docs = load_dir(dir.path(), 1_000).expect("load");
        let docs: Vec<Document> = docs
            .into_iter()
            .map(|mut d| {
                d.sets = vec!["billing".into()];
                d
            })
            .collect();
        assert_eq!(unreachable_sets(&c, docs.iter()), vec![("support".to_string(), sets(&["support"]))]);
    }
}
