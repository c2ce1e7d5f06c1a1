//! Helpers for vrrpd's namespace tests: a three-server lab on a bridge plus a client, the
//! real `vrrpd` binary in each server namespace, and a 20 ms ping prober on the client.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k3sha_support::netns::{Lab, NetNs, NsChild};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Debian's keepalived.
pub const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// Is keepalived installed? If not, say so loudly (the caller skips).
pub fn require_keepalived(what: &str) -> bool {
    // Missing is a failure, not a skip: scripts/test.sh installs it (scripts/test-tools.txt).
    assert!(
        Path::new(KEEPALIVED).exists(),
        "{what}: {KEEPALIVED} is not installed (apt-get install keepalived; scripts/test.sh \
         installs it)"
    );
    true
}

/// Lines of a keepalived log that report a receive error on VRRP packets.
pub fn keepalived_errors(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.contains("Invalid VRRPv3 checksum")
                || l.contains("Invalid VRRPv2 checksum")
                || l.contains("wrong version")
                || l.contains("invalid TTL")
                || l.contains("auth")
                    && (l.contains("fail") || l.contains("invalid") || l.contains("bad"))
        })
        .map(str::to_owned)
        .collect()
}

/// Timing-sensitive scenarios run one at a time (the machine has 2 cores).
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One server of the test cluster.
pub struct Server {
    pub name: String,
    pub addr: IpAddr,
    pub priority: u8,
    pub run_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<NsChild>,
    pub starts: u32,
    /// Extra environment for this server's vrrpd (seen by notify and track commands).
    pub env: Vec<(String, String)>,
    /// A program (and its arguments) vrrpd runs under, e.g. `setpriv` dropping a capability.
    pub wrapper: Vec<String>,
}

/// Three servers (n1, n2, n3) and a client on one bridge, in subnet 10.`net`.0.0/24 and
/// fd`net`::/64, with the VIP at .100 / ::100.
pub struct TestCluster {
    pub lab: Lab,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub servers: Vec<Server>,
    pub vip4: IpAddr,
    pub vip6: IpAddr,
    pub interval: Duration,
    pub settings: Settings,
}

pub struct Settings {
    pub net: u8,
    pub priorities: [u8; 3],
    pub interval_ms: u64,
    /// Extra lines for the [vrrp] table.
    pub vrrp_extra: String,
    pub ipv6_vip: bool,
    /// VRRP version (3, or 2 with `password`).
    pub version: u8,
    pub password: Option<String>,
    /// `checksum = "..."` for vrrpd (`None`: the default, keepalived's form).
    pub checksum: Option<String>,
    /// Body of the [vrrp.track] table (default: lbd tracking off).
    pub track: String,
    /// Unicast adverts to the other servers (vrrpd `unicast = true`, keepalived
    /// `unicast_peer`).
    pub unicast: bool,
    /// Write the IPv4 VIP (default true; false with `ipv6_vip` gives an IPv6-only cluster).
    pub ipv4_vip: bool,
    /// Virtual MAC: vrrpd `virtual_mac = true`, keepalived `use_vmac` (its VIP then goes on
    /// its macvlan `vrrp.<vrid>`, so no `dev`).
    pub vmac: bool,
    /// Appended to cluster.toml (e.g. `[[nodes]]` of agents).
    pub extra_toml: String,
    /// More hosts on the bridge: (name, addresses in CIDR form).
    pub extra_hosts: Vec<(String, Vec<String>)>,
}

impl Settings {
    pub fn new(net: u8) -> Settings {
        Settings {
            net,
            priorities: [200, 150, 100],
            interval_ms: 100,
            vrrp_extra: String::new(),
            ipv6_vip: false,
            version: 3,
            password: None,
            checksum: None,
            track: "lbd = \"off\"\n".into(),
            unicast: false,
            ipv4_vip: true,
            vmac: false,
            extra_toml: String::new(),
            extra_hosts: Vec::new(),
        }
    }
}

