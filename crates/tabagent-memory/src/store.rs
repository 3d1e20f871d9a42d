//! The seven stores, by name.

use serde::{Deserialize, Serialize};

use crate::MemoryError;

/// One of the seven stores. Every record lives in exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Store {
    /// Chat history: one record per message.
    Conversations,
    /// Facts, and the entities and relations of the knowledge graph.
    Knowledge,
    /// Text kept for vector search (chunks of documents, notes).
    Embeddings,
    /// Results of tool and function calls.
    ToolResults,
    /// Episodic memory: what happened, what worked.
    Experience,
    /// Compressed history written by the summarizer.
    Summaries,
    /// System metadata: settings and bookkeeping, addressed by key.
    Meta,
}

impl Store {
    /// All stores, in a fixed order.
    pub const ALL: [Store; 7] = [
        Store::Conversations,
        Store::Knowledge,
        Store::Embeddings,
        Store::ToolResults,
        Store::Experience,
        Store::Summaries,
        Store::Meta,
    ];

    /// Its name on the wire and in the database.
    pub fn name(self) -> &'static str {
        match self {
            Store::Conversations => "conversations",
            Store::Knowledge => "knowledge",
            Store::Embeddings => "embeddings",
            Store::ToolResults => "tool-results",
            Store::Experience => "experience",
            Store::Summaries => "summaries",
            Store::Meta => "meta",
        }
    }

    /// The store called `name`.
    pub fn parse(name: &str) -> Result<Store, MemoryError> {
        Store::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| MemoryError::UnknownStore(name.to_string()))
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Store {
    type Err = MemoryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Store::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for store in Store::ALL {
            assert_eq!(Store::parse(store.name()).ok(), Some(store));
            let json = serde_json::to_string(&store).ok();
            assert_eq!(json, Some(format!("\"{}\"", store.name())));
        }
        assert!(matches!(
            Store::parse("toolresults"),
            Err(MemoryError::UnknownStore(name)) if name == "toolresults"
        ));
    }
}
