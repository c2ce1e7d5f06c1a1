//! Moving bytes between the client and the server socket, both directions at once.
//!
//! One task per connection drives both directions and one timer from a single hand-written
//! poll function over shared `&TcpStream`s, using each socket's own reader/writer waker
//! slots (`poll_read_ready`/`poll_write_ready`) so no readiness futures are stored: the
//! whole copy state is about 400 bytes. Per direction:
//!
//! ```text
//!   src --read----> buf  --write---> dst      (small messages: request/response)
//!   src --splice--> pipe --splice--> dst      (bulk: zero-copy, page references move)
//! ```
//!
//! Each direction starts buffered (as cheap as splice for small messages, and lower
//! latency) and switches to splice when a read fills the whole buffer, i.e. when data
//! arrives faster than it is moved; it switches back when splices get small. Splice refused
//! by the kernel (EINVAL) means buffered for good. `LBD_COPY=splice` or `buffered` pins one
//! path (benchmarks compare them).
//!
//! Pipes and buffers are taken from a small per-thread pool when data arrives and given back
//! as soon as they are empty, so an idle connection holds neither (memory per idle
//! connection is the task and the two sockets). The hot path neither allocates (after the
//! pool warms up) nor locks: per chunk it does two syscalls and two relaxed atomic adds for
//! the live byte counters; the activity clock is read once per poll, and the timer is
//! re-armed only when it fires or the limit changes.
//!
//! End of stream on one side is forwarded as `shutdown(Write)` on the other; the other
//! direction keeps flowing until it ends too, bounded by the half-close timeout.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{ready, Context, Poll};

use common::config::Timeouts;
use nix::fcntl::{splice, OFlag, SpliceFFlags};
use nix::sys::socket::MsgFlags;
use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;

/// Bytes moved per splice call (the default pipe capacity).
const PIPE_CHUNK: usize = 64 * 1024;
/// Pipe capacity asked for (F_SETPIPE_SZ): fewer, larger splices on bulk transfers. The
/// pages are only used while data is in flight.
const PIPE_SIZE: i32 = 256 * 1024;
/// Buffer size of the buffered path.
const BUF_SIZE: usize = 32 * 1024;

type Buf = [u8; BUF_SIZE];
/// In [`Mode::Auto`], a splice moving less than this goes back to the buffered path.
const SPLICE_MIN: usize = 8 * 1024;
/// Pooled pipes/buffers kept per thread (an unprivileged user's pipe pages are capped by
/// fs.pipe-user-pages-soft; past it new pipes shrink to 8 KiB, so keep the pool modest).
const POOL_MAX: usize = 64;

/// How to move bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Buffered for small messages, splice for bulk (the default).
    Auto,
    Splice,
    Buffered,
}

impl Mode {
    /// `LBD_COPY=splice` or `LBD_COPY=buffered` pins one path; default: [`Mode::Auto`].
    pub fn from_env() -> Mode {
        match std::env::var("LBD_COPY").as_deref() {
            Ok("buffered") => Mode::Buffered,
            Ok("splice") => Mode::Splice,
            _ => Mode::Auto,
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
    /// Capacity: the most one splice into it moves.
    size: u32,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    static BUFS: RefCell<Vec<Box<Buf>>> = const { RefCell::new(Vec::new()) };
}

fn take_pipe() -> io::Result<Pipe> {
    if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
        return Ok(p);
    }
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    // Best effort: without it the pipe keeps the default 64 KiB.
    let size = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE))
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(PIPE_CHUNK as u32);
    Ok(Pipe { r, w, size })
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

/// A buffer from this thread's pool (the PROXY protocol's header work borrows them too).
pub(crate) fn take_buf() -> Box<Buf> {
    BUFS.with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| Box::new([0u8; BUF_SIZE]))
}

pub(crate) fn give_buf(b: Box<Buf>) {
    BUFS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_MAX {
            pool.push(b);
        }
    });
}

