//! lbd against real TCP backends on loopback: the real binary, a generated cluster.toml,
//! backends that are std threads in this process. Every test binds its own backends on
//! 127.0.0.x port 0 and its own frontend/stats ports (picked free), so tests run in
//! parallel. Every loop is bounded in count and time.
//!
//! Index:
//! - distribution: `roundrobin_distributes_by_weight`, `leastconn_fills_the_emptiest`,
//!   `source_hash_is_sticky_per_client_and_spreads_clients`, `backup_only_when_all_down`
//! - health: `stopped_backend_leaves_within_fall_and_returns_within_rise` (prints timings),
//!   `admin_drain_and_maint_take_no_new_connections`
//! - failures: `retries_hide_a_dead_backend_until_passive_health_removes_it`,
//!   `no_healthy_backend_closes_the_client_at_once`, `close_on_down_closes_open_connections`
//! - streams: `half_close_client_first`, `half_close_server_first`, `bytes_count_live`
//! - limits: `frontend_cap_denies_at_once`, `global_cap_denies_at_once`
//! - reload: `long_lived_connection_survives_reload`, `zero_failures_across_reloads_under_load`,
//!   `bad_reload_keeps_old_config`, `reload_moves_and_removes_ports`
//! - timeouts: `idle_then_tunnel_timeouts`
//! - descriptors: `at_the_descriptor_cap_lbd_waits_without_spinning_and_recovers` (prints
//!   CPU used), `descriptor_shortage_is_never_a_backend_failure` (1000 clients, nofile 256)
//! - vrrpd: `vrrp_view_follows_vrrpd_status`
//! - HTTP checks: `http_check_marks_503_down_and_401_up`; bind: `service_bind_is_honoured`
//! - systemd: `sd_notify_ready_reloading_watchdog_stopping`
//! - stop: `sigterm_stops_accepting_and_drains`, `sigterm_drain_deadline_closes_what_is_left`
//! - signals: `dump_signals_write_the_status_and_keep_serving`
//! - logging: `log_lines_carry_their_journal_priority_and_no_colours`
//! - checks: `tcp_checks_leave_no_client_in_the_backend` (a real iperf3 backend too)
//! - PROXY protocol (the interop with nginx and HAProxy is `tests/proxy_protocol.rs`):
//!   `a_service_without_proxy_protocol_sends_no_header` (the exact first bytes),
//!   `the_header_and_the_first_bytes_travel_in_one_segment` (counted by the kernel)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k3sha_support::netns::{self, NsChild};
use k3sha_support::standin::StandIn;
use nix::sys::signal::Signal;
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Backends

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Send `name\n`, echo everything, on EOF send `EOF\n` and close.
    Echo,
    /// Send `name\n`, shutdown(Write), then count what arrives until EOF.
    FinFirst,
}

