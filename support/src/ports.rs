//! Ports for a test's own listeners.

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick, from the
/// ephemeral range). Panics when nothing can be bound there.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_can_be_bound() {
        let p = free_port();
        assert_ne!(p, 0);
        TcpListener::bind(("127.0.0.1", p)).unwrap();
    }
}
