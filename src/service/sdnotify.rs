//! systemd's notify protocol (through the `sd-notify` crate) and a watchdog that pings only while
//! the service loop makes progress. Both are no-ops outside systemd.
//!
//! The watchdog: the loop calls `Watchdog::progress` at every step (before each collect, before
//! each `pct` call, on every wake while idle). Each call extends a lease by `STEP_BUDGET`, the
//! longest a single step may take: one `pct` call with its 30 s timeout. A pinger thread sends
//! `WATCHDOG=1` every half `WatchdogSec` while the lease runs, so a cycle of many slow `pct` calls
//! keeps the service alive, and a loop stuck anywhere (a `pct` that outlives its timeout, a hung
//! read of /etc/pve) stops the pings within `STEP_BUDGET`, and systemd restarts it.
//!
//! Until `Watchdog::started` (READY=1 after the first cycle), each ping also sends
//! `EXTEND_TIMEOUT_USEC`: a first cycle that applies many slow `pct` calls would otherwise
//! outlive `TimeoutStartSec` and be killed in the middle of its work, while a start stuck in one
//! place still fails once the lease lapses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use sd_notify::NotifyState;

use crate::act::pct::PCT_TIMEOUT;

/// How long the loop may go without `Watchdog::progress` before the pings stop: a `pct` call
/// (`PCT_TIMEOUT`), one second to read its stderr, and its backup write, with room to spare.
pub const STEP_BUDGET: Duration = PCT_TIMEOUT.saturating_add(Duration::from_secs(15));

