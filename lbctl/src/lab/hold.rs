//! Long-lived connections through the VIP, held from the client namespace while a
//! scenario moves the VIP: keep-alive HTTP (a request every 100 ms on one connection) and
//! echo streams (`GET /echo` with `Upgrade: echo` on the HTTP stand-in, as a websocket
//! through the ingress), every byte of which is checked on its way back.
//!
//! Like the probe, it runs on its own OS thread that enters the namespace with `setns(2)`
//! and drives a current-thread runtime, so every socket is the client namespace's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Between two requests of one keep-alive connection.
const REQUEST_EVERY: Duration = Duration::from_millis(100);
/// Between two writes of a stream.
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// One write of a stream.
const CHUNK: usize = 4096;
/// A request, or a stream's echo, stuck longer than this is a failure.
const STUCK: Duration = Duration::from_secs(5);
/// Nothing runs longer than this, whatever the scenario does.
const HARD_STOP: Duration = Duration::from_secs(1800);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    KeepAlive,
    Stream,
}

/// What became of one held connection.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// The backend that answered (it must stay the same for the connection's life).
    pub backend: Option<String>,
    /// Keep-alive: requests answered.
    pub requests: u64,
    /// Stream: bytes sent, and bytes that came back (and matched).
    pub bytes_sent: u64,
    pub bytes_back: u64,
    /// The first failure: when (ms from the start) and what.
    pub error: Option<String>,
}

impl Held {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.bytes_back == self.bytes_sent
    }
}

pub struct Holder {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Vec<Held>>>>,
    started: Instant,
}

impl Holder {
    /// Open every connection of `specs` from namespace `ns` (all of them established and
    /// answering once before this returns) and keep them busy until [`Holder::finish`].
    pub fn start(ns: &str, specs: Vec<(SocketAddr, Kind)>) -> Result<Holder> {
        let ns_path = format!("/run/netns/{ns}");
        let ns_file =
            std::fs::File::open(&ns_path).with_context(|| format!("opening {ns_path}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let started = Instant::now();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let handle = std::thread::Builder::new()
            .name(format!("hold-{ns}"))
            .spawn(move || {
                if let Err(e) = nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(anyhow!("entering {ns_path}: {e}")));
                    return Err(anyhow!("setns failed"));
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(run(specs, started, stop2, ready_tx))
            })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the connection holder died"))??;
        Ok(Holder {
            stop,
            handle: Some(handle),
            started,
        })
    }

    pub fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// Stop (streams half-close and wait for the rest of their echo) and report.
    pub fn finish(mut self) -> Result<Vec<Held>> {
        self.stop.store(true, Ordering::Relaxed);
        let h = self
            .handle
            .take()
            .ok_or_else(|| anyhow!("already finished"))?;
        h.join()
            .map_err(|_| anyhow!("the connection holder panicked"))?
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

async fn run(
    specs: Vec<(SocketAddr, Kind)>,
    started: Instant,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) -> Result<Vec<Held>> {
    let mut opened = Vec::new();
    for (addr, kind) in specs {
        let r = tokio::time::timeout(STUCK, open(addr, kind))
            .await
            .unwrap_or_else(|_| Err(anyhow!("no answer within {STUCK:?}")));
        match r {
            Ok(x) => opened.push(x),
            Err(e) => {
                let e = e.context(format!("opening a {kind:?} connection to {addr}"));
                let _ = ready.send(Err(anyhow!("{e:#}")));
                bail!("{e:#}");
            }
        }
    }
    let _ = ready.send(Ok(()));
    let mut tasks = tokio::task::JoinSet::new();
    for (held, sock) in opened {
        let stop = stop.clone();
        match held.kind {
            Kind::KeepAlive => tasks.spawn(keep_alive(held, sock, started, stop)),
            Kind::Stream => tasks.spawn(stream(held, sock, started, stop)),
        };
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.map_err(|e| anyhow!("a held connection's task failed: {e}"))?);
    }
    out.sort_by_key(|h| (h.kind == Kind::Stream, h.addr));
    Ok(out)
}

/// Connect, and get the first answer (so the backend is known).
async fn open(addr: SocketAddr, kind: Kind) -> Result<(Held, TcpStream)> {
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    s.set_nodelay(true)?;
    let mut held = Held {
        kind,
        addr,
        backend: None,
        requests: 0,
        bytes_sent: 0,
        bytes_back: 0,
        error: None,
    };
    match kind {
        Kind::KeepAlive => {
            held.backend = Some(request(&mut s, addr).await?);
            held.requests = 1;
        }
        Kind::Stream => {
            let req = format!(
                "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
                addr.ip()
            );
            s.write_all(req.as_bytes()).await?;
            let head = read_head(&mut s).await?;
            if !head.starts_with("HTTP/1.1 101") {
                bail!("no 101 for /echo: {}", head.lines().next().unwrap_or(""));
            }
            held.backend = header(&head, "x-backend");
        }
    }
    Ok((held, s))
}

fn since(started: Instant) -> String {
    format!("+{:.0} ms", started.elapsed().as_secs_f64() * 1000.0)
}

async fn keep_alive(
    mut held: Held,
    mut s: TcpStream,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> Held {
    while !stop.load(Ordering::Relaxed) && started.elapsed() < HARD_STOP {
        tokio::time::sleep(REQUEST_EVERY).await;
        let r = tokio::time::timeout(STUCK, request(&mut s, held.addr))
            .await
            .unwrap_or_else(|_| Err(anyhow!("no answer within {STUCK:?}")));
        match r {
            Ok(b) if Some(&b) == held.backend.as_ref() => held.requests += 1,
            Ok(b) => {
                held.error = Some(format!(
                    "{}: answered by {b}, not {}",
                    since(started),
                    held.backend.as_deref().unwrap_or("?")
                ));
                break;
            }
            Err(e) => {
                held.error = Some(format!("{}: {e:#}", since(started)));
                break;
            }
        }
    }
    held
}

/// One request on the connection; the body's first line (the node's name).
async fn request(s: &mut TcpStream, addr: SocketAddr) -> Result<String> {
    let req = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", addr.ip());
    s.write_all(req.as_bytes()).await.context("send")?;
    let head = read_head(s).await?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or("no status line"));
    }
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no Content-Length"))?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.context("body")?;
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned())
}

