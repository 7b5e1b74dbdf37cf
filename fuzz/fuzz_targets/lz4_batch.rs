//! Arbitrary bytes as a compressed batch from a peer (`RecordsLz4`), with an announced size
//! taken from the input: decompression allocates no more than the frame limit, and what it
//! yields decodes as records or is refused; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spare::log::record::decode_all;
use spare::wire::codec::decompress_batch;

fuzz_target!(|data: &[u8]| {
    let Some((len, bytes)) = data.split_first_chunk::<4>() else {
        return;
    };
    let raw_len = u32::from_le_bytes(*len);
    if let Ok(raw) = decompress_batch(bytes, raw_len) {
        assert_eq!(raw.len(), raw_len as usize);
        let _ = decode_all(&raw);
    }
});
