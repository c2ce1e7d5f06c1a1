//! lbd vs HAProxy on workloads lbd was not tuned on (issue 16: an independent run found lbd
//! behind on some of them). Loopback only; every phase is bounded in time.
//!
//! ```text
//!   cargo bench -p benches --bench proxy_workloads       (LBD_BIN=path to skip the build)
//!
//!   iperf3 -c ──► haproxy | lbd ──► iperf3 -s
//!   wrk       ──► haproxy | lbd ──► nginx (three ports: /1k, /100m)
//! ```
//!
//! Both proxies get the same settings: TCP mode, round robin over nginx's three ports with
//! tcp checks every 2 s, 300 s timeouts, no stats page, the same thread count (HAProxy's
//! `nbthread`, lbd's `lbd.threads`). Two set-ups in one run: unpinned (everything shares
//! both CPUs, one thread per CPU), and pinned (each proxy alone on the last CPU with one
//! thread; clients and backends on the others). Each round runs HAProxy, lbd, lbd,
//! HAProxy, every measure on a freshly started proxy; the figure is the median of all
//! samples. Measures:
//!
//! | row | how |
//! |---|---|
//! | iperf3 1 / 8 streams | `iperf3 -c -t SECS [-P 8]`, receiver's rate |
//! | HTTP bulk | `wrk -t1 -c1` on a 100 MiB file, bytes/s |
//! | short connections | `wrk -t2 -c50 -H 'Connection: close'` on 1 KiB, requests/s |
//! | keep-alive | `wrk -t2 -c10 --latency` on 1 KiB, p99 and requests/s |
//! | idle connections | RSS of the proxy before and after 5,000 keep-alive connections, each proven by one request |
//!
//! Knobs (environment): `LBD_BIN`; `WL_SECS` (per measure, default 4); `WL_ROUNDS`
//! (default 5); `WL_SETUPS` (`unpinned,pinned`); `WL_MEASURES` (comma list of
//! iperf1,iperf8,bulk,short,keepalive,idle; default all); `LBD_COPY` is passed to lbd;
//! `WL_PROXY_PROTOCOL=v2` (both proxies send PROXY v2 headers to nginx; no iperf3 rows).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use benches::wrk::{median, wrk, Wrk};
use benches::{
    cpu_time, free_port, raise_nofile, rss_kib, tail, wait_listening, write_file, ChildGuard,
};