/// Sends `states` to `$NOTIFY_SOCKET`. Returns false when there is no socket or the send failed;
/// systemd being absent is normal, so callers do not log it.
pub fn notify(states: &[NotifyState]) -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some() && sd_notify::notify(false, states).is_ok()
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` systemd asks to accompany it.
pub fn notify_reloading() -> bool {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// The interval systemd asked for (`WatchdogSec=`, via `WATCHDOG_USEC` and `WATCHDOG_PID`).
pub fn watchdog_timeout() -> Option<Duration> {
    let mut usec = 0;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0).then(|| Duration::from_micros(usec))
}

/// When the pings stop unless the loop shows progress again.
#[derive(Debug)]
struct Lease {
    until: Mutex<Instant>,
    /// READY=1 not yet sent: the pings also extend the start timeout.
    starting: AtomicBool,
}

impl Lease {
    fn renew(&self, now: Instant) {
        if let Ok(mut until) = self.until.lock() {
            *until = now.checked_add(STEP_BUDGET).unwrap_or(now);
        }
    }

    fn runs_at(&self, now: Instant) -> bool {
        self.until.lock().is_ok_and(|until| now < *until)
    }
}

/// The loop's side of the watchdog. Disabled (every call a no-op) when systemd set none.
#[derive(Debug, Clone, Default)]
pub struct Watchdog {
    lease: Option<Arc<Lease>>,
    /// Half of `WatchdogSec`.
    ping_every: Duration,
}

impl Watchdog {
    /// The watchdog systemd asked for, with its pinger thread started; disabled when none.
    pub fn from_env() -> Watchdog {
        match watchdog_timeout() {
            Some(timeout) => {
                let ping_every = timeout / 2;
                Watchdog::start(ping_every, move |starting| {
                    notify(&ping_states(starting, ping_every));
                })
            }
            None => Watchdog::default(),
        }
    }

    /// A watchdog that calls `ping(starting)` every `ping_every` while the lease runs, `starting`
    /// until `started`. The thread ends when the last `Watchdog` clone is dropped.
    pub fn start(ping_every: Duration, ping: impl Fn(bool) + Send + 'static) -> Watchdog {
        let lease = Arc::new(Lease {
            until: Mutex::new(Instant::now()),
            starting: AtomicBool::new(true),
        });
        lease.renew(Instant::now());
        let weak: Weak<Lease> = Arc::downgrade(&lease);
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(ping_every);
                let Some(lease) = weak.upgrade() else {
                    return;
                };
                if lease.runs_at(Instant::now()) {
                    ping(lease.starting.load(Ordering::Relaxed));
                }
            });
        Watchdog {
            // Without the thread there are no pings; systemd then restarts the service, which is
            // the honest outcome for a process that cannot start a thread.
            lease: spawned.is_ok().then_some(lease),
            ping_every,
        }
    }

    /// The loop made progress: pings go on for another `STEP_BUDGET`.
    pub fn progress(&self) {
        if let Some(lease) = &self.lease {
            lease.renew(Instant::now());
        }
    }

    /// READY=1 was sent: the pings no longer extend the start timeout.
    pub fn started(&self) {
        if let Some(lease) = &self.lease {
            lease.starting.store(false, Ordering::Relaxed);
        }
    }

    /// How often an idle loop must wake to call `progress`; `None` when disabled.
    pub fn idle_wake(&self) -> Option<Duration> {
        self.lease
            .as_ref()
            .map(|_| self.ping_every.min(STEP_BUDGET / 2))
    }
}

/// What a ping sends: `WATCHDOG=1`, and while starting an extension of the start timeout by two
/// ping intervals, so that it lasts until the next ping and lapses soon after the pings stop.
fn ping_states(starting: bool, ping_every: Duration) -> Vec<NotifyState<'static>> {
    let mut states = vec![NotifyState::Watchdog];
    if starting {
        let usec = u32::try_from(ping_every.saturating_mul(2).as_micros()).unwrap_or(u32::MAX);
        states.push(NotifyState::ExtendTimeoutUsec(usec));
    }
    states
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn sends_a_datagram_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        // Tests in this module are the only ones touching the variable.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify(&[
            NotifyState::Ready,
            NotifyState::Status("cycle done")
        ]));
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=cycle done\n");
        assert!(!notify(&[NotifyState::Ready]));
    }

    #[test]
    fn lease_runs_for_the_step_budget_after_progress_and_then_lapses() {
        let t0 = Instant::now();
        let lease = Lease {
            until: Mutex::new(t0),
            starting: AtomicBool::new(true),
        };
        assert!(!lease.runs_at(t0));
        lease.renew(t0);
        assert!(lease.runs_at(t0 + PCT_TIMEOUT + Duration::from_secs(1)));
        assert!(lease.runs_at(t0 + STEP_BUDGET - Duration::from_millis(1)));
        assert!(!lease.runs_at(t0 + STEP_BUDGET));
        lease.renew(t0 + STEP_BUDGET);
        assert!(lease.runs_at(t0 + STEP_BUDGET));
    }

    #[test]
    fn a_disabled_watchdog_never_asks_the_loop_to_wake() {
        let w = Watchdog::default();
        w.progress();
        assert_eq!(w.idle_wake(), None);
    }

    #[test]
    fn an_enabled_watchdog_wakes_an_idle_loop_before_the_lease_lapses() {
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Watchdog::start(Duration::from_millis(1), move |_| {
            let _ = tx.send(());
        });
        assert_eq!(w.idle_wake(), Some(Duration::from_millis(1)));
        // The lease runs from the start: the pinger pings.
        rx.recv().unwrap();
        let slow = Watchdog::start(Duration::from_secs(120), |_| {});
        assert_eq!(slow.idle_wake(), Some(STEP_BUDGET / 2));
    }

    #[test]
    fn pings_extend_the_start_timeout_until_started_and_then_only_ping() {
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Watchdog::start(Duration::from_millis(1), move |starting| {
            let _ = tx.send(starting);
        });
        assert!(rx.recv().unwrap(), "the first pings come while starting");
        w.started();
        // Pings already under way may still say starting; every one after the switch does not.
        assert!(
            (0..100).any(|_| !rx.recv().unwrap()),
            "still extending the start timeout after started()"
        );
        for _ in 0..5 {
            assert!(!rx.recv().unwrap());
        }
    }

    #[test]
    fn a_ping_while_starting_extends_the_start_timeout_by_two_ping_intervals() {
        let text = |states: &[NotifyState<'_>]| {
            states.iter().map(|s| format!("{s}\n")).collect::<String>()
        };
        let every = Duration::from_secs(30);
        assert_eq!(
            text(&ping_states(true, every)),
            "WATCHDOG=1\nEXTEND_TIMEOUT_USEC=60000000\n"
        );
        assert_eq!(text(&ping_states(false, every)), "WATCHDOG=1\n");
    }
}
