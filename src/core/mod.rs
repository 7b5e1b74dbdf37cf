//! Pure protocol decisions: no I/O, no actix, no clock reads (time is passed in). The actors
//! call these and carry out what they return, so the rules are tested deterministically.

pub mod alerts;
pub mod apply_gate;
pub mod backup_retention;
pub mod commit_rule;
pub mod feeder;
pub mod lag;
pub mod lease;
pub mod members;
pub mod position;
pub mod promotion;
pub mod rate;
pub mod role;
pub mod voter;

#[cfg(test)]
mod sim;
