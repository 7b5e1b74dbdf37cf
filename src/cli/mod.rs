pub mod backup;
pub mod bench;
pub mod bench_cluster;
pub mod bench_failover;
pub mod bench_load;
pub mod bench_suite;
pub mod certs;
pub mod inspect;
pub mod progress;
pub mod promote;
pub mod reload;
pub mod serve;
pub mod sql;
pub mod status;
pub mod verify;

/// A time in ms since the Unix epoch (JSON) as RFC 3339 UTC, or "-".
pub fn utc(ms: &serde_json::Value) -> String {
    ms.as_u64().map_or("-".into(), |ms| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string()
    })
}