const IDLE: usize = 5_000;
const HEALTH: &str = "2s";
const BULK_FILE: u64 = 100 * 1024 * 1024;

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("proxy_workloads: run with `cargo bench -p benches --bench proxy_workloads`");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy_workloads: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `WL_PROXY_PROTOCOL=v2`: both proxies send a PROXY v2 header to nginx, which requires it
/// (`listen ... proxy_protocol`; HAProxy `send-proxy-v2`, lbd `proxy_protocol = "v2"`).
fn proxy_v2() -> bool {
    std::env::var("WL_PROXY_PROTOCOL").as_deref() == Ok("v2")
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ---------------------------------------------------------------------------------------
// Set-up

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Unpinned,
    /// The proxy alone on this CPU with one thread.
    Pinned(usize),
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Unpinned => "unpinned",
            Setup::Pinned(_) => "pinned",
        }
    }
    fn threads(self, cpus: usize) -> usize {
        match self {
            Setup::Unpinned => cpus,
            Setup::Pinned(_) => 1,
        }
    }
    /// Where this process, the clients and the backends run (children inherit it).
    fn pin_self(self, cpus: usize) -> Result<()> {
        use nix::sched::{sched_setaffinity, CpuSet};
        let mut set = CpuSet::new();
        for cpu in 0..cpus {
            if self != Setup::Pinned(cpu) {
                set.set(cpu).context("CpuSet::set")?;
            }
        }
        sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).context("sched_setaffinity")
    }
    fn command(self, program: &Path) -> Command {
        match self {
            Setup::Pinned(cpu) => {
                let mut c = Command::new("/usr/bin/taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            Setup::Unpinned => Command::new(program),
        }
    }
}

/// nginx on three loopback ports serving /1k and /100m, and an iperf3 server.
struct Backends {
    _nginx: ChildGuard,
    _iperf: ChildGuard,
    web: [u16; 3],
    iperf: u16,
}

fn start_backends(dir: &Path) -> Result<Backends> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).context("creating the web root")?;
    write_file(&www.join("1k"), &"x".repeat(1024))?;
    let f = std::fs::File::create(www.join("100m")).context("creating /100m")?;
    f.set_len(BULK_FILE).context("sizing /100m")?;
    // nginx's workers run as nobody: the files and their directories must be readable.
    for p in [dir, www.as_path()] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let web = [free_port()?, free_port()?, free_port()?];
    let conf = dir.join("nginx.conf");
    write_file(
        &conf,
        &format!(
            "master_process off;\nworker_rlimit_nofile 65536;\ndaemon off;\npid {d}/nginx.pid;\n\
             error_log {d}/nginx-error.log warn;\nevents {{ worker_connections 30000; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  \
             keepalive_timeout 300s;\n  keepalive_requests 100000000;\n  \
             default_type application/octet-stream;\n  \
             client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
             fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  \
             server {{\n    listen 127.0.0.1:{a} backlog=4096{pp};\n    listen 127.0.0.1:{b} backlog=4096{pp};\n    \
             listen 127.0.0.1:{c} backlog=4096{pp};\n    root {w};\n  }}\n}}\n",
            pp = if proxy_v2() { " proxy_protocol" } else { "" },
            d = dir.display(),
            w = www.display(),
            a = web[0],
            b = web[1],
            c = web[2],
        ),
    )?;
    let mut cmd = Command::new("/usr/sbin/nginx");
    cmd.arg("-c").arg(&conf).arg("-p").arg(dir);
    let mut nginx = ChildGuard::spawn("nginx", cmd, &dir.join("nginx.log"))?;
    let iperf = free_port()?;
    let mut cmd = Command::new("/usr/bin/iperf3");
    cmd.args(["-s", "-B", "127.0.0.1", "-p"])
        .arg(iperf.to_string());
    let mut iperf_child = ChildGuard::spawn("iperf3 -s", cmd, &dir.join("iperf3-s.log"))?;
    for p in web {
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], p)),
            Duration::from_secs(10),
        )
        .with_context(|| format!("nginx: {}", tail(&dir.join("nginx-error.log"), 10)))?;
    }
    wait_listening(
        SocketAddr::from(([127, 0, 0, 1], iperf)),
        Duration::from_secs(10),
    )?;
    nginx.check_alive()?;
    iperf_child.check_alive()?;
    Ok(Backends {
        _nginx: nginx,
        _iperf: iperf_child,
        web,
        iperf,
    })
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Proxy {
    Haproxy,
    Lbd,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::Haproxy => "haproxy",
            Proxy::Lbd => "lbd",
        }
    }
}

struct Running {
    child: ChildGuard,
    web: SocketAddr,
    iperf: SocketAddr,
}

