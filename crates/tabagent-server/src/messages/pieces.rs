//! Replies longer than a transport's message limit (Chrome's native messaging: 1 MiB to the
//! extension; a data channel: what SCTP and the browser take) go as pieces of their JSON text.

use serde_json::Value;

/// The messages that carry `reply` (an object with an `id`) to the browser, each at most
/// `max` bytes: the reply itself when it fits; otherwise its JSON text cut into pieces sent as
/// `{"id", "part": "<text>", "more": true}` … `"more": false`, which the extension joins and
/// parses to get the reply.
pub fn split(reply: &Value, max: usize) -> Vec<Vec<u8>> {
    let text = reply.to_string();
    if text.len() <= max {
        return vec![text.into_bytes()];
    }
    let id = reply.get("id").cloned().unwrap_or(Value::Null);
    // The envelope around a piece: `{"id":…,"part":"","more":false}`.
    let envelope = serde_json::json!({"id": id, "part": "", "more": false})
        .to_string()
        .len();
    let budget = max.saturating_sub(envelope).max(64);
    let pieces = split_escaped(&text, budget);
    let last = pieces.len() - 1;
    pieces
        .into_iter()
        .enumerate()
        .map(|(index, piece)| {
            serde_json::json!({"id": id, "part": piece, "more": index != last})
                .to_string()
                .into_bytes()
        })
        .collect()
}

/// Cuts `text` at character boundaries into pieces whose JSON string form (the escapes
/// serde_json writes) stays within `budget` bytes each.
fn split_escaped(text: &str, budget: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (at, c) in text.char_indices() {
        let escaped = escaped_len(c);
        if size + escaped > budget && at > start {
            pieces.push(&text[start..at]);
            start = at;
            size = 0;
        }
        size += escaped;
    }
    pieces.push(&text[start..]);
    pieces
}

/// How many bytes serde_json writes for `c` inside a string.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_replies_come_in_pieces_that_join_to_the_reply() {
        // Quotes, control characters and multi-byte characters expand or straddle cuts.
        let text: String = (0..40_000)
            .map(|i| ["a", "\"", "\u{1}", "é", "😀", "\n"][i % 6])
            .collect();
        let reply = serde_json::json!({"id": "r1", "status": 200, "body": {"text": text}});
        let messages = split(&reply, 4096);
        assert!(messages.len() > 10);
        let mut joined = String::new();
        for (index, message) in messages.iter().enumerate() {
            assert!(
                message.len() <= 4096,
                "piece {index} is {} bytes",
                message.len()
            );
            let piece: Value = serde_json::from_slice(message).unwrap();
            assert_eq!(piece["id"], "r1");
            assert_eq!(piece["more"], index + 1 < messages.len());
            joined.push_str(piece["part"].as_str().unwrap());
        }
        assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), reply);
    }

    #[test]
    fn a_reply_that_fits_goes_as_it_is() {
        let reply = serde_json::json!({"id": 7, "status": 200, "body": {"ok": true}});
        let messages = split(&reply, 1024 * 1024);
        assert_eq!(messages, vec![reply.to_string().into_bytes()]);
    }
}
