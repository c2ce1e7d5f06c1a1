//! The lab: the whole cluster's HA layer on one machine, in network namespaces.
//!
//! ```text
//!   host ns ──(veth k3sha0, optional)──┐
//!                                      │
//!   PREFIX-sw:  br0 ── p0 ── PREFIX-n0 (eth0: server 1: vrrpd, lbd, stand-in backends)
//!                  ├── p1 ── PREFIX-n1 (server 2 ...)
//!                  ├── ...   PREFIX-nK (agents: just an address)
//!                  └── pc ── PREFIX-client (the probing client)
//! ```
//!
//! Everything the lab makes is recorded in `STATE_DIR/state.json` as it is made, so
//! `lbctl lab down` removes it all, also after a crash of lbctl itself. Namespaces are
//! persistent (not tied to lbctl's lifetime) and the daemons run in their own process
//! groups; their logs are in `STATE_DIR/logs/`.

pub mod backend;
pub mod hold;
pub mod probe;
pub mod scenarios;

use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use common::config::{Cluster, Role};
use k3sha_support::netns::{self, NetNs};
use serde::{Deserialize, Serialize};

/// Default state directory of `lbctl lab`.
pub const DEFAULT_STATE_DIR: &str = "/run/k3s-ha-lab";
/// Default namespace prefix.
pub const DEFAULT_PREFIX: &str = "k3sha";
/// Host side of the optional veth into the lab network.
pub const HOST_DEV: &str = "k3sha0";

/// How `lab up` should build the lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The cluster file's text and where it came from (copied into the state dir).
    pub config_text: String,
    pub config_origin: String,
    pub prefix: String,
    pub state_dir: PathBuf,
    /// Give the host a veth into the lab network (README's lab); tests do not.
    pub host_link: bool,
    /// Where the vrrpd, lbd and lbctl binaries are.
    pub bin_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proc {
    pub what: String,
    pub pid: u32,
    /// Told to stop (SIGTERM) and possibly still draining.
    #[serde(default)]
    pub stopping: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub role: Role,
    pub ns: String,
    pub address: IpAddr,
    /// Its IPv6 address in a dual-stack lab.
    #[serde(default)]
    pub address6: Option<IpAddr>,
    /// Port of this node on the bridge (in the switch namespace).
    pub port: String,
    pub run_dir: PathBuf,
    pub procs: Vec<Proc>,
}

/// Everything the lab made; written to `state.json` after every step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub prefix: String,
    pub state_dir: PathBuf,
    pub config: PathBuf,
    pub config_origin: String,
    pub bin_dir: PathBuf,
    pub switch_ns: String,
    pub nodes: Vec<NodeState>,
    pub client: Option<NodeState>,
    pub host_link: Option<String>,
    pub prefix_len: u8,
}

impl LabState {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("state.json")
    }

    pub fn load(state_dir: &Path) -> Result<LabState> {
        let p = Self::path(state_dir);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "no lab is up here ({} missing): run `lbctl lab up`",
                p.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a lab state file", p.display()))
    }

    fn save(&self) -> Result<()> {
        let p = Self::path(&self.state_dir);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
        Ok(())
    }

    pub fn cluster(&self) -> Result<Cluster> {
        Ok(common::config::load(&self.config)?)
    }

    pub fn node(&self, name: &str) -> Result<&NodeState> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            anyhow!("no lab node {name:?}; nodes are: {}", names.join(", "))
        })
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut NodeState> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no lab node {name:?}"))
    }

    pub fn servers(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.iter().filter(|n| n.role == Role::Server)
    }

    fn log_path(&self, node: &str, what: &str) -> PathBuf {
        self.state_dir
            .join("logs")
            .join(format!("{node}-{what}.log"))
    }
}

/// Is this pid alive (and not a zombie)?
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// Reap any of our exited children so they do not linger as zombies.
fn reap() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(st) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if matches!(st, WaitStatus::StillAlive) {
            break;
        }
    }
}

