//! `lbctl install dns` against the real BIND9 tools, for both example clusters.
//!
//! Index:
//! - `rendered_config_and_zones_pass_named_checkconf_and_checkzone`: `named-checkconf -z`
//!   (chrooted into the render dir) and `named-checkzone -k fail` pass; a broken record fails.
//! - `rerun_renders_the_same_files`: `run()` twice into one `--render` dir: same bytes, same serial.
//! - `real_named_answers_every_name`: a `named -g` started on 127.0.0.1 and a free high port
//!   answers `dig` for every node (A/AAAA), the VIP, wildcard names, every PTR, and NXDOMAIN /
//!   NODATA where there must be no record.
//!
//! Needs bind9 and bind9-dnsutils (`apt-get install bind9 bind9-dnsutils`); fails, never
//! skips, when they are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod install_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::config::Cluster;
use install_support::{clusters, require_tool, run};
use k3sha_support::netns::{self, NsChild};
use lbctl::install::{next_serial, today_utc, InstallOpts, Target};

/// Render the DNS target through `run()` into a fresh directory.
fn render(cluster: &Cluster) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    render_into(cluster, dir.path());
    dir
}

fn render_into(cluster: &Cluster, dir: &Path) {
    let opts = InstallOpts {
        render_dir: Some(dir.to_path_buf()),
        ..InstallOpts::default()
    };
    lbctl::install::run(cluster, Target::Dns, &opts).unwrap();
}

fn stanza_file(cluster: &Cluster) -> String {
    format!("/etc/bind/k3s-ha/{}.conf", cluster.name)
}

/// (zone name, zone file path under dir) from the rendered stanzas.
fn zones(cluster: &Cluster, dir: &Path) -> Vec<(String, PathBuf)> {
    let text = std::fs::read_to_string(dir.join(&stanza_file(cluster)[1..])).unwrap();
    let mut out = Vec::new();
    let mut name = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("zone \"") {
            name = Some(rest.split('"').next().unwrap().to_string());
        }
        if let Some(rest) = line.strip_prefix("file \"/") {
            let file = dir.join(rest.split('"').next().unwrap());
            out.push((name.take().unwrap(), file));
        }
    }
    out
}

#[test]
fn rendered_config_and_zones_pass_named_checkconf_and_checkzone() {
    require_tool("named-checkconf");
    require_tool("named-checkzone");
    for (short, cluster) in clusters() {
        let dir = render(&cluster);
        let root = dir.path().to_str().unwrap();
        let (ok, out) = run(
            "named-checkconf",
            &["-z", "-t", root, "/etc/bind/named.conf.local"],
        );
        assert!(ok, "{short}: named-checkconf -z failed:\n{out}");
        let zones = zones(&cluster, dir.path());
        let want = match short {
            // /20: a zone per /24 with cluster addresses (.70, .71), a zone for the agent
            // outside the network; /62: a zone per /64 with addresses.
            "campus" => 6,
            _ if cluster.vip.v6.is_some() => 3,
            _ => 2,
        };
        assert_eq!(zones.len(), want, "{short}: {zones:?}");
        for (zone, file) in &zones {
            let (ok, out) = run(
                "named-checkzone",
                &["-k", "fail", zone, file.to_str().unwrap()],
            );
            assert!(
                ok && out.contains("OK"),
                "{short}: named-checkzone {zone} failed:\n{out}"
            );
        }
        // The check can fail: a host name with an underscore breaks check-names.
        let (zone, file) = &zones[0];
        let mut text = std::fs::read_to_string(file).unwrap();
        text.push_str("bad_host IN A 10.0.0.1\n");
        let broken = dir.path().join("broken.zone");
        std::fs::write(&broken, text).unwrap();
        let (ok, out) = run(
            "named-checkzone",
            &["-k", "fail", zone, broken.to_str().unwrap()],
        );
        assert!(
            !ok,
            "{short}: named-checkzone -k fail accepted a bad name:\n{out}"
        );
    }
}

