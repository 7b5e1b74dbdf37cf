//! Arbitrary bytes as the newest log segment on disk, then the whole recovery: the log opens
//! (cutting a torn tail) or refuses with an error, never panics; what it kept opens again
//! without cutting anything, and reads back record by record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spare::log::{open, segment, LogReader};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("spare-fuzz-scan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(segment::segment_path(&dir, 1), data).unwrap();
    let Ok(opened) = open(&dir, 0) else {
        return;
    };
    let tail = opened.writer.tail().lsn;
    drop(opened);
    let again = open(&dir, 0).expect("a log recovery kept opens again");
    assert!(
        again.torn.is_none(),
        "recovery cut what an earlier recovery kept"
    );
    assert_eq!(again.writer.tail().lsn, tail);
    if tail > 0 {
        let records = LogReader::new(&dir).read(1, tail, usize::MAX).unwrap();
        assert_eq!(records.len() as u64, tail);
    }
});
