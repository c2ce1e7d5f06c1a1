//! The stats page in a real headless browser (Debian's chromium), against a real backend
//! listener on loopback that is stopped and started again.
//!
//! Index:
//! - `lbd_page_shows_a_backend_going_down_and_back_up`: the real lbd binary
//!   (`CARGO_BIN_EXE_lbd`) proxying to a real loopback backend with TCP checks every 200 ms
//!   (rise 2, fall 2); one connection is proxied; chromium shows the server UP with the
//!   session counted, DOWN once the backend is stopped, UP again once it is restarted.
//! - `page_shows_a_backend_going_down_and_back_up`: the stats server fed by a small TCP
//!   health checker (fall 2, rise 2) probing a real loopback backend; chromium loads the
//!   page, the backend is stopped, chromium shows it DOWN, it is started again on the same
//!   port, chromium shows it UP. Also takes a screenshot and checks it is a real PNG.
//!
//! Basic auth is not tested here: headless chromium renders an empty document for a 401
//! challenge (with or without URL credentials), so it proves nothing; `stats_server.rs`
//! tests both sides over HTTP.
//!
//! chromium is required: these tests fail (they do not skip) when it is missing; the README
//! test command (`./scripts/test.sh`) installs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k3sha_support::ports::free_port;
use lbd::snapshot::{FrontendStats, ServerStats, ServerStatus, Snapshot};
use lbd::stats::{serve, SnapshotSource};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
const CHECK_TIMEOUT: Duration = Duration::from_millis(300);
const RISE: u32 = 2;
const FALL: u32 = 2;

fn require_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser test needs Debian's chromium. Run the README test \
         command (./scripts/test.sh), which installs it, or `apt-get install chromium`."
    );
}

/// Runs headless chromium on `url` with a private profile; returns the DOM it rendered.
async fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(url)
    .stdin(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium finishes within 60 s")
        .expect("chromium starts");
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `<tr>` of `server` in the DOM chromium rendered.
fn server_row<'a>(dom: &'a str, server: &str) -> &'a str {
    let marker = format!("data-server=\"{server}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no row for {server} in the rendered page:\n{dom}"));
    let start = dom[..at].rfind("<tr").unwrap();
    let end = at + dom[at..].find("</tr>").unwrap();
    &dom[start..end]
}

/// A snapshot source fed by a real TCP connect health checker.
struct Checked {
    snap: Mutex<Snapshot>,
}

impl SnapshotSource for Checked {
    fn snapshot(&self) -> Snapshot {
        self.snap.lock().unwrap().clone()
    }
}

fn initial(backend: SocketAddr) -> Snapshot {
    let srv = ServerStats {
        name: "backend-a".to_owned(),
        addr: backend,
        status: ServerStatus::Down,
        admin: common::proto::lbd::AdminState::Ready,
        transition: None,
        weight: 1,
        backup: false,
        check_status: "INI".to_owned(),
        check_desc: String::new(),
        check_latency_ms: None,
        checks_failed: 0,
        current_sessions: 0,
        max_sessions: 0,
        total_sessions: 0,
        session_rate: 0,
        bytes_in: 0,
        bytes_out: 0,
        connect_errors: 0,
        retries: 0,
        last_change_secs: 0,
        downtime_secs: 0,
        down_transitions: 0,
    };
    Snapshot {
        node: "browser-test".to_owned(),
        cluster: "loopback".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: 1,
        uptime_secs: 0,
        now_unix_ms: 0,
        current_connections: 0,
        max_connections: 0,
        fd_cap: 0,
        fd_cap_waits: 0,
        reloads: 0,
        last_reload_error: None,
        vrrp: None,
        frontends: vec![FrontendStats {
            name: "web".to_owned(),
            listen: "127.0.0.1:1".parse().unwrap(),
            backend_port: backend.port(),
            balance: "roundrobin".to_owned(),
            status: "OPEN".to_owned(),
            current_sessions: 0,
            max_sessions: 0,
            session_limit: 0,
            total_sessions: 0,
            session_rate: 0,
            session_rate_max: 0,
            bytes_in: 0,
            bytes_out: 0,
            denied: 0,
            no_server: 0,
            local_errors: 0,
            proxy_refused: Default::default(),
            servers: vec![srv],
        }],
    }
}