#[test]
fn rerun_renders_the_same_files() {
    for (short, cluster) in clusters() {
        let dir = render(&cluster);
        let snapshot = |d: &Path| {
            zones(&cluster, d)
                .into_iter()
                .map(|(_, f)| std::fs::read(f).unwrap())
                .collect::<Vec<_>>()
        };
        let first = snapshot(dir.path());
        let local = std::fs::read(dir.path().join("etc/bind/named.conf.local")).unwrap();
        render_into(&cluster, dir.path());
        assert_eq!(
            first,
            snapshot(dir.path()),
            "{short}: zones changed on a re-run"
        );
        let local2 = std::fs::read(dir.path().join("etc/bind/named.conf.local")).unwrap();
        assert_eq!(local, local2, "{short}: include appended twice");
        let serial = next_serial(None, today_utc()).to_string();
        assert!(
            String::from_utf8_lossy(&first[0]).contains(&serial),
            "{short}: serial {serial}"
        );
    }
}

/// A `named -g` on 127.0.0.1:port serving the rendered zones; killed on drop.
struct Named {
    child: NsChild,
    port: u16,
    log: PathBuf,
    /// dig's whole output for the last query, quoted when an answer is wrong.
    last: std::cell::RefCell<String>,
}

fn free_port() -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if port > 1024 && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 for both TCP and UDP");
}

