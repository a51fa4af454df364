//! Locate, then parse: host files into a `Snapshot`. A vanished cgroup is no data, not an error.

pub mod cgroup;
pub mod cluster;
pub mod collect;
pub mod hostfiles;
pub mod hostproc;
pub mod measure;
pub mod pveconf;
pub mod snapshot;
pub mod watch;
