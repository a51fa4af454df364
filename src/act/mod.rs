//! Carrying out a plan: backups first, then `pct`, then notifications.

pub mod apply;
pub mod backup;
pub mod ctrecord;
pub mod notify;
pub mod pct;