/// Read up to the end of an HTTP head, byte by byte (nothing past it is consumed).
async fn read_head(s: &mut TcpStream) -> Result<String> {
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            bail!("HTTP head over 16 KiB");
        }
        let b = s.read_u8().await.context("reading the answer")?;
        head.push(b);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// The stream's byte at `offset`: a hash of the offset, so a lost, doubled or reordered
/// chunk shows wherever it happens.
fn byte_at(offset: u64) -> u8 {
    (offset.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

async fn stream(mut held: Held, s: TcpStream, started: Instant, stop: Arc<AtomicBool>) -> Held {
    let (mut rd, mut wr) = s.into_split();
    let stop_w = stop.clone();
    let writer = async move {
        let mut sent = 0u64;
        let mut chunk = vec![0u8; CHUNK];
        while !stop_w.load(Ordering::Relaxed) && started.elapsed() < HARD_STOP {
            for (k, b) in chunk.iter_mut().enumerate() {
                *b = byte_at(sent + k as u64);
            }
            match tokio::time::timeout(STUCK, wr.write_all(&chunk)).await {
                Ok(Ok(())) => sent += CHUNK as u64,
                Ok(Err(e)) => return (sent, Some(format!("{}: write: {e}", since(started)))),
                Err(_) => {
                    return (
                        sent,
                        Some(format!("{}: write stuck for {STUCK:?}", since(started))),
                    )
                }
            }
            tokio::time::sleep(WRITE_EVERY).await;
        }
        // Half-close: the echo ends when everything sent has come back.
        let e = wr.shutdown().await.err();
        (
            sent,
            e.map(|e| format!("{}: shutdown: {e}", since(started))),
        )
    };
    let reader = async move {
        let mut back = 0u64;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match tokio::time::timeout(STUCK, rd.read(&mut buf)).await {
                Ok(Ok(0)) => return (back, None),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return (back, Some(format!("{}: read: {e}", since(started)))),
                Err(_) => {
                    return (
                        back,
                        Some(format!(
                            "{}: no echo for {STUCK:?} after {back} bytes",
                            since(started)
                        )),
                    )
                }
            };
            if let Some(k) = (0..n).find(|&k| buf[k] != byte_at(back + k as u64)) {
                return (
                    back + k as u64,
                    Some(format!(
                        "{}: byte {} came back wrong",
                        since(started),
                        back + k as u64
                    )),
                );
            }
            back += n as u64;
        }
    };
    let ((sent, we), (back, re)) = tokio::join!(writer, reader);
    held.bytes_sent = sent;
    held.bytes_back = back;
    held.error = we
        .or(re)
        .or_else(|| (back != sent).then(|| format!("{} of {sent} bytes came back", back)));
    held
}

/// One line per failed connection, and a summary.
pub fn summary(held: &[Held]) -> (usize, Vec<String>) {
    let ok = held.iter().filter(|h| h.ok()).count();
    let failures = held
        .iter()
        .filter(|h| !h.ok())
        .map(|h| {
            format!(
                "{:?} to {} ({}): {}",
                h.kind,
                h.addr,
                h.backend.as_deref().unwrap_or("?"),
                h.error.as_deref().unwrap_or("bytes lost")
            )
        })
        .collect();
    (ok, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_pattern_has_no_short_period() {
        // A chunk lost or doubled must not line up with the same bytes again.
        let a: Vec<u8> = (0..CHUNK as u64).map(byte_at).collect();
        let b: Vec<u8> = (CHUNK as u64..2 * CHUNK as u64).map(byte_at).collect();
        assert_ne!(a, b);
        assert!(a.iter().collect::<std::collections::BTreeSet<_>>().len() > 200);
    }

    #[test]
    fn headers_are_found_case_blind() {
        let h = "HTTP/1.1 101 Switching Protocols\r\nX-Backend: s2\r\n\r\n";
        assert_eq!(header(h, "x-backend").as_deref(), Some("s2"));
        assert_eq!(header(h, "content-length"), None);
    }
}
