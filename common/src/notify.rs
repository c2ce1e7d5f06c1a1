//! sd_notify(3) for both daemons, never blocking.
//!
//! The `sd-notify` crate sends with a blocking `send`: when the notify socket's queue is
//! full (systemd busy, or a test that stops reading; `net.unix.max_dgram_qlen` is 10 by
//! default) the VRRP loop would stop in the middle of a handover. Here every message is
//! sent with `MSG_DONTWAIT`; one that does not fit is dropped (the next WATCHDOG=1 or
//! STATUS= follows soon). `NOTIFY_SOCKET` may be a path or an abstract name (`@...`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub use sd_notify::NotifyState;

/// Send these states to systemd if `NOTIFY_SOCKET` is set. Errors (no systemd, a full
/// queue) are returned for logging; callers carry on.
pub fn notify(states: &[NotifyState<'_>]) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let addr = socket_addr(&path)?;
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    sock.send_to_addr(message(states).as_bytes(), &addr)?;
    Ok(())
}

fn socket_addr(path: &std::ffi::OsStr) -> std::io::Result<SocketAddr> {
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path);
    match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(path),
    }
}

fn message(states: &[NotifyState<'_>]) -> String {
    let mut msg = String::new();
    for s in states {
        msg.push_str(&s.to_string());
        msg.push('\n');
    }
    msg
}

/// A message that must not be dropped (`MAINPID=` on an upgrade: if systemd missed it, the
/// old process's exit would end the unit): sent again while the queue is full, for up to
/// `limit`. `Ok(false)`: no systemd to tell. An error means systemd did not get it.
pub fn notify_reliably(states: &[NotifyState<'_>], limit: Duration) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let deadline = Instant::now() + limit;
    let addr = socket_addr(&path)?;
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let msg = message(states);
    retry(deadline, || {
        sock.send_to_addr(msg.as_bytes(), &addr).map(drop)
    })?;
    Ok(true)
}

/// sd_notify_barrier(3): returns once systemd has processed every message this process
/// sent before (`Ok(false)`: no systemd). `BARRIER=1` carries the write end of a pipe;
/// systemd closes it after the messages queued before it, so the read end sees
/// end-of-file.
pub fn barrier(limit: Duration) -> std::io::Result<bool> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let deadline = Instant::now() + limit;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name)?,
        None => UnixAddr::new(path.as_os_str())?,
    };
    let sock = UnixDatagram::unbound()?;
    let (rd, wr) = nix::unistd::pipe()?;
    let fds = [wr.as_raw_fd()];
    retry(deadline, || {
        sendmsg(
            sock.as_raw_fd(),
            &[std::io::IoSlice::new(b"BARRIER=1\n")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_DONTWAIT,
            Some(&addr),
        )
        .map(drop)
        .map_err(std::io::Error::from)
    })?;
    drop(wr);
    let mut rd = std::fs::File::from(rd);
    nix::fcntl::fcntl(
        &rd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    let mut buf = [0u8; 8];
    loop {
        match std::io::Read::read(&mut rd, &mut buf) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("systemd did not confirm within {limit:?} (BARRIER=1)"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Retry `f` while it would block, until `deadline`.
fn retry(deadline: Instant, mut f: impl FnMut() -> std::io::Result<()>) -> std::io::Result<()> {
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NOTIFY_SOCKET is the process's: one test at a time sets it.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_full_queue_does_not_block() {
        let _env = ENV
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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

    /// What systemd does with a barrier: read the message, close the descriptor it
    /// carries. `barrier` returns only then.
    #[test]
    fn a_barrier_returns_once_systemd_closed_it() {
        let _env = ENV
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let fake = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"MAINPID=42\n");
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let msg = recvmsg::<UnixAddr>(
                rx.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )
            .unwrap();
            let mut fds = vec![];
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(f) = c {
                    fds.extend(f);
                }
            }
            assert_eq!(fds.len(), 1);
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: a descriptor just received, owned by nobody else.
            #[allow(unsafe_code)]
            drop(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        });
        std::env::set_var("NOTIFY_SOCKET", &path);
        let t0 = Instant::now();
        let sent = notify_reliably(&[NotifyState::MainPid(42)], Duration::from_secs(5));
        let confirmed = barrier(Duration::from_secs(5));
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(sent.unwrap());
        assert!(confirmed.unwrap());
        assert!(
            t0.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t0.elapsed()
        );
        fake.join().unwrap();
    }
}