/// One direction's bytes in flight: in a pipe (splice) or a buffer, taken from the pool
/// when data arrives and given back once flushed.
#[derive(Default)]
struct Dir {
    pipe: Option<Pipe>,
    buf: Option<Box<Buf>>,
    /// Buffered: next byte to write. Splice: unused.
    off: u32,
    /// Buffered: end of the data in `buf`. Splice: bytes in the pipe.
    len: u32,
    /// End of stream read from the source.
    eof: bool,
    /// End of stream forwarded (`shutdown(Write)` done): this direction is over.
    done: bool,
    /// At least one byte moved.
    moved: bool,
    /// The next read goes to a buffer (else: into a pipe).
    buffered: bool,
    /// The path may change with the traffic ([`Mode::Auto`]).
    auto: bool,
    /// An error the look-ahead read got ([`Dir::look_ahead`]), returned once the data read
    /// before it is sent.
    err: Option<io::Error>,
}

/// Everything one connection's copy needs, polled by hand: no readiness futures are stored
/// (the sockets' own reader/writer waker slots are used), which keeps the per-connection
/// state to a couple of hundred bytes.
struct Copy<'a> {
    socks: [&'a TcpStream; 2],
    meters: [Meters<'a>; 2],
    dirs: [Dir; 2],
    /// Something moved during this poll (the activity clock is read once per poll).
    active: bool,
}

/// Proxy until both directions end, a timeout, an error, or `kill` completes.
///
/// `ab` counts client-to-server bytes, `ba` server-to-client bytes. The caller closes both
/// sockets when this ends: the end of stream of the direction that ends last is forwarded
/// by that close, not by a shutdown.
pub fn proxy<'a>(
    client: &'a TcpStream,
    server: &'a TcpStream,
    ab: Meters<'a>,
    ba: Meters<'a>,
    t: &'a Timeouts,
    mode: Mode,
    kill: impl Future<Output = ()> + 'a,
) -> impl Future<Output = End> + 'a {
    // Built outside the async block so the arguments are not stored twice.
    let dir = || Dir {
        buffered: mode != Mode::Splice,
        auto: mode == Mode::Auto,
        ..Dir::default()
    };
    let mut c = Copy {
        socks: [client, server],
        meters: [ab, ba],
        dirs: [dir(), dir()],
        active: false,
    };
    async move {
        let mut last = tokio::time::Instant::now();
        let timer = tokio::time::sleep(t.idle);
        tokio::pin!(timer, kill);
        std::future::poll_fn(|cx| c.poll(cx, t, &mut last, timer.as_mut(), kill.as_mut())).await
    }
}

