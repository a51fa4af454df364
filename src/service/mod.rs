//! Running as a service: the lock, logging and systemd notification.

pub mod api;
pub mod daemon;
pub mod lock;
pub mod logging;
pub mod sdnotify;
