//! Failover through the VIP with the proxy in the loop: vrrpd + lbd against keepalived +
//! HAProxy (Debian's), on the same settings, in one run, in network namespaces this bench
//! creates (prefix `fpbench`, subnet 10.91.0.0/24 in each lab, VRID 91, IPv4 only).
//!
//! ```text
//!   cargo bench -p benches --bench failover_with_proxy
//!       (VRRPD_BIN, LBD_BIN, LBCTL_BIN = paths to skip the release builds)
//!
//!   n1 10.91.0.11 prio 200 ─┐   each node: stand-in backend (lbctl lab backend) on :30080,
//!   n2 10.91.0.12 prio 190 ─┼─ bridge ── client 10.91.0.200
//!   n3 10.91.0.13 prio 180 ─┘   proxy on :80 over the 3 backends, VRRP for VIP 10.91.0.100
//! ```
//!
//! Two labs run side by side, one per stack, identical but for what runs on the nodes:
//! - ours: vrrpd + lbd from one cluster.toml (service `web`, 80 -> 30080 on the three
//!   servers, TCP check, `timeouts.connect` left at "auto", the default we ship; everything
//!   else default too, among it `vrrp.track.lbd` and link tracking);
//! - reference: keepalived (VRRPv3, same VRID, priorities 200/190/180, same advert
//!   interval, preemption on; no track script) + HAProxy 2.6 (`mode tcp`, `bind *:80`, the
//!   same three servers, `timeout connect 1s`, `retries 3`, `option redispatch`).
//!
//! Both proxies get the same TCP check: `interval`/`inter`, `fast_interval`/`fastinter`,
//! `rise`, `fall`, and a check timeout of one check interval (HAProxy without `timeout
//! check` gives a check `inter`).
//!
//! The client probes http://VIP:80/ on a fixed grid (every PROBE_EVERY, each probe
//! independent): a probe fails when it has no complete answer (200, the node's name) within
//! PROBE_TIMEOUT, and is slow when answered after more than SLOW. tcpdump in the client
//! namespace timestamps every VRRP advert.
//!
//! Event: n1's bridge port goes down (link loss), at phase k of the advert interval after
//! one of n1's adverts as tcpdump saw it (5 ms + a golden-ratio sequence over the rest of
//! the interval less 5 ms, the same for both stacks). Failover = time
//! from the cut (when `ip link set` returned) to the answer of the first probe after which
//! no probe failed, also given from n1's last advert; "answers again" = first answer at all
//! (the VRRP part); "normal" = first answer after which none failed or was slow. The event
//! settles once QUIET has passed with every probe answered in time; then the cable comes
//! back, n1 preempts, and the next event waits until every node's proxy serves from all
//! three backends again.
//!
//! For each advert interval (1000, 200, 100 ms): both labs fresh, RUNS events per stack,
//! alternating stacks event by event (the first stack alternates between intervals).
//! Reported: median (min..max) per cell, the protocol's bound 3 x interval + skew(190) +
//! 200 ms, and the ratio ours / reference.
//!
//! Knobs (environment): `FAILOVER_BENCH_RUNS` (runs per stack and interval; default 5 at
//! 1 s, 10 below), `FAILOVER_BENCH_INTERVALS` (ms, default `1000,200,100`),
//! `FAILOVER_BENCH_CHECK` (`INTERVAL_MS,FAST_MS,RISE,FALL`, default `1000,250,2,2`),
//! `FAILOVER_BENCH_DUMP=DIR` (every probe of every run as CSV, and the daemons' logs,
//! for a closer look; a relative DIR is taken from the workspace root).
//!
//! `FAILOVER_BENCH_EVENT=handover` measures a planned handover instead (issue 15):
//! HELD keep-alive connections through the VIP (a request each every 100 ms), then
//! SIGTERM of n1's VRRP daemon (vrrpd: priority 0 and make-before-break, the VIPs parked
//! for their flows; keepalived: priority 0, VIP removed); n2 takes over. Reported per
//! run: how many held connections still answer 3 s after n2 holds the VIP alone, and how
//! many of the new connections probed meanwhile failed. A fresh lab per run.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use benches::capture::AdvertCapture;
use benches::failover::{
    analyse_event, answers_from, cluster_toml, haproxy_cfg, node_addr, protocol_bound, settled,
    vip, CheckSettings, HeldConnections, Outcome, Prober, HAPROXY_CONNECT_TIMEOUT, LISTEN_PORT,
    NET, RETRIES, VRID,
};
use benches::vrrp::{keepalived_config_on, phase, skew, summarize, Clock, Summary, PRIORITIES};
use benches::{tail, workspace_root, write_file};
use k3sha_support::netns::{Lab, NsChild};

