//! End-to-end test support (see tests/ in this crate).