/// Stop a process: `sig` first, SIGKILL after `grace`.
fn stop_pid(pid: u32, sig: nix::sys::signal::Signal, grace: Duration) {
    signal(pid, sig);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        reap();
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        signal(pid, nix::sys::signal::Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive(pid) && Instant::now() < deadline {
            reap();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    reap();
}

/// The lowest host address of `net` not in `used`, counting down from the top.
fn free_address(net: common::config::IpNet4, used: &[IpAddr], skip: usize) -> Option<Ipv4Addr> {
    let host_bits = 32 - u32::from(net.prefix);
    if host_bits < 2 {
        return None;
    }
    let base = u32::from(net.addr) & (u32::MAX << host_bits);
    let top = base | ((1u32 << host_bits) - 2);
    let mut skipped = 0;
    for a in (base + 1..=top).rev() {
        let ip = Ipv4Addr::from(a);
        if ip != net.addr && !used.contains(&IpAddr::V4(ip)) {
            if skipped == skip {
                return Some(ip);
            }
            skipped += 1;
        }
    }
    None
}

fn run_ip(args: &[&str]) -> Result<()> {
    netns::run(Command::new("ip").args(args))
        .map(|_| ())
        .map_err(|e| anyhow!("{e}"))
}

/// A persistent namespace the lab made, by name: the lab outlives any guard, so it works
/// on namespaces through `ip -n` and `ip netns exec` rather than owning them.
#[derive(Debug, Clone, Copy)]
struct Ns<'a>(&'a str);

impl Ns<'_> {
    fn ip(&self, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", self.0]).args(args);
        netns::run(&mut cmd).map(|_| ()).map_err(|e| anyhow!("{e}"))
    }

    fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.0, program]).args(args);
        let out = netns::run(&mut cmd).map_err(|e| anyhow!("{e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    fn link_set(&self, dev: &str, up: bool) -> Result<()> {
        self.ip(&["link", "set", dev, if up { "up" } else { "down" }])
    }
}

/// Mark every descriptor this process inherited (above stderr) close-on-exec, so the
/// daemons the lab starts do not hold its caller's files: a lock or socket of the shell
/// that ran `lab up` would stay held until `lab down`. (Descriptors std opens itself are
/// close-on-exec already.) Call before spawning anything.
pub fn close_inherited_fds() {
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd > 2)
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        set_cloexec(fd);
    }
}

/// `fcntl(fd, F_SETFD, FD_CLOEXEC)` on a raw descriptor number.
#[allow(
    unsafe_code,
    reason = "fcntl(2) on a number: there is no safe API for a descriptor we do not own"
)]
fn set_cloexec(fd: i32) {
    use nix::libc::{fcntl, FD_CLOEXEC, F_SETFD};
    // SAFETY: F_SETFD only sets a flag on the descriptor table entry; on a number that is
    // not (or no longer) open it fails with EBADF and changes nothing. No memory is
    // passed.
    let _ = unsafe { fcntl(fd, F_SETFD, FD_CLOEXEC) };
}

/// Is some address of this machine, or a route it has, in `net`? Then a host link into a
/// lab on `net` would shadow the real network (the reference addresses are a real LAN's).
fn host_overlaps(net: common::config::IpNet4) -> Result<Option<String>> {
    let out = Command::new("ip")
        .args(["-j", "-4", "route", "show", "table", "all"])
        .output()
        .context("running ip route")?;
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(route_in(&routes, net))
}

/// The first of `ip -j route` output's routes that lies in (or covers at /24 or narrower)
/// `net`; the default route and wide routes (a /8 over a VPN) do not count.
fn route_in(routes: &serde_json::Value, net: common::config::IpNet4) -> Option<String> {
    let mask = |p: u8| u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
    for r in routes.as_array().into_iter().flatten() {
        let dst = r["dst"].as_str().unwrap_or_default();
        if dst == "default" || dst.is_empty() || r["dev"] == HOST_DEV {
            continue;
        }
        let (a, p) = dst.split_once('/').unwrap_or((dst, "32"));
        let (Ok(a), Ok(p)) = (a.parse::<Ipv4Addr>(), p.parse::<u8>()) else {
            continue;
        };
        let m = mask(p.min(net.prefix));
        if p >= net.prefix.min(24) && u32::from(a) & m == u32::from(net.addr) & m {
            return Some(format!(
                "route {dst} dev {}",
                r["dev"].as_str().unwrap_or("?")
            ));
        }
    }
    None
}