impl Named {
    fn start(cluster: &Cluster, dir: &Path) -> Named {
        let run_dir = dir.join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let stanzas = std::fs::read_to_string(dir.join(&stanza_file(cluster)[1..])).unwrap();
        let stanzas = stanzas.replace("\"/etc/bind/", &format!("\"{}/etc/bind/", dir.display()));
        let stanza_path = dir.join("stanzas.conf");
        std::fs::write(&stanza_path, stanzas).unwrap();
        let port = free_port();
        let r = run_dir.display();
        let conf = format!(
            "options {{\n  directory \"{r}\";\n  pid-file \"{r}/named.pid\";\n  \
             session-keyfile \"{r}/session.key\";\n  managed-keys-directory \"{r}\";\n  \
             listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  \
             recursion no;\n  dnssec-validation no;\n}};\ncontrols {{ }};\n\
             include \"{}\";\n",
            stanza_path.display()
        );
        let conf_path = dir.join("named.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = dir.join("named.log");
        let mut cmd = Command::new("named");
        cmd.args(["-g", "-4", "-n", "1", "-c", conf_path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = netns::spawn(cmd).expect("starting named");
        let mut named = Named {
            child,
            port,
            log,
            last: Default::default(),
        };
        // Every zone answers its SOA before the test asks anything.
        let zones = zones(cluster, dir);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = named.child.try_wait() {
                panic!(
                    "named exited ({status}) before answering:\n{}",
                    named.log_text()
                );
            }
            if zones
                .iter()
                .all(|(zone, _)| named.query(zone, "SOA").0 == "NOERROR")
            {
                return named;
            }
            assert!(
                Instant::now() < deadline,
                "named did not answer within 20 s:\n{}",
                named.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (status, answer rdata of the asked type).
    fn dig(&self, args: &[&str], want_type: &str) -> (String, Vec<String>) {
        let port = self.port.to_string();
        let mut all = vec![
            "@127.0.0.1",
            "-p",
            &port,
            "+norecurse",
            "+time=2",
            "+tries=2",
            "+noall",
            "+comments",
            "+answer",
        ];
        all.extend_from_slice(args);
        let (_, out) = run("dig", &all);
        *self.last.borrow_mut() = out.clone();
        let status = out
            .lines()
            .find_map(|l| l.split("status: ").nth(1))
            .map(|s| s.split(',').next().unwrap().to_string())
            .unwrap_or_else(|| format!("no answer: {out}"));
        let answers = out
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 5 && f[3] == want_type).then(|| f[4..].join(" "))
            })
            .collect();
        (status, answers)
    }

    fn query(&self, name: &str, qtype: &str) -> (String, Vec<String>) {
        self.dig(&[name, qtype], qtype)
    }

    fn ptr(&self, addr: IpAddr) -> (String, Vec<String>) {
        self.dig(&["-x", &addr.to_string()], "PTR")
    }
}

/// An address inside the VIP's network that no node or VIP uses.
fn unused_v4(cluster: &Cluster) -> Ipv4Addr {
    let vip = cluster.vip.v4.unwrap().addr.octets();
    (1..=254u8)
        .rev()
        .map(|last| Ipv4Addr::new(vip[0], vip[1], vip[2], last))
        .find(|a| {
            !cluster.is_node_address((*a).into()) && Some(*a) != cluster.vip.v4.map(|v| v.addr)
        })
        .unwrap()
}

/// Addresses no reverse zone of ours may cover: in the VIP's network but in a /24 (IPv6:
/// a /64) without any cluster address, the network's neighbours just outside it, and the
/// rest of the /24 of a node outside the VIP's network.
fn foreign_addrs(cluster: &Cluster) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let ours4: Vec<Ipv4Addr> = cluster
        .nodes
        .iter()
        .filter_map(|n| match n.address {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .chain(cluster.vip.v4.map(|v| v.addr))
        .collect();
    if let Some(v) = cluster.vip.v4 {
        let mask = u32::MAX.checked_shl(32 - u32::from(v.prefix)).unwrap_or(0);
        let base = u32::from(v.addr) & mask;
        let size = !mask;
        // Every /24 of the network without a cluster address, first address +7.
        let mut block = 0;
        while block <= size && v.prefix < 24 {
            let a = Ipv4Addr::from(base + block + 7);
            if !ours4.iter().any(|o| o.octets()[..3] == a.octets()[..3]) {
                out.push(a.into());
            }
            block += 256;
        }
        // Just outside the network on both sides.
        out.push(Ipv4Addr::from(base.wrapping_sub(9)).into());
        out.push(Ipv4Addr::from(base.wrapping_add(size).wrapping_add(9)).into());
    }
    for a in &ours4 {
        let in_net = cluster.vip.v4.is_some_and(|v| {
            let mask = u32::MAX.checked_shl(32 - u32::from(v.prefix)).unwrap_or(0);
            u32::from(*a) & mask == u32::from(v.addr) & mask
        });
        if !in_net {
            let o = a.octets();
            out.push(Ipv4Addr::new(o[0], o[1], o[2], o[3] ^ 1).into());
        }
    }
    if let Some(v) = cluster.vip.v6 {
        if v.prefix % 4 != 0 {
            // An unaligned IPv6 network: its /64s without a cluster address.
            let mut seg = v.addr.segments();
            seg[3] = (seg[3] & !3) | 2;
            seg[7] = 0x99;
            out.push(Ipv6Addr::from(seg).into());
        }
    }
    out
}

#[test]
fn real_named_answers_every_name() {
    require_tool("named");
    require_tool("dig");
    for (short, cluster) in clusters() {
        let dir = render(&cluster);
        let named = Named::start(&cluster, dir.path());
        let d = cluster.domain.trim_end_matches('.');
        let mut failures = Vec::new();
        let mut expect =
            |what: String, got: (String, Vec<String>), status: &str, answers: Vec<String>| {
                if got.0 != status || got.1 != answers {
                    failures.push(format!(
                        "{what}: want {status} {answers:?}, got {} {:?}; dig said:\n{}",
                        got.0,
                        got.1,
                        named.last.borrow()
                    ));
                }
            };
        let vip4 = cluster.vip.v4.map(|v| v.addr.to_string());
        let vip6 = cluster.vip.v6.map(|v| v.addr.to_string());
        let some = |o: &Option<String>| o.iter().cloned().collect::<Vec<_>>();

        for node in &cluster.nodes {
            let name = format!("{}.{d}", node.name);
            let (a, aaaa) = match node.address {
                IpAddr::V4(a) => (
                    vec![a.to_string()],
                    node.address6.iter().map(Ipv6Addr::to_string).collect(),
                ),
                IpAddr::V6(a) => (vec![], vec![a.to_string()]),
            };
            expect(format!("{name} A"), named.query(&name, "A"), "NOERROR", a);
            // Nodes without IPv6 answer NODATA (NOERROR, empty), not the wildcard.
            expect(
                format!("{name} AAAA"),
                named.query(&name, "AAAA"),
                "NOERROR",
                aaaa,
            );
            let fqdn = format!("{name}.");
            expect(
                format!("PTR {}", node.address),
                named.ptr(node.address),
                "NOERROR",
                vec![fqdn.clone()],
            );
            if let Some(a6) = node.address6 {
                expect(
                    format!("PTR {a6}"),
                    named.ptr(a6.into()),
                    "NOERROR",
                    vec![fqdn],
                );
            }
            // Below an existing name the wildcard does not apply (RFC 4592 closest encloser).
            let below = format!("x.{name}");
            expect(below.clone(), named.query(&below, "A"), "NXDOMAIN", vec![]);
        }
        let api = format!("api.{d}");
        expect(
            format!("{api} A"),
            named.query(&api, "A"),
            "NOERROR",
            some(&vip4),
        );
        expect(
            format!("{api} AAAA"),
            named.query(&api, "AAAA"),
            "NOERROR",
            some(&vip6),
        );
        for wild in [
            format!("nginx.{d}"),
            format!("anything-{}.{d}", std::process::id()),
            format!("a.b.{d}"),
        ] {
            expect(
                format!("{wild} A"),
                named.query(&wild, "A"),
                "NOERROR",
                some(&vip4),
            );
            expect(
                format!("{wild} AAAA"),
                named.query(&wild, "AAAA"),
                "NOERROR",
                some(&vip6),
            );
        }
        let api_fqdn = format!("api.{d}.");
        if let Some(v) = cluster.vip.v4 {
            expect(
                format!("PTR {}", v.addr),
                named.ptr(v.addr.into()),
                "NOERROR",
                vec![api_fqdn.clone()],
            );
            let unused = unused_v4(&cluster);
            expect(
                format!("PTR {unused}"),
                named.ptr(unused.into()),
                "NXDOMAIN",
                vec![],
            );
        }
        if let Some(v) = cluster.vip.v6 {
            expect(
                format!("PTR {}", v.addr),
                named.ptr(v.addr.into()),
                "NOERROR",
                vec![api_fqdn],
            );
            let mut seg = v.addr.segments();
            seg[7] = 0xfffe;
            let unused = Ipv6Addr::from(seg);
            expect(
                format!("PTR {unused}"),
                named.ptr(unused.into()),
                "NXDOMAIN",
                vec![],
            );
        }
        // Regression: with a /20 the installer served 20.172.in-addr.arpa and answered
        // NXDOMAIN (aa) for all of 172.20.0.0/16. Addresses of the network that hold no
        // cluster address are not ours to answer: REFUSED, like any zone we do not serve.
        for foreign in foreign_addrs(&cluster) {
            let (status, _) = named.ptr(foreign);
            if status != "REFUSED" {
                failures.push(format!(
                    "PTR {foreign}: want REFUSED (not our zone), got {status}"
                ));
            }
        }
        // Not our zone: refused, not answered.
        let (status, _) = named.query("example.com", "A");
        if status != "REFUSED" {
            failures.push(format!("example.com: want REFUSED, got {status}"));
        }
        assert!(
            failures.is_empty(),
            "{short}: named (port {}) answered wrongly:\n{}\nnamed log:\n{}",
            named.port,
            failures.join("\n"),
            named.log_text()
        );
    }
}
