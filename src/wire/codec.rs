//! Framing: a 4-byte big-endian length, then the msgpack (rmp-serde) encoding of an
//! [`Envelope`]. A length above [`MAX_FRAME_BYTES`] is refused before anything is allocated,
//! so a garbage or hostile peer cannot make a node allocate gigabytes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::log::record::MAX_PAYLOAD_BYTES;
use crate::wire::Envelope;

/// Largest frame accepted or sent: one record of the largest size plus room for the envelope.
pub const MAX_FRAME_BYTES: usize = MAX_PAYLOAD_BYTES + 1024 * 1024;
/// Largest batch of records a feeder puts in one frame (it may exceed this by one record).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
const _: () = assert!(MAX_BATCH_BYTES < MAX_FRAME_BYTES);

/// Encodes an envelope as one frame.
pub fn encode(env: &Envelope) -> Result<Vec<u8>> {
    let body = rmp_serde::to_vec(env)
        .map_err(|e| Error::InvalidData(format!("encode {}: {e}", env.message.name())))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(Error::InvalidData(format!(
            "{} frame of {} bytes exceeds MAX_FRAME_BYTES ({MAX_FRAME_BYTES})",
            env.message.name(),
            body.len()
        )));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, env: &Envelope) -> Result<()> {
    let frame = encode(env)?;
    w.write_all(&frame)
        .await
        .map_err(Error::io(format!("send {}", env.message.name())))?;
    w.flush()
        .await
        .map_err(Error::io("flush a peer connection"))
}

/// Reads one frame. End of stream, an oversized length and undecodable bytes are errors.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Envelope> {
    read_frame_within(r, MAX_FRAME_BYTES).await
}

/// Reads one frame of at most `max_bytes` (before authentication, a few KiB suffice): a
/// longer announced length is refused before anything is allocated.
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    r: &mut R,
    max_bytes: usize,
) -> Result<Envelope> {
    assert!(
        max_bytes <= MAX_FRAME_BYTES,
        "no frame exceeds MAX_FRAME_BYTES"
    );
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .await
        .map_err(Error::io("read a frame length"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max_bytes {
        return Err(Error::InvalidData(format!(
            "peer announced a frame of {len} bytes, above the {max_bytes} allowed here"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .await
        .map_err(Error::io("read a frame"))?;
    rmp_serde::from_slice(&body)
        .map_err(|e| Error::InvalidData(format!("undecodable frame of {len} bytes: {e}")))
}

/// The records of a `RecordsLz4` batch, decompressed: the announced size is checked
/// against the frame limit before anything is allocated, and must be what comes out.
pub fn decompress_batch(bytes: &[u8], raw_len: u32) -> Result<Vec<u8>> {
    let raw_len = raw_len as usize;
    if raw_len > MAX_FRAME_BYTES {
        return Err(Error::InvalidData(format!(
            "a compressed batch announces {raw_len} bytes, above the frame limit"
        )));
    }
    let out = lz4_flex::block::decompress(bytes, raw_len)
        .map_err(|e| Error::InvalidData(format!("a compressed batch is corrupt: {e}")))?;
    if out.len() != raw_len {
        return Err(Error::InvalidData(format!(
            "a compressed batch holds {} bytes, not the {raw_len} announced",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;

    fn env(message: Message) -> Envelope {
        Envelope {
            cluster: "c".into(),
            from: "main".into(),
            epoch: 1,
            message,
        }
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let e = env(Message::Ack {
            received: 3,
            flushed: 2,
            applied: 1,
            applied_time_ms: 9,
            oldest_unapplied_ms: 5,
            held: "paused".into(),
        });
        let bytes = encode(&e).unwrap();
        assert_eq!(read_frame(&mut &bytes[..]).await.unwrap(), e);
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocating() {
        let bytes = (u32::MAX).to_be_bytes();
        let err = read_frame(&mut &bytes[..]).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("above the {MAX_FRAME_BYTES}")),
            "{err}"
        );
        // Before authentication, a much smaller bound.
        let hello_sized = 70_000u32.to_be_bytes();
        let err = read_frame_within(&mut &hello_sized[..], 64 * 1024)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("above the 65536 allowed"), "{err}");
    }

    #[tokio::test]
    async fn garbage_body_is_an_error_not_a_panic() {
        let mut bytes = 5u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"\xc1\xc1\xc1\xc1\xc1");
        assert!(matches!(
            read_frame(&mut &bytes[..]).await,
            Err(Error::InvalidData(_))
        ));
        let short = 10u32.to_be_bytes();
        assert!(matches!(
            read_frame(&mut &short[..]).await,
            Err(Error::Io { .. })
        ));
    }
}
