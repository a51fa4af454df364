//! `<pve_lxc_dir>/<vmid>.conf`: a container's Proxmox config. Only the main section (before the
//! first `[section]`) describes the running allocation; `[pve:pending]` and snapshots are ignored.

use std::path::{Path, PathBuf};

use crate::model::CtConf;

/// Proxmox's memory when the `memory` line is absent, MB.
pub const DEFAULT_MEMORY_MB: u64 = 512;

/// Path of a container's conf.
pub fn conf_path(dir: &Path, vmid: u32) -> PathBuf {
    dir.join(format!("{vmid}.conf"))
}

/// Parses the main section of a conf. Unparseable values of the keys we use give an error that
/// names the key; unknown keys, comments and raw `lxc.*` keys are ignored.
pub fn parse_conf(text: &str) -> Result<CtConf, String> {
    todo!()
}
