//! Records, the filters that select them, and the limits on what a caller may store.

use serde::{Deserialize, Serialize};

use crate::{MemoryError, Store};

/// Caps on what one record may hold; larger input is refused, never cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of text.
    pub max_text_bytes: usize,
    /// Bytes of `data` once serialized.
    pub max_data_bytes: usize,
    /// Tags per record.
    pub max_tags: usize,
    /// Bytes of a tag, key, kind, role, source or conversation id.
    pub max_label_bytes: usize,
    /// Dimensions of a vector.
    pub max_dimensions: usize,
    /// Records in one transaction.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_text_bytes: 1 << 20,
            max_data_bytes: 1 << 20,
            max_tags: 64,
            max_label_bytes: 512,
            max_dimensions: 8192,
            max_batch: 10_000,
        }
    }
}

/// A vector and the space it belongs to. Vectors are only compared within a space (one
/// embedding model, one width, one metric).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// The space's name, usually the embedding model's.
    pub space: String,
    /// The vector.
    pub vector: Vec<f32>,
}

/// A record to write.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewRecord {
    /// What sort of record within its store (`message`, `fact`, `chunk`...); free text.
    pub kind: Option<String>,
    /// The searchable text.
    pub text: String,
    /// Anything else, as a JSON object.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Labels to filter on.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The conversation it belongs to.
    pub conversation: Option<String>,
    /// Where it came from (a document, a URL, a tool).
    pub source: Option<String>,
    /// Who said it (`user`, `assistant`, `system`, `tool`).
    pub role: Option<String>,
    /// A name unique within the store: writing a record with a key that exists replaces it.
    pub key: Option<String>,
    /// Its vector, when it has one.
    pub embedding: Option<Embedding>,
    /// When it happened, in milliseconds since the Unix epoch (now if absent).
    pub created_at: Option<i64>,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Its id, unique across stores.
    pub id: i64,
    /// Its store.
    pub store: Store,
    /// What sort of record within its store.
    pub kind: String,
    /// The searchable text.
    pub text: String,
    /// Anything else.
    pub data: serde_json::Value,
    /// Labels.
    pub tags: Vec<String>,
    /// The conversation it belongs to.
    pub conversation: Option<String>,
    /// Where it came from.
    pub source: Option<String>,
    /// Who said it.
    pub role: Option<String>,
    /// Its key within the store.
    pub key: Option<String>,
    /// The vector space it has a vector in.
    pub space: Option<String>,
    /// When it happened (ms since the Unix epoch).
    pub created_at: i64,
}

impl Record {
    /// `new` as stored in `store` under `id`, with the kind, data and time it was given.
    pub(crate) fn written(
        id: i64,
        store: Store,
        kind: &str,
        data: serde_json::Value,
        created_at: i64,
        new: &NewRecord,
    ) -> Record {
        Record {
            id,
            store,
            kind: kind.to_string(),
            text: new.text.clone(),
            data,
            tags: new.tags.clone(),
            conversation: new.conversation.clone(),
            source: new.source.clone(),
            role: new.role.clone(),
            key: new.key.clone(),
            space: new.embedding.as_ref().map(|e| e.space.clone()),
            created_at,
        }
    }
}

/// Which records a list or search considers. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Only these stores.
    #[serde(default)]
    pub stores: Vec<Store>,
    /// Only these kinds.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Records carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only this conversation.
    pub conversation: Option<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only this role.
    pub role: Option<String>,
    /// Created at or after (ms).
    pub since: Option<i64>,
    /// Created before (ms).
    pub until: Option<i64>,
}

/// Which end a listing starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Newest first.
    #[default]
    Newest,
    /// Oldest first (a conversation as it was said).
    Oldest,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// The records.
    pub records: Vec<Record>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<i64>,
}

impl Page {
    /// A page from up to `limit + 1` records: the extra one only says that more follow.
    pub(crate) fn cut(mut records: Vec<Record>, limit: usize) -> Page {
        let next = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|r| r.id)
        } else {
            None
        };
        Page { records, next }
    }
}

/// The most records one page or search returns.
pub const MAX_PAGE: usize = 1000;

/// Refuses a page size outside 1 to [`MAX_PAGE`].
pub(crate) fn check_limit(limit: usize) -> Result<(), MemoryError> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(MemoryError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(())
}

/// Refuses an empty group of changes, or one over the batch limit.
pub(crate) fn check_batch(changes: &[crate::Change], limits: &Limits) -> Result<(), MemoryError> {
    if changes.is_empty() {
        return Err(MemoryError::invalid("operations", "no changes to apply"));
    }
    if changes.len() > limits.max_batch {
        return Err(MemoryError::invalid(
            "operations",
            format!("at most {} changes at once", limits.max_batch),
        ));
    }
    Ok(())
}

