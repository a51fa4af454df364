//! The placement leader's lease: `<pve_root>/priv/lock/lxc_autoscale-leader`, a directory made
//! with `mkdir` (atomic on pmxcfs: of two nodes making it, one wins), holding `owner`, a small
//! JSON file with the holder's node name and the time of its last refresh. pve-ha-manager's
//! manager lock follows the same shape.
//!
//! The holder refreshes `owner` (temp file plus `rename()`) at least every `REFRESH_SECS`. A
//! lease not refreshed for `LEASE_SECS` is expired: another node moves it aside with `rename()`
//! (only one mover wins), checks it moved the expired lease it read (or puts it back), removes
//! it and races for `mkdir` again. Where pmxcfs refuses to rename a directory, the mover asks
//! pmxcfs to drop the expired lock (`utime` 0, its unlock request) instead.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Below `pve_root`: the lease directory.
pub const LEASE_DIR: &str = "priv/lock/lxc_autoscale-leader";
/// In the lease directory: who holds it.
pub const OWNER_FILE: &str = "owner";
/// A lease not refreshed for this long is expired.
pub const LEASE_SECS: i64 = 120;
/// The holder refreshes at least this often (well inside `LEASE_SECS`).
pub const REFRESH_SECS: i64 = 30;
/// pmxcfs shows `priv/` files as root-only.
const OWNER_MODE: u32 = 0o600;

/// The `owner` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub node: String,
    /// Seconds since the epoch of the last refresh.
    pub refreshed: i64,
}

/// Who holds the lease after `hold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This node: `new` when it was just taken (made, or taken over after expiry).
    Me { new: bool },
    /// Another node (its name, when its `owner` file could be read).
    Other(Option<String>),
}

/// `<pve_root>/priv/lock/lxc_autoscale-leader`.
pub fn lease_dir(pve_root: &Path) -> PathBuf {
    pve_root.join(LEASE_DIR)
}

/// Parses an `owner` file.
pub fn parse_owner(text: &str) -> Result<Owner> {
    serde_json::from_str(text).context("not a lease owner file")
}

/// The lease's owner, `None` when there is no lease or no readable `owner` in it.
pub fn read_owner(dir: &Path) -> Option<Owner> {
    let text = std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
    parse_owner(&text).ok()
}

fn write_owner(dir: &Path, owner: &Owner) -> Result<()> {
    let json = serde_json::to_vec(owner).context("cannot encode lease owner")?;
    crate::fsutil::write_atomic(&dir.join(OWNER_FILE), &json, OWNER_MODE)
}

/// Whether `owner` (`None`: an unreadable or missing `owner`, judged by the directory's mtime)
/// has expired at `now` (seconds).
fn expired(dir: &Path, owner: Option<&Owner>, now: i64) -> bool {
    let refreshed = owner.map(|o| o.refreshed).or_else(|| {
        let modified = std::fs::metadata(dir).ok()?.modified().ok()?;
        let secs = modified
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        i64::try_from(secs).ok()
    });
    refreshed.map_or(true, |at| now.saturating_sub(at) > LEASE_SECS)
}

/// The lease as one node sees it across cycles.
#[derive(Debug, Default)]
pub struct Lease {
    /// When this node last wrote `owner` (seconds), while it holds the lease.
    refreshed: Option<i64>,
}

impl Lease {
    /// Takes, keeps or leaves the lease for `node` at `now` (seconds since the epoch): makes it
    /// when there is none, refreshes it when `node` holds it and `REFRESH_SECS` passed, takes
    /// it over when it expired.
    pub fn hold(&mut self, pve_root: &Path, node: &str, now: i64) -> Result<Holder> {
        let dir = lease_dir(pve_root);
        let holder = self.try_hold(&dir, node, now);
        if !matches!(holder, Ok(Holder::Me { .. })) {
            self.refreshed = None;
        }
        holder
    }

    /// Whether the lease is due for a refresh at `now`, while this node holds it.
    pub fn refresh_due(&self, now: i64) -> bool {
        self.refreshed
            .is_some_and(|at| now.saturating_sub(at) >= REFRESH_SECS)
    }

    /// Seconds until the next refresh is due, while this node holds the lease.
    pub fn next_refresh_in(&self, now: i64) -> Option<i64> {
        self.refreshed
            .map(|at| (at + REFRESH_SECS).saturating_sub(now).max(0))
    }

    fn try_hold(&mut self, dir: &Path, node: &str, now: i64) -> Result<Holder> {
        if self.make(dir, node, now)? {
            return Ok(Holder::Me { new: true });
        }
        let owner = read_owner(dir);
        if owner.as_ref().is_some_and(|o| o.node == node) {
            if self.refreshed.map_or(true, |at| now - at >= REFRESH_SECS) {
                self.refresh(dir, node, now)?;
            }
            return Ok(Holder::Me { new: false });
        }
        if !expired(dir, owner.as_ref(), now) {
            return Ok(Holder::Other(owner.map(|o| o.node)));
        }
        if take_over(dir, node, owner.as_ref())? && self.make(dir, node, now)? {
            return Ok(Holder::Me { new: true });
        }
        Ok(Holder::Other(read_owner(dir).map(|o| o.node)))
    }

