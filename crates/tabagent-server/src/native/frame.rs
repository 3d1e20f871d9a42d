//! Chrome's native messaging framing: a 4-byte length in the machine's byte order, then that many
//! bytes of UTF-8 JSON. The browser sends up to 64 MiB a message; the host may send at most
//! 1 MiB, so a longer reply is sent as the pieces of its JSON text (see [`encode`]).

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most a message to the browser may hold (Chrome's limit).
pub const MAX_TO_BROWSER: usize = 1024 * 1024;

/// What reading one message gave.
#[derive(Debug)]
pub enum Incoming {
    /// A whole message, parsed.
    Message(Value),
    /// A whole message that is not JSON: answered with an error, then reading goes on.
    NotJson(serde_json::Error),
    /// A message longer than the limit: its bytes were read and dropped, so the next message
    /// starts where it should.
    TooLarge { length: u64, limit: usize },
    /// The input ended inside a message (its length or its body): nothing more will come.
    Truncated { expected: u64, got: u64 },
    /// The input ended between messages: the browser closed the port.
    End,
}

/// Reads the next message, holding at most `limit` bytes of it in memory.
pub async fn read<R: AsyncRead + Unpin>(input: &mut R, limit: usize) -> std::io::Result<Incoming> {
    let mut header = [0u8; 4];
    let got = read_full(input, &mut header).await?;
    if got == 0 {
        return Ok(Incoming::End);
    }
    if got < header.len() {
        return Ok(Incoming::Truncated {
            expected: 4,
            got: got as u64,
        });
    }
    let length = u64::from(u32::from_ne_bytes(header));
    if length > limit as u64 {
        let dropped = tokio::io::copy(&mut input.take(length), &mut tokio::io::sink()).await?;
        if dropped < length {
            return Ok(Incoming::Truncated {
                expected: length,
                got: dropped,
            });
        }
        return Ok(Incoming::TooLarge { length, limit });
    }
    // Bounded by `limit` above, so this allocation is one the configuration allows.
    let mut body = vec![0u8; length as usize];
    let got = read_full(input, &mut body).await?;
    if got < body.len() {
        return Ok(Incoming::Truncated {
            expected: length,
            got: got as u64,
        });
    }
    Ok(match serde_json::from_slice(&body) {
        Ok(value) => Incoming::Message(value),
        Err(err) => Incoming::NotJson(err),
    })
}

/// Fills `buffer` unless the input ends first; returns how much it read.
async fn read_full<R: AsyncRead + Unpin>(
    input: &mut R,
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = input.read(&mut buffer[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Writes one framed message.
pub async fn write<W: AsyncWrite + Unpin>(output: &mut W, message: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(message.len())
        .map_err(|_| std::io::Error::other("a native message cannot exceed 4 GiB"))?;
    output.write_all(&length.to_ne_bytes()).await?;
    output.write_all(message).await?;
    output.flush().await
}

/// The messages that carry `reply` (an object with an `id`) to the browser, each at most
/// `max` bytes: the reply itself when it fits; otherwise its JSON text cut into pieces sent as
/// `{"id", "part": "<text>", "more": true}` … `"more": false`, which the extension joins and
/// parses to get the reply.
pub fn encode(reply: &Value, max: usize) -> Vec<Vec<u8>> {
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

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(body.len()).unwrap().to_ne_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn reads_messages_and_survives_bad_ones() {
        let mut input = Vec::new();
        input.extend(framed(br#"{"id":1}"#));
        input.extend(framed(b"not json"));
        input.extend(framed(&[b'x'; 100]));
        input.extend(framed(br#"{"id":2}"#));
        input.extend(&[5, 0]);
        let mut reader = &input[..];
        let next = read(&mut reader, 50).await.unwrap();
        assert!(matches!(next, Incoming::Message(v) if v["id"] == 1));
        assert!(matches!(
            read(&mut reader, 50).await.unwrap(),
            Incoming::NotJson(_)
        ));
        assert!(matches!(
            read(&mut reader, 50).await.unwrap(),
            Incoming::TooLarge {
                length: 100,
                limit: 50
            }
        ));
        let next = read(&mut reader, 50).await.unwrap();
        assert!(matches!(next, Incoming::Message(v) if v["id"] == 2));
        assert!(matches!(
            read(&mut reader, 50).await.unwrap(),
            Incoming::Truncated {
                expected: 4,
                got: 2
            }
        ));
        assert!(matches!(
            read(&mut reader, 50).await.unwrap(),
            Incoming::End
        ));
    }

    #[tokio::test]
    async fn a_body_cut_short_is_truncated() {
        let mut input = framed(br#"{"id":1,"path":"/v1/models"}"#);
        input.truncate(12);
        let mut reader = &input[..];
        assert!(matches!(
            read(&mut reader, 1024).await.unwrap(),
            Incoming::Truncated { got: 8, .. }
        ));
    }

    #[test]
    fn long_replies_come_in_pieces_that_join_to_the_reply() {
        // Quotes, control characters and multi-byte characters expand or straddle cuts.
        let text: String = (0..40_000)
            .map(|i| ["a", "\"", "\u{1}", "é", "😀", "\n"][i % 6])
            .collect();
        let reply = serde_json::json!({"id": "r1", "status": 200, "body": {"text": text}});
        let messages = encode(&reply, 4096);
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
        let messages = encode(&reply, MAX_TO_BROWSER);
        assert_eq!(messages, vec![reply.to_string().into_bytes()]);
    }
}
