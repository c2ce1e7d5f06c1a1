//! The PROXY protocol against real implementations, in network namespaces: the client's
//! address must reach a real nginx (`listen ... proxy_protocol`, answering
//! `$proxy_protocol_addr`) and a real HAProxy (`bind ... accept-proxy`, answering `%[src]`
//! and logging `%ci`) through lbd, for v1 and v2, from an IPv4 and an IPv6 client; lbd's own
//! `accept_proxy` must take the client's address from a real HAProxy's `send-proxy-v2` /
//! `send-proxy` in front of it; health checks must keep such backends UP without counting
//! as clients; a refused header is counted and logged while good connections go on.
//!
//! The client's address is neither lbd's nor the backend's, so an answer that names it
//! proves the header carried it. Own namespaces (prefix `pp`), own subnet 10.173.0.0/24 and
//! fd00:173::/64; every process is killed with its namespace on drop; every loop is bounded.
//! Needs root, Debian's nginx and haproxy (scripts/test-tools.txt).
//!
//! Index:
//! - `nginx_and_haproxy_see_the_client_through_lbd` (v1/v2 x IPv4/IPv6 x nginx/HAProxy, the
//!   checks UP and LOCAL, a service without the setting sends no header)
//! - `lbd_behind_haproxy_takes_the_client_from_its_header` (send-proxy-v2 and send-proxy in
//!   front, lbd's accept_proxy, on to nginx with v2)
//! - `bad_headers_are_refused_counted_and_logged_and_good_ones_go_on` (untrusted, malformed,
//!   silent; counters in the status and /metrics; the log is rate-limited)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k3sha_support::netns::{Lab, NetNs, NsChild};
use k3sha_support::tools;
use serde_json::Value;

const CLIENT4: &str = "10.173.0.10";
const CLIENT6: &str = "fd00:173::10";
const LBD4: &str = "10.173.0.11";
const LBD6: &str = "fd00:173::11";
const BACKEND4: &str = "10.173.0.12";
const FRONT4: &str = "10.173.0.13";
const FRONT6: &str = "fd00:173::13";

/// Run `f` on a thread inside namespace `ns` (setns on a thread of its own, never on a
/// shared one).
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// `GET path` over HTTP/1.0 from inside `ns`; the status line and the body.
fn get(ns: &str, to: SocketAddr, path: &str) -> Result<(String, String), String> {
    let path = path.to_owned();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: t\r\nUser-Agent: pp-test\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut all = String::new();
        s.read_to_string(&mut all)
            .map_err(|e| format!("read from {to}: {e}"))?;
        let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
        Ok((
            head.lines().next().unwrap_or_default().to_owned(),
            body.trim().to_owned(),
        ))
    })
}