pub fn cluster_toml(s: &Settings, vrid: u8) -> String {
    let n = s.net;
    let mut t = format!("[cluster]\nname = \"t{n}\"\ndomain = \"t{n}.test\"\n\n[vip]\n");
    if s.ipv4_vip {
        t.push_str(&format!("address = \"10.{n}.0.100/24\"\n"));
    }
    if s.ipv6_vip {
        t.push_str(&format!("address6 = \"fd{n}::100/64\"\n"));
    }
    t.push_str(&format!(
        "\n[vrrp]\nvrid = {vrid}\nversion = {}\ninterval = \"{}ms\"\n{}\n",
        s.version, s.interval_ms, s.vrrp_extra
    ));
    if let Some(p) = &s.password {
        t.push_str(&format!("password = \"{p}\"\n"));
    }
    if s.unicast {
        t.push_str("unicast = true\n");
    }
    if s.vmac {
        t.push_str("virtual_mac = true\n");
    }
    if let Some(c) = &s.checksum {
        t.push_str(&format!("checksum = \"{c}\"\n"));
    }
    t.push_str("\n[vrrp.track]\n");
    t.push_str(&s.track);
    for (i, p) in s.priorities.iter().enumerate() {
        let k = i + 1;
        t.push_str(&format!(
            "\n[[nodes]]\nname = \"n{k}\"\naddress = \"10.{n}.0.1{k}\"\naddress6 = \"fd{n}::1{k}\"\nrole = \"server\"\npriority = {p}\n"
        ));
    }
    t.push_str(&s.extra_toml);
    t
}

