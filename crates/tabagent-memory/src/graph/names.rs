//! How entity names are compared.

/// The form a name is looked up by: lowercase, runs of whitespace as one space, trimmed.
/// `"  Ada   LOVELACE "` and `"ada lovelace"` name the same entity.
pub fn normalize(name: &str) -> String {
    name.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A looser form for finding duplicates: punctuation dropped and a leading article removed, so
/// that `"The Beatles"`, `"beatles"` and `"Beatles."` collide.
pub(crate) fn loose(name: &str) -> String {
    let spaced: String = name
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let normal = normalize(&spaced);
    for article in ["the ", "a ", "an "] {
        if let Some(rest) = normal.strip_prefix(article) {
            if !rest.is_empty() {
                return rest.to_string();
            }
        }
    }
    normal
}

/// A relation type as stored: lowercase words joined by `_`.
pub fn relation_type(relation: &str) -> String {
    relation
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_without_case_or_spacing() {
        assert_eq!(normalize("  Ada \t LOVELACE "), "ada lovelace");
        assert_eq!(normalize("Zürich"), "zürich");
        assert_ne!(normalize("Ada Lovelace"), normalize("Ada-Lovelace"));
    }

    #[test]
    fn loose_forms_drop_punctuation_and_articles() {
        assert_eq!(loose("The Beatles"), "beatles");
        assert_eq!(loose("Beatles."), "beatles");
        assert_eq!(loose("U.S.A."), "u s a");
        assert_eq!(loose("The"), "the");
        assert_eq!(loose("A"), "a");
    }

    #[test]
    fn relation_types_are_snake_case() {
        assert_eq!(relation_type("Works For"), "works_for");
        assert_eq!(relation_type(" capital-of "), "capital_of");
        assert_eq!(relation_type("__"), "");
    }
}