/// Create a persistent namespace (replacing a leftover of the same name).
fn create_ns(name: &str) -> Result<()> {
    let ns = NetNs::with_name(name).map_err(|e| anyhow!("{e}"))?;
    let _ = ns.persist();
    Ok(())
}

/// Build the lab and start every daemon. On any error, everything made so far is removed.
pub fn up(opts: &LabOptions) -> Result<LabState> {
    close_inherited_fds();
    if LabState::path(&opts.state_dir).exists() {
        bail!(
            "a lab is already up (state in {}); run `lbctl lab down` first",
            opts.state_dir.display()
        );
    }
    let cluster = common::config::parse(&opts.config_text, Some(Path::new(&opts.config_origin)))?;
    let vip = cluster
        .vip
        .v4
        .ok_or_else(|| anyhow!("the lab needs an IPv4 VIP"))?;
    if opts.host_link {
        if let Some(what) = host_overlaps(vip)? {
            bail!(
                "this machine is on the lab's network {}/{} already ({what}): a host link would \
                 shadow the real nodes there. Use --no-host-link (and `ip netns exec` to reach \
                 the lab), or a cluster file on another subnet (--config)",
                vip.addr,
                vip.prefix
            );
        }
    }
    for bin in ["vrrpd", "lbd", "lbctl"] {
        let p = opts.bin_dir.join(bin);
        if !p.exists() {
            bail!(
                "{} is missing: build the binaries first (cargo build --release --bins)",
                p.display()
            );
        }
    }
    std::fs::create_dir_all(opts.state_dir.join("logs"))
        .with_context(|| format!("creating {}", opts.state_dir.display()))?;
    let config = opts.state_dir.join("cluster.toml");
    std::fs::write(&config, &opts.config_text)?;
    let mut st = LabState {
        prefix: opts.prefix.clone(),
        state_dir: opts.state_dir.clone(),
        config,
        config_origin: opts.config_origin.clone(),
        bin_dir: opts.bin_dir.clone(),
        switch_ns: format!("{}-sw", opts.prefix),
        nodes: Vec::new(),
        client: None,
        host_link: None,
        prefix_len: vip.prefix,
    };
    st.save()?;
    match build(&mut st, &cluster, opts) {
        Ok(()) => Ok(st),
        Err(e) => {
            let _ = st.save();
            if let Err(d) = down(&opts.state_dir) {
                eprintln!("cleanup after the failed start also failed: {d:#}");
            }
            Err(e)
        }
    }
}

