//! Network namespace helpers (in progress).
