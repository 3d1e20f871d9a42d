//! The subcommands.

pub mod models;
pub mod run;
pub mod serve;
