pub mod bench;
pub mod bench_failover;
pub mod bench_suite;
pub mod promote;
pub mod reload;
pub mod serve;
pub mod sql;
pub mod status;