const KEEPALIVED: &str = "/usr/sbin/keepalived";
const HAPROXY: &str = "/usr/sbin/haproxy";
const NS_PREFIX: &str = "fpbench";
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// A probe without a complete answer after this long has failed. Just under 1 s, so that
/// no probe's fate is a race between this timer and one of the 1 s timers of the path:
/// TCP's initial SYN retransmission, HAProxy's `timeout connect 1s`, lbd's auto connect
/// timeout at 1 s adverts. A probe answered only thanks to one of those has failed (with
/// exactly 1 s such answers came in at 999.8..1002 ms, a coin toss each).
const PROBE_TIMEOUT: Duration = Duration::from_millis(900);
/// An answer after this long is slow (a LAN answer takes about a millisecond).
const SLOW: Duration = Duration::from_millis(50);
/// Probes started this long before the cut belong to the event.
const BEFORE: Duration = Duration::from_millis(20);
/// The event has settled after this long with every probe answered in time.
const QUIET: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Ours,
    Reference,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Stack::Ours => "vrrpd + lbd",
            Stack::Reference => "keepalived + HAProxy",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Stack::Ours => "ours",
            Stack::Reference => "ref",
        }
    }
}

#[derive(Debug, Clone)]
struct Bins {
    vrrpd: PathBuf,
    lbd: PathBuf,
    lbctl: PathBuf,
}

fn main() -> ExitCode {
    // `cargo test --benches` would run us too: only a real bench invocation runs it.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!(
            "failover_with_proxy: run with `cargo bench -p benches --bench failover_with_proxy`"
        );
        return ExitCode::SUCCESS;
    }
    if !k3sha_support::netns::require_root("failover_with_proxy benchmark") {
        return ExitCode::SUCCESS;
    }
    for (tool, pkg) in [(KEEPALIVED, "keepalived"), (HAPROXY, "haproxy")] {
        if !Path::new(tool).exists() {
            eprintln!("failover_with_proxy: {tool} is missing (apt-get install {pkg})");
            return ExitCode::FAILURE;
        }
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failover_with_proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_list(name: &str) -> Result<Option<Vec<u64>>> {
    std::env::var(name)
        .ok()
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().parse().with_context(|| format!("{name}={s}")))
                .collect()
        })
        .transpose()
}

fn run() -> Result<()> {
    if std::env::var("FAILOVER_BENCH_EVENT").is_ok_and(|e| e == "handover") {
        return run_handover();
    }
    let intervals = env_list("FAILOVER_BENCH_INTERVALS")?.unwrap_or_else(|| vec![1000, 200, 100]);
    let runs_override: Option<usize> = std::env::var("FAILOVER_BENCH_RUNS")
        .ok()
        .map(|s| s.parse().context("FAILOVER_BENCH_RUNS"))
        .transpose()?;
    let check = match env_list("FAILOVER_BENCH_CHECK")?.as_deref() {
        None => CheckSettings {
            interval: Duration::from_millis(1000),
            fast_interval: Duration::from_millis(250),
            rise: 2,
            fall: 2,
        },
        Some(&[i, f, r, fl]) => CheckSettings {
            interval: Duration::from_millis(i),
            fast_interval: Duration::from_millis(f),
            rise: u32::try_from(r).context("rise")?,
            fall: u32::try_from(fl).context("fall")?,
        },
        Some(_) => bail!("FAILOVER_BENCH_CHECK: INTERVAL_MS,FAST_MS,RISE,FALL"),
    };
    let bins = Bins {
        vrrpd: benches::release_binary("vrrpd", "VRRPD_BIN")?,
        lbd: benches::release_binary("lbd", "LBD_BIN")?,
        lbctl: benches::release_binary("lbctl", "LBCTL_BIN")?,
    };
    // Leftovers of a crashed earlier run.
    let _ = k3sha_support::netns::delete_with_prefix(&format!("{NS_PREFIX}-"));

    let started = Instant::now();
    let load_before = loadavg();
    let mut results = Vec::new();
    for (k, &ms) in intervals.iter().enumerate() {
        let interval = Duration::from_millis(ms);
        let runs = runs_override.unwrap_or(if ms >= 1000 { 5 } else { 10 });
        eprintln!("=== advert interval {ms} ms: {runs} link-loss runs per stack ===");
        let mut labs = [
            Cluster::new(Stack::Ours, interval, check, &bins)?,
            Cluster::new(Stack::Reference, interval, check, &bins)?,
        ];
        for c in &mut labs {
            c.wait_ready()
                .with_context(|| format!("{} at {ms} ms", c.stack.name()))?;
        }
        let mut per = [Vec::new(), Vec::new()];
        for run in 0..runs {
            // Alternate stacks event by event; which goes first alternates per interval.
            let first = (k + run) % 2;
            for j in [first, 1 - first] {
                let c = &mut labs[j];
                let r = c
                    .link_loss(run)
                    .with_context(|| format!("{} at {ms} ms, run {run}", c.stack.name()))?;
                per[j].push(r);
            }
        }
        let [ours, reference] = per;
        results.push(IntervalResult {
            interval,
            ours,
            reference,
        });
        // Tear both labs down before the next interval (Drop).
        drop(labs);
    }
    let report = report(
        &results,
        &check,
        &bins,
        &load_before,
        &loadavg(),
        started.elapsed(),
    );
    println!("{report}");
    let out = std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| workspace_root().join("target"), PathBuf::from)
        .join("failover_with_proxy.md");
    if write_file(&out, &report).is_ok() {
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}

