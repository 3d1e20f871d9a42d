//! A web page's readable part (Mozilla's readability, as `dom_smoothie` ports it), as Markdown so
//! that the chunker follows its headings; a page readability finds no article in (a short page,
//! a list) gives all of its text instead.

use dom_smoothie::{Config, Readability, TextMode};

use super::{Extracted, Format, Page};

/// Elements past which a page is not parsed for its article (readability's own guard).
const MAX_ELEMENTS: usize = 200_000;

pub(super) fn extract(html: &str) -> Extracted {
    let config = Config {
        text_mode: TextMode::Markdown,
        max_elements_to_parse: MAX_ELEMENTS,
        ..Config::default()
    };
    let article = Readability::new(html, None, Some(config)).and_then(|mut r| r.parse());
    let (title, text, warnings) = match article {
        Ok(article) if !article.text_content.trim().is_empty() => (
            Some(article.title),
            article.text_content.to_string(),
            Vec::new(),
        ),
        Ok(_) | Err(_) => {
            let all = Readability::new(
                html,
                None,
                Some(Config {
                    text_mode: TextMode::Formatted,
                    max_elements_to_parse: MAX_ELEMENTS,
                    readable_min_score: 0.0,
                    char_threshold: 0,
                    ..Config::default()
                }),
            )
            .and_then(|mut r| r.parse())
            .map(|a| (Some(a.title), a.text_content.to_string()))
            .unwrap_or((None, String::new()));
            (
                all.0,
                all.1,
                vec!["no article found in the page: all of its text was taken".to_string()],
            )
        }
    };
    Extracted {
        format: Format::Html,
        title: title.filter(|t| !t.trim().is_empty()),
        pages: vec![Page { number: None, text }],
        markdown: true,
        warnings,
    }
}
