//! The lab's client: requests through the VIP every 20 ms, from inside the client
//! namespace, recording each outcome.
//!
//! The probe runs on its own OS thread, which enters the namespace with `setns(2)` (a
//! thread's network namespace is its own) and then drives a current-thread tokio runtime,
//! so every socket it opens lives in the client namespace. No tokio pool thread ever
//! changes namespace.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to request.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Speak TLS (certificate not verified: the stand-ins are self-signed).
    pub tls: bool,
    pub path: String,
    /// Plain TCP (a `tcp` stand-in): read the node's name line, send a line, read it back.
    pub raw: bool,
}

/// One request's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When it was sent, from the probe's start.
    pub sent_ms: f64,
    pub ok: bool,
    pub latency_ms: f64,
    /// The body's first line: the stand-in backends answer with their node's name.
    pub backend: Option<String>,
    pub error: Option<String>,
}

pub struct Probe {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Vec<Sample>>>>,
    started: Instant,
}

impl Probe {
    /// Start probing `target` from namespace `ns` every `interval`; each request gives up
    /// after `timeout`.
    pub fn start(ns: &str, target: Target, interval: Duration, timeout: Duration) -> Result<Probe> {
        let stop = Arc::new(AtomicBool::new(false));
        let ns_path = format!("/run/netns/{ns}");
        let ns_file =
            std::fs::File::open(&ns_path).with_context(|| format!("opening {ns_path}"))?;
        let started = Instant::now();
        let stop2 = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let handle = std::thread::Builder::new()
            .name(format!("probe-{ns}"))
            .spawn(move || {
                if let Err(e) = nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(anyhow!("entering {ns_path}: {e}")));
                    return Err(anyhow!("setns failed"));
                }
                let _ = ready_tx.send(Ok(()));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(run(target, interval, timeout, started, stop2))
            })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("probe thread died"))??;
        Ok(Probe {
            stop,
            handle: Some(handle),
            started,
        })
    }

    /// Milliseconds since the probe started (to mark events on its timeline).
    pub fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// Stop and collect every sample, in order of sending.
    pub fn finish(mut self) -> Result<Vec<Sample>> {
        self.stop.store(true, Ordering::Relaxed);
        let h = self
            .handle
            .take()
            .ok_or_else(|| anyhow!("probe already finished"))?;
        h.join().map_err(|_| anyhow!("probe thread panicked"))?
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

async fn run(
    target: Target,
    interval: Duration,
    timeout: Duration,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Sample>> {
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let tls = if target.tls {
        Some(tokio_rustls::TlsConnector::from(Arc::new(
            common::tls::unverified_client_config()?,
        )))
    } else {
        None
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inflight = tokio::task::JoinSet::new();
    // Bound: at most one hour of probing.
    let hard_stop = started + Duration::from_secs(3600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
        tick.tick().await;
        let t = target.clone();
        let tls = tls.clone();
        let samples = samples.clone();
        inflight.spawn(async move {
            let sent = Instant::now();
            let r = tokio::time::timeout(timeout, request(&t, tls.as_ref())).await;
            let latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
            let (ok, backend, error) = match r {
                Ok(Ok(body)) => (true, body.lines().next().map(str::to_owned), None),
                Ok(Err(e)) => (false, None, Some(format!("{e:#}"))),
                Err(_) => (false, None, Some(format!("timeout after {timeout:?}"))),
            };
            let s = Sample {
                sent_ms: (sent - started).as_secs_f64() * 1000.0,
                ok,
                latency_ms,
                backend,
                error,
            };
            if let Ok(mut v) = samples.lock() {
                v.push(s);
            }
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    let mut v = std::mem::take(&mut *samples.lock().map_err(|_| anyhow!("poisoned"))?);
    v.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    Ok(v)
}

/// `n` requests to `target` from namespace `ns`, one after the other, each bounded by
/// `timeout`: their bodies (or why each failed).
pub fn fetch(
    ns: &str,
    target: &Target,
    n: usize,
    timeout: Duration,
) -> Result<Vec<Result<String>>> {
    let ns_path = format!("/run/netns/{ns}");
    let ns_file = std::fs::File::open(&ns_path).with_context(|| format!("opening {ns_path}"))?;
    let target = target.clone();
    std::thread::Builder::new()
        .name(format!("fetch-{ns}"))
        .spawn(move || {
            nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| anyhow!("entering {ns_path}: {e}"))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let tls = if target.tls {
                    Some(tokio_rustls::TlsConnector::from(Arc::new(
                        common::tls::unverified_client_config()?,
                    )))
                } else {
                    None
                };
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push(
                        match tokio::time::timeout(timeout, request(&target, tls.as_ref())).await {
                            Ok(r) => r,
                            Err(_) => Err(anyhow!("timeout after {timeout:?}")),
                        },
                    );
                }
                Ok(out)
            })
        })?
        .join()
        .map_err(|_| anyhow!("fetch thread panicked"))?
}

async fn request(t: &Target, tls: Option<&tokio_rustls::TlsConnector>) -> Result<String> {
    let tcp = tokio::net::TcpStream::connect(t.addr)
        .await
        .context("connect")?;
    tcp.set_nodelay(true)?;
    if t.raw {
        let mut s = tokio::io::BufReader::new(tcp);
        let mut name = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut s, &mut name).await?;
        if name.is_empty() {
            return Err(anyhow!("closed before the greeting"));
        }
        s.get_mut().write_all(b"ping\n").await?;
        let mut echo = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut s, &mut echo).await?;
        if echo != "ping\n" {
            return Err(anyhow!("echo {echo:?}"));
        }
        return Ok(name);
    }
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        t.path,
        t.addr.ip()
    );
    let mut buf = Vec::new();
    match tls {
        Some(c) => {
            let name = rustls::pki_types::ServerName::IpAddress(t.addr.ip().into());
            let mut s = c.connect(name, tcp).await.context("tls")?;
            s.write_all(req.as_bytes()).await?;
            read_all(&mut s, &mut buf).await?;
        }
        None => {
            let mut s = tcp;
            s.write_all(req.as_bytes()).await?;
            read_all(&mut s, &mut buf).await?;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer ({} bytes)", buf.len()))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line"))?;
    if code != 200 {
        return Err(anyhow!("HTTP {code}"));
    }
    Ok(body.to_owned())
}

