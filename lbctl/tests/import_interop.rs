//! The migration of docs/migration.md, for real, in network namespaces: three keepalived
//! nodes configured the kubeadm way (no `vrrp_version`, so VRRPv2, `auth_type PASS`, a VIP
//! without prefix), converted with `lbctl import`, then replaced one by one by vrrpd running
//! the imported cluster.toml. Each vrrpd must join keepalived's election (BACKUP under the
//! keepalived master, no dropped advert), and when the last keepalived (the master) stops,
//! the vrrpd with the highest imported priority takes the VIP.
//!
//! Needs root, Debian's keepalived and the vrrpd binary next to lbctl (`cargo build -p
//! vrrpd`; `cargo test --workspace` builds it); skips loudly otherwise. Own namespaces
//! (prefix `imp`), own subnet 10.147.0.0/24, VRID 147, IPv4 only.
//!
//! Index:
//! - `imported_config_joins_keepalived_node_by_node`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k3sha_support::netns::{Lab, NsChild};
use lbctl::import::{import, ImportOptions, Source};
use nix::sys::signal::Signal;
use serde_json::Value;

const KEEPALIVED: &str = "/usr/sbin/keepalived";
const VIP: &str = "10.147.0.100";
const PRIORITIES: [u8; 3] = [101, 100, 99];

fn vrrpd_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_lbctl")).with_file_name("vrrpd")
}

fn skip() -> bool {
    if !k3sha_support::netns::require_root("imported_config_joins_keepalived_node_by_node") {
        return true;
    }
    for (what, path) in [
        (
            "keepalived (apt-get install keepalived)",
            PathBuf::from(KEEPALIVED),
        ),
        ("vrrpd (cargo build -p vrrpd)", vrrpd_bin()),
    ] {
        if !path.exists() {
            panic!(
                "imported_config_joins_keepalived_node_by_node: {} missing: {what}",
                path.display()
            );
        }
    }
    false
}

/// kubeadm-style keepalived.conf of node `k` (1-based).
fn keepalived_conf(k: usize) -> String {
    format!(
        "! keepalived on n{k}\n\
         global_defs {{\n    router_id n{k}\n}}\n\
         vrrp_instance VI_1 {{\n    state {state}\n    interface eth0\n    virtual_router_id 147\n\
         \x20   priority {prio}\n    advert_int 1\n    authentication {{\n        auth_type PASS\n\
         \x20       auth_pass mig147\n    }}\n    virtual_ipaddress {{\n        {VIP}\n    }}\n}}\n",
        state = if k == 1 { "MASTER" } else { "BACKUP" },
        prio = PRIORITIES[k - 1],
    )
}

const HAPROXY: &str =
    "frontend apiserver\n    bind *:8443\n    mode tcp\n    default_backend api\n\
backend api\n    mode tcp\n    option httpchk GET /healthz\n    http-check expect status 200\n\
    server n1 10.147.0.11:6443 check check-ssl verify none\n\
    server n2 10.147.0.12:6443 check check-ssl verify none\n\
    server n3 10.147.0.13:6443 check check-ssl verify none\n";

struct Mig {
    lab: Lab,
    dir: tempfile::TempDir,
    procs: Vec<Option<NsChild>>,
}

