//! What wakes the service loop: one channel. The signal thread sends `Stop` and `Reload`; the
//! loop's own `recv_timeout` is the cycle timer. Other producers (the API) add a variant and get a
//! `Sender` from `Inbox::sender`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::debug;

use crate::service::api::runtime::ApiMsg;

/// A message to the service loop. Handled between cycles, in arrival order; a `Stop` also
/// interrupts the sampling window and is seen by `apply` between two `pct` calls.
#[derive(Debug)]
pub enum LoopMsg {
    /// SIGTERM or SIGINT: finish the `pct` call in flight, then exit.
    Stop,
    /// SIGHUP: reload the config (and reopen the log file).
    Reload,
    /// From the REST API: a quick change to run through the apply path, or a finished task.
    Api(ApiMsg),
}

/// The loop's end of the channel, plus the stop flag the signal thread sets before it sends
/// `Stop` (checked where the loop cannot block on the channel: between `pct` calls).
pub struct Inbox {
    tx: Sender<LoopMsg>,
    rx: Receiver<LoopMsg>,
    stop: Arc<AtomicBool>,
    /// Messages that arrived during a sampling window, kept for the next pause between cycles.
    deferred: VecDeque<LoopMsg>,
}

impl Inbox {
    /// A channel with no producer yet.
    pub fn new() -> Inbox {
        let (tx, rx) = mpsc::channel();
        Inbox {
            tx,
            rx,
            stop: Arc::new(AtomicBool::new(false)),
            deferred: VecDeque::new(),
        }
    }

    /// Starts the thread that turns SIGTERM/SIGINT into `Stop` and SIGHUP into `Reload`. The
    /// handlers are in place when this returns.
    pub fn listen_for_signals(&self) -> Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
            .context("cannot install handlers for SIGTERM, SIGINT and SIGHUP")?;
        let tx = self.tx.clone();
        let stop = Arc::clone(&self.stop);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    let msg = if sig == SIGHUP {
                        LoopMsg::Reload
                    } else {
                        stop.store(true, Ordering::SeqCst);
                        // After the store: whoever reads this line knows apply will see the stop.
                        debug!(
                            signal = sig,
                            "stop requested: exiting after the pct call in flight, if any"
                        );
                        LoopMsg::Stop
                    };
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
            })
            .context("cannot start the signal thread")?;
        Ok(())
    }

    /// Another producer's end of the channel.
    pub fn sender(&self) -> Sender<LoopMsg> {
        self.tx.clone()
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits out a sampling window of `d`. Returns false as soon as a `Stop` arrives; other
    /// messages are deferred to the next pause between cycles.
    pub fn wait_window(&mut self, d: Duration) -> bool {
        let end = Instant::now().checked_add(d);
        loop {
            if self.stopping() {
                return false;
            }
            let left = end.map_or(d, |end| end.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return true;
            }
            match self.rx.recv_timeout(left) {
                Ok(LoopMsg::Stop) => {
                    self.stop.store(true, Ordering::SeqCst);
                    return false;
                }
                Ok(msg) => self.deferred.push_back(msg),
                // The inbox holds a sender itself, so the channel never disconnects.
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return true,
            }
        }
    }

    /// The next message: a deferred one first, else one that arrives before `until` (`None` =
    /// no deadline) or before `wake`, when given, so the caller can show it is alive. `None` when
    /// the time is up.
    pub fn next(&mut self, until: Option<Instant>, wake: Option<Duration>) -> Option<LoopMsg> {
        if let Some(msg) = self.deferred.pop_front() {
            return Some(msg);
        }
        let left = until.map(|until| until.saturating_duration_since(Instant::now()));
        let msg = match (left, wake) {
            (Some(left), Some(wake)) => self.rx.recv_timeout(left.min(wake)).ok(),
            (Some(t), None) | (None, Some(t)) => self.rx.recv_timeout(t).ok(),
            (None, None) => self.rx.recv().ok(),
        };
        if matches!(msg, Some(LoopMsg::Stop)) {
            self.stop.store(true, Ordering::SeqCst);
        }
        msg
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_ends_a_sampling_window_and_other_messages_wait_for_the_pause() {
        let mut inbox = Inbox::new();
        let tx = inbox.sender();
        tx.send(LoopMsg::Reload).unwrap();
        tx.send(LoopMsg::Stop).unwrap();
        // A window far longer than any test: only the Stop can end it.
        assert!(!inbox.wait_window(Duration::from_secs(3600)));
        let far = Some(Instant::now() + Duration::from_secs(3600));
        assert!(matches!(inbox.next(far, None), Some(LoopMsg::Reload)));
    }

    #[test]
    fn a_window_without_messages_runs_out() {
        let mut inbox = Inbox::new();
        assert!(inbox.wait_window(Duration::ZERO));
        assert!(inbox.next(Some(Instant::now()), None).is_none());
    }

    #[test]
    fn messages_come_in_arrival_order() {
        let mut inbox = Inbox::new();
        let tx = inbox.sender();
        tx.send(LoopMsg::Reload).unwrap();
        tx.send(LoopMsg::Stop).unwrap();
        let far = Some(Instant::now() + Duration::from_secs(3600));
        assert!(matches!(inbox.next(far, None), Some(LoopMsg::Reload)));
        assert!(matches!(inbox.next(far, None), Some(LoopMsg::Stop)));
    }
}