impl NewRecord {
    /// Refuses what breaks a limit or cannot be stored.
    pub(crate) fn check(&self, limits: &Limits) -> Result<(), MemoryError> {
        if self.text.len() > limits.max_text_bytes {
            return Err(MemoryError::invalid(
                "text",
                format!(
                    "text is {} bytes; the limit is {}",
                    self.text.len(),
                    limits.max_text_bytes
                ),
            ));
        }
        if !(self.data.is_null() || self.data.is_object()) {
            return Err(MemoryError::invalid("data", "data must be a JSON object"));
        }
        let data_len = serde_json::to_string(&self.data).map_or(0, |s| s.len());
        if data_len > limits.max_data_bytes {
            return Err(MemoryError::invalid(
                "data",
                format!(
                    "data is {data_len} bytes; the limit is {}",
                    limits.max_data_bytes
                ),
            ));
        }
        if self.tags.len() > limits.max_tags {
            return Err(MemoryError::invalid(
                "tags",
                format!("at most {} tags", limits.max_tags),
            ));
        }
        let labels = [
            ("kind", self.kind.as_deref()),
            ("conversation", self.conversation.as_deref()),
            ("source", self.source.as_deref()),
            ("role", self.role.as_deref()),
            ("key", self.key.as_deref()),
        ];
        let tags = self.tags.iter().map(|t| ("tags", Some(t.as_str())));
        for (param, label) in labels.into_iter().chain(tags) {
            check_label(param, label, limits)?;
        }
        if let Some(e) = &self.embedding {
            check_vector(e, limits)?;
        }
        Ok(())
    }
}

pub(crate) fn check_label(
    param: &'static str,
    label: Option<&str>,
    limits: &Limits,
) -> Result<(), MemoryError> {
    match label {
        Some("") => Err(MemoryError::invalid(
            param,
            format!("{param} may not be empty"),
        )),
        Some(l) if l.len() > limits.max_label_bytes => Err(MemoryError::invalid(
            param,
            format!("{param} is longer than {} bytes", limits.max_label_bytes),
        )),
        _ => Ok(()),
    }
}

/// Refuses a vector of another width than its space's.
pub(crate) fn check_width(space: &str, expected: usize, got: usize) -> Result<(), MemoryError> {
    if expected != got {
        return Err(MemoryError::Dimensions {
            space: space.to_string(),
            expected,
            got,
        });
    }
    Ok(())
}

/// Refuses an empty space name, an empty or oversized vector, and non-finite values.
pub(crate) fn check_vector(e: &Embedding, limits: &Limits) -> Result<(), MemoryError> {
    check_label("space", Some(&e.space), limits)?;
    if e.vector.is_empty() || e.vector.len() > limits.max_dimensions {
        return Err(MemoryError::invalid(
            "vector",
            format!(
                "a vector has 1 to {} dimensions; this one has {}",
                limits.max_dimensions,
                e.vector.len()
            ),
        ));
    }
    if e.vector.iter().any(|x| !x.is_finite()) {
        return Err(MemoryError::invalid(
            "vector",
            "vector values must be finite",
        ));
    }
    Ok(())
}

impl Filter {
    /// Refuses a filter that can match nothing by construction, or breaks a limit.
    pub(crate) fn check(&self, limits: &Limits) -> Result<(), MemoryError> {
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if since >= until {
                return Err(MemoryError::invalid(
                    "since",
                    "`since` must be before `until`",
                ));
            }
        }
        if self.tags.len() > limits.max_tags || self.kinds.len() > limits.max_tags {
            return Err(MemoryError::invalid(
                "tags",
                format!("at most {} tags or kinds in a filter", limits.max_tags),
            ));
        }
        for tag in &self.tags {
            check_label("tags", Some(tag), limits)?;
        }
        Ok(())
    }

    /// `WHERE` terms over the `records` table aliased `r`, and their parameters.
    pub(crate) fn sql(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut terms: Vec<String> = vec!["1".to_string()];
        let mut params: Vec<Value> = Vec::new();
        let mut any_of = |column: &str, values: Vec<String>, terms: &mut Vec<String>| {
            if values.is_empty() {
                return;
            }
            let marks = vec!["?"; values.len()].join(",");
            terms.push(format!("r.{column} IN ({marks})"));
            params.extend(values.into_iter().map(Value::Text));
        };
        any_of(
            "store",
            self.stores.iter().map(|s| s.name().to_string()).collect(),
            &mut terms,
        );
        any_of("kind", self.kinds.clone(), &mut terms);
        for (column, value) in [
            ("conversation", &self.conversation),
            ("source", &self.source),
            ("role", &self.role),
        ] {
            if let Some(v) = value {
                terms.push(format!("r.{column} = ?"));
                params.push(Value::Text(v.clone()));
            }
        }
        for tag in &self.tags {
            terms.push("EXISTS (SELECT 1 FROM json_each(r.tags) WHERE value = ?)".to_string());
            params.push(Value::Text(tag.clone()));
        }
        if let Some(since) = self.since {
            terms.push("r.created_at >= ?".to_string());
            params.push(Value::Integer(since));
        }
        if let Some(until) = self.until {
            terms.push("r.created_at < ?".to_string());
            params.push(Value::Integer(until));
        }
        (terms.join(" AND "), params)
    }
}

/// The kind a record gets when none is given.
pub(crate) fn default_kind(store: Store) -> &'static str {
    match store {
        Store::Conversations => "message",
        Store::Knowledge => "fact",
        Store::Embeddings => "chunk",
        Store::ToolResults => "tool_result",
        Store::Experience => "episode",
        Store::Summaries => "summary",
        Store::Meta => "entry",
    }
}