impl Mig {
    fn ns(&self, k: usize) -> &k3sha_support::netns::NetNs {
        self.lab.ns(&format!("n{k}")).unwrap()
    }
    fn log(&self, k: usize) -> PathBuf {
        self.dir.path().join(format!("n{k}.log"))
    }
    fn run_dir(&self, k: usize) -> PathBuf {
        self.dir.path().join(format!("run-n{k}"))
    }
    fn spawn(&mut self, k: usize, mut cmd: std::process::Command) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(k))
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = self.ns(k).spawn(cmd).unwrap();
        self.procs[k - 1] = Some(child);
    }
    fn start_keepalived(&mut self, k: usize) {
        let conf = self.dir.path().join(format!("keepalived-n{k}.conf"));
        std::fs::write(&conf, keepalived_conf(k)).unwrap();
        let mut cmd = self.ns(k).command(KEEPALIVED);
        cmd.args(["-n", "-l", "-D", "-P", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(self.dir.path().join(format!("ka-n{k}.pid")))
            .arg("-r")
            .arg(self.dir.path().join(format!("ka-vrrp-n{k}.pid")));
        self.spawn(k, cmd);
    }
    fn start_vrrpd(&mut self, k: usize) {
        std::fs::create_dir_all(self.run_dir(k)).unwrap();
        let mut cmd = self.ns(k).command(vrrpd_bin());
        cmd.arg("--config")
            .arg(self.dir.path().join("cluster.toml"))
            .args(["--node", &format!("n{k}"), "--run-dir"])
            .arg(self.run_dir(k))
            .env("RUST_LOG", "vrrpd=debug,info");
        self.spawn(k, cmd);
    }
    /// SIGTERM and wait (bounded) for the exit.
    fn stop(&mut self, k: usize) {
        let mut c = self.procs[k - 1].take().unwrap();
        c.signal(Signal::SIGTERM).unwrap();
        assert!(
            c.wait_timeout(Duration::from_secs(10)).is_some(),
            "n{k} did not stop"
        );
    }
    fn holders(&self) -> Vec<usize> {
        let vip: IpAddr = VIP.parse().unwrap();
        (1..=3)
            .filter(|k| self.ns(*k).has_addr("eth0", vip).unwrap_or(false))
            .collect()
    }
    fn wait_sole_holder(&self, k: usize, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        while self.holders() != [k] {
            if t0.elapsed() > timeout {
                self.dump();
                panic!("n{k} is not the sole VIP holder: {:?}", self.holders());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        t0.elapsed()
    }
    fn status(&self, k: usize) -> Value {
        let path = common::ctl::socket_path(&self.run_dir(k), "vrrpd");
        let t0 = Instant::now();
        loop {
            match common::ctl::call(&path, "status", Value::Null, Duration::from_secs(1)) {
                Ok(v) => return v,
                Err(e) if t0.elapsed() > Duration::from_secs(10) => {
                    self.dump();
                    panic!("vrrpd on n{k}: {e}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    fn dump(&self) {
        for k in 1..=3 {
            let log = std::fs::read_to_string(self.log(k)).unwrap_or_default();
            eprintln!("----- n{k}.log -----\n{log}");
        }
    }
    /// vrrpd on `k` is BACKUP under keepalived's master n1 and dropped nothing.
    fn assert_joined(&self, k: usize) {
        let s = self.status(k);
        assert_eq!(s["state"], "backup", "n{k}: {s:#}");
        assert_eq!(s["master"], "10.147.0.11", "n{k}: {s:#}");
        assert!(
            s["counters"]["rx_adverts"].as_u64().unwrap_or(0) >= 2,
            "n{k}: {s:#}"
        );
        let drops = &s["counters"]["drops"];
        assert!(
            drops.as_object().is_none_or(|m| m.is_empty()),
            "n{k} dropped adverts: {drops}"
        );
    }
}

#[test]
fn imported_config_joins_keepalived_node_by_node() {
    if skip() {
        return;
    }
    // The conversion, exactly as an operator runs it.
    let opts = ImportOptions {
        keepalived: (1..=3)
            .map(|k| Source {
                label: format!("keepalived-n{k}.conf"),
                text: keepalived_conf(k),
            })
            .collect(),
        haproxy: Some(Source {
            label: "haproxy.cfg".into(),
            text: HAPROXY.into(),
        }),
        name: Some("mig".into()),
        domain: Some("mig.test".into()),
    };
    let imported = import(&opts).unwrap();
    let c = &imported.cluster;
    assert_eq!(c.vrrp.version, 2);
    assert_eq!(c.vrrp.password.as_deref(), Some("mig147"));
    for (k, p) in PRIORITIES.iter().enumerate() {
        assert_eq!(c.node(&format!("n{}", k + 1)).unwrap().priority, Some(*p));
    }

    let lab = Lab::builder("imp")
        .ipv6(false)
        .host("n1", &["10.147.0.11/24"])
        .host("n2", &["10.147.0.12/24"])
        .host("n3", &["10.147.0.13/24"])
        .build()
        .unwrap();
    let mut m = Mig {
        lab,
        dir: tempfile::tempdir().unwrap(),
        procs: vec![None, None, None],
    };
    std::fs::write(m.dir.path().join("cluster.toml"), &imported.toml).unwrap();

    // A running keepalived cluster.
    for k in 1..=3 {
        m.start_keepalived(k);
    }
    m.wait_sole_holder(1, Duration::from_secs(8));

    // Node by node, lowest priority first: keepalived out, vrrpd with the imported file in.
    for k in [3, 2] {
        m.stop(k);
        m.start_vrrpd(k);
        m.status(k);
        std::thread::sleep(Duration::from_secs(4)); // > Master_Down_Interval (3 s + skew)
        assert_eq!(m.holders(), [1], "the VIP stays on keepalived's master");
        m.assert_joined(k);
    }

    // The master last: the highest imported priority among the vrrpd nodes takes over.
    let t0 = Instant::now();
    m.stop(1);
    m.wait_sole_holder(2, Duration::from_secs(6));
    eprintln!(
        "MEASURED keepalived master stop -> imported vrrpd n2 holds the VIP after {} ms",
        t0.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(m.holders(), [2]);
    assert_eq!(m.status(2)["state"], "master");
    assert_eq!(m.status(3)["state"], "backup");

    // keepalived's log shows it accepted vrrpd's adverts while they ran together.
    let log = std::fs::read_to_string(m.log(1)).unwrap_or_default();
    let hits: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("Invalid VRRP")
                || l.contains("wrong version")
                || l.contains("invalid TTL")
                || l.contains("auth")
                    && (l.contains("fail") || l.contains("invalid") || l.contains("bad"))
        })
        .collect();
    assert!(hits.is_empty(), "keepalived on n1 complained: {hits:#?}");
    for k in [2, 3] {
        m.stop(k);
    }
}
