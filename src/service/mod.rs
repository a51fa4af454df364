//! Running as a service: the loop and what wakes it, the lock, logging and systemd notification.

pub mod api;
pub mod daemon;
pub mod departures;
pub mod import;
pub mod lease;
pub mod lock;
pub mod logging;
pub mod placement;
pub mod quorum;
pub mod readlog;
pub mod sdnotify;
pub mod wake;
