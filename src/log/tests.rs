//! Unit tests of the log on real files: CRC, torn tail, chain, corruption, segments.

use super::*;
use crate::log::record::GENESIS_CHAIN;

fn write_records(dir: &Path, n: u64, segment_bytes: Option<u64>) -> Position {
    let mut opened = open(dir, 0).expect("open log");
    if let Some(b) = segment_bytes {
        opened.writer.set_segment_target_bytes(b);
    }
    let start = opened.writer.tail().lsn;
    for i in 0..n {
        let payload = format!("txn {}", start + i).into_bytes();
        opened
            .writer
            .append(1, 1_000 + i, RecordKind::Txn, payload)
            .expect("append");
    }
    opened.writer.sync().expect("sync")
}

fn only_segment(dir: &Path) -> std::path::PathBuf {
    let segs = segment::list_segments(dir).unwrap();
    assert_eq!(segs.len(), 1);
    segment::segment_path(dir, segs[0])
}

#[test]
fn reopened_log_resumes_after_its_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let end = write_records(tmp.path(), 5, None);
    assert_eq!(end.lsn, 5);
    let opened = open(tmp.path(), 2).expect("reopen");
    assert_eq!(opened.writer.tail(), end);
    assert_eq!((opened.replay_after, opened.replay_to), (2, 5));
    assert!(opened.torn.is_none());
}

#[test]
fn torn_tail_is_cut_and_never_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    write_records(tmp.path(), 3, None);
    let path = only_segment(tmp.path());
    let full = std::fs::read(&path).unwrap();
    // Simulate a crash in the middle of writing record 3.
    std::fs::write(&path, &full[..full.len() - 4]).unwrap();
    let opened = open(tmp.path(), 0).expect("torn tail is not fatal");
    assert_eq!(opened.writer.tail().lsn, 2);
    assert!(opened.torn.is_some());
    assert_eq!(opened.replay_count(), 2);
    // The next append takes LSN 3 again, and the log reads back cleanly.
    drop(opened);
    let end = write_records(tmp.path(), 1, None);
    assert_eq!(end.lsn, 3);
    assert_eq!(open(tmp.path(), 0).unwrap().replay_count(), 3);
}

#[test]
fn corrupt_last_record_is_cut_as_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    write_records(tmp.path(), 3, None);
    let path = only_segment(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let opened = open(tmp.path(), 0).unwrap();
    assert_eq!(opened.writer.tail().lsn, 2);
}

/// Appends `n` records, each in a write of its own (one fsync each, as the primary does).
fn write_synced(dir: &Path, n: u64) -> Position {
    let mut w = open(dir, 0).expect("open log").writer;
    let mut end = w.durable();
    for i in 0..n {
        w.append(
            1,
            1_000 + i,
            RecordKind::Txn,
            format!("txn {i}").into_bytes(),
        )
        .unwrap();
        end = w.sync().unwrap();
    }
    end
}

/// Offset of the record at `index` (0-based) in a one-segment log.
fn offset_of(bytes: &[u8], index: usize) -> usize {
    segment::record_spans(Path::new("test"), bytes).unwrap()[index].0
}

#[test]
fn corruption_before_the_tail_stops_with_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    write_synced(tmp.path(), 3);
    let path = only_segment(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a payload byte of record 1: records 2 and 3 after it are intact.
    let (first, len) = segment::record_spans(&path, &bytes).unwrap()[0];
    bytes[first + len - 1] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = open(tmp.path(), 0).err().expect("must refuse").to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(&format!("offset {first}")), "{err}");
}