fn build(st: &mut LabState, cluster: &Cluster, opts: &LabOptions) -> Result<()> {
    let vip = cluster
        .vip
        .v4
        .ok_or_else(|| anyhow!("the lab needs an IPv4 VIP"))?;
    create_ns(&st.switch_ns)?;
    let sw_name = st.switch_ns.clone();
    let sw = Ns(&sw_name);
    sw.ip(&["link", "add", "br0", "type", "bridge"])?;
    // Forward at once: a lab switch has no loops, so no STP listening delay.
    sw.ip(&[
        "link",
        "set",
        "br0",
        "type",
        "bridge",
        "forward_delay",
        "0",
        "stp_state",
        "0",
    ])?;
    sw.link_set("br0", true)?;
    sw.link_set("lo", true)?;
    let used: Vec<IpAddr> = cluster.nodes.iter().map(|n| n.address).collect();
    let add_host = |st: &mut LabState,
                    i: usize,
                    name: &str,
                    role: Role,
                    addr: IpAddr,
                    addr6: Option<IpAddr>|
     -> Result<NodeState> {
        let ns_name = format!("{}-n{i}", st.prefix);
        create_ns(&ns_name)?;
        let ns = Ns(&ns_name);
        let port = format!("p{i}");
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        sw.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns_name,
        ])?;
        sw.ip(&["link", "set", &port, "master", "br0"])?;
        sw.link_set(&port, true)?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{addr}/{}", vip.prefix),
            "dev",
            "eth0",
        ])?;
        if let (Some(a6), Some(v6)) = (addr6, cluster.vip.v6) {
            ns.ip(&[
                "addr",
                "add",
                &format!("{a6}/{}", v6.prefix),
                "dev",
                "eth0",
                "nodad",
            ])?;
        }
        ns.link_set("eth0", true)?;
        ns.link_set("lo", true)?;
        // Let lbd bind before the VIP arrives; answer ARP only for addresses on eth0.
        ns.sysctl("net.ipv4.ip_nonlocal_bind", "1")?;
        ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        let run_dir = st.state_dir.join("run").join(name);
        std::fs::create_dir_all(&run_dir)?;
        Ok(NodeState {
            name: name.to_owned(),
            role,
            ns: ns_name,
            address: addr,
            address6: addr6,
            port,
            run_dir,
            procs: Vec::new(),
        })
    };
    for (i, n) in cluster.nodes.iter().enumerate() {
        let node = add_host(
            st,
            i,
            &n.name,
            n.role,
            n.address,
            n.address6.map(IpAddr::V6),
        )?;
        st.nodes.push(node);
        st.save()?;
    }
    let client_addr = free_address(vip, &used, 1)
        .ok_or_else(|| anyhow!("no free address for the lab client in the VIP's subnet"))?;
    // Dual stack: the client also gets an IPv6 address of the VIP's network.
    let client6 = cluster.vip.v6.map(|v| {
        let mut seg = v.addr.segments();
        seg[7] = 0xfffd;
        IpAddr::V6(seg.into())
    });
    let client = add_host(
        st,
        99,
        "client",
        Role::Agent,
        IpAddr::V4(client_addr),
        client6,
    )?;
    st.client = Some(client);
    st.save()?;
    if opts.host_link {
        let host_addr = free_address(vip, &used, 0)
            .ok_or_else(|| anyhow!("no free address for the host in the VIP's subnet"))?;
        let _ = Command::new("ip").args(["link", "del", HOST_DEV]).output();
        run_ip(&[
            "link",
            "add",
            HOST_DEV,
            "type",
            "veth",
            "peer",
            "name",
            "host",
            "netns",
            &st.switch_ns,
        ])?;
        st.host_link = Some(HOST_DEV.to_owned());
        st.save()?;
        sw.ip(&["link", "set", "host", "master", "br0"])?;
        sw.link_set("host", true)?;
        run_ip(&[
            "addr",
            "add",
            &format!("{host_addr}/{}", vip.prefix),
            "dev",
            HOST_DEV,
        ])?;
        run_ip(&["link", "set", HOST_DEV, "up"])?;
    }
    let servers: Vec<String> = st.servers().map(|n| n.name.clone()).collect();
    for name in &servers {
        start_node(st, name, &["backend", "lbd", "vrrpd"])?;
    }
    wait_ready(st, Duration::from_secs(20))
}

/// Start the named processes (`backend`, `lbd`, `vrrpd`) of a server that are not running.
pub fn start_node(st: &mut LabState, name: &str, what: &[&str]) -> Result<()> {
    let cluster = st.cluster()?;
    let node = st.node(name)?.clone();
    // A stand-in for every port any service sends to this node (custom services too).
    let me = cluster.node(name);
    let mut serve: Vec<(u16, backend::StandIn)> = Vec::new();
    // The ports of services that send the PROXY protocol header: their stand-ins require it.
    let mut proxy: Vec<u16> = Vec::new();
    for svc in &cluster.services {
        for b in &svc.backends {
            let mine = me.is_some_and(|n| {
                b.addr.ip() == n.address || n.address6.map(IpAddr::V6) == Some(b.addr.ip())
            });
            if mine && !serve.iter().any(|(p, _)| *p == b.addr.port()) {
                serve.push((b.addr.port(), backend::StandIn::for_service(svc)));
            }
            if mine && svc.proxy_protocol.is_some() && !proxy.contains(&b.addr.port()) {
                proxy.push(b.addr.port());
            }
        }
    }
    for w in what {
        if node.procs.iter().any(|p| p.what == *w && alive(p.pid)) {
            continue;
        }
        let bin = |b: &str| st.bin_dir.join(b);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns]);
        match *w {
            "backend" => {
                cmd.arg(bin("lbctl"))
                    .args(["lab", "backend", "--node", name]);
                for (port, kind) in &serve {
                    cmd.args(["--serve", &format!("{port}:{}", kind.as_str())]);
                }
                for port in &proxy {
                    cmd.args(["--proxy-protocol", &port.to_string()]);
                }
            }
            "lbd" | "vrrpd" => {
                cmd.arg(bin(w))
                    .arg("--config")
                    .arg(&st.config)
                    .args(["--node", name])
                    .arg("--run-dir")
                    .arg(&node.run_dir);
            }
            other => bail!("unknown lab process {other:?}"),
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(st.log_path(name, w))?;
        let child = cmd
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {w} on {name}"))?;
        let n = st.node_mut(name)?;
        n.procs.retain(|p| p.what != *w);
        n.procs.push(Proc {
            what: (*w).to_owned(),
            pid: child.id(),
            stopping: false,
        });
        st.save()?;
    }
    Ok(())
}