/// Long-lived connections held through the VIP in the handover event.
const HELD: usize = 20;

/// One planned handover: what the held and the new connections saw.
struct HandoverRun {
    survived: usize,
    requests: u64,
    first_error: Option<String>,
    moved: Option<Duration>,
    new: Outcome,
}

fn run_handover() -> Result<()> {
    let intervals = env_list("FAILOVER_BENCH_INTERVALS")?.unwrap_or_else(|| vec![1000, 100]);
    let runs: usize = std::env::var("FAILOVER_BENCH_RUNS")
        .ok()
        .map(|s| s.parse().context("FAILOVER_BENCH_RUNS"))
        .transpose()?
        .unwrap_or(3);
    let check = CheckSettings {
        interval: Duration::from_millis(1000),
        fast_interval: Duration::from_millis(250),
        rise: 2,
        fall: 2,
    };
    let bins = Bins {
        vrrpd: benches::release_binary("vrrpd", "VRRPD_BIN")?,
        lbd: benches::release_binary("lbd", "LBD_BIN")?,
        lbctl: benches::release_binary("lbctl", "LBCTL_BIN")?,
    };
    let _ = k3sha_support::netns::delete_with_prefix(&format!("{NS_PREFIX}-"));
    let load_before = loadavg();
    let started = Instant::now();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| interval | stack | held connections surviving (per run) | keep-alive requests answered | new connections failed / sent | VIP moved after |\n|---|---|---|---|---|---|"
    );
    for &ms in &intervals {
        let interval = Duration::from_millis(ms);
        for stack in [Stack::Ours, Stack::Reference] {
            let mut rows = Vec::new();
            for run in 0..runs {
                let mut c = Cluster::new(stack, interval, check, &bins)?;
                c.wait_ready()
                    .with_context(|| format!("{} at {ms} ms", stack.name()))?;
                let r = c
                    .planned_handover()
                    .with_context(|| format!("{} at {ms} ms, run {run}", stack.name()))?;
                eprintln!(
                    "{} at {ms} ms, run {run}: {} of {HELD} held connections survived ({}), new {}/{} failed",
                    stack.name(),
                    r.survived,
                    r.first_error.as_deref().unwrap_or("no error"),
                    r.new.failed,
                    r.new.sent
                );
                rows.push(r);
            }
            let surv: Vec<String> = rows
                .iter()
                .map(|r| format!("{}/{HELD}", r.survived))
                .collect();
            let req: Vec<String> = rows.iter().map(|r| r.requests.to_string()).collect();
            let newf: Vec<String> = rows
                .iter()
                .map(|r| format!("{}/{}", r.new.failed, r.new.sent))
                .collect();
            let moved: Vec<String> = rows.iter().map(|r| opt_ms(r.moved)).collect();
            let _ = writeln!(
                out,
                "| {ms} ms | {} | {} | {} | {} | {} |",
                stack.name(),
                surv.join(", "),
                req.join(", "),
                newf.join(", "),
                moved.join(", ")
            );
            if let Some(e) = rows.iter().find_map(|r| r.first_error.clone()) {
                let _ = writeln!(out, "|  | (first error: {e}) | | | | |");
            }
        }
    }
    let _ = writeln!(
        out,
        "\nload before {load_before}, after {}; {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    println!("{out}");
    Ok(())
}

/// The processes of one node; dropped (killed) VRRP first, then the proxy, then the
/// backend.
#[derive(Default)]
struct NodeProcs {
    vrrp: Option<NsChild>,
    proxy: Option<NsChild>,
    backend: Option<NsChild>,
}