fn start_proxy(
    p: Proxy,
    setup: Setup,
    lbd: &Path,
    dir: &Path,
    b: &Backends,
    tag: &str,
) -> Result<Running> {
    let (web, iperf) = (free_port()?, free_port()?);
    let threads = setup.threads(nproc());
    let maxconn = IDLE + 1000;
    let cmd = match p {
        Proxy::Haproxy => {
            let cfg = dir.join(format!("haproxy-{tag}.cfg"));
            let servers: String = b
                .web
                .iter()
                .enumerate()
                .map(|(i, port)| {
                    format!(
                        "  server w{i} 127.0.0.1:{port} check inter {HEALTH} rise 2 fall 3{pp}\n",
                        pp = if proxy_v2() { " send-proxy-v2" } else { "" }
                    )
                })
                .collect();
            write_file(
                &cfg,
                &format!(
                    "global\n  nbthread {threads}\n  maxconn {maxconn}\n\
                     defaults\n  mode tcp\n  maxconn {maxconn}\n  timeout connect 5s\n  \
                     timeout client 300s\n  timeout server 300s\n\
                     frontend web\n  bind 127.0.0.1:{web}\n  default_backend web\n\
                     backend web\n  balance roundrobin\n{servers}\
                     frontend iperf\n  bind 127.0.0.1:{iperf}\n  default_backend iperf\n\
                     backend iperf\n  server i1 127.0.0.1:{ip} check inter {HEALTH} rise 2 fall 3\n",
                    ip = b.iperf,
                ),
            )?;
            let mut c = setup.command(Path::new("/usr/sbin/haproxy"));
            c.arg("-f").arg(&cfg).arg("-db");
            c
        }
        Proxy::Lbd => {
            let backends: Vec<String> =
                b.web.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
            let text = format!(
                "[cluster]\nname = \"wl\"\ndomain = \"wl.test\"\n[vip]\naddress = \"127.0.0.100/8\"\n\
                 [[nodes]]\nname = \"wl-1\"\naddress = \"127.0.0.1\"\nrole = \"server\"\n\
                 [[services]]\nname = \"web\"\nlisten = {web}\nbind = \"127.0.0.1\"\n\
                 backends = [{bl}]\nbalance = \"roundrobin\"\n{pp}\
                 check = {{ kind = \"tcp\", interval = \"{HEALTH}\", rise = 2, fall = 3 }}\n\
                 timeouts = {{ connect = \"5s\", idle = \"300s\", tunnel = \"300s\" }}\n\
                 [[services]]\nname = \"iperf\"\nlisten = {iperf}\nbind = \"127.0.0.1\"\n\
                 backends = [\"127.0.0.1:{ip}\"]\n\
                 check = {{ kind = \"tcp\", interval = \"{HEALTH}\", rise = 2, fall = 3 }}\n\
                 timeouts = {{ connect = \"5s\", idle = \"300s\", tunnel = \"300s\" }}\n\
                 [stats]\nlisten = \"off\"\n[lbd]\nmax_connections = {maxconn}\nthreads = {threads}\npeer_port = 0\n",
                bl = backends.join(", "),
                pp = if proxy_v2() { "proxy_protocol = \"v2\"\n" } else { "" },
                ip = b.iperf,
            );
            let cfg = dir.join(format!("lbd-{tag}.toml"));
            write_file(&cfg, &text)?;
            common::config::parse(&text, Some(&cfg))
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("the generated lbd config does not validate")?;
            let run = dir.join(format!("lbd-run-{tag}"));
            std::fs::create_dir_all(&run)?;
            let mut c = setup.command(lbd);
            c.arg("--config")
                .arg(&cfg)
                .args(["--node", "wl-1", "--run-dir"])
                .arg(&run)
                .env("RUST_LOG", "warn");
            c
        }
    };
    let mut child = ChildGuard::spawn(p.name(), cmd, &dir.join(format!("{}-{tag}.log", p.name())))?;
    let web = SocketAddr::from(([127, 0, 0, 1], web));
    let iperf = SocketAddr::from(([127, 0, 0, 1], iperf));
    let ready = wait_listening(web, Duration::from_secs(10))
        .and_then(|()| wait_listening(iperf, Duration::from_secs(10)))
        .and_then(|()| wait_http(web, Duration::from_secs(10)));
    if let Err(e) = ready {
        child.check_alive()?;
        return Err(e.context(format!("{} log:\n{}", p.name(), tail(&child.log, 15))));
    }
    Ok(Running { child, web, iperf })
}