#[test]
fn a_flipped_length_bit_never_cuts_acknowledged_records() {
    let tmp = tempfile::tempdir().unwrap();
    write_synced(tmp.path(), 5);
    let path = only_segment(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Record 2's length now points into the middle of a later record: nothing valid
    // follows at that offset, which the older rule took for a torn tail.
    let at = offset_of(&bytes, 1);
    bytes[at] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let err = open(tmp.path(), 0).err().expect("must refuse").to_string();
    assert!(err.contains(&format!("offset {at}")), "{err}");
    assert!(err.contains("durable"), "{err}");
    // Nothing was cut: the file is as it was.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn damage_in_the_last_write_is_a_torn_tail_even_with_valid_records_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    write_synced(tmp.path(), 2);
    // Three records in one write and one fsync, as a spare stores a batch: a crash may
    // persist its pages out of order.
    write_records(tmp.path(), 3, None);
    let path = only_segment(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let third = offset_of(&bytes, 2);
    bytes[third + 9] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let opened = open(tmp.path(), 0).expect("a torn last write is not fatal");
    assert_eq!(opened.writer.tail().lsn, 2);
    assert!(opened.torn.is_some());
}

#[test]
fn a_segment_of_the_older_format_is_read_and_the_log_goes_on_in_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    // Records written back to back with no header, as before the header existed.
    let mut old = Vec::new();
    let mut chain = GENESIS_CHAIN;
    for lsn in 1..=3 {
        let r = Record::new(chain, lsn, 1, 1_000, RecordKind::Txn, vec![lsn as u8; 10]);
        chain = r.chain;
        r.encode_into(&mut old);
    }
    std::fs::write(segment::segment_path(tmp.path(), 1), &old).unwrap();
    let mut opened = open(tmp.path(), 0).unwrap();
    assert_eq!((opened.writer.tail().lsn, opened.replay_count()), (3, 3));
    opened
        .writer
        .append(1, 2_000, RecordKind::Txn, b"new".to_vec())
        .unwrap();
    opened.writer.sync().unwrap();
    let segs = segment::list_segments(tmp.path()).unwrap();
    assert_eq!(
        segs,
        vec![1, 4],
        "the old segment is closed, a new one started"
    );
    let all = LogReader::new(tmp.path()).read(1, 4, usize::MAX).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(
        segment::read_header(&segment::segment_path(tmp.path(), 1))
            .unwrap()
            .records_at,
        0
    );
}

#[test]
fn a_new_segment_whose_header_was_cut_short_is_emptied_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    write_synced(tmp.path(), 2);
    // A crash right after the next segment was created, its header half written.
    std::fs::write(segment::segment_path(tmp.path(), 3), b"SPARELOG\x02").unwrap();
    let mut opened = open(tmp.path(), 0).expect("a torn header is not fatal");
    assert!(opened.torn.is_some());
    opened
        .writer
        .append(1, 2_000, RecordKind::Txn, b"three".to_vec())
        .unwrap();
    opened.writer.sync().unwrap();
    drop(opened);
    let reopened = open(tmp.path(), 0).unwrap();
    assert_eq!(reopened.writer.tail().lsn, 3);
    assert!(reopened.torn.is_none());
}

#[test]
fn broken_chain_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    write_records(tmp.path(), 1, None);
    let path = only_segment(tmp.path());
    // Append a record that is well-formed but follows another history.
    let stray = Record::new(12345, 2, 1, 7, RecordKind::Txn, b"stray".to_vec());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(stray.encode());
    std::fs::write(&path, &bytes).unwrap();
    let err = open(tmp.path(), 0).err().expect("must refuse").to_string();
    assert!(err.contains("checksum chain"), "{err}");
}

#[test]
fn reader_follows_records_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let end = write_records(tmp.path(), 40, Some(256));
    assert!(
        segment::list_segments(tmp.path()).unwrap().len() > 3,
        "small segments roll"
    );
    let mut reader = LogReader::new(tmp.path());
    let all = reader.read(1, end.lsn, usize::MAX).unwrap();
    assert_eq!(all.len(), 40);
    let mut chain = GENESIS_CHAIN;
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.lsn, i as u64 + 1);
        assert!(r.follows(chain));
        chain = r.chain;
    }
    // Positioning in the middle, and a bounded batch.
    let some = reader.read(17, end.lsn, 1).unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(some[0].lsn, 17);
    assert_eq!(reader.record_at(33).unwrap().lsn, 33);
    // The reopened log sees every segment.
    assert_eq!(open(tmp.path(), 0).unwrap().writer.tail(), end);
}