/// Wait until something listens on `to` (as seen from `ns`).
fn wait_listening(ns: &str, to: SocketAddr, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = in_ns(ns, || {
            TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok()
        });
        if up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {to}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

struct World {
    lab: Lab,
    dir: tempfile::TempDir,
    procs: Vec<NsChild>,
}

impl World {
    fn new() -> Option<World> {
        if !k3sha_support::netns::require_root("proxy_protocol interop") {
            return None;
        }
        let lab = Lab::builder("pp")
            .host("client", &["10.173.0.10/24", "fd00:173::10/64"])
            .host("lbd", &["10.173.0.11/24", "fd00:173::11/64"])
            .host("backend", &["10.173.0.12/24", "fd00:173::12/64"])
            .host("front", &["10.173.0.13/24", "fd00:173::13/64"])
            .build()
            .unwrap();
        Some(World {
            lab,
            dir: tempfile::tempdir().unwrap(),
            procs: Vec::new(),
        })
    }

    fn ns(&self, host: &str) -> &NetNs {
        self.lab.ns(host).unwrap()
    }

    fn ns_name(&self, host: &str) -> String {
        self.ns(host).name().to_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn spawn(&mut self, host: &str, mut cmd: std::process::Command, log: &str) {
        let f = std::fs::File::create(self.path(log)).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let child = self.ns(host).spawn(cmd).unwrap();
        self.procs.push(child);
    }

    /// nginx on the backend host: 8080 plain (answers `$remote_addr`), 8081 and 8082 with
    /// `proxy_protocol` (answer `$proxy_protocol_addr`; /healthz answers ok). The access log
    /// shows both addresses and the port, per request.
    fn start_nginx(&mut self) {
        let d = self.dir.path().display().to_string();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
error_log {d}/nginx-error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    log_format pp '$server_port remote=$remote_addr pp=$proxy_protocol_addr:$proxy_protocol_port ua="$http_user_agent" "$request"';
    access_log {d}/nginx-access.log pp;
    client_body_temp_path {d}/nginx-body;
    proxy_temp_path {d}/nginx-proxy;
    fastcgi_temp_path {d}/nginx-fastcgi;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;
    default_type text/plain;
    server {{
        listen {BACKEND4}:8080;
        location / {{ return 200 "$remote_addr\n"; }}
    }}
    server {{
        listen {BACKEND4}:8081 proxy_protocol;
        listen {BACKEND4}:8082 proxy_protocol;
        location /healthz {{ return 200 "ok\n"; }}
        location / {{ return 200 "$proxy_protocol_addr\n"; }}
    }}
}}
"#
        );
        std::fs::write(self.path("nginx.conf"), conf).unwrap();
        let mut cmd = self.ns("backend").command(tools::require("nginx"));
        cmd.arg("-c")
            .arg(self.path("nginx.conf"))
            .arg("-p")
            .arg(self.dir.path());
        self.spawn("backend", cmd, "nginx.out");
        let ns = self.ns_name("backend");
        for port in [8080, 8081, 8082] {
            wait_listening(
                &ns,
                sa(BACKEND4, port),
                "nginx",
                &self.path("nginx-error.log"),
            );
        }
    }

    /// HAProxy on the backend host: 8091 and 8092 with `accept-proxy`, answering `%[src]`,
    /// logging `%ci` to stderr.
    fn start_haproxy_backend(&mut self) {
        let conf = format!(
            r#"global
    log stderr format raw local0 info
defaults
    mode http
    log global
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend pp
    bind {BACKEND4}:8091 accept-proxy
    bind {BACKEND4}:8092 accept-proxy
    log-format "fp=%fp ci=%ci ua=%[capture.req.hdr(0)] %r"
    http-request capture req.hdr(user-agent) len 40
    http-request return status 200 content-type text/plain lf-string "%[src]\n"
"#
        );
        std::fs::write(self.path("haproxy-backend.cfg"), conf).unwrap();
        let mut cmd = self.ns("backend").command(tools::require("haproxy"));
        cmd.arg("-db")
            .arg("-f")
            .arg(self.path("haproxy-backend.cfg"));
        self.spawn("backend", cmd, "haproxy-backend.log");
        let ns = self.ns_name("backend");
        for port in [8091, 8092] {
            wait_listening(
                &ns,
                sa(BACKEND4, port),
                "haproxy",
                &self.path("haproxy-backend.log"),
            );
        }
    }

    /// HAProxy on the front host, in TCP mode, in front of lbd: 9002 `send-proxy-v2` to
    /// lbd's 8201, 9001 `send-proxy` to lbd's 8202, on both families.
    fn start_haproxy_front(&mut self) {
        let conf = format!(
            r#"global
    log stderr format raw local0 info
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend v2
    bind {FRONT4}:9002
    bind [{FRONT6}]:9002
    default_backend lbd-v2
frontend v1
    bind {FRONT4}:9001
    bind [{FRONT6}]:9001
    default_backend lbd-v1
backend lbd-v2
    server lbd {LBD4}:8201 send-proxy-v2
backend lbd-v1
    server lbd {LBD4}:8202 send-proxy
"#
        );
        std::fs::write(self.path("haproxy-front.cfg"), conf).unwrap();
        let mut cmd = self.ns("front").command(tools::require("haproxy"));
        cmd.arg("-db").arg("-f").arg(self.path("haproxy-front.cfg"));
        self.spawn("front", cmd, "haproxy-front.log");
        let ns = self.ns_name("front");
        for port in [9001, 9002] {
            wait_listening(
                &ns,
                sa(FRONT4, port),
                "haproxy",
                &self.path("haproxy-front.log"),
            );
        }
    }

    /// lbd on the lbd host with these `[[services]]`.
    fn start_lbd(&mut self, services: &str) {
        let cfg = format!(
            r#"[cluster]
name = "pp"
domain = "pp.test.local"

[vip]
address = "10.173.0.100/24"

[[nodes]]
name = "n1"
address = "{LBD4}"
address6 = "{LBD6}"
role = "server"

[stats]
listen = "{LBD4}:8404"

[lbd]
peer_port = 0
{services}"#
        );
        std::fs::write(self.path("cluster.toml"), cfg).unwrap();
        let mut cmd = self.ns("lbd").command(env!("CARGO_BIN_EXE_lbd"));
        cmd.arg("--config")
            .arg(self.path("cluster.toml"))
            .args(["--node", "n1", "--run-dir"])
            .arg(self.path("run"))
            .env("RUST_LOG", "info");
        self.spawn("lbd", cmd, "lbd.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_status().is_err() {
            assert!(
                Instant::now() < deadline,
                "lbd did not come up: {}",
                self.log("lbd.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_status(&self) -> Result<Value, String> {
        common::ctl::call(
            &self.path("run/lbd.sock"),
            "status",
            Value::Null,
            Duration::from_secs(2),
        )
        .map_err(|e| e.to_string())
    }

    fn frontend(&self, name: &str) -> Value {
        let s = self.try_status().unwrap();
        s["frontends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no frontend {name}: {s}"))
    }

    /// Wait until every server of every frontend is UP.
    fn wait_all_up(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.try_status().unwrap();
            let all = s["frontends"].as_array().unwrap().iter().all(|f| {
                f["servers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|srv| srv["status"] == "UP" && srv["check_status"] != "INI")
            });
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every server UP: {s:#}\n--- lbd\n{}\n--- nginx\n{}\n--- haproxy\n{}",
                self.log("lbd.log"),
                self.log("nginx-error.log"),
                self.log("haproxy-backend.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

const CHECK: &str = r#"check = { kind = "http", path = "/healthz", expect = [200], interval = "200ms", fast_interval = "100ms", timeout = "1s", rise = 2, fall = 2 }"#;

fn service(name: &str, listen: u16, backend_port: u16, extra: &str) -> String {
    format!(
        "\n[[services]]\nname = \"{name}\"\nlisten = {listen}\nbackends = [\"{BACKEND4}:{backend_port}\"]\n{CHECK}\n{extra}\n"
    )
}

#[test]
fn nginx_and_haproxy_see_the_client_through_lbd() {
    let Some(mut w) = World::new() else { return };
    w.start_nginx();
    w.start_haproxy_backend();
    let services = [
        service("plain", 8100, 8080, ""),
        service("nginx-v1", 8101, 8081, "proxy_protocol = \"v1\""),
        service("nginx-v2", 8102, 8082, "proxy_protocol = \"v2\""),
        service("haproxy-v1", 8111, 8091, "proxy_protocol = \"v1\""),
        service(
            "haproxy-v2",
            8112,
            8092,
            "proxy_protocol = \"v2\"\nproxy_protocol_tlvs = [\"crc32c\", \"unique-id\"]",
        ),
        // A TCP check sends no header: it never completes a handshake HAProxy could see.
        format!(
            "\n[[services]]\nname = \"haproxy-tcp-check\"\nlisten = 8113\nbackends = [\"{BACKEND4}:8092\"]\n\
             check = {{ kind = \"tcp\", interval = \"100ms\", fast_interval = \"100ms\", timeout = \"500ms\", rise = 2, fall = 2 }}\n\
             proxy_protocol = \"v2\"\n"
        ),
    ]
    .concat();
    w.start_lbd(&services);
    // Health checks that send the header keep every backend that requires one UP.
    w.wait_all_up(Duration::from_secs(10));
    let client = w.ns_name("client");
    for (client_ip, lbd_ip) in [(CLIENT4, LBD4), (CLIENT6, LBD6)] {
        for port in [8101, 8102, 8111, 8112] {
            let (status, body) = get(&client, sa(lbd_ip, port), "/who").unwrap();
            assert_eq!(
                (status.as_str(), body.as_str()),
                ("HTTP/1.1 200 OK", client_ip),
                "lbd {lbd_ip}:{port}\n--- lbd\n{}\n--- nginx\n{}\n--- haproxy\n{}",
                w.log("lbd.log"),
                w.log("nginx-error.log"),
                w.log("haproxy-backend.log")
            );
        }
        // Without proxy_protocol no header is sent: nginx without proxy_protocol answers
        // (a header would be a bad request) and sees lbd's own address.
        let (status, body) = get(&client, sa(lbd_ip, 8100), "/who").unwrap();
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", LBD4));
    }
    // HAProxy logged the client as %ci for the clients' requests, and lbd's own address for
    // the checks (LOCAL with v2; the check's own endpoints with v1). Its %fp is the
    // header's destination too: lbd's port for a client, its own for a check.
    let hlog = w.log("haproxy-backend.log");
    for (fp, lbd_port) in [(8091, 8111), (8092, 8112)] {
        for who in [CLIENT4, CLIENT6] {
            let want = format!("fp={lbd_port} ci={who} ua=pp-test");
            assert!(hlog.contains(&want), "{want} not in\n{hlog}");
        }
        let check = format!("fp={fp} ci={LBD4} ua=lbd-check");
        assert!(hlog.contains(&check), "{check} not in\n{hlog}");
    }
    assert!(!hlog.contains(&format!("ci={CLIENT4} ua=lbd-check")));
    // HAProxy logs a connection that closed without its header; lbd's TCP checks (every
    // 100 ms on 8113) left none.
    assert!(
        !hlog
            .lines()
            .any(|l| l.starts_with(&format!("{LBD4}:")) && l.contains("waiting for PROXY")),
        "{hlog}"
    );
    // nginx: the v2 checks are LOCAL (no proxy_protocol_addr, logged "-": not a client); the v1 checks
    // carry lbd's own endpoints; the clients' requests carry the clients.
    let nlog = w.log("nginx-access.log");
    let lines = |port: u16, ua: &str| -> Vec<String> {
        nlog.lines()
            .filter(|l| l.starts_with(&format!("{port} ")) && l.contains(&format!("ua=\"{ua}\"")))
            .map(str::to_owned)
            .collect()
    };
    let v2_checks = lines(8082, "lbd-check");
    assert!(!v2_checks.is_empty(), "{nlog}");
    for l in &v2_checks {
        assert!(
            l.contains(&format!("remote={LBD4} pp=-:-")),
            "v2 check not LOCAL: {l}"
        );
    }
    let v1_checks = lines(8081, "lbd-check");
    assert!(!v1_checks.is_empty(), "{nlog}");
    for l in &v1_checks {
        assert!(l.contains(&format!("pp={LBD4}:")), "v1 check: {l}");
    }
    for port in [8081, 8082] {
        let clients = lines(port, "pp-test");
        assert_eq!(clients.len(), 2, "{nlog}");
        assert!(
            clients[0].contains(&format!("remote={LBD4} pp={CLIENT4}:")),
            "{}",
            clients[0]
        );
        assert!(
            clients[1].contains(&format!("pp={CLIENT6}:")),
            "{}",
            clients[1]
        );
    }
    // Still UP after all that, with no check failed.
    let s = w.try_status().unwrap();
    for f in s["frontends"].as_array().unwrap() {
        for srv in f["servers"].as_array().unwrap() {
            assert_eq!(srv["status"], "UP", "{srv}");
            assert_eq!(srv["checks_failed"], 0, "{}: {srv}", f["name"]);
        }
    }
}

#[test]
fn lbd_behind_haproxy_takes_the_client_from_its_header() {
    let Some(mut w) = World::new() else { return };
    w.start_nginx();
    let trust = format!(
        "accept_proxy = true\ntrusted_proxies = [\"{FRONT4}/32\"]\nproxy_protocol = \"v2\""
    );
    let services = [
        service("from-v2", 8201, 8082, &trust),
        service("from-v1", 8202, 8082, &trust),
    ]
    .concat();
    w.start_lbd(&services);
    w.start_haproxy_front();
    w.wait_all_up(Duration::from_secs(10));
    let client = w.ns_name("client");
    for front_port in [9002, 9001] {
        for (front_ip, client_ip) in [(FRONT4, CLIENT4), (FRONT6, CLIENT6)] {
            let (status, body) = get(&client, sa(front_ip, front_port), "/who").unwrap();
            assert_eq!(
                (status.as_str(), body.as_str()),
                ("HTTP/1.1 200 OK", client_ip),
                "through HAProxy {front_ip}:{front_port}\n--- lbd\n{}\n--- haproxy\n{}",
                w.log("lbd.log"),
                w.log("haproxy-front.log")
            );
        }
    }
    for fe in ["from-v2", "from-v1"] {
        // Two clients (and HAProxy's connection for the probe that waited for it to listen).
        let f = w.frontend(fe);
        assert!(f["total_sessions"].as_u64().unwrap() >= 2, "{f}");
        assert_eq!(f["proxy_refused"]["untrusted"], 0, "{f}");
        assert_eq!(f["proxy_refused"]["malformed"], 0, "{f}");
    }
}

/// Connect from `ns`, send `bytes`, and tell whether the connection was closed on us
/// without an answer (within 5 s).
fn refused(ns: &str, to: SocketAddr, bytes: &'static [u8]) -> bool {
    in_ns(ns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(3)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    })
}

#[test]
fn bad_headers_are_refused_counted_and_logged_and_good_ones_go_on() {
    let Some(mut w) = World::new() else { return };
    w.start_nginx();
    let services = service(
        "acc",
        8201,
        8082,
        &format!("accept_proxy = true\ntrusted_proxies = [\"{FRONT4}/32\"]\nproxy_protocol = \"v2\"\ntimeouts = {{ proxy_header = \"300ms\" }}"),
    );
    w.start_lbd(&services);
    w.start_haproxy_front();
    w.wait_all_up(Duration::from_secs(10));
    let (client, front) = (w.ns_name("client"), w.ns_name("front"));
    let lbd = sa(LBD4, 8201);
    // Untrusted: the client itself, with a header that would claim another address.
    for _ in 0..20 {
        assert!(refused(
            &client,
            lbd,
            b"PROXY TCP4 192.0.2.1 10.173.0.11 1 8201\r\nGET / HTTP/1.0\r\n\r\n"
        ));
    }
    // Malformed, from the trusted address: not a header; a header cut short.
    for _ in 0..20 {
        assert!(refused(&front, lbd, b"GET / HTTP/1.0\r\n\r\n"));
    }
    assert!(refused(&front, lbd, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"));
    // Silent past timeouts.proxy_header.
    let started = Instant::now();
    assert!(refused(&front, lbd, b""));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Good connections through the front HAProxy are not affected.
    for _ in 0..5 {
        let (status, body) = get(&client, sa(FRONT4, 9002), "/who").unwrap();
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", CLIENT4)
        );
    }
    let f = w.frontend("acc");
    assert_eq!(f["proxy_refused"]["untrusted"], 20, "{f}");
    assert_eq!(f["proxy_refused"]["malformed"], 21, "{f}");
    assert_eq!(f["proxy_refused"]["timeout"], 1, "{f}");
    // The same counters on /metrics.
    let (_, metrics) = get(&w.ns_name("lbd"), sa(LBD4, 8404), "/metrics").unwrap();
    for (why, n) in [("untrusted", 20), ("malformed", 21), ("timeout", 1)] {
        let want =
            format!("lbd_frontend_proxy_refused_total{{frontend=\"acc\",reason=\"{why}\"}} {n}");
        assert!(metrics.contains(&want), "{want} not in\n{metrics}");
    }
    // Logged, but not once per refusal: one line a second at most.
    let log = w.log("lbd.log");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("PROXY header refused"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() < 41,
        "{} lines:\n{log}",
        lines.len()
    );
    assert!(lines.iter().any(|l| l.contains("untrusted")), "{log}");
    let elapsed_s = 1 + w.try_status().unwrap()["uptime_secs"].as_u64().unwrap();
    assert!(
        lines.len() as u64 <= elapsed_s + 1,
        "{} lines in {elapsed_s} s:\n{log}",
        lines.len()
    );
}
