//! lbd vs HAProxy (Debian's haproxy, TCP mode), side by side in one run, each also against
//! a direct connection to the backend. Loopback only; every phase is bounded in time.
//!
//! ```text
//!   cargo bench -p benches --bench lbd_vs_haproxy        (LBD_BIN=path to skip the build)
//!
//!   bench client ──► direct ─────────────────────────────► iperf3 -s / echo child
//!                ──► lbd     (release, --config bench.toml) ──┘
//!                ──► haproxy (-f bench.cfg -db, nbthread = nproc) ──┘
//! ```
//!
//! Phases: bulk throughput (iperf3, 1 and 8 streams), short-connection rate (connect, 16-byte
//! echo, close, from CONN_CONCURRENCY tasks), keep-alive latency (64-byte ping-pong on one
//! connection, p50/p99), memory per idle connection (RSS before/after IDLE_CONNS_WANTED
//! connections, on freshly started proxies). Ratios are lbd/HAProxy.
//!
//! Knobs (environment): `LBD_BIN` (an lbd binary; default: build it in release),
//! `LBD_BENCH_PHASES` (comma list of throughput,connrate,latency,memory; default all),
//! `LBD_BENCH_CONCURRENCY` (short-connection clients, default CONN_CONCURRENCY),
//! `LBD_BENCH_PIN=1` (both proxies on the last CPU, one thread each; client and backends on
//! the other CPUs), `LBD_BENCH_HAPROXY_SPLICE=1` (`option splice-auto` for HAProxy; default off, HAProxy's
//! default), `LBD_COPY=buffered` (passed on to lbd: no splice).
//!
//! The echo backend is this same binary re-executed with `LBD_BENCH_ROLE=echo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use benches::{
    cpu_time, free_port, percentile, raise_nofile, rss_kib, tail, threads, wait_listening,
    write_file, ChildGuard,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const IPERF_SECS: u64 = 5;
const CONN_SECS: u64 = 5;
const CONN_CONCURRENCY: usize = 32;
const LATENCY_WARMUP: usize = 1_000;
const LATENCY_SAMPLES: usize = 20_000;
/// Idle connections for the memory phase; fewer when RLIMIT_NOFILE's hard limit cannot be
/// raised far enough (a proxy needs two descriptors per connection).
const IDLE_CONNS_WANTED: usize = 10_000;
static IDLE_CONNS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Idle connections to open in the memory phase (set once in `run`).
fn idle_conns() -> usize {
    IDLE_CONNS.get().copied().unwrap_or(IDLE_CONNS_WANTED)
}

/// Connection cap given to both proxies: the idle connections plus a margin.
fn proxy_maxconn() -> usize {
    idle_conns() + 40
}
/// Repetitions of the short phases (connection rate, latency); the median is reported.
const ROUNDS: usize = 5;
/// Repetitions of each iperf3 run; the median is reported.
const THROUGHPUT_ROUNDS: usize = 3;
const HEALTH_INTERVAL: &str = "2s";