async fn read_all<S: tokio::io::AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<()> {
    // The stand-ins close after answering ("Connection: close"); a TLS peer may close
    // without close_notify, which is fine once the answer is complete.
    match s.take(1 << 20).read_to_end(buf).await {
        Ok(_) => Ok(()),
        Err(e) if !buf.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Summary of a probe run around one event.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub sent: usize,
    pub failed: usize,
    /// Requests that succeeded but took longer than the disruption threshold.
    pub slow: usize,
    /// From the event to the first request after which every request succeeds quickly
    /// (0 when nothing was disrupted).
    pub recovered_after_ms: f64,
    /// First and last disrupted request, from the event.
    pub disrupted_from_ms: Option<f64>,
    pub disrupted_until_ms: Option<f64>,
    pub max_latency_ms: f64,
    /// The first few failures: when (from the event) and why.
    pub first_failures: Vec<String>,
}

/// A request is disrupted if it failed or took longer than `slow_ms`.
pub fn analyse(samples: &[Sample], event_ms: f64, slow_ms: f64) -> Outcome {
    let disrupted = |s: &Sample| !s.ok || s.latency_ms > slow_ms;
    let failed = samples.iter().filter(|s| !s.ok).count();
    let slow = samples
        .iter()
        .filter(|s| s.ok && s.latency_ms > slow_ms)
        .count();
    let first = samples
        .iter()
        .find(|s| disrupted(s))
        .map(|s| s.sent_ms - event_ms);
    let last_idx = samples.iter().rposition(disrupted);
    let last = last_idx.map(|i| samples[i].sent_ms - event_ms);
    let recovered_after_ms = match last_idx {
        None => 0.0,
        Some(i) => samples
            .get(i + 1)
            .map_or(f64::INFINITY, |s| (s.sent_ms - event_ms).max(0.0)),
    };
    Outcome {
        sent: samples.len(),
        failed,
        slow,
        recovered_after_ms,
        disrupted_from_ms: first,
        disrupted_until_ms: last,
        max_latency_ms: samples.iter().map(|s| s.latency_ms).fold(0.0, f64::max),
        first_failures: samples
            .iter()
            .filter(|s| !s.ok)
            .take(3)
            .map(|s| {
                format!(
                    "{:+.0} ms: {}",
                    s.sent_ms - event_ms,
                    s.error.as_deref().unwrap_or("failed")
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sent_ms: f64, ok: bool, latency_ms: f64) -> Sample {
        Sample {
            sent_ms,
            ok,
            latency_ms,
            backend: None,
            error: None,
        }
    }

    #[test]
    fn analysis_finds_the_window() {
        let v = [
            s(0.0, true, 1.0),
            s(20.0, false, 1000.0),
            s(40.0, true, 900.0),
            s(60.0, true, 2.0),
            s(80.0, true, 1.0),
        ];
        let o = analyse(&v, 10.0, 250.0);
        assert_eq!((o.sent, o.failed, o.slow), (5, 1, 1));
        assert_eq!(o.disrupted_from_ms, Some(10.0));
        assert_eq!(o.disrupted_until_ms, Some(30.0));
        assert_eq!(o.recovered_after_ms, 50.0);
        assert_eq!(o.max_latency_ms, 1000.0);
        let clean = analyse(&[s(0.0, true, 1.0)], 0.0, 250.0);
        assert_eq!((clean.failed, clean.recovered_after_ms), (0, 0.0));
    }
}
