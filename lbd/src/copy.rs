//! Moving bytes between the client and the server socket, both directions at once.
//!
//! One task per connection drives both directions as two futures over shared `&TcpStream`s
//! (tokio's readiness API takes `&self`), plus one timer. Per direction:
//!
//! ```text
//!   src --splice--> pipe --splice--> dst      (Linux, zero-copy: page references move)
//!   src --read----> buf  --write---> dst      (fallback when splice is refused, or
//!                                              LBD_COPY=buffered)
//! ```
//!
//! Pipes and buffers are taken from a small per-thread pool when data arrives and given back
//! as soon as they are empty, so an idle connection holds neither (memory per idle
//! connection is the task and the two sockets). The hot path neither allocates (after the
//! pool warms up) nor locks: per chunk it does two syscalls, a few relaxed atomic adds for
//! the live byte counters, and one relaxed store of the activity clock.
//!
//! End of stream on one side is forwarded as `shutdown(Write)` on the other; the other
//! direction keeps flowing until it ends too, bounded by the half-close timeout.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use common::config::Timeouts;
use nix::fcntl::{splice, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::counters::now_ms;

/// Bytes moved per splice call (the default pipe capacity).
const PIPE_CHUNK: usize = 64 * 1024;
/// Buffer size of the buffered path.
const BUF_SIZE: usize = 32 * 1024;
/// Pooled pipes/buffers kept per thread.
const POOL_MAX: usize = 256;

/// How to move bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Splice,
    Buffered,
}

impl Mode {
    /// `LBD_COPY=buffered` forces the buffered path (benchmarks compare both).
    pub fn from_env() -> Mode {
        match std::env::var("LBD_COPY").as_deref() {
            Ok("buffered") => Mode::Buffered,
            _ => Mode::Splice,
        }
    }
}

/// Where one direction's bytes are counted (live, per chunk).
#[derive(Clone, Copy)]
pub struct Meters<'a> {
    pub counters: [&'a AtomicU64; 2],
}

/// Why a proxied connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions reached end of stream.
    Closed,
    /// No traffic for the idle, tunnel or half-close limit.
    Timeout,
    /// A socket error (reset, ...).
    Error,
    /// Closed from outside (server marked down with close_on_down, or shutdown).
    Killed,
}

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    static BUFS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_pipe() -> io::Result<Pipe> {
    if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
        return Ok(p);
    }
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    Ok(Pipe { r, w })
}

/// Only empty pipes may be given back.
fn give_pipe(p: Pipe) {
    PIPES.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(p);
        }
    });
}

fn take_buf() -> Box<[u8]> {
    BUFS.with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

fn give_buf(b: Box<[u8]>) {
    BUFS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(b);
        }
    });
}

/// Shared between the two directions and the timer of one connection.
struct Activity {
    /// [`now_ms`] of the last byte moved in either direction.
    last_ms: AtomicU64,
    /// Each direction has moved at least one byte.
    moved: [AtomicBool; 2],
}

/// Proxy until both directions end, a timeout, an error, or `kill` completes.
///
/// `ab` counts client-to-server bytes, `ba` server-to-client bytes.
pub async fn proxy(
    client: &TcpStream,
    server: &TcpStream,
    ab: Meters<'_>,
    ba: Meters<'_>,
    t: &Timeouts,
    mode: Mode,
    kill: impl std::future::Future<Output = ()>,
) -> End {
    let act = Activity {
        last_ms: AtomicU64::new(now_ms()),
        moved: [AtomicBool::new(false), AtomicBool::new(false)],
    };
    let up = one_way(client, server, ab, &act, 0, mode);
    let down = one_way(server, client, ba, &act, 1, mode);
    tokio::pin!(up, down, kill);
    let (mut up_done, mut down_done) = (false, false);
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let limit = if up_done || down_done {
            t.half_close
        } else if act.moved[0].load(Relaxed) && act.moved[1].load(Relaxed) {
            t.tunnel
        } else {
            t.idle
        };
        let last = act.last_ms.load(Relaxed);
        let idle_for = now_ms().saturating_sub(last);
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        if idle_for >= limit_ms {
            return End::Timeout;
        }
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + Duration::from_millis(limit_ms - idle_for));
        tokio::select! {
            r = &mut up, if !up_done => {
                if r.is_err() { return End::Error; }
                up_done = true;
                // The limit is now half_close, counted from this end of stream.
                act.last_ms.fetch_max(now_ms(), Relaxed);
            }
            r = &mut down, if !down_done => {
                if r.is_err() { return End::Error; }
                down_done = true;
                act.last_ms.fetch_max(now_ms(), Relaxed);
            }
            () = &mut timer => {}
            () = &mut kill => return End::Killed,
        }
        if up_done && down_done {
            return End::Closed;
        }
    }
}