/// One lab with one stack on all three nodes. Field order is drop order: the processes
/// and tcpdump go before the namespaces, the namespaces before the temporary directory.
struct Cluster {
    stack: Stack,
    interval: Duration,
    nodes: Vec<NodeProcs>,
    capture: Option<AdvertCapture>,
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(stack: Stack, interval: Duration, check: CheckSettings, bins: &Bins) -> Result<Self> {
        let mut b = Lab::builder(&format!("{NS_PREFIX}-{}", stack.tag())).ipv6(false);
        for i in 0..3 {
            b = b.host(&format!("n{}", i + 1), &[&format!("{}/24", node_addr(i))]);
        }
        b = b.host("client", &[&format!("{NET}.200/24")]);
        let lab = b.build().context("building the namespaces")?;
        let dir = tempfile::tempdir().context("tempdir")?;
        let mut c = Cluster {
            stack,
            interval,
            nodes: (0..3).map(|_| NodeProcs::default()).collect(),
            capture: None,
            lab,
            dir,
        };
        let cluster = c.dir.path().join("cluster.toml");
        let haproxy = c.dir.path().join("haproxy.cfg");
        match stack {
            Stack::Ours => {
                let text = cluster_toml(interval, &check);
                common::config::parse(&text, Some(&cluster))
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("the generated cluster.toml does not validate")?;
                write_file(&cluster, &text)?;
            }
            Stack::Reference => write_file(&haproxy, &haproxy_cfg(&check))?,
        }
        for i in 0..3 {
            let k = i + 1;
            let ns = c.lab.ns(&format!("n{k}"))?;
            // As keepalived + HAProxy guides have it (and the lab): a proxy may bind the
            // VIP before the node holds it. Both proxies here bind every address anyway.
            ns.sysctl("net.ipv4.ip_nonlocal_bind", "1")?;
            let mut cmd = ns.command(&bins.lbctl);
            cmd.args(["lab", "backend", "--node", &format!("n{k}")])
                .args(["--http-port", &benches::failover::BACKEND_PORT.to_string()]);
            c.nodes[i].backend = Some(c.spawn(cmd, i, "backend")?);
            let run_dir = c.dir.path().join(format!("run-n{k}"));
            std::fs::create_dir_all(&run_dir).context("run dir")?;
            let ns = c.lab.ns(&format!("n{k}"))?;
            let (proxy, vrrp) = match stack {
                Stack::Ours => {
                    let daemon = |bin: &Path| {
                        let mut cmd = ns.command(bin);
                        cmd.arg("--config")
                            .arg(&cluster)
                            .args(["--node", &format!("n{k}")])
                            .arg("--run-dir")
                            .arg(&run_dir)
                            .env("RUST_LOG", "info");
                        cmd
                    };
                    (daemon(&bins.lbd), daemon(&bins.vrrpd))
                }
                Stack::Reference => {
                    let mut h = ns.command(HAPROXY);
                    h.arg("-f").arg(&haproxy).arg("-db");
                    let conf = c.dir.path().join(format!("keepalived-n{k}.conf"));
                    write_file(&conf, &keepalived_config_on(NET, VRID, interval, i))?;
                    let mut ka = ns.command(KEEPALIVED);
                    ka.args(["-n", "-l", "-P", "-f"])
                        .arg(conf)
                        .arg("-p")
                        .arg(c.dir.path().join(format!("ka-n{k}.pid")))
                        .arg("-r")
                        .arg(c.dir.path().join(format!("ka-vrrp-n{k}.pid")));
                    (h, ka)
                }
            };
            c.nodes[i].proxy = Some(c.spawn(proxy, i, "proxy")?);
            c.nodes[i].vrrp = Some(c.spawn(vrrp, i, "vrrp")?);
        }
        c.capture = Some(AdvertCapture::start(c.lab.ns("client")?)?);
        Ok(c)
    }

    fn log_path(&self, i: usize, what: &str) -> PathBuf {
        self.dir.path().join(format!("n{}-{what}.log", i + 1))
    }

