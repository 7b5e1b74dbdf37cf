pub mod bench;
pub mod serve;
pub mod sql;
pub mod status;