impl TestCluster {
    pub fn new(tag: &str, s: Settings) -> TestCluster {
        let n = s.net;
        let mut b = Lab::builder(&format!("vt{tag}"));
        let a: Vec<(String, String, String)> = (1..=3)
            .map(|k| {
                (
                    format!("n{k}"),
                    format!("10.{n}.0.1{k}/24"),
                    format!("fd{n}::1{k}/64"),
                )
            })
            .collect();
        for (name, v4, v6) in &a {
            b = b.host(name, &[v4, v6]);
        }
        let c4 = format!("10.{n}.0.200/24");
        let c6 = format!("fd{n}::200/64");
        b = b.host("client", &[&c4, &c6]);
        for (name, addrs) in &s.extra_hosts {
            let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
            b = b.host(name, &addrs);
        }
        let lab = b.build().expect("lab");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, cluster_toml(&s, n)).expect("write cluster.toml");
        let servers = (1..=3)
            .map(|k| {
                let run_dir = dir.path().join(format!("run-n{k}"));
                std::fs::create_dir_all(&run_dir).expect("run dir");
                Server {
                    name: format!("n{k}"),
                    addr: format!("10.{n}.0.1{k}").parse().expect("addr"),
                    priority: s.priorities[k - 1],
                    log: dir.path().join(format!("n{k}.log")),
                    run_dir,
                    child: None,
                    starts: 0,
                    env: Vec::new(),
                    wrapper: Vec::new(),
                }
            })
            .collect();
        TestCluster {
            lab,
            dir,
            config,
            servers,
            vip4: format!("10.{n}.0.100").parse().expect("vip"),
            vip6: format!("fd{n}::100").parse().expect("vip6"),
            interval: Duration::from_millis(s.interval_ms),
            settings: s,
        }
    }

    pub fn ns(&self, name: &str) -> &NetNs {
        self.lab.ns(name).expect("namespace")
    }

    pub fn client(&self) -> &NetNs {
        self.ns("client")
    }

    /// Start vrrpd on server `i` (0-based); its stderr is appended to `n{i+1}.log`.
    pub fn start(&mut self, i: usize) {
        let s = &self.servers[i];
        let ns = self.lab.ns(&s.name).expect("ns");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .expect("log");
        let mut cmd = match s.wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = ns.command(prog);
                c.args(args).arg(env!("CARGO_BIN_EXE_vrrpd"));
                c
            }
            None => ns.command(env!("CARGO_BIN_EXE_vrrpd")),
        };
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--node")
            .arg(&s.name)
            .arg("--run-dir")
            .arg(&s.run_dir)
            .env("RUST_LOG", "vrrpd=debug,info")
            .envs(s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = ns.spawn(cmd).expect("spawn vrrpd");
        let s = &mut self.servers[i];
        s.child = Some(child);
        s.starts += 1;
    }

    /// keepalived's configuration for server `i`, equivalent to the cluster file.
    pub fn keepalived_conf(&self, i: usize) -> String {
        let s = &self.settings;
        let n = s.net;
        let k = i + 1;
        let interval = if s.version == 2 {
            format!("{}", (s.interval_ms / 1000).max(1))
        } else {
            format!("{:.2}", s.interval_ms as f64 / 1000.0)
        };
        let auth = match &s.password {
            Some(p) => format!(
                "    authentication {{\n        auth_type PASS\n        auth_pass {p}\n    }}\n"
            ),
            None => String::new(),
        };
        let (vips, use_vmac) = if s.vmac {
            (format!("        10.{n}.0.100/24\n"), "    use_vmac\n")
        } else {
            (format!("        10.{n}.0.100/24 dev eth0\n"), "")
        };
        let unicast = if s.unicast {
            let peers: String = (1..=3)
                .filter(|j| *j != k)
                .map(|j| format!("        10.{n}.0.1{j}\n"))
                .collect();
            format!("    unicast_src_ip 10.{n}.0.1{k}\n    unicast_peer {{\n{peers}    }}\n")
        } else {
            String::new()
        };
        let mut v6 = String::new();
        if s.ipv6_vip {
            // keepalived runs IPv6 VIPs in their own instance.
            v6 = format!(
                "vrrp_instance VI6 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {n}\n    priority {p}\n    advert_int {interval}\n    virtual_ipaddress {{\n        fd{n}::100/64 dev eth0\n    }}\n}}\n",
                p = s.priorities[i]
            );
        }
        format!(
            "global_defs {{\n    router_id n{k}\n    vrrp_version {v}\n    vrrp_garp_master_delay 0\n}}\n\
             vrrp_instance VI {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {n}\n    priority {p}\n    advert_int {interval}\n{use_vmac}{auth}{unicast}    virtual_ipaddress {{\n{vips}    }}\n}}\n{v6}",
            v = s.version,
            p = s.priorities[i],
        )
    }

    /// Start keepalived (Debian's) on server `i` instead of vrrpd; output to `n{k}.log`.
    pub fn start_keepalived(&mut self, i: usize) {
        let conf = self.dir.path().join(format!("keepalived-n{}.conf", i + 1));
        std::fs::write(&conf, self.keepalived_conf(i)).expect("write keepalived.conf");
        let s = &self.servers[i];
        let ns = self.lab.ns(&s.name).expect("ns");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .expect("log");
        let mut cmd = ns.command(KEEPALIVED);
        cmd.args(["-n", "-l", "-D", "-P", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(self.dir.path().join(format!("ka-n{}.pid", i + 1)))
            .arg("-r")
            .arg(self.dir.path().join(format!("ka-vrrp-n{}.pid", i + 1)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = ns.spawn(cmd).expect("spawn keepalived");
        let s = &mut self.servers[i];
        s.child = Some(child);
        s.starts += 1;
    }

    pub fn start_all(&mut self) {
        for i in 0..self.servers.len() {
            self.start(i);
        }
    }

    /// SIGTERM server `i` and wait for it to exit; returns (exit status, time to exit).
    pub fn stop(&mut self, i: usize) -> (std::process::ExitStatus, Duration) {
        let child = self.servers[i].child.as_mut().expect("running");
        let t0 = Instant::now();
        child.signal(Signal::SIGTERM).expect("SIGTERM");
        let st = child
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{} did not exit after SIGTERM", self.servers[i].name));
        let took = t0.elapsed();
        self.servers[i].child = None;
        (st, took)
    }

    /// Send SIGTERM to server `i` without waiting.
    pub fn sigterm(&self, i: usize) {
        let child = self.servers[i].child.as_ref().expect("running");
        child.signal(Signal::SIGTERM).expect("SIGTERM");
    }

    /// Wait (up to 10 s) for server `i` to exit.
    pub fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        let child = self.servers[i].child.as_mut().expect("running");
        let st = child
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{} did not exit", self.servers[i].name));
        self.servers[i].child = None;
        st
    }

    /// kill -9 server `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            c.kill();
        }
    }

    /// Which servers hold `vip` on eth0 right now (0-based indices).
    pub fn holders(&self, vip: IpAddr) -> Vec<usize> {
        self.holders_on(vip, |_| "eth0")
    }

    /// Which servers hold `vip` on the device `dev(i)` names for server `i` (a virtual MAC
    /// interface: vrrpd's `vrrp4.<vrid>`, keepalived's `vrrp.<vrid>`).
    pub fn holders_on(&self, vip: IpAddr, dev: impl Fn(usize) -> &'static str) -> Vec<usize> {
        self.servers
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                self.lab
                    .ns(&s.name)
                    .and_then(|ns| ns.has_addr(dev(*i), vip))
                    .unwrap_or(false)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Poll until exactly `want` holds `vip` alone; returns the time it took.
    pub fn wait_sole_holder(&self, vip: IpAddr, want: usize, timeout: Duration) -> Duration {
        self.wait_sole_holder_on(vip, want, timeout, |_| "eth0")
    }

    /// [`Self::wait_sole_holder`] on the devices `dev` names (see [`Self::holders_on`]).
    pub fn wait_sole_holder_on(
        &self,
        vip: IpAddr,
        want: usize,
        timeout: Duration,
        dev: impl Fn(usize) -> &'static str,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            let h = self.holders_on(vip, &dev);
            if h == [want] {
                return t0.elapsed();
            }
            if t0.elapsed() > timeout {
                self.dump_logs();
                panic!("after {timeout:?}: holders of {vip} are {h:?}, wanted only {want}",);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Poll until `want` holds `vip` (others may too); returns the time it took.
    pub fn wait_holder(&self, vip: IpAddr, want: usize, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        let ns = self.ns(&self.servers[want].name);
        loop {
            // One `ip` call per poll (not one per server) keeps the measurement tight.
            if ns.has_addr("eth0", vip).unwrap_or(false) {
                return t0.elapsed();
            }
            if t0.elapsed() > timeout {
                self.dump_logs();
                panic!("after {timeout:?}: {want} does not hold {vip}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// `status` from server `i`'s control socket.
    pub fn status(&self, i: usize) -> Value {
        let path = common::ctl::socket_path(&self.servers[i].run_dir, "vrrpd");
        common::ctl::call(&path, "status", Value::Null, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("status of {}: {e}", self.servers[i].name))
    }

    /// Wait until server `i` answers on its control socket.
    pub fn wait_ctl(&self, i: usize, timeout: Duration) {
        let path = common::ctl::socket_path(&self.servers[i].run_dir, "vrrpd");
        let t0 = Instant::now();
        while common::ctl::call(&path, "status", Value::Null, Duration::from_millis(500)).is_err() {
            let exited = self.servers[i]
                .child
                .as_ref()
                .and_then(|c| c.pid())
                .map(|pid| !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid))
                .unwrap_or(true);
            if exited || t0.elapsed() > timeout {
                self.dump_logs();
                panic!(
                    "{} never answered on {}",
                    self.servers[i].name,
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ctl(&self, i: usize, cmd: &str, args: Value) -> Result<Value, common::ctl::CtlError> {
        let path = common::ctl::socket_path(&self.servers[i].run_dir, "vrrpd");
        common::ctl::call(&path, cmd, args, Duration::from_secs(2))
    }

    pub fn mac(&self, i: usize) -> String {
        self.ns(&self.servers[i].name).mac("eth0").expect("mac")
    }

    /// The client's neighbour entry (MAC) for `vip`, if any.
    pub fn client_neighbour(&self, vip: IpAddr) -> Option<String> {
        self.client().neighbour(vip).ok().flatten().map(|(m, _)| m)
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.servers[i].log).unwrap_or_default()
    }

    pub fn dump_logs(&self) {
        for (i, s) in self.servers.iter().enumerate() {
            eprintln!("----- {} log -----\n{}", s.name, self.log(i));
        }
    }

    pub fn skew(&self, priority: u8) -> Duration {
        self.interval * (256 - u32::from(priority)) / 256
    }

    /// Master_Down_Interval of a backup with this priority.
    pub fn master_down(&self, priority: u8) -> Duration {
        self.interval * 3 + self.skew(priority)
    }
}

/// One ICMP echo reply the prober saw.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub seq: u64,
    pub at: Instant,
}

/// `ping -i 0.02` from a namespace, collecting every reply with its arrival time.
pub struct Prober {
    child: NsChild,
    replies: Arc<Mutex<Vec<Reply>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub started: Instant,
    pub interval: Duration,
}

impl Prober {
    pub fn start(ns: &NetNs, target: IpAddr) -> Prober {
        let interval = Duration::from_millis(20);
        let mut cmd = ns.command("ping");
        cmd.args(["-n", "-i", "0.02", "-W", "1"])
            .arg(target.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let desc = format!("ping {target}");
        let mut child = ns.spawn(cmd).unwrap_or_else(|e| panic!("{desc}: {e}"));
        let stdout = child_stdout(&mut child);
        let replies = Arc::new(Mutex::new(Vec::new()));
        let r2 = replies.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // "64 bytes from 10.1.0.100: icmp_seq=12 ttl=64 time=0.061 ms"
                if let Some(rest) = line.split("icmp_seq=").nth(1) {
                    if line.contains("bytes from") {
                        if let Ok(seq) = rest.split_whitespace().next().unwrap_or("").parse() {
                            r2.lock().unwrap_or_else(|e| e.into_inner()).push(Reply {
                                seq,
                                at: Instant::now(),
                            });
                        }
                    }
                }
            }
        });
        Prober {
            child,
            replies,
            reader: Some(reader),
            started: Instant::now(),
            interval,
        }
    }

    pub fn replies(&self) -> Vec<Reply> {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait until at least one reply has arrived after `t`.
    pub fn wait_reply_after(&self, t: Instant, timeout: Duration) -> Option<Instant> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(r) = self.replies().iter().find(|r| r.at > t) {
                return Some(r.at);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    /// Missing sequence numbers among probes whose replies were due between `from` and
    /// `to` (sequence numbers between the last reply before `from` and the first after
    /// `to`), and the longest time between two consecutive replies in that window.
    pub fn loss_between(&self, from: Instant, to: Instant) -> (u64, u64, Duration) {
        let mut r = self.replies();
        r.sort_by_key(|x| x.seq);
        r.dedup_by_key(|x| x.seq);
        let before = r.iter().filter(|x| x.at <= from).map(|x| x.seq).max();
        let after = r.iter().filter(|x| x.at >= to).map(|x| x.seq).min();
        let (Some(lo), Some(hi)) = (before, after) else {
            return (u64::MAX, 0, Duration::MAX);
        };
        let got = r.iter().filter(|x| x.seq > lo && x.seq < hi).count() as u64;
        let sent = hi.saturating_sub(lo + 1);
        let mut times: Vec<Instant> = r
            .iter()
            .filter(|x| x.seq >= lo && x.seq <= hi)
            .map(|x| x.at)
            .collect();
        times.sort();
        let gap = times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or_default();
        (sent - got.min(sent), sent, gap)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.child.kill();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn child_stdout(child: &mut NsChild) -> std::process::ChildStdout {
    child.take_stdout().expect("piped stdout")
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Send `count` crafted VRRPv3 adverts (VRID `vrid`, priority `priority`, for `vips`) from
/// `src` out of `eth0` in namespace `ns`, one every `every`: a stranger on the link. Runs
/// on a thread of its own that enters the namespace (never a shared runtime thread).
pub fn inject_adverts(
    ns: &NetNs,
    src: IpAddr,
    vrid: u8,
    priority: u8,
    vips: Vec<IpAddr>,
    count: u32,
    every: Duration,
) {
    use std::os::fd::AsFd;
    let path = format!("{}/{}", k3sha_support::netns::NETNS_DIR, ns.name());
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("namespace file");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let iface = vrrpd::io::Interface::by_name("eth0").expect("eth0");
            let (sock, dst) = if src.is_ipv6() {
                (
                    vrrpd::io::VrrpSocket::open_v6(&iface).expect("v6 socket"),
                    IpAddr::V6(vrrpd::packet::MCAST_V6),
                )
            } else {
                (
                    vrrpd::io::VrrpSocket::open_v4(&iface).expect("v4 socket"),
                    IpAddr::V4(vrrpd::packet::MCAST_V4),
                )
            };
            let adv = vrrpd::packet::Advert {
                version: vrrpd::packet::Version::V3,
                vrid,
                priority,
                interval_cs: 10,
                addrs: vips,
                auth: None,
            };
            let payload =
                vrrpd::packet::encode(&adv, src, dst, vrrpd::packet::ChecksumMode::Keepalived);
            for _ in 0..count {
                sock.send(src, dst, &payload).await.expect("send advert");
                tokio::time::sleep(every).await;
            }
        });
    })
    .join()
    .expect("injector thread");
}