#[test]
fn received_record_from_another_history_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_records(tmp.path(), 2, None);
    let mut opened = open(tmp.path(), 0).unwrap();
    let stray = Record::new(999, 3, 1, 7, RecordKind::Txn, b"x".to_vec());
    assert!(matches!(
        opened.writer.append_received(&[stray]),
        Err(Error::Diverged(_))
    ));
    let gap = Record::new(
        opened.writer.tail().chain,
        5,
        1,
        7,
        RecordKind::Txn,
        b"x".to_vec(),
    );
    assert!(matches!(
        opened.writer.append_received(&[gap]),
        Err(Error::InvalidData(_))
    ));
}

#[test]
fn a_summary_counts_transactions_apart_from_heartbeats() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opened = open(tmp.path(), 0).expect("open log");
    let w = &mut opened.writer;
    w.append(1, 10, RecordKind::Epoch, b"main".to_vec())
        .unwrap();
    w.append(1, 20, RecordKind::Txn, b"a".to_vec()).unwrap();
    w.append(1, 30, RecordKind::Heartbeat, Vec::new()).unwrap();
    w.append(1, 40, RecordKind::Txn, b"b".to_vec()).unwrap();
    w.append(1, 50, RecordKind::Heartbeat, Vec::new()).unwrap();
    w.sync().unwrap();
    let s = summary::summarise(tmp.path(), 1, 1, 5).unwrap();
    assert_eq!(
        (s.records, s.transactions, s.newest_commit_ms),
        (4, 2, Some(40))
    );
    assert!(s.complete && s.bytes > 0);
    let none = summary::summarise(tmp.path(), 1, 5, 5).unwrap();
    assert_eq!((none.records, none.transactions), (0, 0));
    let cut = summary::summarise(tmp.path(), 3, 1, 5).unwrap();
    assert!(
        !cut.complete,
        "records 2 are gone: the summary says it is partial"
    );
}

#[test]
fn a_damaged_header_does_not_pass_for_a_segment_of_the_older_format() {
    let tmp = tempfile::tempdir().unwrap();
    write_synced(tmp.path(), 3);
    let path = only_segment(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = open(tmp.path(), 0).err().expect("must refuse").to_string();
    assert!(err.contains("offset 0") && err.contains("durable"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
}

#[test]
fn a_torn_write_the_database_already_applied_is_refused_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    write_synced(tmp.path(), 1);
    write_records(tmp.path(), 2, None);
    let path = only_segment(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    // SQLite committed LSN 3 only once the log held it durably.
    let err = open(tmp.path(), 3).err().expect("must refuse").to_string();
    assert!(err.contains("already applied LSN 3"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
    // A database behind the damaged write lets the torn write be cut.
    assert_eq!(open(tmp.path(), 1).unwrap().writer.tail().lsn, 2);
}

#[test]
fn a_sync_mark_holds_only_with_its_segments_salt_and_its_own_offset() {
    let m = segment::mark_bytes(7, 40);
    assert!(segment::is_mark_at(&m, 7, 40));
    assert!(!segment::is_mark_at(&m, 8, 40), "another segment's salt");
    assert!(!segment::is_mark_at(&m, 7, 56), "moved elsewhere");
}

#[test]
fn bytes_after_an_lsn_shrink_to_nothing_at_the_end_and_cover_every_segment_from_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let end = write_records(tmp.path(), 400, Some(2048));
    let segments = segment::list_segments(tmp.path()).unwrap();
    assert!(segments.len() > 3, "several segments: {segments:?}");
    let total: u64 = segments
        .iter()
        .map(|&s| {
            std::fs::metadata(segment::segment_path(tmp.path(), s))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(bytes_after(tmp.path(), 0, end.lsn).unwrap(), total);
    assert_eq!(bytes_after(tmp.path(), end.lsn, end.lsn).unwrap(), 0);
    let half = bytes_after(tmp.path(), end.lsn / 2, end.lsn).unwrap();
    assert!(
        half > total / 3 && half < total * 2 / 3,
        "about half of {total}: {half}"
    );
    let mut last = u64::MAX;
    for lsn in (0..=end.lsn).step_by(7) {
        let b = bytes_after(tmp.path(), lsn, end.lsn).unwrap();
        assert!(b <= last, "fewer bytes after a later record");
        last = b;
    }
}
