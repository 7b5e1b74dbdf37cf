//! Arbitrary bytes as a stream of peer frames: the decoder returns frames or an error, never
//! panics, never allocates beyond MAX_FRAME_BYTES.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut input = data;
        while spare::wire::read_frame(&mut input).await.is_ok() {}
    });
});