/// Wait until every server's daemons answer and the election has settled: one master, no
/// tracker lowering anyone's priority (lbd's checks take a moment to see the backends UP)
/// and, with preemption (the default), no backup with a higher effective priority, which
/// would still preempt. A lower-priority server that happened to be first is master for a
/// moment; a scenario starting then would take it for the steady state.
pub fn wait_ready(st: &LabState, timeout: Duration) -> Result<()> {
    let preempt = st.cluster().map_or(true, |c| c.vrrp.preempt);
    let deadline = Instant::now() + timeout;
    loop {
        let mut missing = Vec::new();
        let mut masters = Vec::new();
        let mut best_backup: Option<(u64, String)> = None;
        let mut lowered = Vec::new();
        for n in st.servers() {
            match crate::ops::vrrpd_status(&n.run_dir) {
                Ok(v) => {
                    let c = &v.current.core;
                    let prio = u64::from(c.effective_priority);
                    if c.effective_priority != c.base_priority {
                        lowered.push(format!("{} at {prio}", n.name));
                    }
                    if c.state == common::proto::vrrpd::State::Master {
                        masters.push((prio, n.name.clone()));
                    } else if !c.maintenance && best_backup.as_ref().is_none_or(|(p, _)| prio > *p)
                    {
                        // (A server in maintenance does not preempt: it is no contender.)
                        best_backup = Some((prio, n.name.clone()));
                    }
                }
                Err(e) => missing.push(format!("{}: {e}", n.name)),
            }
            if let Err(e) = crate::ops::lbd_status(&n.run_dir) {
                missing.push(format!("{}: {e}", n.name));
            }
        }
        let settled = match (masters.as_slice(), &best_backup) {
            ([(mp, _)], Some((bp, _))) => !preempt || mp > bp,
            ([_], None) => true,
            _ => false,
        };
        if missing.is_empty() && lowered.is_empty() && settled {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the lab did not come up within {timeout:?}: {} (logs in {})",
                if !missing.is_empty() {
                    missing.join("; ")
                } else if !lowered.is_empty() {
                    format!("tracking lowers the priority of {}", lowered.join(", "))
                } else if masters.len() != 1 {
                    format!("{} masters", masters.len())
                } else {
                    format!(
                        "{} is master but {} has a higher priority and has not preempted",
                        masters[0].1,
                        best_backup.map(|(_, n)| n).unwrap_or_default()
                    )
                },
                st.state_dir.join("logs").display()
            );
        }
        reap();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Remove everything the lab made. Works from the state file, and also sweeps namespaces
/// with the lab's prefix in case the state file is incomplete.
pub fn down(state_dir: &Path) -> Result<String> {
    let mut report = Vec::new();
    let st = LabState::load(state_dir).ok();
    if let Some(st) = &st {
        for n in st.nodes.iter().chain(st.client.iter()) {
            for p in &n.procs {
                if alive(p.pid) {
                    stop_pid(
                        p.pid,
                        nix::sys::signal::Signal::SIGTERM,
                        Duration::from_secs(5),
                    );
                    report.push(format!("stopped {} on {}", p.what, n.name));
                }
            }
        }
        if let Some(dev) = &st.host_link {
            if Command::new("ip")
                .args(["link", "del", dev])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                report.push(format!("removed host link {dev}"));
            }
        }
    }
    let prefix = st
        .as_ref()
        .map_or(DEFAULT_PREFIX.to_owned(), |s| s.prefix.clone());
    // Namespaces: our nodes are PREFIX-nN, the switch PREFIX-sw.
    let names = netns::list_namespaces().map_err(|e| anyhow!("{e}"))?;
    for name in names.iter().filter(|n| {
        n.strip_prefix(&format!("{prefix}-")).is_some_and(|rest| {
            rest == "sw" || (rest.starts_with('n') && rest[1..].chars().all(|c| c.is_ascii_digit()))
        })
    }) {
        // Kill whatever still runs inside (e.g. a daemon whose pid was not recorded).
        if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                stop_pid(
                    pid,
                    nix::sys::signal::Signal::SIGKILL,
                    Duration::from_secs(1),
                );
            }
        }
        netns::delete_namespace(name).map_err(|e| anyhow!("{e}"))?;
        report.push(format!("deleted namespace {name}"));
    }
    if st.is_none()
        && Command::new("ip")
            .args(["link", "show", HOST_DEV])
            .output()
            .is_ok_and(|o| o.status.success())
    {
        let _ = Command::new("ip").args(["link", "del", HOST_DEV]).output();
        report.push(format!("removed host link {HOST_DEV}"));
    }
    let _ = std::fs::remove_file(LabState::path(state_dir));
    let _ = std::fs::remove_dir_all(state_dir.join("run"));
    if report.is_empty() {
        report.push("nothing to remove".into());
    }
    Ok(report.join("\n"))
}

