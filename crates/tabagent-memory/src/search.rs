//! Hybrid search: nearest vectors and BM25 keyword matches, fused by reciprocal rank.
//!
//! Each list is cut at `max(2 × (offset + limit), 50)` candidates; fusion scores a record
//! `Σ 1 / (60 + rank)` over the lists it appears in (Cormack et al.'s RRF), ties broken by the
//! newer id. Filters apply inside both lists: keyword matches are filtered in SQL, and vector
//! search runs over the records the filter allows — exactly (brute force over their vectors
//! from SQLite) when they are few, through the HNSW index with a predicate otherwise.

use std::collections::{HashMap, HashSet};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::db::{row_to_record, RECORD_COLUMNS};
use crate::record::{check_vector, check_width, MAX_PAGE};
use crate::vector::{decode, Metric, Ranked};
use crate::{Embedding, Filter, Memory, MemoryError, Record};

/// Which lists a search uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Vector and keyword, fused (either alone when only one is given).
    #[default]
    Hybrid,
    /// Nearest vectors only.
    Vector,
    /// BM25 keyword matches only.
    Keyword,
}

/// A search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// Words to match (keyword search).
    pub text: Option<String>,
    /// A vector to search near, in its space.
    pub vector: Option<Embedding>,
    /// Which records are considered.
    #[serde(default)]
    pub filter: Filter,
    /// Which lists are used.
    #[serde(default)]
    pub mode: Mode,
    /// Results wanted.
    pub limit: usize,
    /// Results skipped (pagination).
    #[serde(default)]
    pub offset: usize,
}

impl SearchRequest {
    /// A keyword search for `text`, ten results.
    pub fn keyword(text: &str) -> Self {
        Self {
            text: Some(text.to_string()),
            vector: None,
            filter: Filter::default(),
            mode: Mode::Keyword,
            limit: 10,
            offset: 0,
        }
    }
}

/// Why a record matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Why {
    /// Its place in the vector list (1-based).
    pub vector_rank: Option<usize>,
    /// Cosine similarity, or Euclidean distance, to the query vector.
    pub vector_score: Option<f32>,
    /// Its place in the keyword list (1-based).
    pub keyword_rank: Option<usize>,
    /// Its BM25 score (higher is better).
    pub keyword_score: Option<f64>,
    /// The fused score.
    pub fused_score: f64,
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The record.
    pub record: Record,
    /// Why it matched.
    pub why: Why,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResults {
    /// The hits, best first.
    pub hits: Vec<Hit>,
    /// How the vector list was made: `hnsw`, `exact`, or absent when none was.
    pub vector_method: Option<&'static str>,
}

/// What a checked search will do.
pub(crate) struct Plan {
    /// Whether the vector list is made.
    pub vector: bool,
    /// The words of the keyword list, when it is made.
    pub keyword: Option<String>,
    /// How deep each list goes.
    pub depth: usize,
}