/// Probes `backend` every CHECK_INTERVAL and moves the server UP/DOWN after RISE/FALL
/// consecutive results, the way lbd's checker does.
fn spawn_checker(source: Arc<Checked>, backend: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut changed = Instant::now();
        let mut down_since = Some(Instant::now());
        let mut downtime = Duration::ZERO;
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        loop {
            let t0 = Instant::now();
            let res = tokio::time::timeout(CHECK_TIMEOUT, TcpStream::connect(backend)).await;
            let latency = t0.elapsed();
            let ok = matches!(res, Ok(Ok(_)));
            {
                let mut guard = source.snap.lock().unwrap();
                let snap = &mut *guard;
                let srv = &mut snap.frontends[0].servers[0];
                if ok {
                    ok_run += 1;
                    fail_run = 0;
                    srv.check_status = "L4OK".to_owned();
                    srv.check_desc = "connected".to_owned();
                } else {
                    fail_run += 1;
                    ok_run = 0;
                    srv.checks_failed += 1;
                    srv.check_status = "L4CON".to_owned();
                    srv.check_desc = match res {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timeout".to_owned(),
                    };
                }
                srv.check_latency_ms = Some(latency.as_secs_f64() * 1000.0);
                match srv.status {
                    ServerStatus::Up if fail_run >= FALL => {
                        srv.status = ServerStatus::Down;
                        srv.down_transitions += 1;
                        changed = Instant::now();
                        down_since = Some(changed);
                        srv.transition = None;
                    }
                    ServerStatus::Down if ok_run >= RISE => {
                        srv.status = ServerStatus::Up;
                        changed = Instant::now();
                        if let Some(since) = down_since.take() {
                            downtime += since.elapsed();
                        }
                        srv.transition = None;
                    }
                    ServerStatus::Up if fail_run > 0 => {
                        srv.transition = Some(format!("{fail_run}/{FALL} down"));
                    }
                    ServerStatus::Down if ok_run > 0 => {
                        srv.transition = Some(format!("{ok_run}/{RISE} up"));
                    }
                    _ => srv.transition = None,
                }
                srv.last_change_secs = changed.elapsed().as_secs();
                srv.downtime_secs =
                    (downtime + down_since.map_or(Duration::ZERO, |d| d.elapsed())).as_secs();
                snap.uptime_secs = started.elapsed().as_secs();
            }
            tokio::time::sleep(CHECK_INTERVAL).await;
        }
    })
}

/// A real backend: accepts and closes connections on `addr` until aborted.
async fn start_backend(addr: SocketAddr) -> JoinHandle<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebinding {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot bind backend {addr}: {e}"),
        }
    };
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    })
}