/// How `lab fail` breaks a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailHow {
    /// Cut the node's cable (its bridge port goes down): the node is gone from the network.
    Link,
    /// SIGKILL vrrpd and lbd: a crash (the VIP may be left behind on the node).
    Kill,
    /// SIGTERM vrrpd and lbd: a graceful stop (make-before-break handover).
    Stop,
    /// SIGTERM vrrpd alone, as its package upgrade does: the VIP moves, lbd serves on.
    StopVrrpd,
}

pub fn fail(st: &mut LabState, name: &str, how: FailHow) -> Result<String> {
    let node = st.node(name)?.clone();
    match how {
        FailHow::Link => {
            Ns(&st.switch_ns).link_set(&node.port, false)?;
            Ok(format!(
                "{name}: cable cut (bridge port {} down)",
                node.port
            ))
        }
        FailHow::Stop => {
            let took = stop_gracefully(st, name, Duration::from_secs(30))?;
            Ok(format!(
                "{name}: vrrpd handed over and exited after {:.0} ms; lbd is draining its open connections",
                took.as_secs_f64() * 1000.0
            ))
        }
        FailHow::StopVrrpd => {
            let took = stop_vrrpd(st, name, Duration::from_secs(30))?;
            Ok(format!(
                "{name}: vrrpd handed over and exited after {:.0} ms; lbd serves on",
                took.as_secs_f64() * 1000.0
            ))
        }
        FailHow::Kill => {
            let mut done = Vec::new();
            for p in node
                .procs
                .iter()
                .filter(|p| p.what == "vrrpd" || p.what == "lbd")
            {
                if alive(p.pid) {
                    signal(p.pid, nix::sys::signal::Signal::SIGKILL);
                    done.push(p.what.clone());
                }
            }
            reap();
            Ok(format!(
                "{name}: SIGKILL sent to {}",
                if done.is_empty() {
                    "nothing (not running)".into()
                } else {
                    done.join(" and ")
                }
            ))
        }
    }
}

/// `lbctl upgrade lbd` on server `name`: its lbd re-executes its binary and hands the
/// listeners over; the lab follows the new PID (the old one drains and exits).
pub fn upgrade_lbd(st: &mut LabState, name: &str) -> Result<common::proto::lbd::Upgraded> {
    let run = st.node(name)?.run_dir.clone();
    match crate::ops::upgrade_lbd(&run, None) {
        crate::ops::UpgradeOutcome::Done(u) => {
            for p in &mut st.node_mut(name)?.procs {
                if p.what == "lbd" {
                    p.pid = u.new_pid;
                    p.stopping = false;
                }
            }
            st.save()?;
            Ok(u)
        }
        other => bail!("lbd upgrade on {name}: {other:?}"),
    }
}

