//! The built-in knowledge backend: documents from config and from files under `knowledge.dir`, cut into
//! passages of at most 500 chars and indexed in RAM at boot (tantivy, BM25, English stemming). The index is
//! read-only once built, so searches share one reader and never wait on a writer.

use std::io::Read;
use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::{Hit, KnowledgeError, Retriever, Scope};

/// Longest passage, in chars: small enough that a few hits fit the model's context next to the conversation.
pub(crate) const MAX_CHUNK_CHARS: usize = 500;
/// The set of a document that names none, so agents restricted to `["default"]` can still reach it.
const DEFAULT_SET: &str = "default";
/// tantivy's `en_stem` (SimpleTokenizer, RemoveLongFilter(40), LowerCaser, Stemmer(English)) with English stop
/// words removed before stemming: otherwise "how is it going" matches every passage through "is" and "it", and
/// every small-talk reply would come with citations.
const ANALYZER: &str = "en_stem_stop";

fn analyzer() -> tantivy::tokenizer::TextAnalyzer {
    use tantivy::tokenizer::{
        Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    };
    let builder =
        TextAnalyzer::builder(SimpleTokenizer::default()).filter(RemoveLongFilter::limit(40)).filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder.filter(stop).filter(Stemmer::new(Language::English)).build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}
/// tantivy refuses less than 15 MB per indexing thread (`MEMORY_BUDGET_NUM_BYTES_MIN`, not exported).
const WRITER_BUDGET_BYTES: usize = 15_000_000;
/// Following symlinked directories (a ConfigMap mount) could loop; no real knowledge tree is this deep.
const MAX_DIR_DEPTH: usize = 16;

/// A source document before chunking: the configured shape (`[[knowledge.documents]]`), which files from
/// `knowledge.dir` and the demo's samples are loaded into too.
pub(crate) use crate::config::KnowledgeDocument as Document;

struct Fields {
    doc_id: Field,
    title: Field,
    url: Field,
    text: Field,
    set: Field,
}

pub(crate) struct BuiltinIndex {
    reader: IndexReader,
    parser: QueryParser,
    fields: Fields,
    chunks: usize,
    /// `knowledge.min_score`: a passage scoring below it is no match.
    min_score: f32,
    /// `knowledge.min_relative_score`: a passage scoring below this fraction of the best hit is left out.
    min_relative: f32,
}

fn index_err(e: tantivy::TantivyError) -> KnowledgeError {
    KnowledgeError::Index(e.to_string())
}

