//! vrrpd vs keepalived (Debian's), on the same settings, in one run, in network namespaces
//! this bench creates (prefix `vrbench`, subnet 10.88.0.0/24, VRID 88, IPv4 only).
//!
//! ```text
//!   cargo bench -p benches --bench vrrpd_vs_keepalived   (VRRPD_BIN=path to skip the build)
//!
//!   vrbench-n1 10.88.0.11 prio 200 ─┐
//!   vrbench-n2 10.88.0.12 prio 190 ─┼─ bridge (vrbench-br) ── vrbench-client 10.88.0.200
//!   vrbench-n3 10.88.0.13 prio 180 ─┘        VIP 10.88.0.100, probed on TCP port 7788
//! ```
//!
//! Every node runs the daemon under test (vrrpd, or keepalived with a VRRP child) and a
//! tiny TCP listener on VIP:7788 (`net.ipv4.ip_nonlocal_bind = 1`, so it binds before the
//! node holds the VIP) that writes the node's number and closes. The client namespace
//! probes the VIP with TCP: connect, read that byte, close; a probe fails when no byte
//! arrived within PROBE_TIMEOUT. Probes start on a fixed grid (LINK_PROBE_EVERY for link
//! loss, GRACEFUL_PROBE_EVERY for the graceful stop), each independently, so a lost SYN
//! does not delay the next probe. The byte tells who answered, so a seamless handover is
//! seen too.
//!
//! For each advertisement interval (1 s, 100 ms) and each implementation, on a fresh lab:
//! 1. start all three, wait until n1 alone holds the VIP; idle for IDLE_SECS and read each
//!    daemon's process tree (keepalived: parent + VRRP child) from /proc: VmRSS, Pss,
//!    utime + stime and per-thread schedstat run time, as master (n1) and backup (n2);
//! 2. link loss, RUNS times: cut n1's bridge port (`ip link set pN down` in the bridge
//!    namespace); failover = event to the first answer by the new master after which no
//!    probe failed; then reconnect and wait until n1 preempted back. tcpdump in the client
//!    namespace timestamps every advert, so the same failover is also given from n1's last
//!    advert (which takes out where in the interval the cut fell), along with the gap from
//!    n1's last advert to the new master's first;
//! 3. graceful stop, RUNS times: SIGTERM n1; the same failover time, the failed probes, and
//!    how long n1 took to exit; then restart n1 and wait until it preempted back.
//!
//! Each event is started at a different phase of the advertisement interval (a golden-ratio
//! sequence, the same for both implementations).
//!
//! Knobs (environment): `VRRPD_BIN` (default: `cargo build --release -p vrrpd`),
//! `VRRP_BENCH_RUNS` (runs per event; default 5 at 1 s, 15 at 100 ms),
//! `VRRP_BENCH_INTERVALS` (comma list in ms, default `1000,100`), `VRRP_BENCH_IDLE_SECS`
//! (default 20). The listener is this binary re-executed with `VRRP_BENCH_ROLE=listener`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use benches::capture::AdvertCapture;
use benches::vrrp::{
    analyse, keepalived_config, phase, sample_tree, skew, summarize, vrrpd_config, Clock,
    EventOutcome, Probe, TreeSample, NET, PRIORITIES,
};
use benches::{tail, workspace_root, write_file};
use k3sha_support::netns::{Lab, NsChild};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt as _;

const KEEPALIVED: &str = "/usr/sbin/keepalived";
const NS_PREFIX: &str = "vrbench";
const PORT: u16 = 7788;
/// A probe with no answer after this long has failed (well under TCP's 1 s SYN retry).
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
const LINK_PROBE_EVERY: Duration = Duration::from_millis(2);
const GRACEFUL_PROBE_EVERY: Duration = Duration::from_millis(20);
/// Probes counted before an event (a probe in flight when it happened belongs to it).
const BEFORE: Duration = Duration::from_millis(50);
/// Probes counted after the new master's first answer.
const TAIL: Duration = Duration::from_millis(500);
/// The listeners and probers never outlive this.
const MAX_RUN: Duration = Duration::from_secs(3 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Vrrpd,
    Keepalived,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Vrrpd => "vrrpd",
            Impl::Keepalived => "keepalived",
        }
    }
}