/// SIGTERM vrrpd on `name` and wait (up to `timeout`) until it has handed over and exited.
pub fn stop_vrrpd(st: &mut LabState, name: &str, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    let node = st.node(name)?.clone();
    if let Some(p) = node
        .procs
        .iter()
        .find(|p| p.what == "vrrpd" && alive(p.pid))
    {
        signal(p.pid, nix::sys::signal::Signal::SIGTERM);
        while alive(p.pid) {
            if start.elapsed() > timeout {
                bail!("vrrpd on {name} did not exit within {timeout:?} after SIGTERM");
            }
            reap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(start.elapsed())
}

/// Stop a server's HA daemons the way systemd orders it: SIGTERM vrrpd and wait for it to
/// exit (its make-before-break handover needs lbd still serving on this node), then
/// SIGTERM lbd, which drains in the background. Returns how long vrrpd took.
pub fn stop_gracefully(st: &mut LabState, name: &str, timeout: Duration) -> Result<Duration> {
    let took = stop_vrrpd(st, name, timeout)?;
    let node = st.node(name)?.clone();
    if let Some(p) = node.procs.iter().find(|p| p.what == "lbd" && alive(p.pid)) {
        signal(p.pid, nix::sys::signal::Signal::SIGTERM);
    }
    for p in &mut st.node_mut(name)?.procs {
        if p.what == "vrrpd" || p.what == "lbd" {
            p.stopping = true;
        }
    }
    st.save()?;
    Ok(took)
}

pub fn recover(st: &mut LabState, name: &str) -> Result<String> {
    let node = st.node(name)?.clone();
    Ns(&st.switch_ns).link_set(&node.port, true)?;
    // A daemon told to stop may still be draining: finish it off before restarting.
    for p in node.procs.iter().filter(|p| p.stopping && alive(p.pid)) {
        stop_pid(
            p.pid,
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(3),
        );
    }
    reap();
    if node.role == Role::Server {
        start_node(st, name, &["backend", "lbd", "vrrpd"])?;
    }
    Ok(format!("{name}: cable connected, daemons running"))
}

/// `lbctl lab status`.
pub fn status(st: &LabState) -> String {
    let mut rows = Vec::new();
    for n in st.nodes.iter().chain(st.client.iter()) {
        let procs: Vec<String> = n
            .procs
            .iter()
            .map(|p| format!("{}{}", p.what, if alive(p.pid) { "" } else { " (DEAD)" }))
            .collect();
        let vrrp = if n.role == Role::Server {
            crate::ops::vrrpd_status(&n.run_dir).map_or_else(
                |e| format!("vrrpd: {e}"),
                |v| {
                    format!(
                        "{} prio {}",
                        v.current.core.state.as_str(),
                        v.current.core.effective_priority
                    )
                },
            )
        } else {
            "-".into()
        };
        let cable = Ns(&st.switch_ns)
            .exec("cat", &[&format!("/sys/class/net/{}/operstate", n.port)])
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into());
        rows.push(vec![
            n.name.clone(),
            n.address.to_string(),
            n.ns.clone(),
            cable,
            procs.join(", "),
            vrrp,
        ]);
    }
    let mut o = format!(
        "lab {} from {} (state {})\n",
        st.prefix,
        st.config_origin,
        st.state_dir.display()
    );
    o.push_str(&crate::ops::table(
        &["NODE", "ADDRESS", "NAMESPACE", "CABLE", "PROCESSES", "VRRP"],
        &rows,
    ));
    o
}

/// What `lab up` prints: what it started and how to reach it. Every hint works as
/// printed: it names a non-default --state-dir, and without a host link every command that
/// talks to the lab's addresses runs in the client namespace (run on this host it would
/// go out of the default route to the real network those addresses belong to).
pub fn describe(st: &LabState) -> Result<String> {
    let c = st.cluster()?;
    let vip = c.vip.v4.map(|v| v.addr.to_string()).unwrap_or_default();
    let mut o = String::new();
    o.push_str(&status(st));
    let client_ns = st
        .client
        .as_ref()
        .map_or_else(|| format!("{}-n99", st.prefix), |n| n.ns.clone());
    let exec = if st.host_link.is_some() {
        String::new()
    } else {
        format!("ip netns exec {client_ns} ")
    };
    let _ = writeln!(
        o,
        "\nThe VIP {vip} is up. From {}:",
        if st.host_link.is_some() {
            "this shell"
        } else {
            "the lab's client namespace (this host has no link into the lab)"
        }
    );
    let _ = writeln!(
        o,
        "  {exec}curl http://{vip}/                  # ingress-http via lbd: answers with a node's name"
    );
    let _ = writeln!(
        o,
        "  {exec}curl -k https://{vip}:8443/version  # the API through the VIP"
    );
    if let Some(stats) = c.stats.listen {
        for n in st.servers() {
            let _ = writeln!(
                o,
                "  {exec}curl http://{}:{}/   # lbd's stats page on {}",
                n.address,
                stats.port(),
                n.name
            );
        }
    }
    let me = std::env::current_exe()
        .ok()
        .map_or_else(|| "lbctl".to_owned(), |p| p.display().to_string());
    let sd = if st.state_dir == Path::new(DEFAULT_STATE_DIR) {
        String::new()
    } else {
        format!(" --state-dir {}", st.state_dir.display())
    };
    let first_run = st
        .nodes
        .first()
        .map(|n| n.run_dir.display().to_string())
        .unwrap_or_default();
    let _ = writeln!(o, "\nNext:");
    let _ = writeln!(
        o,
        "  {me} lab test{sd}                 # the validation procedures, with figures"
    );
    let _ = writeln!(
        o,
        "  {exec}{me} status --cluster --config {}",
        st.config.display()
    );
    let _ = writeln!(o, "  {me} status --run-dir {first_run}");
    let _ = writeln!(
        o,
        "  {me} lab fail NODE --how link|kill|stop{sd} ; {me} lab recover NODE{sd}"
    );
    let _ = writeln!(o, "  {me} lab down{sd}                 # remove everything");
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the default host link put this machine on 192.168.168.0/24 even where
    /// it is on that LAN already, shadowing the real nodes.
    #[test]
    fn a_route_into_the_labs_network_is_found() {
        let net = common::config::IpNet4 {
            addr: Ipv4Addr::new(192, 168, 168, 100),
            prefix: 24,
        };
        let routes = serde_json::json!([
            {"dst": "default", "gateway": "10.0.0.1", "dev": "eth0"},
            {"dst": "10.0.0.0/8", "dev": "tun0"},
            {"dst": "192.168.0.0/16", "dev": "vpn0"},
        ]);
        assert_eq!(route_in(&routes, net), None, "wide routes do not count");
        let lan = serde_json::json!([
            {"dst": "default", "dev": "eth0"},
            {"dst": "192.168.168.0/24", "dev": "eth0"},
        ]);
        assert_eq!(
            route_in(&lan, net).as_deref(),
            Some("route 192.168.168.0/24 dev eth0")
        );
        let host = serde_json::json!([{"dst": "192.168.168.7", "dev": "wg0"}]);
        assert!(route_in(&host, net).is_some());
        let leftover = serde_json::json!([{"dst": "192.168.168.0/24", "dev": HOST_DEV}]);
        assert_eq!(
            route_in(&leftover, net),
            None,
            "the lab's own link is replaced"
        );
    }

    #[test]
    fn free_addresses_count_down_from_the_top() {
        let net = common::config::IpNet4 {
            addr: Ipv4Addr::new(192, 168, 168, 100),
            prefix: 24,
        };
        let used = [IpAddr::V4(Ipv4Addr::new(192, 168, 168, 254))];
        assert_eq!(
            free_address(net, &used, 0),
            Some(Ipv4Addr::new(192, 168, 168, 253))
        );
        assert_eq!(
            free_address(net, &used, 1),
            Some(Ipv4Addr::new(192, 168, 168, 252))
        );
        let tiny = common::config::IpNet4 {
            addr: Ipv4Addr::new(10, 0, 0, 1),
            prefix: 31,
        };
        assert_eq!(free_address(tiny, &[], 0), None);
    }
}
