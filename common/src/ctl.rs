//! Control socket protocol (in progress).