struct Backend {
    name: String,
    addr: SocketAddr,
    mode: Mode,
    accepted: Arc<AtomicUsize>,
    received_after_fin: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    fn start(ip: &str, name: &str, mode: Mode) -> Backend {
        let l = TcpListener::bind((ip, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let mut b = Backend {
            name: name.into(),
            addr,
            mode,
            accepted: Arc::default(),
            received_after_fin: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        b.run(l);
        b
    }

    fn run(&mut self, l: TcpListener) {
        l.set_nonblocking(true).unwrap();
        let (name, mode) = (self.name.clone(), self.mode);
        let (accepted, after_fin, stop) = (
            self.accepted.clone(),
            self.received_after_fin.clone(),
            self.stop.clone(),
        );
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        accepted.fetch_add(1, SeqCst);
                        let (name, after_fin) = (name.clone(), after_fin.clone());
                        std::thread::spawn(move || serve(s, &name, mode, &after_fin));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
    }

    /// Close the listener: new connects are refused.
    fn stop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// Listen again on the same address.
    fn restart(&mut self) {
        self.stop.store(false, SeqCst);
        let l = TcpListener::bind(self.addr).unwrap();
        self.run(l);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut s: TcpStream, name: &str, mode: Mode, after_fin: &AtomicU64) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if s.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    if mode == Mode::FinFirst {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => match mode {
                Mode::Echo => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Mode::FinFirst => {
                    after_fin.fetch_add(n as u64, SeqCst);
                }
            },
        }
    }
    if mode == Mode::Echo {
        let _ = s.write_all(b"EOF\n");
    }
}

/// A dead address: bound then closed, so connects are refused.
fn dead_addr(ip: &str) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// A port no other test of this process gets, below the ephemeral range (so client
/// sockets never take it), and free right now on the wildcard address.
fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20_000 + (std::process::id() as usize % 400) * 25;
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, SeqCst);
        let port = u16::try_from(base + n % 10_000).unwrap();
        if TcpListener::bind(("::", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port");
}

// ---------------------------------------------------------------------------------------
// lbd

struct Svc {
    name: &'static str,
    port: u16,
    backends: Vec<String>,
    extra: String,
}

fn svc(name: &'static str, backends: &[String], extra: &str) -> Svc {
    Svc {
        name,
        port: free_port(),
        backends: backends.to_vec(),
        extra: extra.to_owned(),
    }
}

fn plain(addrs: &[&Backend]) -> Vec<String> {
    addrs.iter().map(|b| format!("\"{}\"", b.addr)).collect()
}

const FAST_CHECK: &str = r#"check = { kind = "tcp", interval = "200ms", fast_interval = "100ms", timeout = "100ms", rise = 2, fall = 3 }"#;

fn config(stats: u16, services: &[Svc], lbd_extra: &str) -> String {
    let mut s = format!(
        r#"[cluster]
name = "t"
domain = "t.test.local"

[vip]
address = "127.0.0.100/8"

[[nodes]]
name = "n1"
address = "127.0.0.1"
role = "server"

[stats]
listen = "127.0.0.1:{stats}"

[lbd]
drain_timeout = "2s"
{lbd_extra}
"#
    );
    for v in services {
        s.push_str(&format!(
            "\n[[services]]\nname = \"{}\"\nlisten = {}\nbackends = [{}]\n{}\n",
            v.name,
            v.port,
            v.backends.join(", "),
            v.extra
        ));
    }
    s
}

struct Lbd {
    child: NsChild,
    dir: tempfile::TempDir,
    stats: u16,
}

impl Lbd {
    fn start(cfg: &str, stats: u16) -> Lbd {
        Lbd::start_wrapped(cfg, stats, &[])
    }

    /// Start lbd under a wrapper command (e.g. `prlimit --nofile=N:N --`).
    fn start_wrapped(cfg: &str, stats: u16, wrapper: &[&str]) -> Lbd {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster.toml"), cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("lbd.log")).unwrap();
        let mut cmd = match wrapper.split_first() {
            None => Command::new(env!("CARGO_BIN_EXE_lbd")),
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(env!("CARGO_BIN_EXE_lbd"));
                c
            }
        };
        cmd.arg("--config")
            .arg(dir.path().join("cluster.toml"))
            .args(["--node", "n1", "--run-dir"])
            .arg(dir.path().join("run"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = netns::spawn(cmd).unwrap();
        let mut l = Lbd { child, dir, stats };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(v) = l.try_status() {
                if v.get("node").is_some() {
                    break;
                }
            }
            if let Some(st) = l.child.try_wait() {
                panic!("lbd exited early ({st}): {}", l.log());
            }
            assert!(
                Instant::now() < deadline,
                "lbd did not come up: {}",
                l.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        l
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lbd.log")).unwrap_or_default()
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("run/lbd.sock")
    }

    fn try_status(&self) -> Result<Value, String> {
        common::ctl::call(&self.sock(), "status", Value::Null, Duration::from_secs(2))
            .map_err(|e| e.to_string())
    }

    fn ctl(&self, cmd: &str, args: Value) -> Result<Value, String> {
        common::ctl::call(&self.sock(), cmd, args, Duration::from_secs(5))
            .map_err(|e| e.to_string())
    }

    fn status(&self) -> Value {
        self.try_status().unwrap()
    }

    fn frontend(&self, name: &str) -> Value {
        self.status()["frontends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no frontend {name}"))
    }

    fn server(&self, svc: &str, addr: SocketAddr) -> Value {
        self.frontend(svc)["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["addr"] == addr.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("no server {addr}"))
    }

    /// `GET /stats.json` from the stats page (wired by the daemon).
    fn stats_json(&self) -> Value {
        let mut s = connect(self.stats);
        s.write_all(b"GET /stats.json HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        let body = all.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {all}"))
    }

    fn write_config(&self, cfg: &str) {
        std::fs::write(self.dir.path().join("cluster.toml"), cfg).unwrap();
    }

    fn signal(&self, sig: Signal) {
        self.child.signal(sig).unwrap();
    }

    /// SIGHUP, then wait until `reloads` or `last_reload_error` says it was handled.
    fn reload(&self) -> Value {
        let before = self.status()["reloads"].as_u64().unwrap();
        let err_before = self.status()["last_reload_error"].clone();
        self.signal(Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.status();
            if s["reloads"].as_u64().unwrap() > before
                || (s["last_reload_error"] != err_before && !s["last_reload_error"].is_null())
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "reload not handled: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_status(&self, svc: &str, addr: SocketAddr, want: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let s = self.server(svc, addr);
            if s["status"] == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{addr} not {want} within {limit:?}: {s}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait until every server has had its first check.
    fn wait_checked(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.status();
            let all = s["frontends"].as_array().unwrap().iter().all(|f| {
                f["servers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s["check_status"] != "INI")
            });
            if all {
                return;
            }
            assert!(Instant::now() < deadline, "checks never ran: {s}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        self.child.kill();
        if std::thread::panicking() {
            eprintln!("--- lbd log ---\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Clients

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Connect and read the backend's name line; `None` if closed without one.
fn hello(port: u16) -> (TcpStream, Option<String>) {
    hello_from(port, None)
}

fn hello_from(port: u16, src: Option<&str>) -> (TcpStream, Option<String>) {
    let s = match src {
        None => connect(port),
        Some(ip) => {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let local: SocketAddr = format!("{ip}:0").parse().unwrap();
            sock.bind(&local.into()).unwrap();
            let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            sock.connect(&to.into()).unwrap();
            let s: TcpStream = sock.into();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        }
    };
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(n) if n > 0 => (s, Some(line.trim_end().to_owned())),
        _ => (s, None),
    }
}

fn count_hellos(port: u16, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..n {
        let (_s, name) = hello(port);
        *m.entry(name.expect("closed without a backend"))
            .or_insert(0) += 1;
    }
    m
}

/// One echo round trip on a fresh connection: true when everything came back.
fn echo_once(port: u16, payload: &[u8]) -> Result<(), String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("hello: {e}"))?;
    if line.is_empty() {
        return Err("closed before hello".into());
    }
    w.write_all(payload).map_err(|e| format!("write: {e}"))?;
    w.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).map_err(|e| format!("read: {e}"))?;
    let mut want = payload.to_vec();
    want.extend_from_slice(b"EOF\n");
    if rest != want {
        return Err(format!(
            "got {} bytes back, want {}",
            rest.len(),
            want.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Distribution

/// `lbd.threads` sets how many threads carry connections: one is the main thread, more are
/// that many accept workers (threads the kernel lists by name, and the daemon's own
/// report), and `stats.listen = "off"` opens no stats page while the service proxies as
/// usual.
#[test]
fn threads_setting_and_stats_page_off() {
    let b = Backend::start("127.0.0.1", "b1", Mode::Echo);
    for threads in [1, 3] {
        let stats = free_port();
        let s = svc("web", &[format!("\"{}\"", b.addr)], FAST_CHECK);
        let port = s.port;
        let cfg = config(stats, &[s], &format!("threads = {threads}")).replace(
            &format!("listen = \"127.0.0.1:{stats}\""),
            "listen = \"off\"",
        );
        let lbd = Lbd::start(&cfg, stats);
        lbd.wait_checked();
        assert_eq!(echo_once(port, b"through lbd"), Ok(()));
        let log = lbd.log();
        assert!(
            log.contains(&format!("threads={threads}")),
            "lbd does not report {threads} runtime threads: {log}"
        );
        let pid = lbd.child.pid().unwrap();
        let workers = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("lbd-worker-"))
            .count();
        let want = if threads == 1 { 0 } else { threads };
        assert_eq!(
            workers, want,
            "accept worker threads with threads = {threads}"
        );
        assert!(log.contains("no stats page"), "{log}");
        match TcpStream::connect(("127.0.0.1", stats)) {
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused),
            Ok(_) => panic!("a stats page answers on {stats} with stats.listen = \"off\""),
        }
        assert_eq!(lbd.frontend("web")["total_sessions"], 1);
    }
}

#[test]
fn roundrobin_distributes_by_weight() {
    let b: Vec<Backend> = (1..=3)
        .map(|i| Backend::start(&format!("127.0.0.{i}"), &format!("b{i}"), Mode::Echo))
        .collect();
    let backends = vec![
        format!("\"{}\"", b[0].addr),
        format!("{{ address = \"{}\", weight = 2 }}", b[1].addr),
        format!("\"{}\"", b[2].addr),
    ];
    let stats = free_port();
    let s = svc(
        "web",
        &backends,
        &format!("balance = \"roundrobin\"\n{FAST_CHECK}"),
    );
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let m = count_hellos(port, 400);
    println!("roundrobin 1:2:1 over 400 connections: {m:?}");
    assert_eq!(m["b1"], 100);
    assert_eq!(m["b2"], 200);
    assert_eq!(m["b3"], 100);
    // The backends saw those connections (plus health checks).
    assert!(b[1].accepted() >= 200 && b[0].accepted() >= 100);
    let fe = lbd.frontend("web");
    assert_eq!(fe["total_sessions"], 400);
    assert_eq!(fe["balance"], "roundrobin");
}

#[test]
fn leastconn_fills_the_emptiest() {
    let b: Vec<Backend> = (1..=3)
        .map(|i| Backend::start(&format!("127.0.0.{i}"), &format!("b{i}"), Mode::Echo))
        .collect();
    let stats = free_port();
    let s = svc(
        "api",
        &plain(&b.iter().collect::<Vec<_>>()),
        &format!("balance = \"leastconn\"\n{FAST_CHECK}"),
    );
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let mut held: Vec<(TcpStream, String)> = (0..9)
        .map(|_| {
            let (s, n) = hello(port);
            (s, n.unwrap())
        })
        .collect();
    let count = |held: &[(TcpStream, String)], n: &str| held.iter().filter(|h| h.1 == n).count();
    assert_eq!(
        (count(&held, "b1"), count(&held, "b2"), count(&held, "b3")),
        (3, 3, 3)
    );
    // Close b2's three: the next three go to b2.
    held.retain(|h| h.1 != "b2");
    let deadline = Instant::now() + Duration::from_secs(3);
    while lbd.server("api", b[1].addr)["current_sessions"] != 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..3 {
        let (s, n) = hello(port);
        assert_eq!(n.as_deref(), Some("b2"));
        held.push((s, "b2".into()));
    }
    assert_eq!(lbd.server("api", b[0].addr)["current_sessions"], 3);
    assert_eq!(lbd.frontend("api")["current_sessions"], 9);
}

#[test]
fn source_hash_is_sticky_per_client_and_spreads_clients() {
    let b: Vec<Backend> = (1..=3)
        .map(|i| Backend::start(&format!("127.0.0.{i}"), &format!("b{i}"), Mode::Echo))
        .collect();
    let stats = free_port();
    let s = svc(
        "src",
        &plain(&b.iter().collect::<Vec<_>>()),
        &format!("balance = \"source\"\n{FAST_CHECK}"),
    );
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let mut per_backend = std::collections::BTreeMap::new();
    for c in 10..70 {
        let ip = format!("127.0.1.{c}");
        let first = hello_from(port, Some(&ip)).1.unwrap();
        for _ in 0..3 {
            assert_eq!(
                hello_from(port, Some(&ip)).1.unwrap(),
                first,
                "client {ip} moved"
            );
        }
        *per_backend.entry(first).or_insert(0) += 1;
    }
    println!("source hash, 60 clients: {per_backend:?}");
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    assert!(per_backend.values().all(|n| *n >= 8), "{per_backend:?}");
}

#[test]
fn backup_only_when_all_down() {
    let mut p1 = Backend::start("127.0.0.1", "p1", Mode::Echo);
    let bk = Backend::start("127.0.0.2", "backup", Mode::Echo);
    let backends = vec![
        format!("\"{}\"", p1.addr),
        format!("{{ address = \"{}\", backup = true }}", bk.addr),
    ];
    let stats = free_port();
    let s = svc("b", &backends, FAST_CHECK);
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    assert_eq!(count_hellos(port, 20).get("p1"), Some(&20));
    p1.stop();
    lbd.wait_status("b", p1.addr, "DOWN", Duration::from_secs(3));
    assert_eq!(count_hellos(port, 20).get("backup"), Some(&20));
    p1.restart();
    lbd.wait_status("b", p1.addr, "UP", Duration::from_secs(3));
    assert_eq!(count_hellos(port, 20).get("p1"), Some(&20));
}

// ---------------------------------------------------------------------------------------
// Health

#[test]
fn stopped_backend_leaves_within_fall_and_returns_within_rise() {
    let mut b1 = Backend::start("127.0.0.1", "b1", Mode::Echo);
    let b2 = Backend::start("127.0.0.2", "b2", Mode::Echo);
    let stats = free_port();
    // interval 200 ms, fast 100 ms, timeout 100 ms, rise 2, fall 3.
    let s = svc("h", &plain(&[&b1, &b2]), FAST_CHECK);
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let (interval, fall, rise) = (Duration::from_millis(200), 3u32, 2u32);
    b1.stop();
    let down = lbd.wait_status("h", b1.addr, "DOWN", Duration::from_secs(3));
    let st = lbd.server("h", b1.addr);
    println!(
        "DOWN after {down:?} (bound interval x fall = {:?}); check {} {}",
        interval * fall,
        st["check_status"],
        st["check_desc"]
    );
    assert!(
        down <= interval * fall + Duration::from_millis(50),
        "{down:?}"
    );
    assert_eq!(st["check_status"], "L4CON");
    assert_eq!(st["down_transitions"], 1);
    // Nothing new goes to b1 while it is down: no client fails, all reach b2.
    assert_eq!(count_hellos(port, 10).get("b2"), Some(&10));
    b1.restart();
    let up = lbd.wait_status("h", b1.addr, "UP", Duration::from_secs(3));
    println!(
        "UP after {up:?} (bound interval x rise = {:?})",
        interval * rise
    );
    assert!(up <= interval * rise + Duration::from_millis(50), "{up:?}");
    let m = count_hellos(port, 10);
    assert!((4..=6).contains(&m["b1"]), "{m:?}");
    let st = lbd.server("h", b1.addr);
    assert_eq!(st["check_status"], "L4OK");
    assert!(st["downtime_secs"].as_u64().is_some());
}

/// vrrpd lost a node (issue 14): `suspect` checks that node's servers at once and one
/// failure takes them out, where the normal checks (every 5 s, fall 3) would take 15 s.
/// A live suspect stays UP; a DOWN one still needs its `rise`.
#[test]
fn a_suspect_node_is_checked_at_once_and_fails_fast() {
    let mut b1 = Backend::start("127.0.0.1", "b1", Mode::Echo);
    let b2 = Backend::start("127.0.0.2", "b2", Mode::Echo);
    let stats = free_port();
    let slow = r#"check = { kind = "tcp", interval = "5s", fast_interval = "5s", timeout = "1s", rise = 2, fall = 3 }"#;
    let s = svc("sus", &plain(&[&b1, &b2]), slow);
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let suspect = |ip: &str| {
        let req = common::proto::lbd::Suspect {
            node: None,
            addresses: vec![ip.parse().unwrap()],
            why: "silent".into(),
        };
        common::proto::block_on(common::proto::lbd::suspect(
            &lbd.sock(),
            req,
            Duration::from_secs(2),
        ))
        .unwrap()
        .servers
    };
    // A live node: checked, still UP.
    assert_eq!(suspect("127.0.0.2"), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lbd.server("sus", b2.addr)["status"], "UP");
    assert_eq!(lbd.server("sus", b2.addr)["down_transitions"], 0);
    // A dead one: DOWN on the first failed check, long before interval x fall.
    b1.stop();
    let t0 = Instant::now();
    assert_eq!(suspect("127.0.0.1"), 1);
    let down = lbd.wait_status("sus", b1.addr, "DOWN", Duration::from_secs(3));
    println!("suspect DOWN after {down:?} (normal checks: 15 s)");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(
        lbd.server("sus", b2.addr)["status"],
        "UP",
        "the other node untouched"
    );
    // Back, and suspected again: one good check is not `rise` (2), it stays DOWN.
    b1.restart();
    assert_eq!(suspect("127.0.0.1"), 1);
    std::thread::sleep(Duration::from_millis(300));
    let st = lbd.server("sus", b1.addr);
    assert_eq!(st["status"], "DOWN", "{st:#}");
    assert_eq!(st["transition"], "1/2 up", "{st:#}");
}

/// A server that takes no SYN (its accept queue is full: the kernel drops them), as a node
/// that is gone but whose neighbour entry still stands. Holds the listener and the queued
/// connection.
struct BlackHole {
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

impl BlackHole {
    fn at(addr: SocketAddr) -> BlackHole {
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.set_reuse_address(true).unwrap();
        l.bind(&addr.into()).unwrap();
        l.listen(0).unwrap();
        let mut queued = Vec::new();
        for _ in 0..4 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => queued.push(s),
                Err(_) => {
                    return BlackHole {
                        _listener: l,
                        _queued: queued,
                    }
                }
            }
        }
        panic!("{addr}: the accept queue never filled");
    }
}

/// `timeouts.connect = "auto"` (the default) with 100 ms adverts: a connect to a server that
/// does not answer is given up after one advert interval and the client is served by
/// another server at once; the silent server is checked at once and leaves rotation, long
/// before its normal checks (5 s x 3) would have noticed.
#[test]
fn an_automatic_connect_timeout_fits_the_vrrp_interval() {
    let mut b1 = Backend::start("127.0.0.1", "b1", Mode::Echo);
    let b2 = Backend::start("127.0.0.2", "b2", Mode::Echo);
    let stats = free_port();
    let slow = r#"check = { kind = "tcp", interval = "5s", fast_interval = "5s", timeout = "1s", rise = 2, fall = 3 }"#;
    let s = svc("auto", &plain(&[&b1, &b2]), slow);
    let port = s.port;
    let cfg = config(stats, &[s], "").replace("[stats]", "[vrrp]\ninterval = \"100ms\"\n\n[stats]");
    let lbd = Lbd::start(&cfg, stats);
    lbd.wait_checked();
    b1.stop();
    let _hole = BlackHole::at(b1.addr);
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        echo_once(port, format!("req {i}\n").as_bytes()).unwrap_or_else(|e| {
            panic!("request {i}: {e}\n{}", lbd.log());
        });
        slowest = slowest.max(t.elapsed());
    }
    let down = lbd.wait_status("auto", b1.addr, "DOWN", Duration::from_secs(3));
    let st = lbd.server("auto", b1.addr);
    println!(
        "slowest of 10 requests {slowest:?}; silent server DOWN {:?} after the first request \
         ({down:?} after the last)",
        t0.elapsed()
    );
    // One advert interval (100 ms) for the connect, then the other server; a fixed 1 s
    // timeout made this 1 s.
    assert!(
        slowest < Duration::from_millis(600),
        "slowest request {slowest:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(st["status"], "DOWN");
    assert_eq!(st["check_status"], "L4TOUT", "{st:#}");
    assert_eq!(lbd.server("auto", b2.addr)["status"], "UP");
}

#[test]
fn admin_drain_and_maint_take_no_new_connections() {
    let b1 = Backend::start("127.0.0.1", "b1", Mode::Echo);
    let b2 = Backend::start("127.0.0.2", "b2", Mode::Echo);
    let stats = free_port();
    let s = svc("adm", &plain(&[&b1, &b2]), FAST_CHECK);
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let (held, name) = hello(port);
    assert_eq!(name.as_deref(), Some("b1"));
    lbd.ctl(
        "set-server",
        serde_json::json!({"service": "adm", "server": b1.addr.to_string(), "state": "drain"}),
    )
    .unwrap();
    assert_eq!(lbd.server("adm", b1.addr)["status"], "DRAIN");
    assert_eq!(count_hellos(port, 10).get("b2"), Some(&10));
    // The open connection to the draining server still works.
    let mut w = held.try_clone().unwrap();
    w.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    (&held).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    lbd.ctl(
        "set-server",
        serde_json::json!({"service": "adm", "server": b1.addr.to_string(), "state": "maint"}),
    )
    .unwrap();
    assert_eq!(lbd.server("adm", b1.addr)["status"], "MAINT");
    assert_eq!(count_hellos(port, 4).get("b2"), Some(&4));
    lbd.ctl(
        "set-server",
        serde_json::json!({"service": "adm", "server": b1.addr.to_string(), "state": "ready"}),
    )
    .unwrap();
    lbd.ctl(
        "set-weight",
        serde_json::json!({"service": "adm", "server": b2.addr.to_string(), "weight": 3}),
    )
    .unwrap();
    let m = count_hellos(port, 40);
    assert!((9..=11).contains(&m["b1"]), "{m:?}");
    assert_eq!(m["b1"] + m["b2"], 40);
    let e = lbd
        .ctl(
            "set-server",
            serde_json::json!({"service": "adm", "server": "nope", "state": "drain"}),
        )
        .unwrap_err();
    assert!(e.contains("no server named \"nope\""), "{e}");
}

// ---------------------------------------------------------------------------------------
// Failures

#[test]
fn retries_hide_a_dead_backend_until_passive_health_removes_it() {
    let b: Vec<Backend> = (1..=3)
        .map(|i| Backend::start(&format!("127.0.0.{i}"), &format!("b{i}"), Mode::Echo))
        .collect();
    let mut b = b;
    let stats = free_port();
    // Checks far apart: only client connections can notice the dead server.
    let s = svc(
        "r",
        &plain(&b.iter().collect::<Vec<_>>()),
        r#"balance = "roundrobin"
retries = 2
check = { kind = "tcp", interval = "60s", fast_interval = "60s", timeout = "1s", rise = 2, fall = 3 }"#,
    );
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let dead = b[1].addr;
    b[1].stop();
    let mut failures = 0;
    for _ in 0..300 {
        if echo_once(port, b"x").is_err() {
            failures += 1;
        }
    }
    let st = lbd.server("r", dead);
    println!(
        "300 connections with a dead server: {failures} client failures; \
         server {} connect_errors {} retries {}",
        st["status"], st["connect_errors"], st["retries"]
    );
    // Every failed connect was retried on another server: no client noticed.
    assert_eq!(failures, 0);
    assert_eq!(st["connect_errors"], st["retries"]);
    // Failed connects count like failed checks (plus one immediate re-check each):
    // the server is DOWN after at most `fall` of them, long before its next check.
    assert_eq!(st["status"], "DOWN", "{st}");
    let errors = st["connect_errors"].as_u64().unwrap();
    assert!((1..=3).contains(&errors), "{st}");
}

#[test]
fn no_healthy_backend_closes_the_client_at_once() {
    let stats = free_port();
    let backends = vec![
        format!("\"{}\"", dead_addr("127.0.0.1")),
        format!("\"{}\"", dead_addr("127.0.0.2")),
    ];
    let s = svc("none", &backends, FAST_CHECK);
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    for _ in 0..5 {
        let start = Instant::now();
        let (_s, name) = hello(port);
        let took = start.elapsed();
        assert_eq!(name, None);
        assert!(took < Duration::from_millis(200), "client waited {took:?}");
    }
    assert_eq!(lbd.frontend("none")["no_server"], 5);
    for s in lbd.frontend("none")["servers"].as_array().unwrap() {
        assert_eq!(s["status"], "DOWN");
        assert_eq!(s["check_status"], "L4CON");
    }
}

#[test]
fn close_on_down_closes_open_connections() {
    let mut b1 = Backend::start("127.0.0.1", "b1", Mode::Echo);
    let b2 = Backend::start("127.0.0.2", "b2", Mode::Echo);
    let stats = free_port();
    let s = svc(
        "cod",
        &plain(&[&b1, &b2]),
        &format!("close_on_down = true\n{FAST_CHECK}"),
    );
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let (held, name) = hello(port);
    assert_eq!(name.as_deref(), Some("b1"));
    b1.stop(); // the open connection's backend thread lives on; only checks fail
    lbd.wait_status("cod", b1.addr, "DOWN", Duration::from_secs(3));
    let mut buf = [0u8; 16];
    let start = Instant::now();
    let n = (&held).read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "connection not closed");
    assert!(start.elapsed() < Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------
// Streams

#[test]
fn half_close_client_first() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc("hc", &plain(&[&b]), FAST_CHECK);
    let port = s.port;
    let _lbd = Lbd::start(&config(stats, &[s], ""), stats);
    // 2 MB up, FIN, then everything (echo + trailer) must still come down.
    let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let s = connect(port);
    let mut w = s.try_clone().unwrap();
    let p2 = payload.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&p2).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut all = Vec::new();
    (&s).read_to_end(&mut all).unwrap();
    writer.join().unwrap();
    let mut want = b"b\n".to_vec();
    want.extend_from_slice(&payload);
    want.extend_from_slice(b"EOF\n");
    assert_eq!(all.len(), want.len());
    assert!(all == want);
}

#[test]
fn half_close_server_first() {
    let b = Backend::start("127.0.0.1", "b", Mode::FinFirst);
    let stats = free_port();
    let s = svc("hs", &plain(&[&b]), FAST_CHECK);
    let port = s.port;
    let _lbd = Lbd::start(&config(stats, &[s], ""), stats);
    let s = connect(port);
    // The server says its name and closes its side: we see EOF...
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).unwrap();
    assert_eq!(got, b"b\n");
    // ...and can still send for as long as we like; the server receives it all.
    let mut w = s.try_clone().unwrap();
    for _ in 0..100 {
        w.write_all(&[1u8; 10_000]).unwrap();
    }
    w.shutdown(Shutdown::Write).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.received_after_fin.load(SeqCst) < 1_000_000 {
        assert!(
            Instant::now() < deadline,
            "server got {}",
            b.received_after_fin.load(SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(b.received_after_fin.load(SeqCst), 1_000_000);
}

#[test]
fn bytes_count_live() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc("live", &plain(&[&b]), FAST_CHECK);
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    let (s, _) = hello(port);
    let mut w = s.try_clone().unwrap();
    w.write_all(&[5u8; 100_000]).unwrap();
    let mut back = vec![0u8; 100_000];
    (&s).read_exact(&mut back).unwrap();
    // The connection is open; the counters show the bytes. The thread that wrote the
    // last chunk adds it right after its send returns, which the client may see first
    // (an accept worker is not the thread that serves the stats), so allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    let fe = loop {
        let fe = lbd.frontend("live");
        if fe["bytes_out"] == 100_002 || Instant::now() > deadline {
            break fe;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(fe["bytes_in"], 100_000);
    assert_eq!(fe["bytes_out"], 100_002);
    let sv = lbd.server("live", b.addr);
    assert_eq!(sv["bytes_in"], 100_000);
    assert_eq!(sv["current_sessions"], 1);
    assert_eq!(fe["current_sessions"], 1);
    // The stats page shows the same live figures.
    let page = lbd.stats_json();
    assert_eq!(page["frontends"][0]["bytes_in"], 100_000, "{page}");
    assert_eq!(page["node"], "n1");
}

// ---------------------------------------------------------------------------------------
// Limits

#[test]
fn frontend_cap_denies_at_once() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc(
        "cap",
        &plain(&[&b]),
        &format!("max_connections = 5\n{FAST_CHECK}"),
    );
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    let held: Vec<TcpStream> = (0..5)
        .map(|_| {
            let (s, n) = hello(port);
            assert!(n.is_some());
            s
        })
        .collect();
    let start = Instant::now();
    let (_s, n) = hello(port);
    assert_eq!(n, None);
    assert!(start.elapsed() < Duration::from_millis(200));
    let fe = lbd.frontend("cap");
    assert_eq!(fe["denied"], 1);
    assert_eq!(fe["status"], "FULL");
    assert_eq!(fe["session_limit"], 5);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(3);
    while lbd.frontend("cap")["current_sessions"] != 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(hello(port).1.is_some());
}

#[test]
fn global_cap_denies_at_once() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s1 = svc("g1", &plain(&[&b]), FAST_CHECK);
    let s2 = svc("g2", &plain(&[&b]), FAST_CHECK);
    let (p1, p2) = (s1.port, s2.port);
    let lbd = Lbd::start(&config(stats, &[s1, s2], "max_connections = 3"), stats);
    let _a = hello(p1);
    let _b = hello(p1);
    let _c = hello(p2);
    assert_eq!(hello(p2).1, None);
    assert_eq!(hello(p1).1, None);
    let st = lbd.status();
    assert_eq!(st["current_connections"], 3);
    assert_eq!(st["max_connections"], 3);
    assert_eq!(lbd.frontend("g1")["denied"], 1);
    assert_eq!(lbd.frontend("g2")["denied"], 1);
}

// ---------------------------------------------------------------------------------------
// Reload

#[test]
fn long_lived_connection_survives_reload() {
    let b1 = Backend::start("127.0.0.1", "b1", Mode::Echo);
    let b2 = Backend::start("127.0.0.2", "b2", Mode::Echo);
    let stats = free_port();
    let s = svc("ll", &plain(&[&b1]), FAST_CHECK);
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let (held, name) = hello(port);
    assert_eq!(name.as_deref(), Some("b1"));
    let before = lbd.server("ll", b1.addr);
    // New config: same service and port, a second backend, different weights.
    let mut s = svc(
        "ll",
        &[
            format!("{{ address = \"{}\", weight = 3 }}", b1.addr),
            format!("\"{}\"", b2.addr),
        ],
        FAST_CHECK,
    );
    s.port = port;
    lbd.write_config(&config(stats, &[s], ""));
    let st = lbd.reload();
    assert_eq!(st["reloads"], 1, "{st}");
    assert!(st["last_reload_error"].is_null());
    // The old connection still moves bytes both ways.
    for i in 0..3 {
        let msg = format!("after reload {i}\n");
        (&held).write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        (&held).read_exact(&mut got).unwrap();
        assert_eq!(got, msg.as_bytes());
    }
    // Health state and counters of the unchanged server were kept.
    let after = lbd.server("ll", b1.addr);
    assert_eq!(after["weight"], 3);
    assert_eq!(after["total_sessions"], before["total_sessions"]);
    assert_ne!(after["check_status"], "INI");
    assert_eq!(after["current_sessions"], 1);
    lbd.wait_checked();
    let m = count_hellos(port, 8);
    assert_eq!((m["b1"], m["b2"]), (6, 2), "{m:?}");
}

#[test]
fn zero_failures_across_reloads_under_load() {
    let b1 = Backend::start("127.0.0.1", "b1", Mode::Echo);
    let b2 = Backend::start("127.0.0.2", "b2", Mode::Echo);
    let stats = free_port();
    let s = svc("zl", &plain(&[&b1, &b2]), FAST_CHECK);
    let port = s.port;
    let cfg_a = config(stats, &[s], "");
    let mut s = svc(
        "zl",
        &[
            format!("{{ address = \"{}\", weight = 2 }}", b1.addr),
            format!("\"{}\"", b2.addr),
        ],
        FAST_CHECK,
    );
    s.port = port;
    let cfg_b = config(stats, &[s], "");
    let lbd = Lbd::start(&cfg_a, stats);
    lbd.wait_checked();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                for _ in 0..100_000 {
                    if stop.load(SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    match echo_once(port, b"hello through a reload") {
                        Ok(()) => {
                            ok.fetch_add(1, SeqCst);
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(150));
        lbd.write_config(if i % 2 == 0 { &cfg_b } else { &cfg_a });
        lbd.reload();
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    println!(
        "10 reloads in {:?} under load: {} connections ok, {} failed {:?}",
        start.elapsed(),
        ok.load(SeqCst),
        failures.len(),
        failures.iter().take(3).collect::<Vec<_>>()
    );
    assert!(failures.is_empty());
    assert!(ok.load(SeqCst) > 100);
    assert_eq!(lbd.status()["reloads"], 10);
}

#[test]
fn bad_reload_keeps_old_config() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc("bad", &plain(&[&b]), FAST_CHECK);
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.write_config("[cluster]\nname = \"t\"\nbogus = 1\n");
    let st = lbd.reload();
    let err = st["last_reload_error"].as_str().unwrap().to_owned();
    println!("bad reload refused: {err}");
    assert_eq!(st["reloads"], 0);
    assert!(echo_once(port, b"still serving").is_ok());
    // The control socket's reload reports the same refusal.
    let e = lbd.ctl("reload", Value::Null).unwrap_err();
    assert!(e.contains("bogus") || e.contains("unknown"), "{e}");
    // A TLS check whose CA file is missing is refused too (not only syntax errors).
    let s = svc(
        "bad",
        &plain(&[&b]),
        r#"check = { kind = "https", ca = "/nonexistent/ca.pem" }"#,
    );
    let mut s = s;
    s.port = port;
    lbd.write_config(&config(stats, &[s], ""));
    let e = lbd.ctl("reload", Value::Null).unwrap_err();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    assert!(echo_once(port, b"still serving").is_ok());
    assert_eq!(lbd.frontend("bad")["servers"][0]["check_status"], "L4OK");
}

#[test]
fn reload_moves_and_removes_ports() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let keep = svc("keep", &plain(&[&b]), FAST_CHECK);
    let gone = svc("gone", &plain(&[&b]), FAST_CHECK);
    let (keep_port, gone_port) = (keep.port, gone.port);
    let lbd = Lbd::start(&config(stats, &[keep, gone], ""), stats);
    let (held, _) = hello(gone_port);
    let mut keep = svc("keep", &plain(&[&b]), FAST_CHECK);
    keep.port = keep_port;
    let new = svc("new", &plain(&[&b]), FAST_CHECK);
    let new_port = new.port;
    lbd.write_config(&config(stats, &[keep, new], ""));
    let st = lbd.reload();
    assert!(st["last_reload_error"].is_null(), "{st}");
    assert!(echo_once(keep_port, b"k").is_ok());
    assert!(echo_once(new_port, b"n").is_ok());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(("127.0.0.1", gone_port)) {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "removed service still accepts"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The removed service's open connection finishes normally.
    (&held).write_all(b"bye").unwrap();
    let mut got = [0u8; 3];
    (&held).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"bye");
    let names: Vec<String> = st["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["keep", "new"]);
}

// ---------------------------------------------------------------------------------------
// Stop

/// Regression: SIGUSR1 (keepalived's "dump data", HAProxy's "soft stop") ended lbd
/// silently. Now the dump signals write the status and lbd keeps serving; SIGTTOU /
/// SIGTTIN do not stop it either. (SIGUSR2 upgrades: tests/upgrade.rs.)
#[test]
fn dump_signals_write_the_status_and_keep_serving() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc("dump", &plain(&[&b]), FAST_CHECK);
    let port = s.port;
    let mut lbd = Lbd::start(&config(stats, &[s], ""), stats);
    let file = lbd.dir.path().join("run/lbd.status.json");
    for sig in [
        Signal::SIGUSR1,
        Signal::SIGQUIT,
        Signal::SIGTTOU,
        Signal::SIGTTIN,
    ] {
        let _ = std::fs::remove_file(&file);
        lbd.signal(sig);
        std::thread::sleep(Duration::from_millis(200));
        assert!(lbd.child.try_wait().is_none(), "{sig} ended lbd");
        let (c, name) = hello(port);
        assert_eq!(name.as_deref(), Some("b"), "not serving after {sig}");
        drop(c);
        let dumps = matches!(sig, Signal::SIGUSR1 | Signal::SIGQUIT);
        assert_eq!(file.exists(), dumps, "{sig}: {}", lbd.log());
        if dumps {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            assert_eq!(v["node"], "n1");
            assert_eq!(v["frontends"][0]["name"], "dump");
        }
    }
    let log = lbd.log();
    assert!(
        log.contains("status dump") && log.contains("signal=SIGUSR1"),
        "{log}"
    );
    assert!(log.contains("does not pause its listeners"), "{log}");
}

/// Regressions: lbd wrote ANSI colour codes into a pipe (so into the journal), and under
/// systemd every line reached the journal at priority 6, warnings and errors included.
/// With stderr the journal stream (`JOURNAL_STREAM` names it) and no journal socket to
/// use, each line carries its sd-daemon priority prefix.
#[test]
fn log_lines_carry_their_journal_priority_and_no_colours() {
    let mut b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc("prio", &plain(&[&b]), FAST_CHECK);
    let script = "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\"";
    let stat = k3sha_support::tools::require("stat");
    assert!(stat.is_absolute());
    let mut lbd = Lbd::start_wrapped(&config(stats, &[s], ""), stats, &["sh", "-c", script]);
    lbd.wait_checked();
    // A server that was UP and goes away: a warning.
    b.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lbd.log().contains("server DOWN") {
        assert!(Instant::now() < deadline, "{}", lbd.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    lbd.signal(Signal::SIGTERM);
    let _ = lbd.child.wait();
    let log = lbd.log();
    assert!(!log.contains('\x1b'), "colour codes: {log:?}");
    let down = log.lines().find(|l| l.contains("server DOWN")).unwrap();
    assert!(down.starts_with("<4>"), "{down}");
    let ready = log.lines().find(|l| l.contains("lbd ready")).unwrap();
    assert!(ready.starts_with("<6>"), "{ready}");
    assert!(log.lines().all(|l| l.starts_with('<')), "{log}");
}

/// Regression: health checks connected fully and closed, so every check was a client
/// that came and went in the backend's log (an iperf3 backend logged a failed client per
/// check; HAProxy's checks produced none). A TCP check now ends the handshake with a reset
/// before its last ACK, as HAProxy's do: the backend never accepts it.
#[test]
fn tcp_checks_leave_no_client_in_the_backend() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    // A real iperf3 server as a second backend: it logs every client it accepts.
    let iperf_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let iperf_log = dir.path().join("iperf3.log");
    let mut iperf = k3sha_support::tools::command("iperf3")
        .args([
            "-s",
            "-B",
            "127.0.0.1",
            "-p",
            &iperf_port.to_string(),
            "--logfile",
        ])
        .arg(&iperf_log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stats = free_port();
    let s1 = svc("plain", &plain(&[&b]), FAST_CHECK);
    let s2 = svc(
        "iperf",
        &[format!("\"127.0.0.1:{iperf_port}\"")],
        FAST_CHECK,
    );
    let lbd = Lbd::start(&config(stats, &[s1, s2], ""), stats);
    lbd.wait_checked();
    // Seven or more checks of each at 200 ms.
    std::thread::sleep(Duration::from_millis(1500));
    let srv = lbd.server("plain", b.addr);
    assert_eq!(srv["status"], "UP", "{srv:#}");
    assert_eq!(srv["check_status"], "L4OK");
    let fe = lbd.frontend("iperf");
    assert_eq!(fe["servers"][0]["status"], "UP", "{fe:#}");
    assert_eq!(
        b.accepted(),
        0,
        "the backend accepted the checks' connections"
    );
    let _ = iperf.kill();
    let _ = iperf.wait();
    let log = std::fs::read_to_string(&iperf_log).unwrap_or_default();
    assert!(
        !log.contains("error") && !log.contains("Accepted connection"),
        "iperf3 saw the checks: {log}"
    );
}

/// Regressions: every boot recorded a false DOWN for a peer whose backend was not up yet
/// (servers started UP); and DRAIN / MAINT did not update "last change".
#[test]
fn a_first_failed_check_is_not_a_down_transition() {
    let mut b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let addr = b.addr;
    b.stop();
    let stats = free_port();
    let s = svc("ini", &plain(&[&b]), FAST_CHECK);
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let srv = lbd.server("ini", addr);
    assert_eq!(srv["status"], "DOWN", "{srv:#}");
    assert_eq!(
        srv["down_transitions"], 0,
        "never up, so never went down: {srv:#}"
    );
    let log = lbd.log();
    assert!(log.contains("server not up yet (first check)"), "{log}");
    assert!(!log.contains("server DOWN"), "{log}");
    // Up, then really down: that one counts.
    b.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lbd.server("ini", addr)["status"] != "UP" {
        assert!(Instant::now() < deadline, "{}", lbd.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert!(lbd.server("ini", addr)["last_change_secs"].as_u64() >= Some(1));
    lbd.ctl(
        "set-server",
        serde_json::json!({"service": "ini", "server": addr.to_string(), "state": "drain"}),
    )
    .unwrap();
    let srv = lbd.server("ini", addr);
    assert_eq!(srv["status"], "DRAIN");
    assert_eq!(srv["last_change_secs"], 0, "DRAIN is a change: {srv:#}");
    lbd.ctl(
        "set-server",
        serde_json::json!({"service": "ini", "server": addr.to_string(), "state": "ready"}),
    )
    .unwrap();
    b.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lbd.server("ini", addr)["status"] != "DOWN" {
        assert!(Instant::now() < deadline, "{}", lbd.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lbd.server("ini", addr)["down_transitions"], 1);
    assert!(lbd.log().contains("server DOWN"));
}

#[test]
fn sigterm_stops_accepting_and_drains() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc("term", &plain(&[&b]), FAST_CHECK);
    let port = s.port;
    let mut lbd = Lbd::start(&config(stats, &[s], ""), stats);
    let (held, _) = hello(port);
    lbd.signal(Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The open connection still works while draining.
    (&held).write_all(b"drain").unwrap();
    let mut got = [0u8; 5];
    (&held).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"drain");
    // Closing it lets lbd exit before the 2 s drain timeout.
    let start = Instant::now();
    held.shutdown(Shutdown::Both).unwrap();
    drop(held);
    let code = loop {
        if let Some(st) = lbd.child.try_wait() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "lbd did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    println!(
        "exited {:?} after the last connection closed",
        start.elapsed()
    );
    assert!(code.success(), "{code}");
    assert!(start.elapsed() < Duration::from_millis(1500));
}

// ---------------------------------------------------------------------------------------
// Timeouts, accept errors, vrrpd

#[test]
fn idle_then_tunnel_timeouts() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc(
        "to",
        &plain(&[&b]),
        &format!(
            "timeouts = {{ connect = \"1s\", idle = \"300ms\", tunnel = \"1200ms\", half_close = \"1s\" }}\n{FAST_CHECK}"
        ),
    );
    let port = s.port;
    let _lbd = Lbd::start(&config(stats, &[s], ""), stats);
    // Only the server has spoken (its hello): the idle limit applies.
    let (c, _) = hello(port);
    let start = Instant::now();
    let mut buf = [0u8; 64];
    assert_eq!((&c).read(&mut buf).unwrap_or(0), 0);
    let idle = start.elapsed();
    // Both sides have spoken: the tunnel limit applies, and traffic resets it.
    let (c, _) = hello(port);
    (&c).write_all(b"hi").unwrap();
    (&c).read_exact(&mut buf[..2]).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    (&c).write_all(b"still here").unwrap();
    (&c).read_exact(&mut buf[..10]).unwrap();
    let start = Instant::now();
    assert_eq!((&c).read(&mut buf).unwrap_or(0), 0);
    let tunnel = start.elapsed();
    println!("idle timeout closed after {idle:?} (300ms), tunnel after {tunnel:?} (1200ms)");
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_millis(900),
        "{idle:?}"
    );
    assert!(
        tunnel >= Duration::from_millis(1100) && tunnel < Duration::from_millis(1900),
        "{tunnel:?}"
    );
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn at_the_descriptor_cap_lbd_waits_without_spinning_and_recovers() {
    k3sha_support::tools::require("prlimit");
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc("fd", &plain(&[&b]), FAST_CHECK);
    let port = s.port;
    let limit = 64;
    let lbd = Lbd::start_wrapped(
        &config(stats, &[s], ""),
        stats,
        &["prlimit", &format!("--nofile={limit}:{limit}"), "--"],
    );
    let pid = lbd.child.pid().unwrap();
    let cap = lbd.status()["fd_cap"].as_u64().unwrap();
    assert!(cap > 10 && cap < 32, "cap {cap} from nofile {limit}");
    // Fill every slot with proxied connections; one more waits in the listen queue (it
    // is not accepted and closed).
    let mut held = Vec::new();
    for _ in 0..cap {
        let (c, name) = hello(port);
        assert_eq!(name.as_deref(), Some("b"));
        held.push(c);
    }
    let waiting = connect(port);
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 8];
    let e = (&waiting).read(&mut buf).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e}"
    );
    // lbd waits; it must not spin.
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - t0;
    println!("at the descriptor cap for 1 s: lbd used {used} ticks of CPU (100 = one core)");
    assert!(used < 15, "lbd spins at the cap: {used} ticks in 1 s");
    let st = lbd.status();
    assert!(st["fd_cap_waits"].as_u64() >= Some(1), "{st:#}");
    assert!(
        lbd.log()
            .contains("at the connection cap RLIMIT_NOFILE allows"),
        "{}",
        lbd.log()
    );
    assert!(open_fds(pid) <= limit, "fds {}", open_fds(pid));
    // One slot frees: the waiting client is served.
    held.pop();
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut r = BufReader::new(waiting);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "b\n");
    held.clear();
    echo_once(port, b"back").unwrap();
}

/// Regression: at `nofile 256` with 1000 clients lbd marked healthy backends DOWN 51 times
/// ("L4CON ... Too many open files") and closed 234 clients it had already accepted. A
/// shortage of this host's descriptors is never a server's failure, and lbd accepts only
/// what it can proxy: every client is served, in turn.
#[test]
fn descriptor_shortage_is_never_a_backend_failure() {
    k3sha_support::tools::require("prlimit");
    // This test's own 1000 clients and the backends' sockets need descriptors too.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < 4096 {
        setrlimit(Resource::RLIMIT_NOFILE, hard.min(8192), hard).unwrap();
    }
    let b1 = Backend::start("127.0.0.1", "b1", Mode::Echo);
    let b2 = Backend::start("127.0.0.2", "b2", Mode::Echo);
    let stats = free_port();
    let s = svc("fd", &plain(&[&b1, &b2]), FAST_CHECK);
    let port = s.port;
    let limit = 256;
    let lbd = Lbd::start_wrapped(
        &config(stats, &[s], ""),
        stats,
        &["prlimit", &format!("--nofile={limit}:{limit}"), "--"],
    );
    lbd.wait_checked();
    let clients = 1000;
    let failed = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(std::sync::Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (failed, go) = (failed.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                let one = || -> Result<(), String> {
                    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    r.read_line(&mut line).map_err(|e| e.to_string())?;
                    if !line.starts_with('b') {
                        return Err(format!("no hello: {line:?}"));
                    }
                    (&s).write_all(b"ping").map_err(|e| e.to_string())?;
                    let mut got = [0u8; 4];
                    r.read_exact(&mut got).map_err(|e| e.to_string())?;
                    std::thread::sleep(Duration::from_millis(20));
                    Ok(())
                };
                if one().is_err() {
                    failed.fetch_add(1, SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = lbd.status();
    let fe = lbd.frontend("fd");
    println!(
        "1000 clients at nofile {limit}: cap {}, waits {}, failed {}",
        st["fd_cap"],
        st["fd_cap_waits"],
        failed.load(SeqCst)
    );
    assert_eq!(failed.load(SeqCst), 0, "clients failed: {}", lbd.log());
    for srv in fe["servers"].as_array().unwrap() {
        assert_eq!(srv["status"], "UP", "{srv:#}");
        assert_eq!(srv["down_transitions"], 0, "{srv:#}");
        assert_eq!(srv["connect_errors"], 0, "{srv:#}");
    }
    assert_eq!(fe["local_errors"], 0, "{fe:#}");
    assert_eq!(fe["total_sessions"], clients);
    assert!(!lbd.log().contains("Too many open files"), "{}", lbd.log());
}

#[test]
fn vrrp_view_follows_vrrpd_status() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc("v", &plain(&[&b]), FAST_CHECK);
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    assert!(lbd.status()["vrrp"].is_null());
    // A stand-in vrrpd on RUN_DIR/vrrpd.sock speaking the real control protocol.
    let run_dir = lbd.dir.path().join("run");
    let vrrpd = StandIn::serve(&run_dir, "vrrpd", |req: common::proto::vrrpd::Request| {
        async move {
            assert_eq!(req, common::proto::vrrpd::Request::Status);
            // vrrpd's answer as it goes over the wire.
            let inst = serde_json::json!({
                "state": "master", "base_priority": 150, "effective_priority": 150,
                "master": "127.0.0.1", "vips": ["127.0.0.100"],
                "master_adver_interval_ms": 1000, "maintenance": false,
                "fault": false, "holding_vips": true, "vip_error": null,
                "family": "ipv4", "master_node": null, "primary": "127.0.0.1",
                "vips_on_interface": ["127.0.0.100"], "vips_answered": []
            });
            let mut st = inst.clone();
            let m = st.as_object_mut().unwrap();
            for (k, v) in serde_json::json!({
                "node": "v", "interface": "lo", "vrid": 1, "version": 3,
                "accept_mode": true, "config": null, "reloads": 0,
                "last_reload_error": null, "stopping": false, "instances": [inst]
            })
            .as_object()
            .unwrap()
            {
                m.insert(k.clone(), v.clone());
            }
            common::ctl::Response::ok(st)
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let view = loop {
        let v = lbd.status()["vrrp"].clone();
        if !v.is_null() {
            break v;
        }
        assert!(Instant::now() < deadline, "lbd never showed vrrpd's state");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(view["state"], "master");
    assert_eq!(view["priority"], 150);
    assert_eq!(view["master"], "127.0.0.1");
    assert_eq!(view["vips"][0], "127.0.0.100");
    assert_eq!(view["vips_here"][0], "127.0.0.100");
    // vrrpd goes away: the view goes away.
    vrrpd.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lbd.status()["vrrp"].is_null() {
        assert!(Instant::now() < deadline, "stale vrrp view");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// HTTP checks, bind address, systemd

/// An HTTP server whose answer to every request is `status` (changeable).
fn http_backend(ip: &str, status: Arc<Mutex<&'static str>>) -> (SocketAddr, Arc<AtomicBool>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        while !stop2.load(SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let st = *status.lock().unwrap();
                    let _ = s.write_all(
                        format!("HTTP/1.1 {st}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    (addr, stop)
}

#[test]
fn http_check_marks_503_down_and_401_up() {
    let status = Arc::new(Mutex::new("401 Unauthorized"));
    let (addr, stop) = http_backend("127.0.0.1", status.clone());
    let stats = free_port();
    let s = svc(
        "readyz",
        &[format!("\"{addr}\"")],
        r#"check = { kind = "http", path = "/readyz", expect = [200, 401], interval = "200ms", fast_interval = "100ms", timeout = "200ms", rise = 2, fall = 2 }"#,
    );
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let st = lbd.server("readyz", addr);
    assert_eq!(
        (&st["status"], &st["check_status"], &st["check_desc"]),
        (&"UP".into(), &"L7OK".into(), &"HTTP 401".into()),
        "{st}"
    );
    assert!(st["check_latency_ms"].as_f64().unwrap() < 200.0);
    *status.lock().unwrap() = "503 Service Unavailable";
    lbd.wait_status("readyz", addr, "DOWN", Duration::from_secs(3));
    let st = lbd.server("readyz", addr);
    assert_eq!(st["check_status"], "L7STS");
    assert_eq!(st["check_desc"], "HTTP 503");
    assert!(st["checks_failed"].as_u64().unwrap() >= 2);
    *status.lock().unwrap() = "200 OK";
    lbd.wait_status("readyz", addr, "UP", Duration::from_secs(3));
    stop.store(true, SeqCst);
}

#[test]
fn service_bind_is_honoured() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc(
        "bound",
        &plain(&[&b]),
        &format!("bind = \"127.0.0.77\"\n{FAST_CHECK}"),
    );
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    assert_eq!(
        lbd.frontend("bound")["listen"],
        format!("127.0.0.77:{port}")
    );
    let c = TcpStream::connect(("127.0.0.77", port)).unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    assert_eq!(line, "b\n");
    let e = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn sd_notify_ready_reloading_watchdog_stopping() {
    use std::os::unix::net::UnixDatagram;
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc("sd", &plain(&[&b]), FAST_CHECK);
    let cfg = config(stats, &[s], "");
    let nd = tempfile::tempdir().unwrap();
    let sock_path = nd.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let script = format!(
        "NOTIFY_SOCKET={} WATCHDOG_USEC=200000 WATCHDOG_PID=$$ exec \"$0\" \"$@\"",
        sock_path.display()
    );
    let mut lbd = Lbd::start_wrapped(&cfg, stats, &["sh", "-c", &script]);
    let mut seen: Vec<String> = Vec::new();
    let recv_until = |want: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 512];
        loop {
            assert!(Instant::now() < deadline, "no {want:?} in {seen:?}");
            let n = sock.recv(&mut buf).unwrap();
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.lines().any(|l| l == want) {
                return msg;
            }
        }
    };
    recv_until("READY=1", &mut seen);
    // `systemctl status lbd` tells how many servers are up per service: first the
    // initial state, then 1/1 once the first check passed.
    recv_until("STATUS=sd 1/1 up; 0 connections", &mut seen);
    // The watchdog is fed at half of WATCHDOG_USEC.
    let t = Instant::now();
    recv_until("WATCHDOG=1", &mut seen);
    recv_until("WATCHDOG=1", &mut seen);
    let two = t.elapsed();
    lbd.signal(Signal::SIGHUP);
    let reloading = recv_until("RELOADING=1", &mut seen);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    recv_until("READY=1", &mut seen);
    lbd.signal(Signal::SIGTERM);
    recv_until("STOPPING=1", &mut seen);
    let st = lbd.child.wait().unwrap();
    println!("two watchdog pings in {two:?} (WATCHDOG_USEC=200ms); exit {st}");
    assert!(two < Duration::from_millis(400), "{two:?}");
    assert!(st.success());
}

#[test]
fn sigterm_drain_deadline_closes_what_is_left() {
    let b = Backend::start("127.0.0.1", "b", Mode::Echo);
    let stats = free_port();
    let s = svc("dl", &plain(&[&b]), FAST_CHECK);
    let port = s.port;
    // drain_timeout = "2s" (see `config`).
    let mut lbd = Lbd::start(&config(stats, &[s], ""), stats);
    let (held, _) = hello(port);
    let start = Instant::now();
    lbd.signal(Signal::SIGTERM);
    let code = loop {
        if let Some(st) = lbd.child.try_wait() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(6), "lbd did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    println!("SIGTERM with a connection held open: exit after {took:?} (drain_timeout 2s)");
    assert!(code.success(), "{code}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // The held connection was closed by lbd's exit.
    let mut buf = [0u8; 8];
    assert_eq!((&held).read(&mut buf).unwrap_or(0), 0);
}

// ---------------------------------------------------------------------------------------
// PROXY protocol

/// A backend that keeps every connection open and records what arrived on each in its
/// first 300 ms; the connections are held until the test ends.
struct Capture {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Capture {
    fn start() -> Capture {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (g, h) = (got.clone(), held.clone());
        std::thread::spawn(move || {
            for s in l.incoming().take(50) {
                let Ok(mut s) = s else { continue };
                let (g, h) = (g.clone(), h.clone());
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let mut all = Vec::new();
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let mut buf = [0u8; 4096];
                    while start.elapsed() < Duration::from_millis(300) {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => all.extend_from_slice(&buf[..n]),
                            Err(_) => {}
                        }
                    }
                    g.lock().unwrap().push(all);
                    h.lock().unwrap().push(s);
                });
            }
        });
        Capture { addr, got, held }
    }

    /// Wait for `n` captures.
    fn wait(&self, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let g = self.got.lock().unwrap().clone();
            if g.len() >= n {
                return g;
            }
            assert!(Instant::now() < deadline, "{} of {n} captured", g.len());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A backend that would take a PROXY header for data gets exactly the client's bytes.
#[test]
fn a_service_without_proxy_protocol_sends_no_header() {
    let cap = Capture::start();
    let stats = free_port();
    let s = svc("plain", &[format!("\"{}\"", cap.addr)], FAST_CHECK);
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let mut c = connect(port);
    c.write_all(b"SSH-2.0-client\r\n").unwrap();
    let got = cap.wait(1);
    assert_eq!(got[0], b"SSH-2.0-client\r\n");
    // A server that speaks first is not kept waiting for anything either.
    let mut c2 = connect(port);
    let got = cap.wait(2);
    assert_eq!(got[1], b"");
    c2.write_all(b"x").unwrap();
    drop((c, c2));
    assert_eq!(cap.held.lock().unwrap().len(), 2);
}

/// The kernel's own count (`ss -ti`: data_segs_in of the backend's socket): the header and
/// the client's first bytes arrive as one segment, not two. The client sends its bytes
/// behind a header lbd reads first (accept_proxy), so they are surely there when lbd has
/// connected to the server.
#[test]
fn the_header_and_the_first_bytes_travel_in_one_segment() {
    let cap = Capture::start();
    let stats = free_port();
    let s = svc(
        "pp",
        &[format!("\"{}\"", cap.addr)],
        &format!(
            "{FAST_CHECK}\nproxy_protocol = \"v2\"\naccept_proxy = true\ntrusted_proxies = [\"127.0.0.0/8\"]"
        ),
    );
    let port = s.port;
    let lbd = Lbd::start(&config(stats, &[s], ""), stats);
    lbd.wait_checked();
    let mut c = connect(port);
    c.write_all(
        b"PROXY TCP4 192.0.2.7 198.51.100.1 41000 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let got = cap.wait(1);
    let (header, len) = match proxy_proto::decode(&got[0], 4096) {
        Ok(proxy_proto::Decoded::Complete { header, len }) => (header, len),
        other => panic!("{other:?}: {:?}", got[0]),
    };
    let a = header.addresses.unwrap();
    assert_eq!(a.source, "192.0.2.7:41000".parse().unwrap());
    assert_eq!(a.destination, "198.51.100.1:443".parse().unwrap());
    assert_eq!(&got[0][len..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let out = k3sha_support::tools::command("ss")
        .args([
            "-tinH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{}", cap.addr.port()),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let segs: Vec<&str> = text
        .split_whitespace()
        .filter(|w| w.starts_with("data_segs_in:"))
        .collect();
    assert_eq!(segs, ["data_segs_in:1"], "{text}");
    drop(c);
}
