//! Carries out a `Plan`: backup, `pct set`, log, count, notify. Only a zero exit status counts.
