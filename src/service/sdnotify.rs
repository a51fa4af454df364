//! systemd's notify protocol: one datagram per message to `$NOTIFY_SOCKET`. A no-op outside
//! systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// Environment variable systemd sets when `WatchdogSec=` is configured, µs.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";

/// Sends `state` (e.g. `READY=1`). Returns false when there is no socket or the send failed;
/// systemd being absent is normal, so callers do not log it.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name) {
            Ok(addr) => sock.send_to_addr(state.as_bytes(), &addr).is_ok(),
            Err(_) => false,
        }
    } else {
        sock.send_to(state.as_bytes(), &path).is_ok()
    }
}

/// How often to send `WATCHDOG=1`: half of `WatchdogSec`, or `None` when no watchdog is set.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var(WATCHDOG_USEC_ENV).ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_a_datagram_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        // Tests in this module are the only ones touching the variable.
        std::env::set_var(NOTIFY_SOCKET_ENV, &path);
        assert!(notify("READY=1"));
        std::env::remove_var(NOTIFY_SOCKET_ENV);
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!notify("READY=1"));
    }
}
