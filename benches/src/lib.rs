//! Shared benchmark helpers (see benches/ in this crate).