impl BuiltinIndex {
    /// Chunks every document (paragraphs = split on blank lines; a paragraph over 500 chars is split at the last
    /// whitespace before 500 chars, else hard at a char boundary; consecutive short paragraphs are packed into one
    /// chunk while the chunk stays ≤ 500 chars) and indexes the chunks in RAM with BM25 and English stemming
    /// ("return" finds "returns", "returning").
    pub(crate) fn build<'a>(docs: impl IntoIterator<Item = &'a Document>) -> Result<BuiltinIndex, KnowledgeError> {
        let mut schema = Schema::builder();
        // Frequencies for BM25; no positions, since queries are reduced to plain words (see `plain_words`).
        let indexing = TextFieldIndexing::default().set_tokenizer(ANALYZER);
        let indexing = indexing.set_index_option(IndexRecordOption::WithFreqs);
        let text_options = TextOptions::default().set_indexing_options(indexing).set_stored();
        let fields = Fields {
            doc_id: schema.add_text_field("doc_id", STRING | STORED),
            title: schema.add_text_field("title", STORED),
            url: schema.add_text_field("url", STORED),
            text: schema.add_text_field("text", text_options),
            set: schema.add_text_field("set", STRING),
        };
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register(ANALYZER, analyzer());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_BUDGET_BYTES).map_err(index_err)?;
        let mut chunks = 0;
        for doc in docs {
            for passage in chunk(&doc.content, MAX_CHUNK_CHARS) {
                let mut d = TantivyDocument::default();
                d.add_text(fields.doc_id, &doc.id);
                d.add_text(fields.title, &doc.title);
                if let Some(url) = &doc.url {
                    d.add_text(fields.url, url);
                }
                d.add_text(fields.text, &passage);
                if doc.sets.is_empty() {
                    d.add_text(fields.set, DEFAULT_SET);
                }
                for set in &doc.sets {
                    d.add_text(fields.set, set);
                }
                writer.add_document(d).map_err(index_err)?;
                chunks += 1;
            }
        }
        writer.commit().map_err(index_err)?;
        writer.wait_merging_threads().map_err(index_err)?;
        // Opened after the only commit, so it already sees every chunk and never needs reloading.
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(index_err)?;
        let parser = QueryParser::for_index(&index, vec![fields.text]);
        Ok(BuiltinIndex { reader, parser, fields, chunks, min_score: 0.0, min_relative: 0.0 })
    }

    /// The relevance floor: an absolute BM25 score and a fraction of the best hit's (see `knowledge.min_score`,
    /// `knowledge.min_relative_score`).
    pub(crate) fn with_thresholds(mut self, min_score: f64, min_relative: f64) -> BuiltinIndex {
        self.min_score = min_score as f32;
        self.min_relative = min_relative as f32;
        self
    }

    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks
    }

    fn search_sync(&self, query: &str, k: usize, sets: Option<&[String]>) -> Result<Vec<Hit>, KnowledgeError> {
        let words = plain_words(query);
        // `TopDocs::with_limit(0)` panics; an empty set list is an agent allowed no knowledge.
        if words.trim().is_empty() || k == 0 || sets.is_some_and(<[String]>::is_empty) {
            return Ok(Vec::new());
        }
        // A passage must match a word, not only a number: "delete record 7" is not about a page that mentions
        // "7 days". Numbers still rank the passages that match words.
        let word_like: Vec<&str> =
            words.split_whitespace().filter(|w| !w.chars().all(|c| c.is_ascii_digit())).collect();
        if word_like.is_empty() {
            return Ok(Vec::new());
        }
        // Its errors only say which words it dropped (none, after `plain_words`); the rest still searches.
        let (all_words, _errors) = self.parser.parse_query_lenient(&words);
        let (some_word, _errors) = self.parser.parse_query_lenient(&word_like.join(" "));
        let text_query: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
            (Occur::Must, all_words),
            (Occur::Must, Box::new(ConstScoreQuery::new(some_word, 0.0))),
        ]));
        let query: Box<dyn Query> = match sets {
            None => text_query,
            Some(sets) => {
                let in_set = |s: &String| -> (Occur, Box<dyn Query>) {
                    let term = Term::from_field_text(self.fields.set, s);
                    (Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::Basic)))
                };
                let any_set = BooleanQuery::new(sets.iter().map(in_set).collect());
                // Scored 0 so a hit's score stays the BM25 of its text, not also of a rare set name.
                let filter: Box<dyn Query> = Box::new(ConstScoreQuery::new(Box::new(any_set), 0.0));
                Box::new(BooleanQuery::new(vec![(Occur::Must, text_query), (Occur::Must, filter)]))
            }
        };
        let searcher = self.reader.searcher();
        let mut top = searcher.search(&*query, &TopDocs::with_limit(k).order_by_score()).map_err(index_err)?;
        let best = top.first().map_or(0.0, |(score, _)| *score);
        top.retain(|(score, _)| *score >= self.min_score && *score >= best * self.min_relative);
        top.into_iter()
            .map(|(score, address)| -> Result<Hit, KnowledgeError> {
                let doc: TantivyDocument = searcher.doc(address).map_err(index_err)?;
                let text = |field| doc.get_first(field).and_then(|v| v.as_str()).map(str::to_string);
                Ok(Hit {
                    id: text(self.fields.doc_id).unwrap_or_default(),
                    title: text(self.fields.title).unwrap_or_default(),
                    url: text(self.fields.url),
                    snippet: text(self.fields.text).unwrap_or_default(),
                    score: f64::from(score),
                })
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Retriever for BuiltinIndex {
    /// Org and agent do not narrow the search: the index is this deployment's own; an agent's reach is its sets.
    async fn search(&self, query: &str, k: usize, scope: &Scope<'_>) -> Result<Vec<Hit>, KnowledgeError> {
        // In-memory and small: a search takes microseconds, less than handing it to a blocking thread.
        self.search_sync(query, k, scope.sets)
    }
}

/// User (or model) text as lower-case words only. The query grammar's operators (`AND`, `-`, `+`), field
/// prefixes, phrases, ranges and `*` (match everything) all need punctuation or upper case, so what remains is a
/// plain OR of words; and no word is a multi-token phrase, which the position-less text field could not answer.
fn plain_words(query: &str) -> String {
    query.to_lowercase().chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect()
}

/// Splits `text` into passages of at most `max_chars` chars (see [`BuiltinIndex::build`]); none is empty.
pub(crate) fn chunk(text: &str, max_chars: usize) -> Vec<String> {
    let max = max_chars.max(1);
    let mut pieces = Vec::new();
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines().chain([""]) {
        if !line.trim().is_empty() {
            lines.push(line);
        } else if !lines.is_empty() {
            split_long(&lines.join("\n"), max, &mut pieces);
            lines.clear();
        }
    }
    let mut chunks: Vec<String> = Vec::new();
    for piece in pieces {
        match chunks.last_mut() {
            Some(last) if last.chars().count() + 2 + piece.chars().count() <= max => {
                last.push_str("\n\n");
                last.push_str(&piece);
            }
            _ => chunks.push(piece),
        }
    }
    chunks
}

/// Cuts one paragraph into pieces of at most `max` chars, preferring to cut between words.
fn split_long(paragraph: &str, max: usize, out: &mut Vec<String>) {
    let mut rest = paragraph.trim();
    while !rest.is_empty() {
        let Some((cut, _)) = rest.char_indices().nth(max) else {
            out.push(rest.to_string());
            return;
        };
        let head = &rest[..cut];
        // `rest` starts with a non-space, so any whitespace found leaves a non-empty piece before it.
        let at = if rest[cut..].starts_with(char::is_whitespace) {
            cut
        } else {
            head.char_indices().rev().find(|(_, c)| c.is_whitespace()).map_or(cut, |(i, _)| i)
        };
        out.push(rest[..at].trim_end().to_string());
        rest = rest[at..].trim_start();
    }
}

/// Every regular file under `dir` (recursively, sorted, hidden entries skipped) as a document whose id and
/// title are its path relative to `dir`. Symlinks are followed, as a Kubernetes ConfigMap mount is made of them.
pub(crate) fn load_dir(dir: &Path, max_bytes: u64) -> Result<Vec<Document>, String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    let mut docs = Vec::new();
    walk(dir, "", max_bytes, 0, &mut docs)?;
    Ok(docs)
}

fn walk(dir: &Path, rel: &str, max_bytes: u64, depth: usize, docs: &mut Vec<Document>) -> Result<(), String> {
    if depth > MAX_DIR_DEPTH {
        return Err(format!("{}: more than {MAX_DIR_DEPTH} directories deep (a symlink loop?)", dir.display()));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(name) => tracing::warn!(dir = %dir.display(), ?name, "knowledge file name is not UTF-8; skipped"),
        }
    }
    names.sort();
    for name in names.into_iter().filter(|n| !n.starts_with('.')) {
        let path = dir.join(&name);
        let id = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            walk(&path, &id, max_bytes, depth + 1, docs)?;
            continue;
        }
        // Sockets and FIFOs are not documents, and reading a FIFO would hang the boot.
        if !meta.is_file() {
            continue;
        }
        let over = |len: u64| format!("{}: {len} bytes is over the limit of {max_bytes} bytes", path.display());
        if meta.len() > max_bytes {
            return Err(over(meta.len()));
        }
        // Bounded read: the file may have grown since `metadata`.
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if len > max_bytes {
            return Err(over(len));
        }
        let Ok(content) = String::from_utf8(bytes) else {
            tracing::warn!(path = %path.display(), "knowledge file is not UTF-8; skipped");
            continue;
        };
        if content.trim().is_empty() {
            continue;
        }
        docs.push(Document { id: id.clone(), title: id, url: None, content, sets: Vec::new() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, content: &str, sets: &[&str]) -> Document {
        let (title, sets) = (format!("T {id}"), sets.iter().map(|s| s.to_string()).collect());
        Document { id: id.into(), title, url: None, content: content.into(), sets }
    }

    async fn ids(index: &BuiltinIndex, query: &str, k: usize, sets: Option<&[String]>) -> Vec<String> {
        let scope = Scope { sets, ..Scope::default() };
        index.search(query, k, &scope).await.expect("search").into_iter().map(|h| h.id).collect()
    }

    fn shop() -> BuiltinIndex {
        let returns = doc("returns", "Returns are accepted within 30 days.", &[]);
        BuiltinIndex::build(&[returns, doc("shipping", "Shipping takes five business days.", &[])]).expect("build")
    }

    #[tokio::test]
    async fn stemming_blank_and_symbol_queries() {
        let index = shop();
        assert_eq!(index.chunk_count(), 2);
        assert_eq!(ids(&index, "return", 5, None).await, ["returns"]);
        assert_eq!(ids(&index, "RETURNING", 5, None).await, ["returns"]);
        // Stop words find nothing on their own: small talk gets no context and no citations.
        assert!(ids(&index, "how is it going, are you there", 5, None).await.is_empty());
        let hits = index.search("return", 5, &Scope::default()).await.expect("search");
        assert_eq!(hits[0].snippet, "Returns are accepted within 30 days.");
        assert_eq!((hits[0].title.as_str(), hits[0].url.as_deref()), ("T returns", None));
        assert!(hits[0].score > 0.0);
        for blank in ["", "   \n", "?! -- ***"] {
            assert!(ids(&index, blank, 5, None).await.is_empty(), "{blank:?}");
        }
        // `*` must not turn into match-all, nor `-` into exclusion.
        assert_eq!(ids(&index, "what?! (return) AND OR: *", 5, None).await, ["returns"]);
        assert_eq!(ids(&index, "shipping -days \"five business\" text:[a TO z]", 5, None).await.len(), 2);
    }

    #[tokio::test]
    async fn numbers_alone_and_weak_hits_are_no_match() {
        assert!(ids(&shop(), "delete record 30", 5, None).await.is_empty(), "only the number matches");
        assert!(ids(&shop(), "30", 5, None).await.is_empty());
        assert_eq!(ids(&shop(), "returns within 30", 5, None).await, ["returns"], "numbers still rank words");
        let pages = || {
            let strong = doc("strong", "Refund, refund, refund: how a refund works.", &[]);
            let weak = doc(
                "weak",
                "Opening hours, parking, staff, gift cards, a refund, loyalty points, events and much more here.",
                &[],
            );
            BuiltinIndex::build(&[strong, weak]).expect("build")
        };
        assert_eq!(ids(&pages(), "refund", 5, None).await, ["strong", "weak"]);
        let relative = pages().with_thresholds(0.0, 0.9);
        assert_eq!(ids(&relative, "refund", 5, None).await, ["strong"], "far below the best hit");
        let absolute = shop().with_thresholds(1_000.0, 0.0);
        assert!(ids(&absolute, "return", 5, None).await.is_empty(), "below the absolute floor");
    }

    #[tokio::test]
    async fn best_first_and_at_most_k() {
        let once = doc("once", "A refund is issued once the parcel is back at our warehouse and checked.", &[]);
        let none = doc("none", "Opening hours are nine to five.", &[]);
        let index = BuiltinIndex::build(&[once, doc("thrice", "Refund, refund, refund.", &[]), none]).expect("build");
        let hits = index.search("refund", 10, &Scope::default()).await.expect("search");
        assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["thrice", "once"]);
        assert!(hits[0].score > hits[1].score);
        assert_eq!(ids(&index, "refund", 1, None).await, ["thrice"]);
        assert!(ids(&index, "refund", 0, None).await.is_empty());
    }

    #[tokio::test]
    async fn sets_filter() {
        let public = doc("public", "Invoices are emailed monthly.", &[]);
        let billing = doc("billing", "Invoices can be downloaded from the portal.", &["billing", "finance"]);
        let index = BuiltinIndex::build(&[public, billing]).expect("build");
        let billing = ["billing".to_string()];
        assert_eq!(ids(&index, "invoices", 5, Some(billing.as_slice())).await, ["billing"]);
        let default = ["default".to_string(), "nope".to_string()];
        assert_eq!(ids(&index, "invoices", 5, Some(default.as_slice())).await, ["public"]);
        assert_eq!(ids(&index, "invoices", 5, None).await.len(), 2);
        let none: &[String] = &[];
        assert!(ids(&index, "invoices", 5, Some(none)).await.is_empty());
    }

    #[test]
    fn chunk_packs_and_splits() {
        assert_eq!(chunk("a\n\n  \nb\r\nb2\n\nc", 500), ["a\n\nb\nb2\n\nc"]);
        assert_eq!(chunk("aaaa\n\nbbbb\n\ncccc", 10), ["aaaa\n\nbbbb", "cccc"]);
        assert!(chunk(" \n\n \n", 500).is_empty());
        let hard = chunk(&"é".repeat(1200), 500);
        assert_eq!(hard.iter().map(|c| c.chars().count()).collect::<Vec<_>>(), [500, 500, 200]);

        let long: String = (0..400).map(|i| format!("word{i} ")).collect();
        let text = format!("Intro.\n\n{long}\n\nShort one.\n\nShort two.");
        let chunks = chunk(&text, 500);
        assert!(chunks.len() > 4, "{}", chunks.len());
        assert!(chunks.iter().all(|c| !c.trim().is_empty() && c.chars().count() <= 500));
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(chunks.iter().flat_map(|c| words(c.as_str())).collect::<Vec<_>>(), words(&text));
        assert!(chunks.last().is_some_and(|c| c.ends_with("Short one.\n\nShort two.")));
    }

    #[test]
    fn load_dir_walks_sorted_and_skips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let files: [(&str, &[u8]); 6] = [
            ("sub/a.md", b"Nested."),
            ("b.md", b"Top."),
            (".hidden.md", b"Hidden."),
            (".git/c.md", b"Hidden dir."),
            ("empty.md", b""),
            ("binary.bin", &[0xff, 0xfe, 0x00, 0x80]),
        ];
        for (rel, bytes) in files {
            std::fs::create_dir_all(root.join(rel).parent().expect("parent")).expect("mkdir");
            std::fs::write(root.join(rel), bytes).expect("write");
        }
        let docs = load_dir(root, 1000).expect("load");
        let got: Vec<_> = docs.iter().map(|d| (d.id.as_str(), d.title.as_str(), d.content.as_str())).collect();
        assert_eq!(got, [("b.md", "b.md", "Top."), ("sub/a.md", "sub/a.md", "Nested.")]);
        assert!(docs.iter().all(|d| d.url.is_none() && d.sets.is_empty()));
    }

    #[cfg(unix)]
    #[test]
    fn load_dir_follows_configmap_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("..2026_11_26")).expect("mkdir");
        std::fs::write(root.join("..2026_11_26/faq.md"), "Answers.").expect("write");
        std::os::unix::fs::symlink("..2026_11_26", root.join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/faq.md", root.join("faq.md")).expect("symlink");
        let docs = load_dir(root, 1000).expect("load");
        assert_eq!(docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["faq.md"]);
    }

    #[test]
    fn load_dir_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("big.md"), "x".repeat(101)).expect("write");
        let err = load_dir(dir.path(), 100).expect_err("over the limit");
        assert!(err.contains("big.md") && err.contains("101 bytes"), "{err}");
        let err = load_dir(&dir.path().join("missing"), 100).expect_err("missing");
        assert!(err.contains("missing"), "{err}");
    }
}
