//! `state_file`: previous samples kept across restarts (JSON, written atomically).
