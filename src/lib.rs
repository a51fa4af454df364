//! lxc_autoscale: right-sizes CPU cores and memory of running LXC containers on a Proxmox VE node.
//!
//! A cycle is `read` (files into a `Snapshot`) -> `decide` (pure, gives a `Plan`) -> `act`
//! (backups, `pct set`, notifications) + `record` (state, events, metrics). `service` runs that
//! loop; `commands` are the one-shot subcommands. An import only ever runs down this list:
//! commands -> service -> act -> record -> decide -> read -> config/fsutil (`tests/layers.rs`).

pub mod act;
pub mod commands;
pub mod config;
pub mod decide;
pub mod fsutil;
pub mod read;
pub mod record;
pub mod service;
