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
    assert_eq!(
        opened.replay.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
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
    assert_eq!(opened.replay.len(), 2);
    // The next append takes LSN 3 again, and the log reads back cleanly.
    drop(opened);
    let end = write_records(tmp.path(), 1, None);
    assert_eq!(end.lsn, 3);
    assert_eq!(open(tmp.path(), 0).unwrap().replay.len(), 3);
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

#[test]
fn corruption_before_the_tail_stops_with_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    write_records(tmp.path(), 3, None);
    let path = only_segment(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a payload byte of record 1: records 2 and 3 after it are intact.
    let first_len = record::decode(&bytes).unwrap().1;
    bytes[first_len - 1] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = open(tmp.path(), 0).err().expect("must refuse").to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("offset 0"), "{err}");
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
