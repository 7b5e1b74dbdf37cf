//! Arbitrary bytes as the body of `POST /v1/execute` and `POST /v1/query`: parsed into a
//! request or refused with a message, never a panic; an accepted write passes the request
//! checks and holds no NUL in its SQL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spare::http::body::{query, write_request};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = write_request(data) {
        request.validate().expect("an accepted request is valid");
        assert!(request.statements.iter().all(|s| !s.sql.contains('\0')));
    }
    if let Ok(q) = query(data) {
        assert!(!q.statement.sql.contains('\0'));
    }
});