/// One GET /1k answered 200 through `addr`.
fn wait_http(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            if get_1k(&mut s).is_ok() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("no HTTP answer through {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A keep-alive GET /1k on `s`, its whole answer read.
fn get_1k(s: &mut TcpStream) -> Result<()> {
    use std::io::{Read as _, Write as _};
    s.write_all(b"GET /1k HTTP/1.1\r\nHost: wl\r\n\r\n")?;
    let mut got = Vec::with_capacity(1400);
    let mut buf = [0u8; 2048];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("closed after {} bytes", got.len());
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if !got.starts_with(b"HTTP/1.1 200") {
                bail!("not a 200: {}", String::from_utf8_lossy(&got[..end]));
            }
            if got.len() >= end + 4 + 1024 {
                return Ok(());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Measures

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Measure {
    Iperf1,
    Iperf8,
    Bulk,
    Short,
    /// The proxy's CPU time per short connection, as [`Measure::KeepAliveCpu`].
    ShortCpu,
    KeepAliveP99,
    KeepAliveRate,
    /// The proxy's CPU time (user + system) per keep-alive request: what its share of
    /// the latency costs, free of the client side's scheduling noise.
    KeepAliveCpu,
    Idle,
}

impl Measure {
    fn label(self) -> &'static str {
        match self {
            Measure::Iperf1 => "iperf3 1 stream (Gbit/s)",
            Measure::Iperf8 => "iperf3 8 streams (Gbit/s)",
            Measure::Bulk => "HTTP bulk 100 MiB, wrk -c1 (MiB/s)",
            Measure::Short => "short conns, wrk -c50 close (req/s)",
            Measure::ShortCpu => "proxy CPU per short connection (us)",
            Measure::KeepAliveP99 => "keep-alive p99, wrk -c10 (us)",
            Measure::KeepAliveRate => "keep-alive rate, wrk -c10 (req/s)",
            Measure::KeepAliveCpu => "proxy CPU per keep-alive request (us)",
            Measure::Idle => "memory per idle conn (KiB, 5000)",
        }
    }
    /// The target as lbd/HAProxy: (at least, value) or (at most, value).
    fn target(self) -> (bool, f64) {
        match self {
            Measure::Iperf1 | Measure::Iperf8 | Measure::Bulk => (true, 1.1),
            Measure::Short => (true, 1.0),
            Measure::ShortCpu => (false, 1.0),
            Measure::KeepAliveP99 => (false, 1.0),
            Measure::KeepAliveRate => (true, 1.0),
            Measure::KeepAliveCpu => (false, 1.0),
            Measure::Idle => (false, 0.5),
        }
    }
}

fn iperf(addr: SocketAddr, streams: u32, secs: u64) -> Result<f64> {
    let out = Command::new("/usr/bin/timeout")
        .arg((secs + 20).to_string())
        .args(["/usr/bin/iperf3", "-J", "-c", "127.0.0.1", "-p"])
        .arg(addr.port().to_string())
        .args(["-t", &secs.to_string(), "-P", &streams.to_string()])
        .output()
        .context("running iperf3 -c")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 -J: {}", String::from_utf8_lossy(&out.stderr)))?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("iperf3: no sum_received: {}", v["error"]))
}

/// iperf3 once more after a failure, saying so: iperf3's server may still be finishing
/// the previous test ("the server is busy") when the next one starts.
fn iperf_retried(addr: SocketAddr, streams: u32, secs: u64) -> Result<f64> {
    iperf(addr, streams, secs).or_else(|e| {
        eprintln!("  iperf3 -P {streams} failed ({e:#}); once more in 1 s");
        std::thread::sleep(Duration::from_secs(1));
        iperf(addr, streams, secs)
    })
}

/// KiB of the proxy's RSS per idle connection: `IDLE` keep-alive connections, each proven
/// by one request, held while the RSS is read.
fn idle_kib(r: &Running) -> Result<f64> {
    let before = rss_kib(r.child.pid())?;
    let mut held = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s = TcpStream::connect_timeout(&r.web, Duration::from_secs(2))
            .with_context(|| format!("idle connection {i}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        get_1k(&mut s).with_context(|| format!("idle connection {i}"))?;
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(r.child.pid())?;
    drop(held);
    #[expect(clippy::cast_precision_loss, reason = "KiB counts, far below 2^52")]
    Ok((after.saturating_sub(before)) as f64 / IDLE as f64)
}

fn measure(r: &Running, m: Measure, secs: u64) -> Result<Vec<(Measure, f64)>> {
    let url = |path: &str| format!("http://{}/{path}", r.web);
    Ok(match m {
        Measure::Iperf1 => vec![(m, iperf_retried(r.iperf, 1, secs)?)],
        Measure::Iperf8 => vec![(m, iperf_retried(r.iperf, 8, secs)?)],
        Measure::Bulk => {
            let w = wrk(&url("100m"), 1, 1, secs, &[])?;
            check_errors(&w, "bulk")?;
            vec![(m, w.bytes_per_s / (1024.0 * 1024.0))]
        }
        Measure::Short | Measure::ShortCpu => {
            let (w, cpu) = with_cpu(r, || {
                wrk(&url("1k"), 2, 50, secs, &["-H", "Connection: close"])
            })?;
            check_errors(&w, "short connections")?;
            vec![
                (Measure::Short, w.requests_per_s),
                (Measure::ShortCpu, per_request_us(cpu, &w)),
            ]
        }
        Measure::KeepAliveP99 | Measure::KeepAliveRate | Measure::KeepAliveCpu => {
            let (w, cpu) = with_cpu(r, || wrk(&url("1k"), 2, 10, secs, &["--latency"]))?;
            check_errors(&w, "keep-alive")?;
            vec![
                (Measure::KeepAliveP99, w.p99_us.context("no 99% line")?),
                (Measure::KeepAliveRate, w.requests_per_s),
                (Measure::KeepAliveCpu, per_request_us(cpu, &w)),
            ]
        }
        Measure::Idle => vec![(m, idle_kib(r)?)],
    })
}

/// `f`'s result and the proxy's CPU time (user + system, /proc/PID/stat) while it ran.
fn with_cpu(r: &Running, f: impl FnOnce() -> Result<Wrk>) -> Result<(Wrk, Duration)> {
    let pid = r.child.pid();
    let before = cpu_time(pid).context("the proxy's /proc/PID/stat")?;
    let w = f()?;
    let after = cpu_time(pid).context("the proxy's /proc/PID/stat")?;
    Ok((w, after.saturating_sub(before)))
}

/// CPU time per request of a wrk run (its own count of completed requests), in µs.
fn per_request_us(cpu: Duration, w: &Wrk) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "a request count, far below 2^52"
    )]
    let requests = w.requests.max(1) as f64;
    cpu.as_secs_f64() * 1e6 / requests
}

fn check_errors(w: &Wrk, what: &str) -> Result<()> {
    if w.errors > 0 {
        bail!("{what}: wrk counted {} errors", w.errors);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The run

type Samples = BTreeMap<(Measure, Proxy), Vec<f64>>;

fn run() -> Result<()> {
    for tool in [
        "/usr/sbin/haproxy",
        "/usr/sbin/nginx",
        "/usr/bin/iperf3",
        "/usr/bin/wrk",
        "/usr/bin/taskset",
    ] {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing: run the README test command (./scripts/test.sh), which installs it");
        }
    }
    let nofile = raise_nofile(4 * IDLE as u64 + 1000)?;
    if nofile < 3 * IDLE as u64 {
        bail!("RLIMIT_NOFILE is {nofile}: too low for {IDLE} idle connections");
    }
    let lbd = benches::release_binary("lbd", "LBD_BIN")?;
    let secs = env_num("WL_SECS", 4);
    let rounds = env_num("WL_ROUNDS", 5);
    let cpus = nproc();
    let setups: Vec<Setup> = env_list("WL_SETUPS", "unpinned,pinned")
        .iter()
        .map(|s| match s.as_str() {
            "unpinned" => Ok(Setup::Unpinned),
            "pinned" if cpus >= 2 => Ok(Setup::Pinned(cpus - 1)),
            "pinned" => bail!("pinned needs 2 CPUs"),
            other => bail!("WL_SETUPS: unknown {other:?}"),
        })
        .collect::<Result<_>>()?;
    let all = if proxy_v2() {
        // iperf3's server cannot read a PROXY header.
        "bulk,short,keepalive,idle"
    } else {
        "iperf1,iperf8,bulk,short,keepalive,idle"
    };
    let measures: Vec<Measure> = env_list("WL_MEASURES", all)
        .iter()
        .map(|s| match s.as_str() {
            "iperf1" => Ok(Measure::Iperf1),
            "iperf8" => Ok(Measure::Iperf8),
            "bulk" => Ok(Measure::Bulk),
            "short" => Ok(Measure::Short),
            "keepalive" => Ok(Measure::KeepAliveP99),
            "idle" => Ok(Measure::Idle),
            other => bail!("WL_MEASURES: unknown {other:?} (of {all})"),
        })
        .collect::<Result<_>>()?;
    if proxy_v2()
        && measures
            .iter()
            .any(|m| matches!(m, Measure::Iperf1 | Measure::Iperf8))
    {
        bail!("WL_PROXY_PROTOCOL=v2: iperf3's server cannot read the PROXY header (leave iperf1/iperf8 out)");
    }
    let dir = tempfile::Builder::new().prefix("k3sha-wl.").tempdir()?;
    println!(
        "proxy_workloads: {cpus} CPUs, {rounds} rounds of haproxy, lbd, lbd, haproxy, {secs} s per measure; lbd {}; PROXY v2 {}; LBD_COPY={}",
        lbd.display(),
        if proxy_v2() { "on" } else { "off" },
        std::env::var("LBD_COPY").unwrap_or_else(|_| "auto".into())
    );
    let mut report = String::new();
    for setup in setups {
        setup.pin_self(cpus)?;
        let sdir = dir.path().join(setup.name());
        std::fs::create_dir_all(&sdir)?;
        let b = start_backends(&sdir)?;
        let mut samples = Samples::new();
        for round in 0..rounds {
            for (k, p) in [Proxy::Haproxy, Proxy::Lbd, Proxy::Lbd, Proxy::Haproxy]
                .into_iter()
                .enumerate()
            {
                for &m in &measures {
                    // A fresh proxy per measure: no measure inherits another's state.
                    let tag = format!("{}-r{round}-{k}-{m:?}", setup.name());
                    let r = start_proxy(p, setup, &lbd, &sdir, &b, &tag)?;
                    for (m, v) in
                        measure(&r, m, secs).with_context(|| format!("{} {m:?}", p.name()))?
                    {
                        println!(
                            "  {} round {round} {:8} {:40} {v:12.2}",
                            setup.name(),
                            p.name(),
                            m.label()
                        );
                        samples.entry((m, p)).or_default().push(v);
                    }
                    drop(r);
                }
            }
        }
        report.push_str(&table(setup, threads_note(setup, cpus), &mut samples));
    }
    println!("\n{report}");
    Ok(())
}

fn threads_note(setup: Setup, cpus: usize) -> String {
    match setup {
        Setup::Unpinned => format!("nothing pinned; {cpus} threads each"),
        Setup::Pinned(c) => {
            format!("each proxy alone on CPU {c} with 1 thread; clients and backends on the others")
        }
    }
}

fn table(setup: Setup, note: String, s: &mut Samples) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "### {} ({note})\n", setup.name());
    let _ = writeln!(
        o,
        "| measure | lbd | haproxy | lbd/haproxy | target | met |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    let ms: Vec<Measure> = s
        .keys()
        .map(|(m, _)| *m)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for m in ms {
        let l = median(s.entry((m, Proxy::Lbd)).or_default());
        let h = median(s.entry((m, Proxy::Haproxy)).or_default());
        let ratio = l / h;
        let (at_least, t) = m.target();
        let met = if at_least { ratio >= t } else { ratio <= t };
        let _ = writeln!(
            o,
            "| {} | {l:.2} | {h:.2} | {ratio:.2}x | {} {t:.2} | {} |",
            m.label(),
            if at_least { ">=" } else { "<=" },
            if met { "yes" } else { "NO" }
        );
    }
    o.push('\n');
    o
}
