//! The API token: read from `api.token_file`, compared in constant time, never shown; and the
//! per-peer limit on failed attempts.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use subtle::ConstantTimeEq;

use super::http::Request;

/// Failed attempts a peer may make within `FAILURE_WINDOW` before it gets 429.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Peers tracked at most; expired entries are dropped first when full.
const MAX_PEERS: usize = 4096;

/// The secret. `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from text (tests, and the file's trimmed content).
    pub fn new(text: &str) -> Option<Token> {
        let t = text.trim();
        (!t.is_empty()).then(|| Token(t.as_bytes().to_vec()))
    }

    /// Constant-time for equal lengths; the length itself is not secret enough to matter
    /// (tokens are generated at a fixed length).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.ct_eq(presented).into()
    }
}

/// Reads the token file: it must be a regular file owned by our euid (root in production) with
/// no group or other permission bits. Errors name `api.token_file` and the path, never the content.
pub fn load_token(path: &Path) -> Result<Token> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("api.token_file: cannot read {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("api.token_file: {} is not a regular file", path.display());
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        bail!(
            "api.token_file: {} must be owned by uid {euid} (it is owned by uid {})",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "api.token_file: {} must have mode 0600 (it has {:o}); run: chmod 600 {}",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("api.token_file: cannot read {}", path.display()))?;
    Token::new(&text).with_context(|| format!("api.token_file: {} is empty", path.display()))
}

/// What the request presented: `Authorization: Bearer <t>` or `X-API-Key: <t>`. A token in the
/// query string is never looked at.
pub fn presented(req: &Request) -> Option<&str> {
    if let Some(v) = req.header("authorization") {
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Some(rest.trim());
        }
    }
    req.header("x-api-key").filter(|v| !v.is_empty())
}

/// The outcome of checking a request's credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No token needed, or the right one.
    Allowed,
    /// 401.
    Missing,
    /// 403.
    Wrong,
}

pub fn check(token: Option<&Token>, req: &Request) -> Verdict {
    let Some(token) = token else {
        return Verdict::Allowed;
    };
    match presented(req) {
        None => Verdict::Missing,
        Some(p) if token.matches(p.as_bytes()) => Verdict::Allowed,
        Some(_) => Verdict::Wrong,
    }
}

/// Failed attempts per peer (IP address or uid), in fixed one-minute windows.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    peers: Mutex<HashMap<String, (Instant, u32)>>,
}

impl FailureLimiter {
    /// Seconds until `peer` may try again, when it is over the limit.
    pub fn blocked_for(&self, peer: &str, now: Instant) -> Option<u64> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let &(start, count) = peers.get(peer)?;
        let elapsed = now.saturating_duration_since(start);
        if count < MAX_FAILURES || elapsed >= FAILURE_WINDOW {
            return None;
        }
        let left = FAILURE_WINDOW - elapsed;
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    pub fn record_failure(&self, peer: &str, now: Instant) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(peer) {
            peers.retain(|_, (start, _)| now.saturating_duration_since(*start) < FAILURE_WINDOW);
            if peers.len() >= MAX_PEERS {
                return;
            }
        }
        let entry = peers.entry(peer.to_string()).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn req(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/containers".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            query: vec![("token".into(), "s3cret".into())],
            ..Request::default()
        }
    }

    #[test]
    fn bearer_and_api_key_are_accepted_query_token_is_not() {
        let t = Token::new("s3cret\n").unwrap();
        assert_eq!(
            check(Some(&t), &req(&[("authorization", "Bearer s3cret")])),
            Verdict::Allowed
        );
        assert_eq!(
            check(Some(&t), &req(&[("x-api-key", "s3cret")])),
            Verdict::Allowed
        );
        assert_eq!(check(Some(&t), &req(&[])), Verdict::Missing);
        assert_eq!(
            check(Some(&t), &req(&[("authorization", "Basic s3cret")])),
            Verdict::Missing
        );
        assert_eq!(
            check(Some(&t), &req(&[("x-api-key", "s3cre")])),
            Verdict::Wrong
        );
        assert_eq!(
            check(Some(&t), &req(&[("authorization", "Bearer s3cretx")])),
            Verdict::Wrong
        );
        assert_eq!(check(None, &req(&[])), Verdict::Allowed);
    }

    #[test]
    fn token_debug_hides_the_secret() {
        assert_eq!(
            format!("{:?}", Token::new("s3cret").unwrap()),
            "Token(<redacted>)"
        );
    }

    #[test]
    fn eleventh_failure_within_a_minute_is_blocked_until_the_minute_ends() {
        let l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(l.blocked_for("10.0.0.1", t0), None, "after {i}");
            l.record_failure("10.0.0.1", t0);
        }
        assert_eq!(
            l.blocked_for("10.0.0.1", t0 + Duration::from_secs(15)),
            Some(45)
        );
        assert_eq!(l.blocked_for("10.0.0.2", t0), None);
        assert_eq!(l.blocked_for("10.0.0.1", t0 + FAILURE_WINDOW), None);
        l.record_failure("10.0.0.1", t0 + FAILURE_WINDOW);
        assert_eq!(l.blocked_for("10.0.0.1", t0 + FAILURE_WINDOW), None);
    }

    #[test]
    fn token_file_open_to_others_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", load_token(&p).unwrap_err());
        assert!(e.contains("api.token_file") && e.contains("0600"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_token(&p).unwrap().matches(b"s3cret"));
        std::fs::write(&p, "\n").unwrap();
        assert!(format!("{:#}", load_token(&p).unwrap_err()).contains("empty"));
    }
}
