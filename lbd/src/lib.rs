//! lbd: the L4 TCP proxy (in progress).
