//! Single-instance lock: an `flock` on `lock_file`, holding the pid.
