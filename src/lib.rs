//! lxc_autoscale: right-sizes CPU cores and memory of running LXC containers on a Proxmox VE node.
//!
//! A cycle is `collect` (read files into a `Snapshot`) -> `policy::decide` (pure, gives a `Plan`)
//! -> `apply` (backups, `pct set`, logs, notifications).

pub mod apply;
pub mod backup;
pub mod cgroup;
pub mod collect;
pub mod config;
pub mod demo;
pub mod events;
pub mod fsutil;
pub mod hostproc;
pub mod lock;
pub mod logging;
pub mod measure;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod pct;
pub mod policy;
pub mod prometheus;
pub mod pveconf;
pub mod replay;
pub mod sdnotify;
pub mod state;