fn main() -> ExitCode {
    if std::env::var("VRRP_BENCH_ROLE").as_deref() == Ok("listener") {
        return match listener_main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("listener: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `cargo test --benches` would run us too: only a real bench invocation runs it.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "vrrpd_vs_keepalived: run with `cargo bench -p benches --bench vrrpd_vs_keepalived`"
        );
        return ExitCode::SUCCESS;
    }
    if !k3sha_support::netns::require_root("vrrpd_vs_keepalived benchmark") {
        return ExitCode::SUCCESS;
    }
    if !Path::new(KEEPALIVED).exists() {
        eprintln!("vrrpd_vs_keepalived: {KEEPALIVED} is missing (apt-get install keepalived)");
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrrpd_vs_keepalived: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The node's TCP listener on VIP:PORT: writes the node number to every connection.
fn listener_main() -> Result<()> {
    let addr: SocketAddr = std::env::var("VRRP_BENCH_LISTEN")
        .context("VRRP_BENCH_LISTEN")?
        .parse()
        .context("VRRP_BENCH_LISTEN")?;
    let id: u8 = std::env::var("VRRP_BENCH_ID")
        .context("VRRP_BENCH_ID")?
        .parse()
        .context("VRRP_BENCH_ID")?;
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let deadline = Instant::now() + MAX_RUN;
    for _ in 0..10_000_000u32 {
        if Instant::now() > deadline {
            break;
        }
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.write_all(&[id]);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    Ok(())
}

fn run() -> Result<()> {
    let intervals: Vec<u64> = match std::env::var("VRRP_BENCH_INTERVALS") {
        Ok(s) => s
            .split(',')
            .map(|x| x.trim().parse().context("VRRP_BENCH_INTERVALS"))
            .collect::<Result<_>>()?,
        Err(_) => vec![1000, 100],
    };
    let runs_override: Option<usize> = std::env::var("VRRP_BENCH_RUNS")
        .ok()
        .map(|s| s.parse().context("VRRP_BENCH_RUNS"))
        .transpose()?;
    let idle_secs: u64 = std::env::var("VRRP_BENCH_IDLE_SECS")
        .ok()
        .map(|s| s.parse().context("VRRP_BENCH_IDLE_SECS"))
        .transpose()?
        .unwrap_or(20);
    let bin = vrrpd_binary()?;
    // Leftovers of a crashed earlier run.
    let _ = k3sha_support::netns::delete_with_prefix(&format!("{NS_PREFIX}-"));

    let started = Instant::now();
    let load_before = loadavg();
    let mut results = Vec::new();
    for (k, &ms) in intervals.iter().enumerate() {
        let interval = Duration::from_millis(ms);
        let runs = runs_override.unwrap_or(if ms >= 1000 { 5 } else { 15 });
        // Alternate which implementation goes first, so a drift in machine load does not
        // always favour the same one.
        let order = if k % 2 == 0 {
            [Impl::Vrrpd, Impl::Keepalived]
        } else {
            [Impl::Keepalived, Impl::Vrrpd]
        };
        for imp in order {
            eprintln!(
                "=== {} at interval {} ms, {runs} runs per event ===",
                imp.name(),
                ms
            );
            let r = scenario(imp, interval, &bin, runs, Duration::from_secs(idle_secs))
                .with_context(|| format!("{} at interval {ms} ms", imp.name()))?;
            results.push(r);
        }
    }
    let load_after = loadavg();
    let report = report(
        &results,
        &intervals,
        &bin,
        &load_before,
        &load_after,
        started.elapsed(),
    );
    println!("{report}");
    let out = std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| workspace_root().join("target"), PathBuf::from)
        .join("vrrpd_vs_keepalived.md");
    if write_file(&out, &report).is_ok() {
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}

/// The vrrpd binary: `VRRPD_BIN`, or a fresh `cargo build --release -p vrrpd` (bounded).
fn vrrpd_binary() -> Result<PathBuf> {
    benches::release_binary("vrrpd", "VRRPD_BIN")
}

fn vip() -> IpAddr {
    IpAddr::from([10, 88, 0, 100])
}

/// One lab with one implementation on all three nodes. Field order is drop order: the
/// daemons and listeners go before the namespaces.
struct Cluster {
    imp: Impl,
    interval: Duration,
    bin: PathBuf,
    daemons: Vec<Option<NsChild>>,
    _listeners: Vec<NsChild>,
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(imp: Impl, interval: Duration, bin: &Path) -> Result<Cluster> {
        let mut b = Lab::builder(NS_PREFIX).ipv6(false);
        for k in 1..=3 {
            b = b.host(&format!("n{k}"), &[&format!("{NET}.1{k}/24")]);
        }
        b = b.host("client", &[&format!("{NET}.200/24")]);
        let lab = b.build().context("building the namespaces")?;
        let dir = tempfile::tempdir().context("tempdir")?;
        write_file(&dir.path().join("cluster.toml"), &vrrpd_config(interval))?;
        let exe = std::env::current_exe().context("current_exe")?;
        let mut listeners = Vec::new();
        for k in 1..=3u8 {
            let ns = lab.ns(&format!("n{k}"))?;
            ns.sysctl("net.ipv4.ip_nonlocal_bind", "1")?;
            let mut cmd = ns.command(&exe);
            cmd.env("VRRP_BENCH_ROLE", "listener")
                .env("VRRP_BENCH_LISTEN", format!("{}:{PORT}", vip()))
                .env("VRRP_BENCH_ID", k.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            listeners.push(ns.spawn(cmd)?);
        }
        Ok(Cluster {
            imp,
            interval,
            bin: bin.to_path_buf(),
            daemons: vec![None, None, None],
            _listeners: listeners,
            lab,
            dir,
        })
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.log", i + 1))
    }

    fn start(&mut self, i: usize) -> Result<()> {
        let k = i + 1;
        let ns = self.lab.ns(&format!("n{k}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .context("daemon log")?;
        let mut cmd = match self.imp {
            Impl::Vrrpd => {
                let run_dir = self.dir.path().join(format!("run-n{k}"));
                std::fs::create_dir_all(&run_dir).context("run dir")?;
                let mut cmd = ns.command(&self.bin);
                cmd.arg("--config")
                    .arg(self.dir.path().join("cluster.toml"))
                    .args(["--node", &format!("n{k}")])
                    .arg("--run-dir")
                    .arg(run_dir)
                    .env("RUST_LOG", "info");
                cmd
            }
            Impl::Keepalived => {
                let conf = self.dir.path().join(format!("keepalived-n{k}.conf"));
                write_file(&conf, &keepalived_config(self.interval, i))?;
                let mut cmd = ns.command(KEEPALIVED);
                cmd.args(["-n", "-l", "-P", "-f"])
                    .arg(conf)
                    .arg("-p")
                    .arg(self.dir.path().join(format!("ka-n{k}.pid")))
                    .arg("-r")
                    .arg(self.dir.path().join(format!("ka-vrrp-n{k}.pid")));
                cmd
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().context("log")?)
            .stderr(log);
        self.daemons[i] = Some(ns.spawn(cmd)?);
        Ok(())
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.daemons[i].as_ref().and_then(NsChild::pid)
    }

    /// Which nodes (0-based) hold the VIP on eth0.
    fn holders(&self) -> Vec<usize> {
        (0..3)
            .filter(|&i| {
                self.lab
                    .ns(&format!("n{}", i + 1))
                    .and_then(|ns| ns.has_addr("eth0", vip()))
                    .unwrap_or(false)
            })
            .collect()
    }

    fn wait_sole_holder(&self, want: usize, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let h = self.holders();
            if h == [want] {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                bail!(
                    "after {timeout:?} the VIP is held by {h:?} (0-based), wanted only {want}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Cut (false) or restore node `i`'s cable; returns when the command has returned.
    fn cable(&self, i: usize, connected: bool) -> Result<Instant> {
        self.lab.set_cable(&format!("n{}", i + 1), connected)?;
        Ok(Instant::now())
    }

    fn logs(&self) -> String {
        (0..3)
            .map(|i| format!("--- n{} log ---\n{}", i + 1, tail(&self.log_path(i), 15)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Time to settle after n1 is back: the backups have heard several adverts.
    fn settle(&self) {
        std::thread::sleep(self.interval * 3 + Duration::from_millis(300));
    }
}

/// Probes the VIP from the client namespace on a dedicated thread (which enters that
/// namespace with setns and runs a current-thread runtime); stopped and joined on drop.
struct Prober {
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Prober {
    fn start(ns_name: &str, target: SocketAddr, every: Duration) -> Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let (s2, p2) = (stop.clone(), probes.clone());
        let path = Path::new(k3sha_support::netns::NETNS_DIR).join(ns_name);
        let handle = std::thread::Builder::new()
            .name("prober".into())
            .spawn(move || -> Result<()> {
                let f = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("setns into the client namespace")?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("tokio runtime")?;
                rt.block_on(probe_loop(target, every, s2, p2));
                Ok(())
            })
            .context("spawning the prober thread")?;
        Ok(Prober {
            stop,
            probes,
            handle: Some(handle),
        })
    }

    fn snapshot(&self) -> Vec<Probe> {
        self.probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The first probe started after `after` answered by a node for which `pred` holds.
    fn wait_answer(
        &self,
        after: Instant,
        pred: impl Fn(u8) -> bool,
        timeout: Duration,
    ) -> Option<Probe> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(p) = self
                .snapshot()
                .into_iter()
                .filter(|p| p.sent >= after && p.answer.is_some_and(&pred))
                .min_by_key(|p| p.sent)
            {
                return Some(p);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Wait until the last `n` probes (by start time, completed) were all answered by
    /// `node`.
    fn wait_steady(&self, node: u8, n: usize, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            let mut p = self.snapshot();
            p.sort_by_key(|p| p.sent);
            if p.len() >= n && p[p.len() - n..].iter().all(|p| p.answer == Some(node)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok(Err(e)) => eprintln!("prober: {e:#}"),
                Err(_) => eprintln!("prober thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

async fn probe_loop(
    target: SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = tokio::task::JoinSet::new();
    let deadline = Instant::now() + MAX_RUN;
    for _ in 0..2_000_000u32 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        tick.tick().await;
        let probes = probes.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            let answer = tokio::time::timeout(PROBE_TIMEOUT, probe_once(target))
                .await
                .ok()
                .flatten();
            let p = Probe {
                sent,
                done: Instant::now(),
                answer,
            };
            probes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(p);
        });
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(PROBE_TIMEOUT * 2, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

async fn probe_once(target: SocketAddr) -> Option<u8> {
    let mut s = tokio::net::TcpStream::connect(target).await.ok()?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.ok()?;
    Some(b[0])
}

/// One event (cable cut or SIGTERM) and what followed.
#[derive(Debug, Clone)]
struct EventRun {
    outcome: EventOutcome,
    /// SIGTERM to the old master's exit.
    exited: Option<Duration>,
    /// Holders of the VIP (1-based) once the window closed.
    holders: Vec<usize>,
    /// Link loss: from the old master's last advert (as the client saw it) to the VIP
    /// answering from the new master.
    since_advert: Option<Duration>,
    /// Link loss: from the old master's last advert to the new master's first (tcpdump
    /// timestamps in the client namespace).
    advert_gap: Option<Duration>,
    /// SIGTERM: the old master's priority-0 advert, after the event.
    resign_at: Option<Duration>,
    /// SIGTERM: the new master's first advert, after the event.
    new_advert_at: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct Idle {
    wall: Duration,
    /// (start, end) samples of the master's (n1) and a backup's (n2) process trees.
    master: (TreeSample, TreeSample),
    backup: (TreeSample, TreeSample),
}

#[derive(Debug, Clone)]
struct ScenarioResult {
    imp: Impl,
    interval: Duration,
    idle: Idle,
    link: Vec<EventRun>,
    graceful: Vec<EventRun>,
    /// n2's tree at the end (it ran through every event).
    backup_end: TreeSample,
}

fn scenario(
    imp: Impl,
    interval: Duration,
    bin: &Path,
    runs: usize,
    idle_for: Duration,
) -> Result<ScenarioResult> {
    let mut c = Cluster::new(imp, interval, bin)?;
    let client = c.lab.ns("client")?.name().to_owned();
    let target = SocketAddr::new(vip(), PORT);
    let converge = interval * 10 + Duration::from_secs(10);
    for i in 0..3 {
        c.start(i)?;
    }
    c.wait_sole_holder(0, converge)?;
    c.settle();

    // 1. Idle: n1 master, n2 and n3 backups, nothing probing.
    let (Some(mpid), Some(bpid)) = (c.pid(0), c.pid(1)) else {
        bail!("daemons not running");
    };
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let m0 = sample_tree(mpid);
    let b0 = sample_tree(bpid);
    std::thread::sleep(idle_for);
    let m1 = sample_tree(mpid);
    let b1 = sample_tree(bpid);
    let idle = Idle {
        wall: t0.elapsed(),
        master: (m0, m1),
        backup: (b0, b1),
    };
    if c.holders() != [0] {
        bail!("n1 lost the VIP while idle\n{}", c.logs());
    }
    eprintln!(
        "idle: master {} KiB RSS ({} processes), backup {} KiB RSS",
        m1.rss_kib, m1.processes, b1.rss_kib
    );

    // 2. Link loss.
    let mut link = Vec::new();
    {
        let capture = AdvertCapture::start(c.lab.ns("client")?)?;
        let prober = Prober::start(&client, target, LINK_PROBE_EVERY)?;
        if !prober.wait_steady(1, 10, Duration::from_secs(5)) {
            bail!("the VIP does not answer from n1 before the link-loss runs");
        }
        let n1: IpAddr = format!("{NET}.11").parse()?;
        let have_capture = capture.wait_first(n1, interval * 3 + Duration::from_secs(2));
        if !have_capture {
            eprintln!("tcpdump saw no advert from n1: no from-last-advert times");
        }
        let clock = Clock::now();
        for k in 0..runs {
            std::thread::sleep(phase(interval, k));
            let ev = c.cable(0, false)?;
            let limit = interval * 10 + Duration::from_secs(3);
            let got = prober.wait_answer(ev, |a| a != 1, limit);
            std::thread::sleep(TAIL + PROBE_TIMEOUT + Duration::from_millis(50));
            let outcome = analyse(&prober.snapshot(), ev, 1, BEFORE, TAIL);
            let holders: Vec<usize> = c.holders().iter().map(|i| i + 1).collect();
            let ev_unix = clock.unix(ev);
            let since_advert = match (outcome.failover, capture.last_before(n1, ev_unix)) {
                (Some(f), Some(last)) if have_capture => {
                    Some(f + Duration::from_secs_f64((ev_unix - last).max(0.0)))
                }
                _ => None,
            };
            let last = capture.last_before(n1, ev_unix);
            let advert_gap = match (last, capture.first_other_after(n1, ev_unix)) {
                (Some(a), Some(b)) if have_capture && b > a => Some(Duration::from_secs_f64(b - a)),
                _ => None,
            };
            eprintln!(
                "link loss {k}: failover {:?} ({since_advert:?} after the last advert) by n{:?}, {} of {} probes failed, holders {holders:?}",
                outcome.failover, outcome.new_node, outcome.failed, outcome.sent
            );
            if got.is_none() {
                eprintln!("no new master answered within {limit:?}\n{}", c.logs());
            }
            link.push(EventRun {
                outcome,
                exited: None,
                holders,
                since_advert,
                advert_gap,
                resign_at: None,
                new_advert_at: None,
            });
            c.cable(0, true)?;
            c.wait_sole_holder(0, converge)?;
            if !prober.wait_steady(1, 10, converge) {
                bail!(
                    "the VIP does not answer from n1 after reconnecting\n{}",
                    c.logs()
                );
            }
            c.settle();
        }
    }

    // 3. Graceful stop.
    let mut graceful = Vec::new();
    {
        let capture = AdvertCapture::start(c.lab.ns("client")?)?;
        let prober = Prober::start(&client, target, GRACEFUL_PROBE_EVERY)?;
        if !prober.wait_steady(1, 10, Duration::from_secs(5)) {
            bail!("the VIP does not answer from n1 before the graceful runs");
        }
        let n1: IpAddr = format!("{NET}.11").parse()?;
        let have_capture = capture.wait_first(n1, interval * 3 + Duration::from_secs(2));
        let clock = Clock::now();
        let bound = skew(interval, PRIORITIES[1]) + Duration::from_millis(50);
        for k in 0..runs {
            std::thread::sleep(phase(interval, k));
            let child = c.daemons[0].as_mut().context("n1 not running")?;
            let ev = Instant::now();
            child.signal(Signal::SIGTERM)?;
            let limit = interval * 10 + Duration::from_secs(3);
            let got = prober.wait_answer(ev, |a| a != 1, limit);
            // vrrpd waits at most handover_timeout (6 x interval by default).
            let st = child.wait_timeout(interval * 10 + Duration::from_secs(5));
            let exited = st.map(|_| ev.elapsed());
            std::thread::sleep(TAIL + PROBE_TIMEOUT + Duration::from_millis(50));
            let outcome = analyse(&prober.snapshot(), ev, 1, BEFORE, TAIL);
            let holders: Vec<usize> = c.holders().iter().map(|i| i + 1).collect();
            let ev_unix = clock.unix(ev);
            let since_ev = |t: Option<f64>| {
                t.filter(|_| have_capture)
                    .map(|t| Duration::from_secs_f64((t - ev_unix).max(0.0)))
            };
            let resign_at = since_ev(capture.resign_after(n1, ev_unix));
            let new_advert_at = since_ev(capture.first_other_after(n1, ev_unix));
            eprintln!(
                "graceful {k}: failover {:?} by n{:?}, {} of {} probes failed, exited after {exited:?}, holders {holders:?}; priority-0 advert after {resign_at:?}, new master's first advert after {new_advert_at:?}",
                outcome.failover, outcome.new_node, outcome.failed, outcome.sent
            );
            if imp == Impl::Vrrpd && outcome.failover.is_none_or(|f| f > bound) {
                eprintln!("slower than skew + 50 ms:\n{}", c.logs());
            }
            if got.is_none() {
                eprintln!("no new master answered within {limit:?}\n{}", c.logs());
            }
            if st.is_none() {
                eprintln!("n1 did not exit after SIGTERM\n{}", c.logs());
            }
            graceful.push(EventRun {
                outcome,
                exited,
                holders,
                since_advert: None,
                advert_gap: None,
                resign_at,
                new_advert_at,
            });
            if let Some(mut d) = c.daemons[0].take() {
                d.kill();
            }
            c.start(0)?;
            c.wait_sole_holder(0, converge)?;
            if !prober.wait_steady(1, 10, converge) {
                bail!(
                    "the VIP does not answer from n1 after the restart\n{}",
                    c.logs()
                );
            }
            c.settle();
        }
    }
    let backup_end = sample_tree(bpid);
    Ok(ScenarioResult {
        imp,
        interval,
        idle,
        link,
        graceful,
        backup_end,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cmd_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// "median (min..max)" of the failover times, and how many runs had none.
fn failover_cell(runs: &[EventRun]) -> (String, Option<Duration>) {
    duration_cell(runs, |o| o.failover)
}

/// "median (min..max)" of one duration per run, and how many runs had none.
fn duration_cell(
    runs: &[EventRun],
    pick: impl Fn(&EventOutcome) -> Option<Duration>,
) -> (String, Option<Duration>) {
    let times: Vec<Duration> = runs.iter().filter_map(|r| pick(&r.outcome)).collect();
    let missing = runs.len() - times.len();
    let Some(s) = summarize(&times) else {
        return ("no failover".into(), None);
    };
    let mut cell = format!(
        "{:.0} ({:.0}..{:.0})",
        ms_f(s.median),
        ms_f(s.min),
        ms_f(s.max)
    );
    if missing > 0 {
        let _ = write!(cell, ", {missing} run(s) never failed over");
    }
    (cell, Some(s.median))
}

fn failed_cell(runs: &[EventRun]) -> (String, usize) {
    let total: usize = runs.iter().map(|r| r.outcome.failed).sum();
    let sent: usize = runs.iter().map(|r| r.outcome.sent).sum();
    let per: Vec<String> = runs.iter().map(|r| r.outcome.failed.to_string()).collect();
    (format!("{total}/{sent} [{}]", per.join(" ")), total)
}

fn outage_cell(runs: &[EventRun]) -> String {
    let o: Vec<Duration> = runs
        .iter()
        .map(|r| r.outcome.outage)
        .filter(|d| *d != Duration::MAX)
        .collect();
    summarize(&o).map_or_else(
        || "-".into(),
        |s| {
            format!(
                "{:.0} ({:.0}..{:.0})",
                ms_f(s.median),
                ms_f(s.min),
                ms_f(s.max)
            )
        },
    )
}

fn exit_cell(runs: &[EventRun]) -> String {
    let e: Vec<Duration> = runs.iter().filter_map(|r| r.exited).collect();
    summarize(&e).map_or_else(
        || "-".into(),
        |s| {
            format!(
                "{:.0} ({:.0}..{:.0})",
                ms_f(s.median),
                ms_f(s.min),
                ms_f(s.max)
            )
        },
    )
}

fn takeovers(runs: &[EventRun]) -> String {
    let mut n = [0usize; 4];
    let mut odd = 0;
    for r in runs {
        if let Some(x) = r.outcome.new_node {
            n[usize::from(x).min(3)] += 1;
        }
        if r.holders.len() != 1 {
            odd += 1;
        }
    }
    let mut s = format!("n2 x{}, n3 x{}", n[2], n[3]);
    if odd > 0 {
        let _ = write!(s, "; {odd} run(s) not one holder after the window");
    }
    s
}

/// CPU over the idle window as a percentage of one core: (schedstat, ticks).
fn cpu_pct(a: &TreeSample, b: &TreeSample, wall: Duration) -> (f64, f64) {
    let w = wall.as_secs_f64();
    let run = b.run_ns.saturating_sub(a.run_ns) as f64 / 1e9 / w * 100.0;
    let ticks = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 * 0.01 / w * 100.0;
    (run, ticks)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// "vrrpd - keepalived = +1.2 ms".
fn diff(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("vrrpd - keepalived = {:+.1} ms", ms_f(a) - ms_f(b)),
        _ => "-".into(),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn report(
    results: &[ScenarioResult],
    intervals: &[u64],
    bin: &Path,
    load_before: &str,
    load_after: &str,
    took: Duration,
) -> String {
    let mut r = String::new();
    let cpu = cmd_line(
        "sh",
        &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
    );
    let _ = writeln!(
        r,
        "Machine: {} x {cpu}, kernel {}; keepalived: {}; vrrpd: {} (commit {})",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        cmd_line("uname", &["-r"]),
        cmd_line(KEEPALIVED, &["--version"]),
        bin.display(),
        cmd_line("git", &["describe", "--always", "--dirty"]),
    );
    let _ = writeln!(
        r,
        "Load average (1/5/15 min): {load_before} at start, {load_after} at the end; run took {:.0} s.\n",
        took.as_secs_f64()
    );
    for &ms in intervals {
        let interval = Duration::from_millis(ms);
        let get = |imp| {
            results
                .iter()
                .find(|s| s.imp == imp && s.interval == interval)
        };
        let (Some(v), Some(k)) = (get(Impl::Vrrpd), get(Impl::Keepalived)) else {
            continue;
        };
        let sk = skew(interval, PRIORITIES[1]);
        let _ = writeln!(
            r,
            "### Advertisement interval {ms} ms ({} link-loss and {} graceful runs each; skew(190) = {:.1} ms, Master_Down_Interval(190) = {:.1} ms)\n",
            v.link.len(),
            v.graceful.len(),
            ms_f(sk),
            ms_f(benches::vrrp::master_down(interval, PRIORITIES[1]))
        );
        let _ = writeln!(r, "| measure | vrrpd | keepalived | vrrpd / keepalived |");
        let _ = writeln!(r, "|---|---|---|---|");
        let (vl, vlm) = failover_cell(&v.link);
        let (kl, klm) = failover_cell(&k.link);
        let ratio_d = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => ratio(ms_f(a), ms_f(b)),
            _ => "-".into(),
        };
        let _ = writeln!(
            r,
            "| link loss: VIP answers again from the new master, ms, median (min..max) | {vl} | {kl} | {} |",
            ratio_d(vlm, klm)
        );
        let since = |runs: &[EventRun]| {
            let d: Vec<Duration> = runs.iter().filter_map(|r| r.since_advert).collect();
            summarize(&d)
        };
        let (vs, ks) = (since(&v.link), since(&k.link));
        let cell = |s: Option<benches::vrrp::Summary>| {
            s.map_or_else(
                || "-".to_owned(),
                |s| {
                    format!(
                        "{:.0} ({:.0}..{:.0})",
                        ms_f(s.median),
                        ms_f(s.min),
                        ms_f(s.max)
                    )
                },
            )
        };
        let _ = writeln!(
            r,
            "| link loss: same, counted from n1's last advert, ms | {} | {} | {} |",
            cell(vs),
            cell(ks),
            ratio_d(vs.map(|s| s.median), ks.map(|s| s.median))
        );
        let gap = |runs: &[EventRun]| {
            let d: Vec<Duration> = runs.iter().filter_map(|r| r.advert_gap).collect();
            summarize(&d)
        };
        let (vgp, kgp) = (gap(&v.link), gap(&k.link));
        let _ = writeln!(
            r,
            "| link loss: n1's last advert to the new master's first advert, ms | {} | {} | {} |",
            cell(vgp),
            cell(kgp),
            ratio_d(vgp.map(|s| s.median), kgp.map(|s| s.median))
        );
        let (vf, _) = failed_cell(&v.link);
        let (kf, _) = failed_cell(&k.link);
        let _ = writeln!(
            r,
            "| link loss: failed probes (every {} ms), total/sent [per run] | {vf} | {kf} | |",
            LINK_PROBE_EVERY.as_millis()
        );
        let _ = writeln!(
            r,
            "| link loss: new master | {} | {} | |",
            takeovers(&v.link),
            takeovers(&k.link)
        );
        let (vg, vgm) = failover_cell(&v.graceful);
        let (kg, kgm) = failover_cell(&k.graceful);
        let _ = writeln!(
            r,
            "| SIGTERM: new master answers, ms, median (min..max) | {vg} | {kg} | {} |",
            ratio_d(vgm, kgm)
        );
        let (va, vam) = duration_cell(&v.graceful, |o| o.answers_again);
        let (ka, kam) = duration_cell(&k.graceful, |o| o.answers_again);
        let _ = writeln!(
            r,
            "| SIGTERM: VIP answers again (0 = never stopped), ms, median (min..max) | {va} | {ka} | {} |",
            ratio_d(vam, kam)
        );
        for (what, pick) in [
            (
                "old master's priority-0 advert",
                (|r: &EventRun| r.resign_at) as fn(&EventRun) -> Option<Duration>,
            ),
            ("new master's first advert", |r: &EventRun| r.new_advert_at),
        ] {
            let get = |runs: &[EventRun]| {
                let d: Vec<Duration> = runs.iter().filter_map(pick).collect();
                summarize(&d)
            };
            let (a, b) = (get(&v.graceful), get(&k.graceful));
            let _ = writeln!(
                r,
                "| SIGTERM: {what} after, ms (tcpdump) | {} | {} | |",
                cell(a),
                cell(b)
            );
        }
        let (vgf, vg_failed) = failed_cell(&v.graceful);
        let (kgf, _) = failed_cell(&k.graceful);
        let _ = writeln!(
            r,
            "| SIGTERM: failed probes (every {} ms), total/sent [per run] | {vgf} | {kgf} | |",
            GRACEFUL_PROBE_EVERY.as_millis()
        );
        let _ = writeln!(
            r,
            "| SIGTERM: VIP unanswered, ms, median (min..max) | {} | {} | |",
            outage_cell(&v.graceful),
            outage_cell(&k.graceful)
        );
        let _ = writeln!(
            r,
            "| SIGTERM: old master exited after, ms | {} | {} | |",
            exit_cell(&v.graceful),
            exit_cell(&k.graceful)
        );
        let _ = writeln!(
            r,
            "| SIGTERM: new master | {} | {} | |",
            takeovers(&v.graceful),
            takeovers(&k.graceful)
        );
        let (vmr, vmt) = cpu_pct(&v.idle.master.0, &v.idle.master.1, v.idle.wall);
        let (kmr, kmt) = cpu_pct(&k.idle.master.0, &k.idle.master.1, k.idle.wall);
        let (vbr, vbt) = cpu_pct(&v.idle.backup.0, &v.idle.backup.1, v.idle.wall);
        let (kbr, kbt) = cpu_pct(&k.idle.backup.0, &k.idle.backup.1, k.idle.wall);
        let _ = writeln!(
            r,
            "| idle CPU as master, % of a core over {:.0} s: schedstat (utime+stime) | {vmr:.3} ({vmt:.2}) | {kmr:.3} ({kmt:.2}) | {} |",
            v.idle.wall.as_secs_f64(),
            ratio(vmr, kmr)
        );
        let _ = writeln!(
            r,
            "| idle CPU as backup, % of a core: schedstat (utime+stime) | {vbr:.3} ({vbt:.2}) | {kbr:.3} ({kbt:.2}) | {} |",
            ratio(vbr, kbr)
        );
        let mem = |s: &TreeSample| format!("{} ({} proc.)", s.rss_kib, s.processes);
        let _ = writeln!(
            r,
            "| VmRSS as master, KiB, whole process tree | {} | {} | {} |",
            mem(&v.idle.master.1),
            mem(&k.idle.master.1),
            ratio(
                v.idle.master.1.rss_kib as f64,
                k.idle.master.1.rss_kib as f64
            )
        );
        let _ = writeln!(
            r,
            "| VmRSS as backup, KiB | {} | {} | {} |",
            mem(&v.idle.backup.1),
            mem(&k.idle.backup.1),
            ratio(
                v.idle.backup.1.rss_kib as f64,
                k.idle.backup.1.rss_kib as f64
            )
        );
        let _ = writeln!(
            r,
            "| Pss as master, KiB (shared pages split) | {} | {} | {} |",
            v.idle.master.1.pss_kib,
            k.idle.master.1.pss_kib,
            ratio(
                v.idle.master.1.pss_kib as f64,
                k.idle.master.1.pss_kib as f64
            )
        );
        let _ = writeln!(
            r,
            "| VmRSS of n2 after all runs, KiB | {} | {} | {} |\n",
            mem(&v.backup_end),
            mem(&k.backup_end),
            ratio(v.backup_end.rss_kib as f64, k.backup_end.rss_kib as f64)
        );
        // Targets.
        let le = |a: Option<Duration>, b: Option<Duration>| matches!((a, b), (Some(a), Some(b)) if a <= b);
        let vg_max = v
            .graceful
            .iter()
            .map(|x| x.outcome.failover.unwrap_or(Duration::MAX))
            .max()
            .unwrap_or(Duration::MAX);
        let bound = sk + Duration::from_millis(50);
        let _ = writeln!(
            r,
            "Targets at {ms} ms: link-loss failover no slower than keepalived (median from the \
             last advert, {}; as seen from the cut, {}): {}; \
             SIGTERM: VIP answers again no later than with keepalived (median): {}; \
             graceful handover within skew + 50 ms = {:.1} ms in every run (slowest {}): {}; \
             zero failed probes on SIGTERM ({vg_failed}): {}; \
             memory no more than keepalived's (RSS as master): {}.\n",
            diff(vs.map(|s| s.median), ks.map(|s| s.median)),
            diff(vlm, klm),
            verdict(match (vs, ks) {
                (Some(a), Some(b)) => a.median <= b.median,
                _ => le(vlm, klm),
            }),
            verdict(le(vam, kam)),
            ms_f(bound),
            if vg_max == Duration::MAX {
                "none".to_owned()
            } else {
                format!("{:.0} ms", ms_f(vg_max))
            },
            verdict(vg_max <= bound),
            verdict(vg_failed == 0),
            verdict(v.idle.master.1.rss_kib <= k.idle.master.1.rss_kib),
        );
    }
    r
}
