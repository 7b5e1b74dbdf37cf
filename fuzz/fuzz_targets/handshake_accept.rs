//! Arbitrary bytes from a would-be peer: the acceptor's handshake refuses or admits, never
//! panics. (It cannot admit: the bytes would have to prove the cluster secret.)
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use spare::net::handshake::{accept, Admission, Identity, Streams};
use tokio::io::AsyncWriteExt;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 20);
        let _ = theirs.write_all(data).await;
        drop(theirs);
        let me = Identity {
            cluster: "fuzz".into(),
            name: "lan-1".into(),
            secret: Arc::new(b"fuzz-secret-0123456789".to_vec()),
            tls: None,
        };
        let members = vec!["main".to_string()];
        let admission = Admission {
            streams: Streams::Follow {
                epoch: 1,
                primary: "main",
            },
            members: &members,
        };
        let admitted = accept(&mut ours, &me, 1, admission).await;
        assert!(
            admitted.is_err(),
            "random bytes passed the secret challenge"
        );
    });
});
