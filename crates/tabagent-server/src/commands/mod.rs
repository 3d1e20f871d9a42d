//! The subcommands.

pub mod bench;
pub mod models;
pub mod run;
pub mod serve;
