//! sd_notify(3) for both daemons, never blocking.
//!
//! The `sd-notify` crate sends with a blocking `send`: when the notify socket's queue is
//! full (systemd busy, or a test that stops reading; `net.unix.max_dgram_qlen` is 10 by
//! default) the VRRP loop would stop in the middle of a handover. Here every message is
//! sent with `MSG_DONTWAIT`; one that does not fit is dropped (the next WATCHDOG=1 or
//! STATUS= follows soon). `NOTIFY_SOCKET` may be a path or an abstract name (`@...`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

pub use sd_notify::NotifyState;

/// Send these states to systemd if `NOTIFY_SOCKET` is set. Errors (no systemd, a full
/// queue) are returned for logging; callers carry on.
pub fn notify(states: &[NotifyState<'_>]) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&path)?,
    };
    let mut msg = String::new();
    for s in states {
        msg.push_str(&s.to_string());
        msg.push('\n');
    }
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    sock.send_to_addr(msg.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        let t0 = std::time::Instant::now();
        let mut dropped = 0;
        for _ in 0..100 {
            if notify(&[NotifyState::Watchdog]).is_err() {
                dropped += 1;
            }
        }
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        assert!(dropped > 0, "the queue never filled");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
    }
}
