//! I/O shell (in progress).