impl SearchRequest {
    /// Refuses a search that breaks a limit or asks for a list it gives nothing for.
    pub(crate) fn plan(&self, limits: &crate::Limits) -> Result<Plan, MemoryError> {
        self.filter.check(limits)?;
        if self.limit == 0 || self.limit > MAX_PAGE {
            return Err(MemoryError::invalid(
                "limit",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        if self.offset > 100_000 {
            return Err(MemoryError::invalid(
                "offset",
                "offset may be at most 100000",
            ));
        }
        if let Some(v) = &self.vector {
            check_vector(v, limits)?;
        }
        let text = self
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let (use_vector, use_text) = match self.mode {
            Mode::Hybrid => (self.vector.is_some(), text.is_some()),
            Mode::Vector => (true, false),
            Mode::Keyword => (false, true),
        };
        if use_vector && self.vector.is_none() {
            return Err(MemoryError::invalid(
                "vector",
                "a vector search needs a vector",
            ));
        }
        if use_text && text.is_none() {
            return Err(MemoryError::invalid(
                "query",
                "a keyword search needs words",
            ));
        }
        if !use_vector && !use_text {
            return Err(MemoryError::invalid(
                "query",
                "a search needs words or a vector",
            ));
        }
        Ok(Plan {
            vector: use_vector,
            keyword: text.filter(|_| use_text).map(str::to_string),
            depth: (2 * (self.offset + self.limit)).max(50),
        })
    }
}

/// RRF's constant.
const RRF_K: f64 = 60.0;
/// Below this many allowed records, filtered vector search is exact.
const EXACT_BELOW: usize = 4096;

impl Memory {
    /// Searches by keyword, vector or both.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResults, MemoryError> {
        let plan = request.plan(&self.config().limits)?;
        let depth = plan.depth;
        let (use_vector, use_text, text) = (plan.vector, plan.keyword.is_some(), plan.keyword);
        let text = text.as_deref();
        self.read(|conn| {
            let (vector_list, method) = match (&request.vector, use_vector) {
                (Some(v), true) => {
                    let (list, method) = self.nearest_filtered(conn, v, &request.filter, depth)?;
                    (list, Some(method))
                }
                _ => (Vec::new(), None),
            };
            let keyword_list = match (text, use_text) {
                (Some(t), true) => keyword(conn, t, &request.filter, depth)?,
                _ => Vec::new(),
            };
            let fused = fuse(&vector_list, &keyword_list);
            let page: Vec<(i64, Why)> = fused
                .into_iter()
                .skip(request.offset)
                .take(request.limit)
                .collect();
            let mut records = load(conn, page.iter().map(|(id, _)| *id))?;
            let hits = page
                .into_iter()
                .filter_map(|(id, why)| records.remove(&id).map(|record| Hit { record, why }))
                .collect();
            Ok(SearchResults {
                hits,
                vector_method: method,
            })
        })
    }

    /// The `count` nearest record ids in `space` with their scores (cosine similarity or
    /// Euclidean distance), best first: the index alone, no records read.
    pub fn nearest(&self, query: &Embedding, count: usize) -> Result<Vec<(i64, f32)>, MemoryError> {
        check_vector(query, &self.config().limits)?;
        self.read(|conn| {
            let indexes = self.indexes_caught_up(conn)?;
            Ok(scored(indexes.nearest(
                &query.space,
                &query.vector,
                count,
                None,
            )?))
        })
    }

    /// The `depth` nearest records allowed by `filter`, with their scores, best first.
    fn nearest_filtered(
        &self,
        conn: &mut Connection,
        query: &Embedding,
        filter: &Filter,
        depth: usize,
    ) -> Result<(Ranked, &'static str), MemoryError> {
        let indexes = self.indexes_caught_up(conn)?;
        if *filter == Filter::default() {
            let found = indexes.nearest(&query.space, &query.vector, depth, None)?;
            return Ok((scored(found), "hnsw"));
        }
        let (clause, params) = filter.sql();
        let allowed: HashSet<i64> = conn
            .prepare(&format!(
                "SELECT r.id FROM records r JOIN vectors v ON v.record_id = r.id
                 JOIN spaces s ON s.id = v.space_id WHERE s.name = ? AND {clause}"
            ))?
            .query_map(
                rusqlite::params_from_iter(
                    std::iter::once(rusqlite::types::Value::Text(query.space.clone()))
                        .chain(params),
                ),
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        if allowed.len() >= EXACT_BELOW {
            let keep = |key: u64| allowed.contains(&(key as i64));
            let found = indexes.nearest(&query.space, &query.vector, depth, Some(&keep))?;
            return Ok((scored(found), "hnsw"));
        }
        // Few candidates: score them all, exactly.
        let Some((metric, dimensions)) = indexes.space(&query.space) else {
            return Ok((Vec::new(), "exact"));
        };
        check_width(&query.space, dimensions, query.vector.len())?;
        drop(indexes);
        let mut scored: Vec<(i64, f32)> = Vec::with_capacity(allowed.len());
        let mut stmt = conn.prepare("SELECT vector FROM vectors WHERE record_id = ?1")?;
        for id in &allowed {
            let blob: Vec<u8> = stmt.query_row([id], |r| r.get(0))?;
            scored.push((*id, exact_score(metric, &query.vector, &decode(&blob))));
        }
        sort_best_first(metric, &mut scored);
        scored.truncate(depth);
        Ok((scored, "exact"))
    }
}

/// Sorts scored records best first (highest similarity, or shortest distance), newer first
/// among equals.
pub(crate) fn sort_best_first(metric: Metric, scored: &mut [(i64, f32)]) {
    match metric {
        Metric::Cosine => scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0))),
        Metric::Euclidean => scored.sort_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0))),
    }
}

fn scored(found: Option<(Metric, Ranked)>) -> Ranked {
    match found {
        Some((metric, list)) => list
            .into_iter()
            .map(|(id, d)| (id, metric.score(d)))
            .collect(),
        None => Vec::new(),
    }
}

pub(crate) fn exact_score(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Cosine => {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            if na == 0.0 || nb == 0.0 {
                0.0
            } else {
                dot / (na * nb)
            }
        }
        Metric::Euclidean => a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt(),
    }
}

/// The most words a keyword search looks for.
const MAX_QUERY_TERMS: usize = 32;

/// English words so common that nearly every text has them: a query word among these costs a
/// pass over most of the index and barely moves a BM25 ranking.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// The words a keyword search looks for: runs of letters and digits (anything else, query
/// syntax included, only separates words), lowercased, each once, without English stop words
/// unless nothing else is left, at most [`MAX_QUERY_TERMS`].
pub(crate) fn keyword_terms(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| seen.insert(w.clone()))
        .collect();
    let content: Vec<String> = words
        .iter()
        .filter(|w| STOP_WORDS.binary_search(&w.as_str()).is_err())
        .cloned()
        .collect();
    let mut terms = if content.is_empty() { words } else { content };
    terms.truncate(MAX_QUERY_TERMS);
    terms
}

