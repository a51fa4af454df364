//! Human-readable log to stderr (journald) and `log_file`.