async fn wait_status(source: &Checked, want: ServerStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = source.snapshot().frontends[0].servers[0].status;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "checker did not see {want:?} in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_stats(
    source: Arc<dyn SnapshotSource>,
    user: Option<&str>,
    password: Option<&str>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = common::config::Stats {
        listen: Some(addr),
        user: user.map(str::to_owned),
        password: password.map(str::to_owned),
        refresh_secs: 1,
    };
    tokio::spawn(serve(listener, cfg, source, std::future::pending()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_a_backend_going_down_and_back_up() {
    require_chromium();
    // A free port for the backend: bind, note, and keep it for the first start.
    let backend_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let backend = start_backend(backend_addr).await;
    let source = Arc::new(Checked {
        snap: Mutex::new(initial(backend_addr)),
    });
    let checker = spawn_checker(Arc::clone(&source), backend_addr);
    let stats = start_stats(source.clone(), None, None).await;
    let url = format!("http://{stats}/");

    wait_status(&source, ServerStatus::Up).await;
    let dom = chromium(&url, &["--dump-dom"]).await;
    assert!(
        dom.contains("<title>lbd on browser-test (loopback)</title>"),
        "{dom}"
    );
    assert!(dom.contains("VRRP: vrrpd not answering"));
    let row = server_row(&dom, "backend-a");
    assert!(row.contains("class=\"srv st-up\""), "{row}");
    assert!(row.contains("<td class=\"status\">UP</td>"), "{row}");
    assert!(row.contains(&backend_addr.to_string()), "{row}");
    assert!(row.contains("L4OK"), "{row}");

    // Stop the backend: the page must show it DOWN with the failed check.
    backend.abort();
    let _ = backend.await;
    wait_status(&source, ServerStatus::Down).await;
    let dom = chromium(&url, &["--dump-dom"]).await;
    let row = server_row(&dom, "backend-a");
    assert!(row.contains("class=\"srv st-down"), "{row}");
    assert!(row.contains("<td class=\"status\">DOWN"), "{row}");
    assert!(row.contains("L4CON"), "{row}");
    assert!(row.to_lowercase().contains("refused"), "{row}");

    // Start it again on the same port: back UP.
    let backend = start_backend(backend_addr).await;
    wait_status(&source, ServerStatus::Up).await;
    let dom = chromium(&url, &["--dump-dom"]).await;
    let row = server_row(&dom, "backend-a");
    assert!(row.contains("<td class=\"status\">UP</td>"), "{row}");
    assert!(row.contains("(1× down)"), "{row}");

    // And a screenshot, as an operator would see it.
    let shot_dir = tempfile::tempdir().unwrap();
    let shot = shot_dir.path().join("stats.png");
    chromium(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,600",
        ],
    )
    .await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 5_000, "screenshot is only {} bytes", png.len());

    checker.abort();
    backend.abort();
}

// ---------------------------------------------------------------------------------------
// The real lbd binary

/// lbd as a child process, killed (by its own pid) when dropped.
struct Lbd {
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Lbd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Lbd {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Plain `GET path` over HTTP/1.1; returns the body of a 200 answer, or `None`.
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200 ").then(|| body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// The status column of `server`'s CSV row, as lbd reports it now.
async fn csv_status(stats: SocketAddr, server: &str) -> Option<String> {
    let csv = http_get(stats, "/stats.csv").await?;
    let row = csv
        .lines()
        .find(|l| l.split(',').nth(1) == Some(server))?
        .to_owned();
    row.split(',').nth(17).map(str::to_owned)
}

async fn wait_csv_status(lbd: &Lbd, stats: SocketAddr, server: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = csv_status(stats, server).await;
        if last.as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "lbd did not report {server} {want} within {within:?} (last: {last:?}); lbd log:\n{}",
        lbd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lbd_page_shows_a_backend_going_down_and_back_up() {
    require_chromium();
    let dir = tempfile::tempdir().unwrap();
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let stats = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            r#"[cluster]
name = "browser"
domain = "browser.test"

[vip]
address = "127.0.0.100/8"

[[nodes]]
name = "browser-1"
address = "127.0.0.1"
role = "server"

[[services]]
name = "web"
listen = {fport}
bind = "127.0.0.1"
backends = ["{backend_addr}"]
balance = "roundrobin"
check = {{ kind = "tcp", interval = "200ms", fast_interval = "100ms", timeout = "150ms", rise = 2, fall = 2 }}

[stats]
listen = "{stats}"
"#,
            fport = frontend.port(),
        ),
    )
    .unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let log = dir.path().join("lbd.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("--config")
        .arg(&config)
        .arg("--node")
        .arg("browser-1")
        .arg("--run-dir")
        .arg(&run_dir)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("lbd starts");
    let lbd = Lbd { child, log };
    let server = backend_addr.to_string();

    // The backend is not there yet: lbd reports it DOWN.
    wait_csv_status(&lbd, stats, &server, "DOWN", Duration::from_secs(10)).await;
    let backend = start_backend(backend_addr).await;
    wait_csv_status(&lbd, stats, &server, "UP", Duration::from_secs(5)).await;

    // One real connection through lbd, so the page has a session to count.
    let mut c = TcpStream::connect(frontend).await.unwrap();
    let mut buf = [0u8; 1];
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut c, &mut buf),
    )
    .await;
    drop(c);

    let url = format!("http://{stats}/");
    let dom = chromium(&url, &["--dump-dom"]).await;
    assert!(
        dom.contains("<title>lbd on browser-1 (browser)</title>"),
        "{dom}"
    );
    assert!(dom.contains("vrrpd not answering"), "{dom}");
    let row = server_row(&dom, &server);
    assert!(row.contains("class=\"srv st-up"), "{row}");
    assert!(row.contains("<td class=\"status\">UP"), "{row}");
    assert!(row.contains("L4OK"), "{row}");
    let json = http_get(stats, "/stats.json").await.unwrap();
    let snap: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(snap.frontends[0].servers[0].total_sessions, 1, "{json}");

    // Stop the backend: DOWN within interval x fall (+ margin), and chromium shows it.
    backend.abort();
    let _ = backend.await;
    wait_csv_status(&lbd, stats, &server, "DOWN", Duration::from_secs(3)).await;
    let dom = chromium(&url, &["--dump-dom"]).await;
    let row = server_row(&dom, &server);
    assert!(row.contains("class=\"srv st-down"), "{row}");
    assert!(row.contains("<td class=\"status\">DOWN"), "{row}");
    assert!(row.contains("L4CON"), "{row}");

    // Start it again on the same port: UP within interval x rise (+ margin).
    let backend = start_backend(backend_addr).await;
    wait_csv_status(&lbd, stats, &server, "UP", Duration::from_secs(3)).await;
    let dom = chromium(&url, &["--dump-dom"]).await;
    let row = server_row(&dom, &server);
    assert!(row.contains("<td class=\"status\">UP"), "{row}");
    assert!(row.contains("L4OK"), "{row}");
    backend.abort();
    drop(lbd);
}