    /// `mkdir` of the lease: true when this node made it (and wrote its `owner`).
    fn make(&mut self, dir: &Path, node: &str, now: i64) -> Result<bool> {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("cannot make {}", dir.display())),
        }
        self.refresh(dir, node, now)?;
        Ok(true)
    }

    fn refresh(&mut self, dir: &Path, node: &str, now: i64) -> Result<()> {
        let owner = Owner {
            node: node.to_string(),
            refreshed: now,
        };
        write_owner(dir, &owner)?;
        self.refreshed = Some(now);
        Ok(())
    }
}

/// Moves the expired lease aside so `mkdir` can make it again. False when another node was
/// faster (the lease is gone, or what was moved is no longer the expired lease read as `seen`).
fn take_over(dir: &Path, node: &str, seen: Option<&Owner>) -> Result<bool> {
    let aside = dir.with_file_name(format!(
        "lxc_autoscale-leader.expired-{node}-{}",
        std::process::id()
    ));
    match std::fs::rename(dir, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(_) => {
            // pmxcfs's unlock request: it drops the lock only when it has expired.
            let _ = nix::sys::stat::utimes(
                dir,
                &nix::sys::time::TimeVal::new(0, 0),
                &nix::sys::time::TimeVal::new(0, 0),
            );
            return Ok(true);
        }
    }
    if read_owner(&aside).as_ref() != seen {
        // Refreshed or taken over between our read and our move: give it back.
        let _ = std::fs::rename(&aside, dir);
        return Ok(false);
    }
    std::fs::remove_dir_all(&aside)
        .with_context(|| format!("cannot remove the expired lease {}", aside.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000;

    #[test]
    fn the_first_node_makes_the_lease_and_the_others_see_it_held() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut a, mut b) = (Lease::default(), Lease::default());
        assert_eq!(
            a.hold(tmp.path(), "n1", T).unwrap(),
            Holder::Me { new: true }
        );
        assert_eq!(
            b.hold(tmp.path(), "n2", T + 1).unwrap(),
            Holder::Other(Some("n1".into()))
        );
        assert_eq!(
            a.hold(tmp.path(), "n1", T + 5).unwrap(),
            Holder::Me { new: false }
        );
        let owner = read_owner(&lease_dir(tmp.path())).unwrap();
        assert_eq!(
            owner,
            Owner {
                node: "n1".into(),
                refreshed: T
            }
        );
    }

    #[test]
    fn the_holder_refreshes_every_refresh_secs_and_keeps_it_across_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = Lease::default();
        a.hold(tmp.path(), "n1", T).unwrap();
        assert!(!a.refresh_due(T + REFRESH_SECS - 1));
        assert!(a.refresh_due(T + REFRESH_SECS));
        a.hold(tmp.path(), "n1", T + REFRESH_SECS).unwrap();
        let dir = lease_dir(tmp.path());
        assert_eq!(read_owner(&dir).unwrap().refreshed, T + REFRESH_SECS);
        // A restarted daemon on the same node finds its own lease and refreshes it.
        let mut again = Lease::default();
        assert_eq!(
            again.hold(tmp.path(), "n1", T + 100).unwrap(),
            Holder::Me { new: false }
        );
        assert_eq!(read_owner(&dir).unwrap().refreshed, T + 100);
    }

    #[test]
    fn an_expired_lease_is_taken_over_by_exactly_one_node() {
        let tmp = tempfile::tempdir().unwrap();
        Lease::default().hold(tmp.path(), "n1", T).unwrap();
        let later = T + LEASE_SECS;
        let mut b = Lease::default();
        assert_eq!(
            b.hold(tmp.path(), "n2", later).unwrap(),
            Holder::Other(Some("n1".into())),
            "at exactly LEASE_SECS it still holds"
        );
        assert_eq!(
            b.hold(tmp.path(), "n2", later + 1).unwrap(),
            Holder::Me { new: true }
        );
        let mut c = Lease::default();
        assert_eq!(
            c.hold(tmp.path(), "n3", later + 1).unwrap(),
            Holder::Other(Some("n2".into()))
        );
        let lock = tmp.path().join("priv/lock");
        let names: Vec<String> = std::fs::read_dir(&lock)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["lxc_autoscale-leader"], "nothing left aside");
    }

    #[test]
    fn a_lease_refreshed_after_it_was_read_is_put_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = lease_dir(tmp.path());
        Lease::default().hold(tmp.path(), "n1", T).unwrap();
        let stale = read_owner(&dir).unwrap();
        // n1 refreshes between n2's read and n2's move.
        Lease::default().hold(tmp.path(), "n1", T + 200).unwrap();
        assert!(!take_over(&dir, "n2", Some(&stale)).unwrap());
        assert_eq!(read_owner(&dir).unwrap().refreshed, T + 200);
    }

    #[test]
    fn a_lease_without_an_owner_file_ages_by_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = lease_dir(tmp.path());
        std::fs::create_dir_all(&dir).unwrap();
        let now = chrono::Utc::now().timestamp();
        let mut b = Lease::default();
        assert_eq!(b.hold(tmp.path(), "n2", now).unwrap(), Holder::Other(None));
        assert_eq!(
            b.hold(tmp.path(), "n2", now + LEASE_SECS + 5).unwrap(),
            Holder::Me { new: true }
        );
    }
}
