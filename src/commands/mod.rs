//! One-shot subcommands.

pub mod check_config;
pub mod demo;
pub mod history;
pub mod nab;
pub mod place;
pub mod quality;
pub mod rebaseline;
pub mod replay;
pub mod replay_cmd;
pub mod rollback;
pub mod status;
