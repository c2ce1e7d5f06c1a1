//! Daemon wiring (in progress).