/// The text as an FTS5 query: each word quoted (so no word is read as syntax), any may match.
pub(crate) fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = keyword_terms(text)
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" OR "))
}

fn keyword(
    conn: &Connection,
    text: &str,
    filter: &Filter,
    depth: usize,
) -> Result<Vec<(i64, f64)>, MemoryError> {
    let Some(query) = fts_query(text) else {
        return Ok(Vec::new());
    };
    let (clause, params) = filter.sql();
    // Unfiltered, the full-text index answers alone: no record is read per match.
    let sql = if *filter == Filter::default() {
        format!(
            "SELECT rowid, bm25(records_fts) AS rank FROM records_fts
             WHERE records_fts MATCH ? ORDER BY rank, rowid DESC LIMIT {depth}"
        )
    } else {
        format!(
            "SELECT r.id, bm25(records_fts) AS rank FROM records_fts
             JOIN records r ON r.id = records_fts.rowid
             WHERE records_fts MATCH ? AND {clause} ORDER BY rank, r.id DESC LIMIT {depth}"
        )
    };
    let rows = conn
        .prepare(&sql)?
        .query_map(
            rusqlite::params_from_iter(
                std::iter::once(rusqlite::types::Value::Text(query)).chain(params),
            ),
            |r| Ok((r.get::<_, i64>(0)?, -r.get::<_, f64>(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Reciprocal rank fusion of the two lists, best first.
pub(crate) fn fuse(vector: &[(i64, f32)], keyword: &[(i64, f64)]) -> Vec<(i64, Why)> {
    let mut whys: HashMap<i64, Why> = HashMap::new();
    let blank = || Why {
        vector_rank: None,
        vector_score: None,
        keyword_rank: None,
        keyword_score: None,
        fused_score: 0.0,
    };
    for (rank, (id, score)) in vector.iter().enumerate() {
        let why = whys.entry(*id).or_insert_with(blank);
        why.vector_rank = Some(rank + 1);
        why.vector_score = Some(*score);
        why.fused_score += 1.0 / (RRF_K + (rank + 1) as f64);
    }
    for (rank, (id, score)) in keyword.iter().enumerate() {
        let why = whys.entry(*id).or_insert_with(blank);
        why.keyword_rank = Some(rank + 1);
        why.keyword_score = Some(*score);
        why.fused_score += 1.0 / (RRF_K + (rank + 1) as f64);
    }
    let mut fused: Vec<(i64, Why)> = whys.into_iter().collect();
    fused.sort_by(|a, b| {
        b.1.fused_score
            .total_cmp(&a.1.fused_score)
            .then(b.0.cmp(&a.0))
    });
    fused
}

fn load(
    conn: &Connection,
    ids: impl Iterator<Item = i64>,
) -> Result<HashMap<i64, Record>, MemoryError> {
    let ids: Vec<i64> = ids.collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let marks = vec!["?"; ids.len()].join(",");
    let records = conn
        .prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM records r WHERE r.id IN ({marks})"
        ))?
        .query_map(rusqlite::params_from_iter(ids), row_to_record)?
        .map(|r| r.map(|r| (r.id, r)))
        .collect::<Result<_, _>>()?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_queries_quote_every_word_so_syntax_is_plain_text() {
        assert_eq!(
            fts_query(r#"NEAR("x" b) OR c* -d AND b"#).as_deref(),
            Some(r#""near" OR "x" OR "b" OR "c" OR "d""#)
        );
        assert_eq!(fts_query(" \"*() "), None);
    }

    #[test]
    fn keyword_terms_drop_stop_words_unless_nothing_else_is_left() {
        assert_eq!(
            keyword_terms("What is the capital of France?"),
            vec!["capital", "france"]
        );
        assert_eq!(
            keyword_terms("to be or not to be"),
            vec!["to", "be", "or", "not"]
        );
        let long: String = (0..100).map(|i| format!("w{i} ")).collect();
        assert_eq!(keyword_terms(&long).len(), MAX_QUERY_TERMS);
        assert!(
            STOP_WORDS.windows(2).all(|w| w[0] < w[1]),
            "kept sorted for binary search"
        );
    }

    #[test]
    fn fusion_rewards_agreement_and_explains_each_rank() {
        let fused = fuse(&[(1, 0.9), (2, 0.8)], &[(2, 5.0), (3, 4.0)]);
        let order: Vec<i64> = fused.iter().map(|(id, _)| *id).collect();
        assert_eq!(order, vec![2, 1, 3]);
        let (_, why) = &fused[0];
        assert_eq!((why.vector_rank, why.keyword_rank), (Some(2), Some(1)));
        let expected = 1.0 / 62.0 + 1.0 / 61.0;
        assert!((why.fused_score - expected).abs() < 1e-12);
    }
}