impl Copy<'_> {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        t: &Timeouts,
        last: &mut tokio::time::Instant,
        mut timer: Pin<&mut tokio::time::Sleep>,
        kill: Pin<&mut impl Future<Output = ()>>,
    ) -> Poll<End> {
        if kill.poll(cx).is_ready() {
            return Poll::Ready(End::Killed);
        }
        let mut finished = false;
        for d in 0..2 {
            if self.dirs[d].done {
                continue;
            }
            match self.poll_dir(cx, d) {
                Poll::Ready(Ok(())) => finished = true,
                Poll::Ready(Err(_)) => return Poll::Ready(End::Error),
                Poll::Pending => {}
            }
        }
        if self.dirs[0].done && self.dirs[1].done {
            return Poll::Ready(End::Closed);
        }
        let now = tokio::time::Instant::now();
        if self.active || finished {
            // A finished direction switches the limit to half_close, counted from now.
            *last = now;
            self.active = false;
        }
        let limit = if self.dirs[0].done || self.dirs[1].done {
            t.half_close
        } else if self.dirs[0].moved && self.dirs[1].moved {
            t.tunnel
        } else {
            t.idle
        };
        // The timer is moved only when it fires or the limit changes, not per chunk.
        if finished || timer.as_mut().poll(cx).is_ready() {
            let deadline = *last + limit;
            if deadline <= now {
                return Poll::Ready(End::Timeout);
            }
            timer.as_mut().reset(deadline);
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(End::Timeout);
            }
        }
        Poll::Pending
    }

    /// Move bytes from `socks[d]` to `socks[1 - d]` until neither side is ready.
    /// `Ready(Ok)`: end of stream reached and forwarded.
    fn poll_dir(&mut self, cx: &mut Context<'_>, d: usize) -> Poll<io::Result<()>> {
        let (src, dst) = (self.socks[d], self.socks[1 - d]);
        let other_done = self.dirs[1 - d].done;
        let m = self.meters[d];
        let dir = &mut self.dirs[d];
        loop {
            // 1. Flush what is in flight.
            if dir.len > dir.off {
                ready!(dst.poll_write_ready(cx))?;
                // The data is wherever it was read to (the path may have switched since).
                let wrote = if let Some(buf) = &dir.buf {
                    // The end of stream is known already: the data waits (MSG_MORE) for the
                    // shutdown or close that follows, whose FIN then leaves in its last
                    // segment instead of one of its own.
                    let more = if dir.eof {
                        MsgFlags::from_bits_retain(libc::MSG_MORE)
                    } else {
                        MsgFlags::empty()
                    };
                    send_all_or_consume(dst, &buf[dir.off as usize..dir.len as usize], more)
                } else if let Some(pipe) = &dir.pipe {
                    let left = dir.len as usize;
                    dst.try_io(Interest::WRITABLE, || {
                        splice(pipe.r.as_fd(), None, dst.as_fd(), None, left, FLAGS)
                            .map_err(io::Error::from)
                    })
                } else {
                    Ok(0)
                };
                match wrote {
                    Ok(n) => {
                        for c in m.counters {
                            c.fetch_add(n as u64, Relaxed);
                        }
                        if dir.buf.is_some() {
                            dir.off += n as u32;
                        } else {
                            dir.len -= n as u32;
                        }
                        self.active = true;
                        dir.moved = true;
                        if dir.len == dir.off {
                            dir.off = 0;
                            dir.len = 0;
                            dir.release();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            if let Some(e) = dir.err.take() {
                return Poll::Ready(Err(e));
            }
            // 2. Forward end of stream.
            if dir.eof {
                dir.done = true;
                if other_done {
                    // Both directions are over: the close that follows sends the FIN
                    // (nothing is left unread on `dst`, whose end of stream was read), so
                    // no shutdown first: one syscall less per connection.
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(
                    match socket2::SockRef::from(dst).shutdown(Shutdown::Write) {
                        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
                        _ => Ok(()),
                    },
                );
            }
            // 3. Read more.
            ready!(src.poll_read_ready(cx))?;
            let read = if dir.buffered {
                let buf = dir.buf.get_or_insert_with(take_buf);
                recv_or_consume(src, &mut buf[..])
            } else {
                if dir.pipe.is_none() {
                    dir.pipe = Some(take_pipe()?);
                }
                match &dir.pipe {
                    Some(pipe) => src.try_io(Interest::READABLE, || {
                        splice(
                            src.as_fd(),
                            None,
                            pipe.w.as_fd(),
                            None,
                            pipe.size as usize,
                            FLAGS,
                        )
                        .map_err(io::Error::from)
                    }),
                    None => Ok(0),
                }
            };
            match read {
                Ok(0) => {
                    dir.eof = true;
                    dir.release();
                }
                Ok(n) => {
                    dir.off = 0;
                    dir.len = n as u32;
                    if dir.buffered && n < BUF_SIZE {
                        dir.look_ahead(src, cx);
                    }
                    if dir.auto {
                        // A full buffer: bulk, splice from now on. Small splices: back.
                        if dir.buffered && n == BUF_SIZE {
                            dir.buffered = false;
                        } else if !dir.buffered && n < SPLICE_MIN {
                            dir.buffered = true;
                        }
                    }
                }
                // Nothing to read after all (readiness is now cleared, so the next
                // poll_read_ready registers for a wakeup): hand the pipe/buffer back.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dir.release(),
                Err(e) if !dir.buffered && e.raw_os_error() == Some(libc::EINVAL) => {
                    // The kernel refuses splice for this socket: buffered from now on.
                    dir.release();
                    dir.buffered = true;
                    dir.auto = false;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

// A short `recv` means the socket was drained, a short `send` that its buffer is full:
// the next try would only say EAGAIN. So the readiness is consumed with the syscall that
// showed it, as HAProxy stops reading after a short read, and the kernel's next wakeup
// (new data, room again) sets it anew. It must be consumed inside the `try_io` that made
// the call: tokio clears only the readiness it saw before the closure ran, so an event
// that arrived after the syscall (another worker's driver may set it at once) is kept;
// clearing afterwards in a second `try_io` lost such an event and stalled a connection
// with data queued (found by the proxy_workloads bench). Tokio never clears the closed
// states, so a FIN or a reset that came with the data is still seen. (Not for splice: it
// can stop short for want of pipe slots with data still queued.)

/// `recv` into `buf`; `Ok(n)` with `n < buf.len()` also leaves `src` not readable.
fn recv_or_consume(src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    let r = src.try_io(Interest::READABLE, || {
        got = nix::sys::socket::recv(src.as_raw_fd(), buf, MsgFlags::empty())?;
        if got > 0 && got < buf.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(got)
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        r => r,
    }
}

/// `send` of `buf` (with `flags` besides MSG_NOSIGNAL); `Ok(n)` with `n < buf.len()` also
/// leaves `dst` not writable.
fn send_all_or_consume(dst: &TcpStream, buf: &[u8], flags: MsgFlags) -> io::Result<usize> {
    let mut sent = 0;
    let r = dst.try_io(Interest::WRITABLE, || {
        sent = nix::sys::socket::send(dst.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL | flags)?;
        if sent < buf.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(sent)
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && sent > 0 => Ok(sent),
        r => r,
    }
}

/// What a socket's readiness says right after a short read that consumed its readable
/// state ([`Dir::look_ahead`]).
enum AfterShortRead {
    /// Nothing came since: reading again would only say EAGAIN.
    Nothing,
    /// The peer's FIN (read closed) and nothing else: that read drained the socket up to
    /// the FIN, so the next read can only return 0. The end of stream is known without it,
    /// as HAProxy knows it from EPOLLRDHUP.
    Fin,
    /// Readable again (an event came during the read), or a reset or an error: a read
    /// finds out which.
    Read,
}

/// The readiness is tokio's, in memory: its `ready()` future, polled once, answers at
/// once with the whole readiness when anything asked for is set (a connected socket is
/// writable), with no syscall and no waiter registered. tokio's `try_io` never clears the
/// closed states, and clears readable only when no event came during the closure, so
/// "read closed, not readable" means the FIN was in before the read. (tokio's
/// `is_readable` is true when read closed: the readable bit alone is what is left without
/// the closed state.)
fn after_short_read(src: &TcpStream, cx: &mut Context<'_>) -> AfterShortRead {
    let ready =
        std::pin::pin!(src.ready(Interest::READABLE | Interest::WRITABLE | Interest::ERROR));
    let Poll::Ready(Ok(r)) = ready.poll(cx) else {
        return AfterShortRead::Nothing;
    };
    let readable = (r - Ready::READ_CLOSED).is_readable();
    let broken = r.is_write_closed() || r.is_error();
    if r.is_read_closed() && !readable && !broken {
        AfterShortRead::Fin
    } else if readable || r.is_read_closed() || broken {
        AfterShortRead::Read
    } else {
        AfterShortRead::Nothing
    }
}

impl Dir {
    /// After a short buffered read, which consumed the readiness: if `src` is readable
    /// again all the same, its end of stream came with the data (tokio keeps a socket's
    /// closed state: EPOLLRDHUP), or more data did. Find out now, before the data is sent
    /// ([`after_short_read`]: from the readiness alone when only the FIN came, by reading
    /// otherwise): the end of stream is then known in time for its FIN to go out with the
    /// data's last segment (a server answering and closing, as `Connection: close` does,
    /// costs the client one packet less). Nothing is read when nothing came, and checking
    /// costs no syscall: the readiness is in memory.
    fn look_ahead(&mut self, src: &TcpStream, cx: &mut Context<'_>) {
        while (self.len as usize) < BUF_SIZE {
            match after_short_read(src, cx) {
                AfterShortRead::Nothing => return,
                AfterShortRead::Fin => {
                    self.eof = true;
                    return;
                }
                AfterShortRead::Read => {}
            }
            let Some(buf) = &mut self.buf else {
                return;
            };
            match recv_or_consume(src, &mut buf[self.len as usize..]) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(m) => self.len += m as u32,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // After the data read before it.
                    self.err = Some(e);
                    return;
                }
            }
        }
    }

    /// Give an empty pipe/buffer back to the pool.
    fn release(&mut self) {
        if let Some(p) = self.pipe.take() {
            give_pipe(p);
        }
        if let Some(b) = self.buf.take() {
            give_buf(b);
        }
    }
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn timeouts(idle_ms: u64, half_ms: u64) -> Timeouts {
        Timeouts {
            connect: common::config::ConnectTimeout::Auto,
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
        let (ab, ba) = (
            Meters {
                counters: [&up_bytes, &up2],
            },
            Meters {
                counters: [&down_bytes, &down2],
            },
        );
        let t = &t;
        let proxy_fut = async move {
            let end = proxy(&pc, &ps, ab, ba, t, mode, std::future::pending()).await;
            // As the connection task does: the sockets close as soon as the copy ends
            // (the last direction's FIN is that close's).
            drop((pc, ps));
            end
        };
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
    async fn auto_moves_bulk_and_forwards_half_close() {
        bulk_and_half_close(Mode::Auto).await;
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

    /// Segments the socket bound to `local` received, by the kernel's count (`ss -ti`).
    fn segs_in(local: std::net::SocketAddr) -> u64 {
        let out = k3sha_support::tools::command("ss")
            .args(["-tinaH", "src", &local.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("segs_in:"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no segs_in for {local}: {text}"))
    }

    /// A server that answers and closes (`Connection: close`): when its FIN is there with
    /// the answer, the client gets both in one segment, not the data and then a FIN of its
    /// own. The answer and the FIN are queued before the copy starts, so the copy sees
    /// them together every time.
    #[tokio::test]
    async fn an_answer_and_its_end_of_stream_reach_the_client_in_one_segment() {
        let (mut outer_c, pc, ps, mut outer_s) = pairs().await;
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let t = timeouts(10_000, 10_000);
        outer_s
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nbye")
            .await
            .unwrap();
        outer_s.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let local = outer_c.local_addr().unwrap();
        let before = segs_in(local);
        let proxy_fut = proxy(
            &pc,
            &ps,
            Meters { counters: [&a, &a] },
            Meters { counters: [&b, &b] },
            &t,
            Mode::Auto,
            std::future::pending(),
        );
        let client = async {
            let mut got = Vec::new();
            outer_c.read_to_end(&mut got).await.unwrap();
            got
        };
        tokio::select! {
            _ = proxy_fut => panic!("the copy ended before the client's end of stream"),
            got = client => assert_eq!(got, b"HTTP/1.1 200 OK\r\n\r\nbye"),
        }
        assert_eq!(segs_in(local) - before, 1, "data and FIN in one segment");
    }

    /// A server that answers and then resets: the answer still reaches the client before
    /// the copy ends with the error (the look-ahead read that sees the reset keeps it
    /// until the data read before it is sent).
    #[tokio::test]
    async fn data_before_a_reset_is_delivered_then_the_error() {
        let (mut outer_c, pc, ps, outer_s) = pairs().await;
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let t = timeouts(10_000, 10_000);
        let std_s = outer_s.into_std().unwrap();
        std::io::Write::write_all(&mut &std_s, b"last words").unwrap();
        socket2::SockRef::from(&std_s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(std_s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let end = proxy(
            &pc,
            &ps,
            Meters { counters: [&a, &a] },
            Meters { counters: [&b, &a] },
            &t,
            Mode::Auto,
            std::future::pending(),
        )
        .await;
        assert_eq!(end, End::Error);
        assert_eq!(b.load(Relaxed), 10);
        let mut got = [0u8; 10];
        outer_c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"last words");
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
#[cfg(test)]
mod size {
    use super::*;
    use std::time::Duration;

    /// Memory per idle connection is mostly this future: keep it small (no inline buffers).
    #[tokio::test]
    async fn per_connection_state_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        let x = AtomicU64::new(0);
        let t = Timeouts {
            connect: common::config::ConnectTimeout::Auto,
            idle: Duration::from_secs(1),
            tunnel: Duration::from_secs(1),
            half_close: Duration::from_secs(1),
        };
        let m = Meters { counters: [&x, &x] };
        let f = proxy(&a, &b, m, m, &t, Mode::Splice, std::future::pending());
        let size = std::mem::size_of_val(&f);
        eprintln!("proxy future: {size} bytes");
        assert!(size <= 640, "{size}");
    }
}