/// Copy `src` to `dst` until end of stream, then `shutdown(Write)` `dst`.
async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    m: Meters<'_>,
    act: &Activity,
    dir: usize,
    mode: Mode,
) -> io::Result<()> {
    let mut mode = mode;
    loop {
        src.readable().await?;
        let n = match mode {
            Mode::Splice => match splice_once(src, dst, m, act, dir).await {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The kernel refuses splice for this socket pair: fall back for good.
                    mode = Mode::Buffered;
                    continue;
                }
                r => r?,
            },
            Mode::Buffered => buffered_once(src, dst, m, act, dir).await?,
        };
        if n == Some(0) {
            break;
        }
    }
    match socket2::SockRef::from(dst).shutdown(Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

#[inline]
fn count(m: Meters<'_>, act: &Activity, dir: usize, n: usize) {
    let n = n as u64;
    for c in m.counters {
        c.fetch_add(n, Relaxed);
    }
    act.last_ms.store(now_ms(), Relaxed);
    if !act.moved[dir].load(Relaxed) {
        act.moved[dir].store(true, Relaxed);
    }
}

/// One chunk through a pipe. `Ok(None)`: spurious wakeup; `Ok(Some(0))`: end of stream.
async fn splice_once(
    src: &TcpStream,
    dst: &TcpStream,
    m: Meters<'_>,
    act: &Activity,
    dir: usize,
) -> io::Result<Option<usize>> {
    let pipe = take_pipe()?;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let read = src.try_io(Interest::READABLE, || {
        splice(src.as_fd(), None, pipe.w.as_fd(), None, PIPE_CHUNK, flags).map_err(io::Error::from)
    });
    let mut left = match read {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            give_pipe(pipe);
            return Ok(None);
        }
        Err(e) => {
            give_pipe(pipe);
            return Err(e);
        }
    };
    let n = left;
    while left > 0 {
        dst.writable().await?;
        match dst.try_io(Interest::WRITABLE, || {
            splice(pipe.r.as_fd(), None, dst.as_fd(), None, left, flags).map_err(io::Error::from)
        }) {
            Ok(w) => {
                left -= w;
                count(m, act, dir, w);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // The pipe still holds data: drop it rather than pool it.
            Err(e) => return Err(e),
        }
    }
    give_pipe(pipe);
    Ok(Some(n))
}

/// One chunk through a pooled buffer.
async fn buffered_once(
    src: &TcpStream,
    dst: &TcpStream,
    m: Meters<'_>,
    act: &Activity,
    dir: usize,
) -> io::Result<Option<usize>> {
    let mut buf = take_buf();
    let n = match src.try_read(&mut buf) {
        Ok(n) => n,
        Err(e) => {
            give_buf(buf);
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
    };
    let mut off = 0;
    while off < n {
        dst.writable().await?;
        match dst.try_write(&buf[off..n]) {
            Ok(w) => {
                off += w;
                count(m, act, dir, w);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                give_buf(buf);
                return Err(e);
            }
        }
    }
    give_buf(buf);
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn timeouts(idle_ms: u64, half_ms: u64) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(1),
            idle: Duration::from_millis(idle_ms),
            tunnel: Duration::from_millis(idle_ms * 2),
            half_close: Duration::from_millis(half_ms),
        }
    }

    /// (outer client, proxy's client side, proxy's server side, outer server)
    async fn pairs() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (d, _) = l.accept().await.unwrap();
        (a, b, c, d)
    }

    async fn bulk_and_half_close(mode: Mode) {
        let (mut outer_c, pc, ps, mut outer_s) = pairs().await;
        let (up_bytes, down_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
        let (up2, down2) = (AtomicU64::new(0), AtomicU64::new(0));
        let t = timeouts(5000, 5000);
        let proxy_fut = proxy(
            &pc,
            &ps,
            Meters {
                counters: [&up_bytes, &up2],
            },
            Meters {
                counters: [&down_bytes, &down2],
            },
            &t,
            mode,
            std::future::pending(),
        );
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expect = payload.clone();
        let client = async move {
            outer_c.write_all(&payload).await.unwrap();
            // Half-close: the server must see EOF but still be able to answer.
            outer_c.shutdown().await.unwrap();
            let mut back = Vec::new();
            outer_c.read_to_end(&mut back).await.unwrap();
            back
        };
        let server = async move {
            let mut got = Vec::new();
            outer_s.read_to_end(&mut got).await.unwrap();
            assert_eq!(got.len(), expect.len());
            assert!(got == expect);
            outer_s.write_all(b"after your FIN").await.unwrap();
            outer_s.shutdown().await.unwrap();
        };
        let (end, back, ()) = tokio::join!(proxy_fut, client, server);
        assert_eq!(end, End::Closed);
        assert_eq!(back, b"after your FIN");
        assert_eq!(up_bytes.load(Relaxed), 3_000_000);
        assert_eq!(up2.load(Relaxed), 3_000_000);
        assert_eq!(down_bytes.load(Relaxed), 14);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn splice_moves_bulk_and_forwards_half_close() {
        bulk_and_half_close(Mode::Splice).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buffered_moves_bulk_and_forwards_half_close() {
        bulk_and_half_close(Mode::Buffered).await;
    }

    #[tokio::test]
    async fn idle_connection_times_out() {
        let (_outer_c, pc, ps, _outer_s) = pairs().await;
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let t = timeouts(300, 5000);
        let start = std::time::Instant::now();
        let end = proxy(
            &pc,
            &ps,
            Meters { counters: [&a, &a] },
            Meters { counters: [&b, &b] },
            &t,
            Mode::Splice,
            std::future::pending(),
        )
        .await;
        assert_eq!(end, End::Timeout);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(1500),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn half_closed_connection_times_out_on_the_half_close_limit() {
        let (mut outer_c, pc, ps, _outer_s) = pairs().await;
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let t = timeouts(10_000, 300);
        outer_c.shutdown().await.unwrap();
        let start = std::time::Instant::now();
        let end = proxy(
            &pc,
            &ps,
            Meters { counters: [&a, &a] },
            Meters { counters: [&b, &b] },
            &t,
            Mode::Splice,
            std::future::pending(),
        )
        .await;
        assert_eq!(end, End::Timeout);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn counters_are_live_before_close() {
        let (mut outer_c, pc, ps, mut outer_s) = pairs().await;
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let (a2, b2) = (AtomicU64::new(0), AtomicU64::new(0));
        let t = timeouts(10_000, 10_000);
        let proxy_fut = proxy(
            &pc,
            &ps,
            Meters {
                counters: [&a, &a2],
            },
            Meters {
                counters: [&b, &b2],
            },
            &t,
            Mode::Splice,
            std::future::pending(),
        );
        let check = async {
            outer_c.write_all(&[7u8; 1000]).await.unwrap();
            let mut got = [0u8; 1000];
            outer_s.read_exact(&mut got).await.unwrap();
            // The connection is still open, and the bytes are already counted.
            assert_eq!(a.load(Relaxed), 1000);
        };
        tokio::select! {
            _ = proxy_fut => panic!("proxy ended"),
            () = check => {}
        }
    }
}
