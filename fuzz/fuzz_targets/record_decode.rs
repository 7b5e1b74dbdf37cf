//! Arbitrary bytes as log records: decoding returns a record or says why not, never panics,
//! never allocates past the payload bound; a decoded record encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spare::log::record::{decode, decode_all};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((record, len)) = decode(rest) {
        assert_eq!(
            record.encode(),
            &rest[..len],
            "a record re-encodes to its bytes"
        );
        rest = &rest[len..];
    }
    let _ = decode_all(data);
});