    fn spawn(&self, mut cmd: Command, i: usize, what: &str) -> Result<NsChild> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i, what))
            .context("log file")?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().context("log")?)
            .stderr(log);
        let ns = self.lab.ns(&format!("n{}", i + 1))?;
        Ok(ns.spawn(cmd)?)
    }

    fn client_ns(&self) -> Result<String> {
        Ok(self.lab.ns("client")?.name().to_owned())
    }

    fn capture(&self) -> Result<&AdvertCapture> {
        self.capture.as_ref().context("no advert capture")
    }

    /// Which nodes (0-based) hold the VIP on eth0.
    fn holders(&self) -> Vec<usize> {
        (0..3)
            .filter(|&i| {
                self.lab
                    .ns(&format!("n{}", i + 1))
                    .and_then(|ns| ns.has_addr("eth0", IpAddr::V4(vip())))
                    .unwrap_or(false)
            })
            .collect()
    }

    fn converge(&self) -> Duration {
        self.interval * 10 + Duration::from_secs(15)
    }

    fn check_alive(&mut self) -> Result<()> {
        let mut dead = None;
        'nodes: for (i, n) in self.nodes.iter_mut().enumerate() {
            for (what, p) in [
                ("backend", &mut n.backend),
                ("proxy", &mut n.proxy),
                ("vrrp", &mut n.vrrp),
            ] {
                if let Some(st) = p.as_mut().and_then(NsChild::try_wait) {
                    dead = Some((i, what, st));
                    break 'nodes;
                }
            }
        }
        if let Some((i, what, st)) = dead {
            bail!(
                "n{} {what} exited ({st}):\n{}",
                i + 1,
                tail(&self.log_path(i, what), 15)
            );
        }
        Ok(())
    }

    fn wait_sole_holder(&mut self, want: usize) -> Result<()> {
        let timeout = self.converge();
        let t0 = Instant::now();
        loop {
            let h = self.holders();
            if h == [want] {
                return Ok(());
            }
            self.check_alive()?;
            if t0.elapsed() > timeout {
                bail!(
                    "after {timeout:?} the VIP is held by {h:?} (0-based), wanted only {want}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Until every node's proxy, asked directly, answers from all three backends (its
    /// checks have every server UP).
    fn wait_all_up(&mut self) -> Result<()> {
        let timeout = self.converge();
        let t0 = Instant::now();
        let client = self.client_ns()?;
        loop {
            let mut missing = Vec::new();
            for i in 0..3 {
                let target = SocketAddr::new(IpAddr::V4(node_addr(i)), LISTEN_PORT);
                let seen = answers_from(&client, target, 9, Duration::from_secs(2))?;
                for k in 1..=3u8 {
                    if !seen.contains(&Some(k)) {
                        missing.push(format!("n{}'s proxy -> n{k}", i + 1));
                    }
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            self.check_alive()?;
            if t0.elapsed() > timeout {
                bail!(
                    "after {timeout:?} not every proxy serves from every backend: {}\n{}",
                    missing.join(", "),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_ready(&mut self) -> Result<()> {
        self.wait_sole_holder(0)?;
        self.wait_all_up()?;
        let n1 = IpAddr::V4(node_addr(0));
        if !self
            .capture()?
            .wait_first(n1, self.interval * 3 + Duration::from_secs(3))
        {
            bail!("tcpdump saw no advert from n1");
        }
        Ok(())
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for i in 0..3 {
            for what in ["vrrp", "proxy"] {
                let _ = writeln!(
                    s,
                    "--- n{} {what} ---\n{}",
                    i + 1,
                    tail(&self.log_path(i, what), 12)
                );
            }
        }
        s
    }

    /// HELD keep-alive connections through the VIP, then SIGTERM of n1's VRRP daemon; 3 s
    /// after n2 holds the VIP alone, how many still answer.
    fn planned_handover(&mut self) -> Result<HandoverRun> {
        let client = self.client_ns()?;
        let target = SocketAddr::new(IpAddr::V4(vip()), LISTEN_PORT);
        let held = HeldConnections::start(
            &client,
            target,
            HELD,
            Duration::from_millis(100),
            Duration::from_secs(2),
        )?;
        let prober = Prober::start(&client, target, PROBE_EVERY, PROBE_TIMEOUT)?;
        if !prober.wait_steady(20, Duration::from_secs(5)) {
            bail!(
                "the VIP does not answer before the handover\n{}",
                self.logs()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
        let ev = Instant::now();
        self.nodes[0]
            .vrrp
            .as_ref()
            .context("n1 runs no VRRP daemon")?
            .signal(nix::sys::signal::Signal::SIGTERM)?;
        let mut moved = None;
        while ev.elapsed() < self.converge() {
            if self.holders() == [1] {
                moved = Some(ev.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_secs(3));
        let new = analyse_event(&prober.snapshot(), ev, BEFORE, Instant::now(), SLOW);
        drop(prober);
        let held = held.finish()?;
        Ok(HandoverRun {
            survived: held.iter().filter(|h| h.error.is_none()).count(),
            requests: held.iter().map(|h| h.requests).sum(),
            first_error: held.iter().find_map(|h| h.error.clone()),
            moved,
            new,
        })
    }

    /// Run `k`: cut n1's cable at phase k after one of its adverts, wait until the VIP
    /// serves normally again for QUIET, restore the cable and wait until n1 serves again.
    fn link_loss(&mut self, k: usize) -> Result<EventRun> {
        let client = self.client_ns()?;
        let target = SocketAddr::new(IpAddr::V4(vip()), LISTEN_PORT);
        let prober = Prober::start(&client, target, PROBE_EVERY, PROBE_TIMEOUT)?;
        if !prober.wait_steady(20, Duration::from_secs(5)) {
            bail!("the VIP does not answer before the cut\n{}", self.logs());
        }
        let n1 = IpAddr::V4(node_addr(0));
        let clock = Clock::now();
        let capture = self.capture()?;
        let last = capture
            .last_before(n1, clock.unix(Instant::now()))
            .context("no advert from n1 seen")?;
        // The cut: at phase k after one of n1's adverts, at least 50 ms from now.
        let step = self.interval.as_secs_f64();
        let mut at = last + aim(self.interval, k).as_secs_f64();
        let earliest = clock.unix(Instant::now()) + 0.05;
        for _ in 0..10_000 {
            if at >= earliest {
                break;
            }
            at += step;
        }
        let when = clock.instant(at);
        std::thread::sleep(when.saturating_duration_since(Instant::now()));
        let cmd_start = Instant::now();
        self.lab.set_cable("n1", false)?;
        let ev = Instant::now();
        let ev_unix = clock.unix(ev);

        let limit = self.interval * 10 + Duration::from_secs(30);
        let mut done = false;
        while ev.elapsed() < limit {
            if settled(
                &prober.snapshot(),
                ev,
                Instant::now(),
                QUIET,
                PROBE_TIMEOUT,
                SLOW,
            ) {
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let end = Instant::now()
            .checked_sub(PROBE_TIMEOUT + Duration::from_millis(50))
            .unwrap_or(ev);
        let probes = prober.snapshot();
        let outcome = analyse_event(&probes, ev, BEFORE, end, SLOW);
        dump(self.stack, self.interval, k, (ev, ev_unix), &probes);
        // Asked now, not at the cut: tcpdump's lines come a little after the packets.
        let last_advert = self.capture()?.last_before(n1, clock.unix(cmd_start));
        let holders: Vec<usize> = self.holders().iter().map(|i| i + 1).collect();
        let since_advert = last_advert.and_then(|a| {
            let lead = Duration::from_secs_f64((ev_unix - a).max(0.0));
            outcome.failover.map(|f| f + lead)
        });
        let phase_seen = last_advert.map(|a| Duration::from_secs_f64((ev_unix - a).max(0.0)));
        let new_master = holders.first().copied();
        eprintln!(
            "{} run {k}: failover {} (from n1's last advert {}), answers again {}, normal {}, \
             {} of {} probes failed, {} slow, cut {} after an advert (aimed {:.1} ms), holders {holders:?}",
            self.stack.name(),
            opt_ms(outcome.failover),
            opt_ms(since_advert),
            opt_ms(outcome.first_answer),
            opt_ms(outcome.normal),
            outcome.failed,
            outcome.sent,
            outcome.slow,
            opt_ms(phase_seen),
            ms_f(aim(self.interval, k)),
        );
        if !done {
            eprintln!(
                "not settled within {limit:?} after the cut\n{}",
                self.logs()
            );
        }
        let run = EventRun {
            outcome,
            since_advert,
            phase: phase_seen,
            cut_took: ev.duration_since(cmd_start),
            new_master,
            holders_ok: holders.len() == 1,
            settled: done,
        };
        self.lab.set_cable("n1", true)?;
        self.wait_sole_holder(0)?;
        self.wait_all_up()?;
        if !prober.wait_steady(20, self.converge()) {
            bail!(
                "the VIP does not answer after the reconnect\n{}",
                self.logs()
            );
        }
        drop(prober);
        Ok(run)
    }
}

impl Drop for Cluster {
    /// With `FAILOVER_BENCH_DUMP`: keep the daemons' logs (the temporary directory goes).
    fn drop(&mut self) {
        let Some(dir) = dump_dir() else {
            return;
        };
        let to = dir.join(format!(
            "logs-{}-{}ms",
            self.stack.tag(),
            self.interval.as_millis()
        ));
        let _ = std::fs::create_dir_all(&to);
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(&p, to.join(e.file_name()));
                }
            }
        }
    }
}

/// `FAILOVER_BENCH_DUMP`, a relative path taken from the workspace root (where the command
/// was most likely typed; cargo runs benches in the package's directory).
fn dump_dir() -> Option<PathBuf> {
    std::env::var("FAILOVER_BENCH_DUMP")
        .ok()
        .map(|d| workspace_root().join(d))
}

/// Where in the advert interval run `k` cuts: 5 ms after an advert plus the golden-ratio
/// phase of the rest, so no cut races the advert itself.
fn aim(interval: Duration, k: usize) -> Duration {
    let margin = Duration::from_millis(5).min(interval / 10);
    margin + phase(interval.saturating_sub(margin * 2), k)
}

/// With `FAILOVER_BENCH_DUMP=DIR`: every probe of the run as CSV (start after the cut,
/// time to answer, who answered; ms), one file per stack, interval and run.
fn dump(
    stack: Stack,
    interval: Duration,
    k: usize,
    (ev, ev_unix): (Instant, f64),
    probes: &[benches::vrrp::Probe],
) {
    let Some(dir) = dump_dir() else {
        return;
    };
    let mut p = probes.to_vec();
    p.sort_by_key(|x| x.sent);
    // The cut's Unix time, to line the probes up with the daemons' logs.
    let mut t = format!("# cut at {ev_unix:.6}\nsent_after_cut_ms,took_ms,answer\n");
    for x in &p {
        let sent = if x.sent >= ev {
            ms_f(x.sent.duration_since(ev))
        } else {
            -ms_f(ev.duration_since(x.sent))
        };
        let _ = writeln!(
            t,
            "{sent:.1},{:.1},{}",
            ms_f(x.done.duration_since(x.sent)),
            x.answer.map_or_else(|| "-".to_owned(), |a| format!("n{a}"))
        );
    }
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!(
        "{}-{}ms-run{k}.csv",
        stack.tag(),
        interval.as_millis()
    ));
    if let Err(e) = write_file(&path, &t) {
        eprintln!("dump: {e:#}");
    }
}

/// One link-loss event and what followed.
#[derive(Debug, Clone, Copy)]
struct EventRun {
    outcome: Outcome,
    /// The failover counted from n1's last advert before the cut (tcpdump in the client).
    since_advert: Option<Duration>,
    /// n1's last advert to the cut.
    phase: Option<Duration>,
    /// How long `ip link set ... down` took (the cut is somewhere in there).
    cut_took: Duration,
    /// Who held the VIP once the event settled (1-based).
    new_master: Option<usize>,
    /// Exactly one holder then.
    holders_ok: bool,
    settled: bool,
}

struct IntervalResult {
    interval: Duration,
    ours: Vec<EventRun>,
    reference: Vec<EventRun>,
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

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "none".into(), |d| format!("{:.0} ms", ms_f(d)))
}

fn summary(runs: &[EventRun], pick: impl Fn(&EventRun) -> Option<Duration>) -> Option<Summary> {
    let v: Vec<Duration> = runs.iter().filter_map(pick).collect();
    summarize(&v)
}

/// "median (min..max)", plus how many runs had no value.
fn cell(runs: &[EventRun], pick: impl Fn(&EventRun) -> Option<Duration> + Copy) -> String {
    let missing = runs.iter().filter(|r| pick(r).is_none()).count();
    let mut s = summary(runs, pick).map_or_else(
        || "none".to_owned(),
        |s| {
            format!(
                "{:.0} ({:.0}..{:.0})",
                ms_f(s.median),
                ms_f(s.min),
                ms_f(s.max)
            )
        },
    );
    if missing > 0 {
        let _ = write!(s, "; {missing} run(s) none");
    }
    s
}

fn ratio(
    a: &[EventRun],
    b: &[EventRun],
    pick: impl Fn(&EventRun) -> Option<Duration> + Copy,
) -> String {
    match (summary(a, pick), summary(b, pick)) {
        (Some(x), Some(y)) if !y.median.is_zero() => {
            format!("{:.2}", x.median.as_secs_f64() / y.median.as_secs_f64())
        }
        _ => "-".into(),
    }
}

fn counts(runs: &[EventRun], pick: impl Fn(&Outcome) -> usize) -> String {
    let total: usize = runs.iter().map(|r| pick(&r.outcome)).sum();
    let sent: usize = runs.iter().map(|r| r.outcome.sent).sum();
    let per: Vec<String> = runs.iter().map(|r| pick(&r.outcome).to_string()).collect();
    format!("{total}/{sent} [{}]", per.join(" "))
}

fn within(runs: &[EventRun], bound: Duration) -> usize {
    runs.iter()
        .filter(|r| r.outcome.failover.is_some_and(|f| f <= bound))
        .count()
}

fn masters(runs: &[EventRun]) -> String {
    let mut n = [0usize; 4];
    let mut odd = 0;
    for r in runs {
        if let Some(m) = r.new_master {
            n[m.min(3)] += 1;
        }
        if !r.holders_ok {
            odd += 1;
        }
    }
    let unsettled = runs.iter().filter(|r| !r.settled).count();
    let mut s = format!("n2 x{}, n3 x{}", n[2], n[3]);
    if odd > 0 {
        let _ = write!(s, "; {odd} run(s) not one holder");
    }
    if unsettled > 0 {
        let _ = write!(s, "; {unsettled} run(s) never settled");
    }
    s
}

fn report(
    results: &[IntervalResult],
    check: &CheckSettings,
    bins: &Bins,
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
        "Machine: {} x {cpu}, kernel {}; {}; {}; vrrpd {}, lbd {}, lbctl {} (commit {}).",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        cmd_line("uname", &["-r"]),
        cmd_line(KEEPALIVED, &["--version"]),
        cmd_line(HAPROXY, &["-v"]),
        bins.vrrpd.display(),
        bins.lbd.display(),
        bins.lbctl.display(),
        cmd_line("git", &["describe", "--always", "--dirty"]),
    );
    let _ = writeln!(
        r,
        "Load average (1/5/15 min): {load_before} at start, {load_after} at the end; run took {:.0} s.",
        took.as_secs_f64()
    );
    let _ = writeln!(
        r,
        "Check (both proxies): tcp, interval {} ms, fast interval {} ms, timeout {} ms, rise {}, fall {}; \
         HAProxy timeout connect {} ms, retries {RETRIES} + option redispatch; lbd timeouts.connect auto, retries {RETRIES}. \
         Probes every {} ms, failed without a complete answer in {} ms, slow over {} ms.\n",
        check.interval.as_millis(),
        check.fast_interval.as_millis(),
        check.timeout().as_millis(),
        check.rise,
        check.fall,
        HAPROXY_CONNECT_TIMEOUT.as_millis(),
        PROBE_EVERY.as_millis(),
        PROBE_TIMEOUT.as_millis(),
        SLOW.as_millis(),
    );
    let fo = |e: &EventRun| e.outcome.failover;
    let _ = writeln!(
        r,
        "| advert interval | runs per stack | bound: 3 x interval + skew(190) + 200 ms | vrrpd + lbd: failover, ms, median (min..max) | keepalived + HAProxy: failover, ms | ours / reference (medians) | runs within the bound: ours, reference |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|");
    for x in results {
        let bound = protocol_bound(x.interval);
        let _ = writeln!(
            r,
            "| {} ms | {} | {:.0} ms | {} | {} | {} | {}/{}, {}/{} |",
            x.interval.as_millis(),
            x.ours.len(),
            ms_f(bound),
            cell(&x.ours, fo),
            cell(&x.reference, fo),
            ratio(&x.ours, &x.reference, fo),
            within(&x.ours, bound),
            x.ours.len(),
            within(&x.reference, bound),
            x.reference.len(),
        );
    }
    r.push('\n');
    for x in results {
        let ms = x.interval.as_millis();
        let bound = protocol_bound(x.interval);
        let _ = writeln!(
            r,
            "### Advert interval {ms} ms ({} runs per stack; skew(190) = {:.1} ms, bound = {:.1} ms)\n",
            x.ours.len(),
            ms_f(skew(x.interval, PRIORITIES[1])),
            ms_f(bound),
        );
        let _ = writeln!(
            r,
            "| measure | vrrpd + lbd | keepalived + HAProxy | ours / reference |"
        );
        let _ = writeln!(r, "|---|---|---|---|");
        let (o, k) = (&x.ours, &x.reference);
        type Pick = fn(&EventRun) -> Option<Duration>;
        let rows: [(&str, Pick); 6] = [
            (
                "failover: cut to the first answer after which no probe failed, ms",
                |e| e.outcome.failover,
            ),
            ("same, counted from n1's last advert, ms", |e| {
                e.since_advert
            }),
            ("VIP answers again (first answer after the cut), ms", |e| {
                e.outcome.first_answer
            }),
            (
                "the proxy's share: failover - first answer, ms",
                |e| match (e.outcome.failover, e.outcome.first_answer) {
                    (Some(f), Some(a)) => Some(f.saturating_sub(a)),
                    _ => None,
                },
            ),
            (
                "normal again: first answer after which none failed or was slow, ms",
                |e| e.outcome.normal,
            ),
            ("cut after n1's last advert (phase), ms", |e| e.phase),
        ];
        for (what, pick) in rows {
            let _ = writeln!(
                r,
                "| {what} | {} | {} | {} |",
                cell(o, pick),
                cell(k, pick),
                ratio(o, k, pick)
            );
        }
        let _ = writeln!(
            r,
            "| failed probes, total/sent [per run] | {} | {} | |",
            counts(o, |x| x.failed),
            counts(k, |x| x.failed)
        );
        let _ = writeln!(
            r,
            "| slow probes (answered after > {} ms), total/sent [per run] | {} | {} | |",
            SLOW.as_millis(),
            counts(o, |x| x.slow),
            counts(k, |x| x.slow)
        );
        let _ = writeln!(
            r,
            "| runs with failover within the bound | {}/{} | {}/{} | |",
            within(o, bound),
            o.len(),
            within(k, bound),
            k.len()
        );
        let _ = writeln!(r, "| new master | {} | {} | |", masters(o), masters(k));
        let took = |runs: &[EventRun]| {
            runs.iter()
                .map(|e| e.cut_took)
                .max()
                .map_or_else(|| "-".into(), |d| format!("{:.1}", ms_f(d)))
        };
        let _ = writeln!(
            r,
            "| `ip link set down` took at most, ms | {} | {} | |\n",
            took(o),
            took(k)
        );
        let med = |runs: &[EventRun]| summary(runs, fo).map(|s| s.median);
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let (om, km) = (med(o), med(k));
        let _ = writeln!(
            r,
            "Targets at {ms} ms: failover within the protocol's bound ({:.0} ms) in every run (ours: {}/{}): {}; \
             median no higher than keepalived + HAProxy's, to within the {} ms probe grid ({} vs {}): {}.\n",
            ms_f(bound),
            within(o, bound),
            o.len(),
            verdict(within(o, bound) == o.len()),
            PROBE_EVERY.as_millis(),
            opt_ms(om),
            opt_ms(km),
            verdict(matches!((om, km), (Some(a), Some(b)) if a <= b + PROBE_EVERY)),
        );
    }
    r
}
