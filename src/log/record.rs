//! One record of the replication log and its byte format.
//!
//! ```text
//! offset size field
//!  0      4   body length (u32 LE): bytes from `lsn` to the end of the payload
//!  4      4   CRC32C (u32 LE) of the body
//!  8      8   lsn        u64 LE
//! 16      8   epoch      u64 LE
//! 24      8   commit time, ms since the Unix epoch, u64 LE
//! 32      8   chain      u64 LE: running checksum of the whole history up to this record
//! 40      1   kind
//! 41      …   payload
//! ```
//!
//! The chain is `first 8 bytes of SHA-256(previous chain, lsn, epoch, time, kind, payload)`:
//! two nodes with the same (LSN, chain) hold the same history, which is how a spare's
//! position is checked against the primary's log. Spares store records byte for byte as the
//! primary wrote them, so the CRC protects a record end to end, across the network too.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Bytes before the body: length and CRC.
pub const FRAME_PREFIX_BYTES: usize = 8;
/// Fixed part of the body: lsn, epoch, time, chain, kind.
pub const BODY_FIXED_BYTES: usize = 8 + 8 + 8 + 8 + 1;
/// Largest payload a record may carry. A transaction whose changeset is larger is refused
/// with a clear error rather than written; this also bounds what a reader allocates for a
/// length read from a possibly corrupt file.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;
/// Chain value before the first record of a history.
pub const GENESIS_CHAIN: u64 = 0;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// Start of an epoch: payload names the primary that leads it.
    Epoch = 1,
    /// One committed transaction: schema changes as SQL, row changes as a changeset.
    Txn = 2,
    /// Written by an idle primary so lag in seconds stays truthful.
    Heartbeat = 3,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordKind::Epoch),
            2 => Some(RecordKind::Txn),
            3 => Some(RecordKind::Heartbeat),
            _ => None,
        }
    }
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    pub epoch: u64,
    pub time_ms: u64,
    pub chain: u64,
    pub kind: RecordKind,
    pub payload: Vec<u8>,
}

/// Computes the chain value of a record that follows `prev_chain`.
pub fn next_chain(
    prev_chain: u64,
    lsn: u64,
    epoch: u64,
    time_ms: u64,
    kind: RecordKind,
    payload: &[u8],
) -> u64 {
    let mut h = Sha256::new();
    h.update(prev_chain.to_le_bytes());
    h.update(lsn.to_le_bytes());
    h.update(epoch.to_le_bytes());
    h.update(time_ms.to_le_bytes());
    h.update([kind as u8]);
    h.update(payload);
    let digest = h.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("SHA-256 digest has 32 bytes"))
}

impl Record {
    /// Builds the record that follows `prev_chain`, computing its chain.
    pub fn new(
        prev_chain: u64,
        lsn: u64,
        epoch: u64,
        time_ms: u64,
        kind: RecordKind,
        payload: Vec<u8>,
    ) -> Self {
        let chain = next_chain(prev_chain, lsn, epoch, time_ms, kind, &payload);
        Record {
            lsn,
            epoch,
            time_ms,
            chain,
            kind,
            payload,
        }
    }

    /// Whether this record correctly follows a history ending with `prev_chain`.
    pub fn follows(&self, prev_chain: u64) -> bool {
        self.chain
            == next_chain(
                prev_chain,
                self.lsn,
                self.epoch,
                self.time_ms,
                self.kind,
                &self.payload,
            )
    }

    /// Size of the encoded record in bytes.
    pub fn encoded_len(&self) -> usize {
        FRAME_PREFIX_BYTES + BODY_FIXED_BYTES + self.payload.len()
    }

    /// Appends the encoded record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.payload.len() <= MAX_PAYLOAD_BYTES,
            "payload of {} bytes exceeds MAX_PAYLOAD_BYTES",
            self.payload.len()
        );
        let body_len = (BODY_FIXED_BYTES + self.payload.len()) as u32;
        let start = out.len();
        out.extend_from_slice(&body_len.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.lsn.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&self.chain.to_le_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.payload);
        let crc = crc32c::crc32c(&out[start + FRAME_PREFIX_BYTES..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }
}

