//! Chrome's native messaging framing: a 4-byte length in the machine's byte order, then that many
//! bytes of UTF-8 JSON. The browser sends up to 64 MiB a message; the host may send at most
//! 1 MiB, so a longer reply is sent as the pieces of its JSON text (`messages::pieces`).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use crate::messages::Inbound as Incoming;

/// The most a message to the browser may hold (Chrome's limit).
pub const MAX_TO_BROWSER: usize = 1024 * 1024;

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
    Ok(Incoming::parse(&body))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(body.len()).unwrap().to_ne_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// The native messaging corpus (`tests/corpus/native-frames`), mutated: every input is read
    /// message by message to its end, each read taking bytes or ending, never panicking.
    #[test]
    fn fuzzed_frames_are_read_to_their_end() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/corpus/native-frames");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let seeds = tabagent_testhub::fuzz::corpus(&dir).unwrap();
        tabagent_testhub::fuzz::run(&seeds, 100_000, |input| {
            runtime.block_on(async {
                let mut reader = input;
                for _ in 0..=input.len() {
                    match read(&mut reader, 4096).await.unwrap() {
                        Incoming::End | Incoming::Truncated { .. } => return,
                        Incoming::Message(_) | Incoming::NotJson(_) | Incoming::TooLarge { .. } => {
                        }
                    }
                }
                panic!("reading did not end");
            });
        });
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
}
