//! Ports for a test's own listeners.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick, from the
/// ephemeral range), and never one this process was given before: the kernel may hand a
/// just-released port out again, and a test that asks for a service port and then a
/// stats port would get the same one twice. Panics when nothing can be bound there.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let p = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"));
        if given.insert(p) {
            return p;
        }
    }
    panic!("no new free port on 127.0.0.1 after 1000 tries");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, not two: two in parallel race each other for the kernel's picks (the
    /// second bind of a port the other test was just given fails).
    #[test]
    fn a_free_port_can_be_bound_and_is_never_given_twice() {
        let p = free_port();
        assert_ne!(p, 0);
        drop(TcpListener::bind(("127.0.0.1", p)).unwrap());
        let mut ports: BTreeSet<u16> = (0..200).map(|_| free_port()).collect();
        ports.insert(p);
        assert_eq!(ports.len(), 201);
    }
}