/// Why bytes do not hold a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the record announces: a write that was cut off.
    Truncated,
    /// The bytes are all there but wrong (CRC mismatch, impossible length or kind).
    Corrupt(String),
}

/// Reads the body length announced at the start of `buf`, if it is plausible.
pub fn announced_len(prefix: &[u8; FRAME_PREFIX_BYTES]) -> std::result::Result<usize, DecodeError> {
    let body_len = u32::from_le_bytes(prefix[..4].try_into().expect("4 bytes")) as usize;
    if !(BODY_FIXED_BYTES..=BODY_FIXED_BYTES + MAX_PAYLOAD_BYTES).contains(&body_len) {
        return Err(DecodeError::Corrupt(format!(
            "impossible record length {body_len}"
        )));
    }
    Ok(FRAME_PREFIX_BYTES + body_len)
}

/// Decodes one record from the start of `buf`; returns it and its encoded length.
pub fn decode(buf: &[u8]) -> std::result::Result<(Record, usize), DecodeError> {
    let prefix: &[u8; FRAME_PREFIX_BYTES] = buf
        .get(..FRAME_PREFIX_BYTES)
        .ok_or(DecodeError::Truncated)?
        .try_into()
        .expect("8 bytes");
    let total = announced_len(prefix)?;
    let frame = buf.get(..total).ok_or(DecodeError::Truncated)?;
    let body = &frame[FRAME_PREFIX_BYTES..];
    let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != crc {
        return Err(DecodeError::Corrupt("CRC mismatch".into()));
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let kind = RecordKind::from_byte(body[32])
        .ok_or_else(|| DecodeError::Corrupt(format!("unknown record kind {}", body[32])))?;
    let record = Record {
        lsn: u64_at(0),
        epoch: u64_at(8),
        time_ms: u64_at(16),
        chain: u64_at(24),
        kind,
        payload: body[BODY_FIXED_BYTES..].to_vec(),
    };
    Ok((record, total))
}

/// Decodes a buffer that must hold exactly whole records (a batch received from a peer).
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (record, len) = decode(buf)
            .map_err(|e| Error::InvalidData(format!("record {} of a batch: {e:?}", out.len())))?;
        out.push(record);
        buf = &buf[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(prev: u64, lsn: u64) -> Record {
        Record::new(
            prev,
            lsn,
            1,
            1_700_000_000_000 + lsn,
            RecordKind::Txn,
            format!("payload {lsn}").into_bytes(),
        )
    }

    #[test]
    fn record_round_trips_through_its_encoding() {
        let r = sample(GENESIS_CHAIN, 1);
        let bytes = r.encode();
        assert_eq!(bytes.len(), r.encoded_len());
        assert_eq!(decode(&bytes), Ok((r, bytes.len())));
    }

    #[test]
    fn flipped_payload_bit_fails_the_crc() {
        let mut bytes = sample(GENESIS_CHAIN, 1).encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::Corrupt("CRC mismatch".into()))
        );
    }

    #[test]
    fn cut_record_is_reported_as_truncated() {
        let bytes = sample(GENESIS_CHAIN, 1).encode();
        assert_eq!(
            decode(&bytes[..bytes.len() - 3]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(decode(&bytes[..5]), Err(DecodeError::Truncated));
    }

    #[test]
    fn impossible_length_is_corrupt_not_an_allocation() {
        let mut bytes = sample(GENESIS_CHAIN, 1).encode();
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bytes), Err(DecodeError::Corrupt(_))));
    }

    #[test]
    fn chain_links_each_record_to_the_whole_history_before_it() {
        let a = sample(GENESIS_CHAIN, 1);
        let b = sample(a.chain, 2);
        assert!(b.follows(a.chain));
        // The same record content after a different history has a different chain.
        let other_a = Record::new(GENESIS_CHAIN, 1, 1, 5, RecordKind::Txn, b"other".to_vec());
        assert!(!b.follows(other_a.chain));
        let b_elsewhere = sample(other_a.chain, 2);
        assert_ne!(b.chain, b_elsewhere.chain);
    }
}
