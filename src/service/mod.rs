//! Running as a service: the lock, logging and systemd notification.

pub mod daemon;
pub mod lock;
pub mod logging;
pub mod readlog;
pub mod sdnotify;
