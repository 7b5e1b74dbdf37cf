pub mod bench;
pub mod reload;
pub mod serve;
pub mod sql;
pub mod status;