fn main() -> ExitCode {
    if std::env::var("LBD_BENCH_ROLE").as_deref() == Ok("echo") {
        return match echo_server() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo backend: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` would run us too: only a real
    // bench invocation runs the (minutes-long) benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("lbd_vs_haproxy: run with `cargo bench -p benches --bench lbd_vs_haproxy`");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbd_vs_haproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// The echo backend (child process)

fn echo_server() -> Result<()> {
    let ports = std::env::var("LBD_BENCH_PORTS").context("LBD_BENCH_PORTS")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for p in ports.split(',') {
            let port: u16 = p.parse().with_context(|| format!("port {p:?}"))?;
            let l = TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("binding echo port {port}"))?;
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = l.accept().await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    });
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Set-up

#[derive(Clone, Copy)]
struct Ports {
    iperf_backend: u16,
    echo_backends: [u16; 2],
}

#[derive(Clone, Copy)]
struct Frontends {
    iperf: u16,
    echo: u16,
}

struct Target {
    name: &'static str,
    iperf: SocketAddr,
    echo: SocketAddr,
    process: Option<ChildGuard>,
}

impl Target {
    /// CPU time the proxy process has used so far (`None` for direct).
    fn cpu(&self) -> Option<Duration> {
        self.process.as_ref().and_then(|p| cpu_time(p.pid()))
    }
}

/// Proxy CPU time per unit of work, per measure and proxy: explains the ratios (a proxy
/// that needs more CPU per byte or per connection loses on a machine this small).
#[derive(Default)]
struct CpuTally {
    /// (measure, proxy, CPU seconds, units of work)
    entries: Vec<(String, &'static str, f64, f64)>,
}

impl CpuTally {
    fn add(&mut self, what: &str, t: &Target, before: Option<Duration>, units: f64) {
        let (Some(before), Some(after)) = (before, t.cpu()) else {
            return;
        };
        let secs = after.saturating_sub(before).as_secs_f64();
        match self
            .entries
            .iter_mut()
            .find(|e| e.0 == what && e.1 == t.name)
        {
            Some(e) => {
                e.2 += secs;
                e.3 += units;
            }
            None => self.entries.push((what.to_owned(), t.name, secs, units)),
        }
    }

    fn print(&self) {
        let mut measures: Vec<&str> = self.entries.iter().map(|e| e.0.as_str()).collect();
        measures.dedup();
        if measures.is_empty() {
            return;
        }
        println!(
            "\n| {:<40} | {:>10} | {:>10} | {:>11} |",
            "proxy CPU per unit of work", "lbd", "haproxy", "lbd/haproxy"
        );
        println!("|{:-<42}|{:->12}|{:->12}|{:->13}|", "", "", "", "");
        for m in measures {
            let per = |name: &str| {
                self.entries
                    .iter()
                    .find(|e| e.0 == m && e.1 == name && e.3 > 0.0)
                    .map(|e| e.2 / e.3)
            };
            let (l, h) = (per("lbd"), per("haproxy"));
            let ratio = match (l, h) {
                (Some(l), Some(h)) if h > 0.0 => format!("{:.2}x", l / h),
                _ => "-".to_owned(),
            };
            println!(
                "| {:<40} | {:>10} | {:>10} | {:>11} |",
                m,
                cell(l),
                cell(h),
                ratio
            );
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// CPUs of the machine (as this process found them before any pinning).
fn nproc() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// With `LBD_BENCH_PIN=1`: the CPU both proxies are pinned to (the last one); the client
/// and the backends run on the others.
static PROXY_CPU: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();

fn proxy_cpu() -> Option<usize> {
    PROXY_CPU.get().copied().flatten()
}

/// Threads each proxy runs: HAProxy's nbthread; lbd's runtime sizes itself to the CPUs it
/// may use, which is the same number.
fn proxy_threads() -> usize {
    if proxy_cpu().is_some() {
        1
    } else {
        nproc()
    }
}

/// `program`, under `taskset -c CPU` when pinning.
fn proxy_command(program: &Path) -> Command {
    match proxy_cpu() {
        Some(cpu) => {
            let mut c = Command::new("/usr/bin/taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Pins this process (and so the client runtime, the backends and iperf3, started later)
/// to every CPU but the proxies' one.
fn pin_self_away_from(proxy: usize) -> Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    for cpu in (0..nproc()).filter(|&c| c != proxy) {
        set.set(cpu).context("CpuSet::set")?;
    }
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).context("sched_setaffinity")
}

fn require_tool(path: &str) -> Result<()> {
    if !Path::new(path).exists() {
        bail!(
            "{path} is missing: run the README test command (./scripts/test.sh), which \
             installs Debian's haproxy and iperf3"
        );
    }
    Ok(())
}

fn haproxy_config(p: Ports, fe: Frontends, maxconn: usize) -> String {
    format!(
        "global\n  nbthread {threads}\n  maxconn {maxconn}\n  maxpipes 64\n\
         defaults\n  mode tcp\n  maxconn {maxconn}\n{splice}  timeout connect 5s\n  timeout client 300s\n  \
         timeout server 300s\n\
         frontend iperf\n  bind 127.0.0.1:{fi}\n  default_backend iperf\n\
         backend iperf\n  balance roundrobin\n  \
         server s1 127.0.0.1:{bi} check inter {HEALTH_INTERVAL} rise 2 fall 3\n\
         frontend echo\n  bind 127.0.0.1:{fe}\n  default_backend echo\n\
         backend echo\n  balance roundrobin\n  \
         server e1 127.0.0.1:{e1} check inter {HEALTH_INTERVAL} rise 2 fall 3\n  \
         server e2 127.0.0.1:{e2} check inter {HEALTH_INTERVAL} rise 2 fall 3\n",
        threads = proxy_threads(),
        // HAProxy's default (and the stock k3s-style config) moves bytes through buffers;
        // LBD_BENCH_HAPROXY_SPLICE=1 lets it splice too, as lbd does by default.
        splice = if std::env::var("LBD_BENCH_HAPROXY_SPLICE").as_deref() == Ok("1") {
            "  option splice-auto\n"
        } else {
            ""
        },
        fi = fe.iperf,
        bi = p.iperf_backend,
        fe = fe.echo,
        e1 = p.echo_backends[0],
        e2 = p.echo_backends[1],
    )
}

fn lbd_config(p: Ports, fe: Frontends, stats: u16, maxconn: usize) -> String {
    format!(
        r#"# Generated by benches/benches/lbd_vs_haproxy.rs
[cluster]
name = "bench"
domain = "bench.test"

[vip]
address = "127.0.0.100/8"

[[nodes]]
name = "bench-1"
address = "127.0.0.1"
role = "server"

[[services]]
name = "iperf"
listen = {fi}
bind = "127.0.0.1"
backends = ["127.0.0.1:{bi}"]
balance = "roundrobin"
check = {{ kind = "tcp", interval = "{HEALTH_INTERVAL}", rise = 2, fall = 3 }}
timeouts = {{ idle = "300s", tunnel = "300s" }}

[[services]]
name = "echo"
listen = {fe}
bind = "127.0.0.1"
backends = ["127.0.0.1:{e1}", "127.0.0.1:{e2}"]
balance = "roundrobin"
check = {{ kind = "tcp", interval = "{HEALTH_INTERVAL}", rise = 2, fall = 3 }}
timeouts = {{ idle = "300s", tunnel = "300s" }}

[stats]
listen = "127.0.0.1:{stats}"

[lbd]
max_connections = {maxconn}
"#,
        fi = fe.iperf,
        bi = p.iperf_backend,
        fe = fe.echo,
        e1 = p.echo_backends[0],
        e2 = p.echo_backends[1],
    )
}

/// The lbd binary: `LBD_BIN`, or a fresh `cargo build --release -p lbd` (bounded 20 min).
fn lbd_binary() -> Result<PathBuf> {
    benches::release_binary("lbd", "LBD_BIN")
}

/// Waits until a 16-byte echo through `addr` comes back (the proxy is up and its health
/// checks have admitted the backends).
fn wait_echo(rt: &tokio::runtime::Runtime, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ok = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(500), echo_once(addr))
                .await
                .is_ok_and(|r| r.is_ok())
        });
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("no echo through {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_haproxy(dir: &Path, p: Ports, rt: &tokio::runtime::Runtime, tag: &str) -> Result<Target> {
    let fe = Frontends {
        iperf: free_port()?,
        echo: free_port()?,
    };
    let cfg = dir.join(format!("haproxy-{tag}.cfg"));
    write_file(&cfg, &haproxy_config(p, fe, proxy_maxconn()))?;
    let mut cmd = proxy_command(Path::new("/usr/sbin/haproxy"));
    cmd.arg("-f").arg(&cfg).arg("-db");
    let mut child = ChildGuard::spawn("haproxy", cmd, &dir.join(format!("haproxy-{tag}.log")))?;
    let target = Target {
        name: "haproxy",
        iperf: loopback(fe.iperf),
        echo: loopback(fe.echo),
        process: None,
    };
    let ready = wait_listening(target.echo, Duration::from_secs(10))
        .and_then(|()| wait_echo(rt, target.echo, Duration::from_secs(15)));
    if let Err(e) = ready {
        child.check_alive()?;
        return Err(e.context(format!("haproxy log:\n{}", tail(&child.log, 15))));
    }
    child.check_alive()?;
    Ok(Target {
        process: Some(child),
        ..target
    })
}

fn start_lbd(
    bin: &Path,
    dir: &Path,
    p: Ports,
    rt: &tokio::runtime::Runtime,
    tag: &str,
) -> Result<Target> {
    let fe = Frontends {
        iperf: free_port()?,
        echo: free_port()?,
    };
    let text = lbd_config(p, fe, free_port()?, proxy_maxconn());
    let cfg = dir.join(format!("lbd-{tag}.toml"));
    write_file(&cfg, &text)?;
    common::config::parse(&text, Some(&cfg))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the generated lbd config does not validate")?;
    let run_dir = dir.join(format!("lbd-run-{tag}"));
    std::fs::create_dir_all(&run_dir).context("creating lbd run dir")?;
    let mut cmd = proxy_command(bin);
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--node")
        .arg("bench-1")
        .arg("--run-dir")
        .arg(&run_dir)
        .env("RUST_LOG", "warn");
    let mut child = ChildGuard::spawn("lbd", cmd, &dir.join(format!("lbd-{tag}.log")))?;
    let target = Target {
        name: "lbd",
        iperf: loopback(fe.iperf),
        echo: loopback(fe.echo),
        process: None,
    };
    let ready = wait_listening(target.echo, Duration::from_secs(10))
        .and_then(|()| wait_echo(rt, target.echo, Duration::from_secs(15)));
    if let Err(e) = ready {
        child.check_alive()?;
        return Err(e.context(format!("lbd log:\n{}", tail(&child.log, 15))));
    }
    child.check_alive()?;
    Ok(Target {
        process: Some(child),
        ..target
    })
}

// ---------------------------------------------------------------------------------------
// Measurements

async fn echo_once(addr: SocketAddr) -> std::io::Result<()> {
    echo_once_from(addr, None).await
}

/// Connect (optionally from source address `from`), 16-byte echo, close.
async fn echo_once_from(addr: SocketAddr, from: Option<std::net::Ipv4Addr>) -> std::io::Result<()> {
    let mut s = match from {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::from((ip, 0)))?;
            sock.connect(addr).await?
        }
    };
    s.set_nodelay(true)?;
    let msg = [0x5au8; 16];
    s.write_all(&msg).await?;
    let mut back = [0u8; 16];
    s.read_exact(&mut back).await?;
    if back != msg {
        return Err(std::io::Error::other("echo mismatch"));
    }
    Ok(())
}

/// iperf3 client through `addr`; returns the receiver's Gbit/s.
fn iperf(addr: SocketAddr, streams: u32) -> Result<f64> {
    let out_path = std::env::temp_dir().join(format!(
        "lbd-bench-iperf-{}-{}.json",
        std::process::id(),
        addr.port()
    ));
    let out = std::fs::File::create(&out_path).context("iperf3 output file")?;
    let mut child = Command::new("/usr/bin/iperf3")
        .args(["-c", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", &IPERF_SECS.to_string(), "-P", &streams.to_string()])
        .args(["-J", "--connect-timeout", "3000"])
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting iperf3 -c")?;
    let deadline = Instant::now() + Duration::from_secs(IPERF_SECS + 30);
    let status = loop {
        if let Some(s) = child.try_wait().context("waiting for iperf3")? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("iperf3 through {addr} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out_path).context("reading iperf3 output")?;
    let _ = std::fs::remove_file(&out_path);
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("iperf3 output is not JSON ({status})"))?;
    if let Some(err) = json.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3 through {addr}: {err}");
    }
    let bps = json
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .context("iperf3 JSON has no end.sum_received.bits_per_second")?;
    Ok(bps / 1e9)
}

/// Short connections for CONN_SECS: connect, 16-byte echo, close. Returns connections/s.
async fn conn_rate(addr: SocketAddr, concurrency: usize) -> Result<f64> {
    let start = Instant::now();
    let stop = start + Duration::from_secs(CONN_SECS);
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut n = 0u32;
            while Instant::now() < stop {
                // Spread client connections over 127.0.1.0/24 source addresses, so the
                // client's own TIME_WAIT sockets do not make connect() hunt for a free
                // port (that cost would cap direct and proxied runs alike).
                n = n.wrapping_add(1);
                #[expect(clippy::cast_possible_truncation, reason = "wraps on purpose")]
                let host = ((task as u32).wrapping_mul(7).wrapping_add(n) % 250 + 1) as u8;
                let from = std::net::Ipv4Addr::new(127, 0, 1, host);
                match tokio::time::timeout(Duration::from_secs(2), echo_once_from(addr, Some(from)))
                    .await
                {
                    Ok(Ok(())) => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0u64, 0u64);
    for t in tasks {
        let (o, f) = t.await.context("conn-rate task")?;
        ok += o;
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    if failed > ok / 100 {
        bail!(
            "{failed} of {} short connections through {addr} failed",
            ok + failed
        );
    }
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    Ok(ok as f64 / secs)
}

/// 64-byte ping-pong on one connection; returns the sorted round-trip times.
async fn latency(addr: SocketAddr) -> Result<Vec<Duration>> {
    let mut s = TcpStream::connect(addr).await.context("connect")?;
    s.set_nodelay(true)?;
    let msg = [0xa5u8; 64];
    let mut back = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_WARMUP + LATENCY_SAMPLES {
        if Instant::now() > deadline {
            bail!("latency run through {addr} took over 60 s");
        }
        let t0 = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        if i >= LATENCY_WARMUP {
            samples.push(t0.elapsed());
        }
    }
    samples.sort_unstable();
    Ok(samples)
}

/// Opens `idle_conns()` connections through `addr`, each proven established end to end by one
/// echo, and returns them (still open).
async fn open_idle(addr: SocketAddr) -> Result<Vec<TcpStream>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let want = idle_conns();
    let mut conns = Vec::with_capacity(want);
    while conns.len() < want {
        if Instant::now() > deadline {
            bail!("only {} idle connections after 120 s", conns.len());
        }
        let batch = (want - conns.len()).min(200);
        let mut tasks = Vec::with_capacity(batch);
        for _ in 0..batch {
            tasks.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(b"x").await?;
                let mut b = [0u8; 1];
                tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
                    .await
                    .map_err(|_| std::io::Error::other("echo timeout"))??;
                Ok::<_, std::io::Error>(s)
            }));
        }
        for t in tasks {
            match t.await.context("idle task")? {
                Ok(s) => conns.push(s),
                Err(e) => bail!("opening idle connection {}: {e}", conns.len() + 1),
            }
        }
    }
    Ok(conns)
}

/// RSS growth per idle connection, in KiB, for the process `pid` proxying `addr`.
fn memory_per_conn(
    rt: &tokio::runtime::Runtime,
    pid: u32,
    addr: SocketAddr,
) -> Result<(f64, u64, u64)> {
    // Warm up: a few connections, so one-time allocations are not counted.
    rt.block_on(async {
        for _ in 0..20 {
            echo_once(addr).await?;
        }
        Ok::<_, std::io::Error>(())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid)?;
    let conns = rt.block_on(open_idle(addr))?;
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid)?;
    drop(conns);
    #[expect(clippy::cast_precision_loss, reason = "KiB figures")]
    let per = (after.saturating_sub(before)) as f64 / idle_conns() as f64;
    Ok((per, before, after))
}

// ---------------------------------------------------------------------------------------
// Report

#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

struct Row {
    what: String,
    direct: Option<f64>,
    lbd: Option<f64>,
    haproxy: Option<f64>,
    goal: Goal,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of `name`'s samples, if it has any.
fn median_of(v: &[(&'static str, Vec<f64>)], name: &str) -> Option<f64> {
    v.iter()
        .find(|(n, x)| *n == name && !x.is_empty())
        .map(|(_, x)| median(x.clone()))
}

/// Target indices in the order of `round`: alternating, so neither proxy always runs right
/// after the same neighbour.
fn round_order(round: usize, n: usize) -> Vec<usize> {
    if round % 2 == 1 {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| {:<40} | {:>10} | {:>10} | {:>10} | {:>11} | {:>8} | {:<6} |",
        "measure", "direct", "lbd", "haproxy", "lbd/haproxy", "target", "met"
    );
    println!(
        "|{:-<42}|{:->12}|{:->12}|{:->12}|{:->13}|{:->10}|{:-<8}|",
        "", "", "", "", "", "", ""
    );
    for r in rows
        .iter()
        .filter(|r| r.direct.is_some() || r.lbd.is_some() || r.haproxy.is_some())
    {
        let ratio = match (r.lbd, r.haproxy) {
            (Some(l), Some(h)) if h > 0.0 => Some(l / h),
            _ => None,
        };
        let (goal, met) = match (r.goal, ratio) {
            (Goal::AtLeast(g), Some(x)) => {
                (format!(">= {g:.2}"), if x >= g { "yes" } else { "NO" })
            }
            (Goal::AtMost(g), Some(x)) => (format!("<= {g:.2}"), if x <= g { "yes" } else { "NO" }),
            (Goal::AtLeast(g), None) => (format!(">= {g:.2}"), "n/a"),
            (Goal::AtMost(g), None) => (format!("<= {g:.2}"), "n/a"),
        };
        println!(
            "| {:<40} | {:>10} | {:>10} | {:>10} | {:>11} | {:>8} | {:<6} |",
            r.what,
            cell(r.direct),
            cell(r.lbd),
            cell(r.haproxy),
            ratio.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x")),
            goal,
            met
        );
    }
}

// ---------------------------------------------------------------------------------------

/// A measurement's value, or `None` after printing why it failed (the run goes on).
fn attempt<T>(target: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("  *** {target}: {e:#}");
            None
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run() -> Result<()> {
    let phases = std::env::var("LBD_BENCH_PHASES")
        .unwrap_or_else(|_| "throughput,connrate,latency,memory".to_owned());
    let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);
    let concurrency = env_usize("LBD_BENCH_CONCURRENCY", CONN_CONCURRENCY);
    let load_start = loadavg();
    require_tool("/usr/sbin/haproxy")?;
    require_tool("/usr/bin/iperf3")?;
    let _ = nproc();
    let pin = std::env::var("LBD_BENCH_PIN").as_deref() == Ok("1") && nproc() >= 2;
    let _ = PROXY_CPU.set(pin.then(|| nproc() - 1));
    if let Some(cpu) = proxy_cpu() {
        require_tool("/usr/bin/taskset")?;
        pin_self_away_from(cpu)?;
    }
    let nofile = raise_nofile(65_536)?;
    // A proxy holds two descriptors per proxied connection, plus listeners, checks, logs.
    let idle = usize::try_from(nofile.saturating_sub(400) / 2)
        .map_or(IDLE_CONNS_WANTED, |n| n.min(IDLE_CONNS_WANTED));
    if idle < 1_000 {
        bail!("RLIMIT_NOFILE is {nofile}: too low for the idle-connection test");
    }
    if idle < IDLE_CONNS_WANTED {
        eprintln!(
            "*** RLIMIT_NOFILE hard limit is {nofile} and cannot be raised here (no \
             CAP_SYS_RESOURCE): measuring memory at {idle} idle connections, not {IDLE_CONNS_WANTED}"
        );
    }
    let _ = IDLE_CONNS.set(idle);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("client runtime")?;
    let dir = tempfile::Builder::new()
        .prefix("lbd-bench-")
        .tempdir()
        .context("temp dir")?;
    let d = dir.path();

    let ports = Ports {
        iperf_backend: free_port()?,
        echo_backends: [free_port()?, free_port()?],
    };
    let mut iperf_cmd = Command::new("/usr/bin/iperf3");
    iperf_cmd.args([
        "-s",
        "-B",
        "127.0.0.1",
        "-p",
        &ports.iperf_backend.to_string(),
    ]);
    let _iperf_server = ChildGuard::spawn("iperf3 -s", iperf_cmd, &d.join("iperf3.log"))?;
    let mut echo_cmd = Command::new(std::env::current_exe().context("current_exe")?);
    echo_cmd.env("LBD_BENCH_ROLE", "echo").env(
        "LBD_BENCH_PORTS",
        format!("{},{}", ports.echo_backends[0], ports.echo_backends[1]),
    );
    let _echo = ChildGuard::spawn("echo backend", echo_cmd, &d.join("echo.log"))?;
    wait_listening(loopback(ports.iperf_backend), Duration::from_secs(10))?;
    for p in ports.echo_backends {
        wait_listening(loopback(p), Duration::from_secs(10))?;
    }

    let lbd_bin = lbd_binary();
    let mut lbd_missing: Option<String> = None;
    let mut targets = vec![Target {
        name: "direct",
        iperf: loopback(ports.iperf_backend),
        echo: loopback(ports.echo_backends[0]),
        process: None,
    }];
    match lbd_bin
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|bin| start_lbd(bin, d, ports, &rt, "main"))
    {
        Ok(t) => targets.push(t),
        Err(e) => {
            eprintln!("\n*** lbd is not available, measuring haproxy and direct only: {e:#}\n");
            lbd_missing = Some(format!("{e:#}"));
        }
    }
    targets.push(start_haproxy(d, ports, &rt, "main")?);
    for t in &targets {
        if let Some(p) = &t.process {
            eprintln!(
                "{}: pid {}, {} threads",
                t.name,
                p.pid(),
                threads(p.pid()).unwrap_or(0)
            );
        }
    }

    let mut rows = Vec::new();
    let mut cpu = CpuTally::default();
    let by_name = |rows_vals: &[(&'static str, f64)], name: &str| {
        rows_vals.iter().find(|(n, _)| *n == name).map(|x| x.1)
    };

    for streams in [1u32, 8].into_iter().filter(|_| phase("throughput")) {
        let mut vals: Vec<(&'static str, Vec<f64>)> =
            targets.iter().map(|t| (t.name, Vec::new())).collect();
        for round in 1..=THROUGHPUT_ROUNDS {
            for i in round_order(round, targets.len()) {
                let t = &targets[i];
                eprintln!(
                    "throughput, {streams} stream(s), round {round}, {} ...",
                    t.name
                );
                let cpu0 = t.cpu();
                if let Some(gbps) = attempt(t.name, iperf(t.iperf, streams)) {
                    eprintln!("  {gbps:.2} Gbit/s");
                    vals[i].1.push(gbps);
                    #[expect(clippy::cast_precision_loss, reason = "seconds")]
                    let gbytes = gbps * IPERF_SECS as f64 / 8.0;
                    cpu.add(
                        &format!("CPU s per 10 GB, {streams} stream(s)"),
                        t,
                        cpu0,
                        gbytes / 10.0,
                    );
                }
            }
        }
        rows.push(Row {
            what: format!("throughput, {streams} stream(s) (Gbit/s)"),
            direct: median_of(&vals, "direct"),
            lbd: median_of(&vals, "lbd"),
            haproxy: median_of(&vals, "haproxy"),
            goal: Goal::AtLeast(1.1),
        });
    }

    let mut rates: Vec<(&'static str, Vec<f64>)> =
        targets.iter().map(|t| (t.name, Vec::new())).collect();
    let mut p50s: Vec<(&'static str, Vec<f64>)> = rates.clone();
    let mut p99s: Vec<(&'static str, Vec<f64>)> = rates.clone();
    for round in 1..=ROUNDS {
        let order = round_order(round, targets.len());
        for &i in order.iter().filter(|_| phase("connrate")) {
            let t = &targets[i];
            eprintln!("connection rate, round {round}, {} ...", t.name);
            let cpu0 = t.cpu();
            if let Some(r) = attempt(t.name, rt.block_on(conn_rate(t.echo, concurrency))) {
                eprintln!("  {r:.0} conn/s");
                rates[i].1.push(r);
                #[expect(clippy::cast_precision_loss, reason = "seconds")]
                let conns = r * CONN_SECS as f64;
                cpu.add("CPU us per short connection", t, cpu0, conns / 1e6);
            }
            // Let TIME_WAIT sockets of the last run settle a little.
            std::thread::sleep(Duration::from_secs(1));
        }
        for &i in order.iter().filter(|_| phase("latency")) {
            let t = &targets[i];
            eprintln!("keep-alive latency, round {round}, {} ...", t.name);
            if let Some(s) = attempt(t.name, rt.block_on(latency(t.echo))) {
                let (p50, p99) = (percentile(&s, 50.0), percentile(&s, 99.0));
                eprintln!("  p50 {p50:?} p99 {p99:?}");
                p50s[i].1.push(p50.as_secs_f64() * 1e6);
                p99s[i].1.push(p99.as_secs_f64() * 1e6);
            }
        }
    }
    rows.push(Row {
        what: format!("short connections (conn/s, {concurrency} clients)"),
        direct: median_of(&rates, "direct"),
        lbd: median_of(&rates, "lbd"),
        haproxy: median_of(&rates, "haproxy"),
        goal: Goal::AtLeast(1.0),
    });
    rows.push(Row {
        what: "keep-alive latency p50 (us)".to_owned(),
        direct: median_of(&p50s, "direct"),
        lbd: median_of(&p50s, "lbd"),
        haproxy: median_of(&p50s, "haproxy"),
        goal: Goal::AtMost(1.0),
    });
    rows.push(Row {
        what: "keep-alive latency p99 (us)".to_owned(),
        direct: median_of(&p99s, "direct"),
        lbd: median_of(&p99s, "lbd"),
        haproxy: median_of(&p99s, "haproxy"),
        goal: Goal::AtMost(1.0),
    });

    // Memory: fresh processes, so memory freed by the earlier phases is not reused.
    let had_lbd = targets.iter().any(|t| t.name == "lbd");
    drop(targets);
    std::thread::sleep(Duration::from_secs(2));
    let mut mem = Vec::new();
    let mut mem_detail = Vec::new();
    let mut fresh = Vec::new();
    if had_lbd && phase("memory") {
        if let Ok(bin) = &lbd_bin {
            fresh.push(start_lbd(bin, d, ports, &rt, "mem")?);
        }
    }
    if phase("memory") {
        fresh.push(start_haproxy(d, ports, &rt, "mem")?);
    }
    for t in &fresh {
        let Some(p) = &t.process else { continue };
        eprintln!("memory, {} idle connections, {} ...", idle_conns(), t.name);
        let Some((per, before, after)) = attempt(t.name, memory_per_conn(&rt, p.pid(), t.echo))
        else {
            continue;
        };
        eprintln!("  {per:.2} KiB/conn (RSS {before} -> {after} KiB)");
        mem.push((t.name, per));
        mem_detail.push(format!("{}: RSS {before} KiB -> {after} KiB", t.name));
        std::thread::sleep(Duration::from_secs(2));
    }
    rows.push(Row {
        what: format!("memory per idle conn (KiB, {} conns)", idle_conns()),
        direct: None,
        lbd: by_name(&mem, "lbd"),
        haproxy: by_name(&mem, "haproxy"),
        goal: Goal::AtMost(0.5),
    });
    drop(fresh);

    println!(
        "\nlbd vs HAProxy, loopback, {} CPUs ({}), haproxy nbthread {}, {}",
        nproc(),
        cpu_model(),
        proxy_threads(),
        match proxy_cpu() {
            Some(cpu) =>
                format!("both proxies pinned to CPU {cpu}, client and backends on the others"),
            None => "nothing pinned".to_owned(),
        }
    );
    println!(
        "haproxy splice: {}; lbd copy: {}",
        if std::env::var("LBD_BENCH_HAPROXY_SPLICE").as_deref() == Ok("1") {
            "option splice-auto"
        } else {
            "off (HAProxy's default)"
        },
        if std::env::var("LBD_COPY").as_deref() == Ok("buffered") {
            "buffered (LBD_COPY=buffered)"
        } else {
            "splice (lbd's default)"
        }
    );
    println!(
        "load average at start: {load_start}; at end: {}  (other work on the machine skews \
         every figure; compare ratios within one run)",
        loadavg()
    );
    if let Some(why) = &lbd_missing {
        println!("lbd NOT measured: {why}");
    }
    print_table(&rows);
    cpu.print();
    println!("\nmemory detail: {}", mem_detail.join("; "));
    Ok(())
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
