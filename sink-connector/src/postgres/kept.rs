//! What the rejects table keeps of a record PostgreSQL or the decoder
//! refused: a bounded prefix of its bytes, their whole length and hash, and a
//! bounded detail — one huge record cannot fill the disk — and the COPY that
//! writes a batch's rejects so.

use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Statement, Transaction};

use crate::batch::{Msg, Outcome};
use crate::decode::Rejected;

/// Most bytes of a rejected record's value (and key) kept in the rejects
/// table: one huge record cannot fill the disk. `raw_length` and
/// `raw_sha256` still describe the whole value.
pub const MAX_KEPT_BYTES: usize = 1 << 20;

/// Most bytes of a reject's `detail` (PostgreSQL's message can quote the value).
pub const MAX_DETAIL_BYTES: usize = 4096;

/// What the rejects table keeps of a record's value.
pub(crate) struct Kept<'a> {
    /// At most [`MAX_KEPT_BYTES`] of it.
    pub(crate) raw: Option<&'a [u8]>,
    /// Its whole length.
    pub(crate) length: Option<i64>,
    /// The SHA-256 of the whole.
    pub(crate) sha256: Option<[u8; 32]>,
}

impl<'a> Kept<'a> {
    /// What is kept of `payload` (a record's value, or nothing).
    pub(crate) fn of(payload: Option<&'a [u8]>) -> Self {
        use sha2::Digest;
        Self {
            raw: payload.map(|p| prefix(p, MAX_KEPT_BYTES)),
            length: payload.map(|p| i64::try_from(p.len()).unwrap_or(i64::MAX)),
            sha256: payload.map(|p| sha2::Sha256::digest(p).into()),
        }
    }
}

/// The first `max` bytes of `bytes` (all of them when shorter).
pub(crate) fn prefix(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Step 4 of a batch: the rejects, binary COPY, each value cut to [`MAX_KEPT_BYTES`].
pub(crate) async fn copy_rejects(
    tx: &Transaction<'_>,
    copy: &Statement,
    msgs: &[Msg],
    rejects: &[(usize, &Rejected)],
    out: &mut Outcome,
) -> Result<(), tokio_postgres::Error> {
    if rejects.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(copy).await?;
    let types = [
        Type::TEXT,
        Type::INT4,
        Type::INT8,
        Type::BYTEA,
        Type::BYTEA,
        Type::INT8,
        Type::BYTEA,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for &(i, r) in rejects {
        let m = &msgs[i];
        let reason = r.reason.as_str();
        let topic: &str = &m.topic;
        let kept = Kept::of(m.payload.as_deref());
        writer
            .as_mut()
            .write(&[
                &topic,
                &m.partition,
                &m.offset,
                &m.key.as_deref().map(|k| prefix(k, MAX_KEPT_BYTES)),
                &kept.raw,
                &kept.length,
                &kept.sha256.as_ref().map(|h| &h[..]),
                &reason,
                &truncate_str(&r.detail, MAX_DETAIL_BYTES),
                &m.timestamp,
            ])
            .await?;
        *out.rejected.entry(reason).or_default() += 1;
    }
    writer.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_keep_a_bounded_prefix_with_the_whole_length_and_hash() {
        let big = vec![b'x'; MAX_KEPT_BYTES + 10];
        let kept = Kept::of(Some(&big));
        assert_eq!(kept.raw.map(<[u8]>::len), Some(MAX_KEPT_BYTES));
        assert_eq!(kept.length, Some(big.len() as i64));
        assert_eq!(kept.sha256.map(|h| h[0]), Some(0x54));
        let none = Kept::of(None);
        assert!(none.raw.is_none() && none.length.is_none() && none.sha256.is_none());
        assert_eq!(truncate_str("aé", 2), "a");
        assert_eq!(truncate_str("abc", 9), "abc");
    }
}
