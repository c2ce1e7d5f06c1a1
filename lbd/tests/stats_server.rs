//! The stats server on loopback, spoken to over real TCP with hand-written HTTP/1.1.
//!
//! Index:
//! - `routes_serve_every_view`: `/`, `/stats.json`, `/stats.csv`, `/;csv`, `/metrics`,
//!   `/healthz`, 404.
//! - `head_has_headers_and_no_body`, `only_get_and_head_are_allowed` (405 + Allow).
//! - `basic_auth_guards_everything_but_healthz`: 401 + WWW-Authenticate, wrong and right
//!   credentials.
//! - `keep_alive_serves_several_requests_on_one_connection`.
//! - `slow_request_head_is_cut_off`: the header-read timeout.
//! - `idle_connections_cannot_starve_the_stats_page`: 200 silent connections; a real
//!   GET is served at once (the longest idle connection makes room).
//! - `shutdown_stops_accepting_and_serve_returns`.
//! - `figures_follow_the_source`: each request reads a fresh snapshot.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lbd::snapshot::{FrontendStats, ServerStats, ServerStatus, Snapshot, VrrpView};
use lbd::stats::{serve, SnapshotSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Source(Mutex<Snapshot>);

impl SnapshotSource for Source {
    fn snapshot(&self) -> Snapshot {
        self.0.lock().unwrap().clone()
    }
}

fn server(name: &str, port: u16, status: ServerStatus) -> ServerStats {
    ServerStats {
        name: name.to_owned(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        status,
        admin: common::proto::lbd::AdminState::Ready,
        transition: None,
        weight: 1,
        backup: false,
        check_status: if status == ServerStatus::Up {
            "L4OK"
        } else {
            "L4CON"
        }
        .to_owned(),
        check_desc: String::new(),
        check_latency_ms: Some(0.4),
        checks_failed: 0,
        current_sessions: 2,
        max_sessions: 3,
        total_sessions: 10,
        session_rate: 1,
        bytes_in: 100,
        bytes_out: 200,
        connect_errors: 0,
        retries: 0,
        last_change_secs: 5,
        downtime_secs: 0,
        down_transitions: 0,
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        node: "server-1".to_owned(),
        cluster: "test".to_owned(),
        version: "0.1.0".to_owned(),
        pid: 1,
        uptime_secs: 12,
        now_unix_ms: 1_700_000_000_000,
        current_connections: 2,
        max_connections: 100,
        fd_cap: 0,
        fd_cap_waits: 0,
        reloads: 0,
        last_reload_error: None,
        vrrp: Some(VrrpView {
            state: "backup".to_owned(),
            priority: 100,
            master: Some("10.9.9.2".to_owned()),
            vips: vec!["10.9.9.100/24".to_owned()],
            maintenance: false,
            vips_here: Vec::new(),
            problem: None,
            state_since_secs: Some(185),
        }),
        frontends: vec![FrontendStats {
            name: "kube-apiserver".to_owned(),
            listen: "127.0.0.1:8443".parse().unwrap(),
            backend_port: 6443,
            balance: "leastconn".to_owned(),
            status: "OPEN".to_owned(),
            current_sessions: 2,
            max_sessions: 3,
            session_limit: 0,
            total_sessions: 10,
            session_rate: 1,
            session_rate_max: 4,
            bytes_in: 100,
            bytes_out: 200,
            denied: 0,
            no_server: 0,
            local_errors: 0,
            proxy_refused: Default::default(),
            servers: vec![
                server("node-a", 16443, ServerStatus::Up),
                server("node-b", 16444, ServerStatus::Down),
            ],
        }],
    }
}

struct Running {
    addr: SocketAddr,
    source: Arc<Source>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(user: Option<&str>, password: Option<&str>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = common::config::Stats {
        listen: Some(addr),
        user: user.map(str::to_owned),
        password: password.map(str::to_owned),
        refresh_secs: 3,
    };
    let source = Arc::new(Source(Mutex::new(snapshot())));
    let (tx, rx) = oneshot::channel::<()>();
    let src: Arc<dyn SnapshotSource> = source.clone();
    let task = tokio::spawn(serve(listener, cfg, src, async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        source,
        stop: Some(tx),
        task,
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
async fn request(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    parse(&String::from_utf8(raw).unwrap())
}

fn parse(raw: &str) -> Resp {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header/body separator");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Resp {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, "").await
}

#[tokio::test]
async fn routes_serve_every_view() {
    let r = start(None, None).await;

    let html = get(r.addr, "/").await;
    assert_eq!(html.status, 200);
    assert_eq!(
        html.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(html
        .body
        .contains("<meta http-equiv=\"refresh\" content=\"3\">"));
    assert!(html.body.contains("data-server=\"node-a\""));
    assert!(html.body.contains("VRRP: this node is <b>BACKUP</b>"));
    assert!(html.body.contains("held by <b>10.9.9.2</b>"));

    let json = get(r.addr, "/stats.json").await;
    assert_eq!(json.status, 200);
    assert_eq!(json.header("content-type"), Some("application/json"));
    let back: Snapshot = serde_json::from_str(&json.body).unwrap();
    assert_eq!(back, snapshot());
    assert!(json.body.contains("\"status\":\"DOWN\""));

    for path in ["/stats.csv", "/;csv"] {
        let csv = get(r.addr, path).await;
        assert_eq!(csv.status, 200, "{path}");
        let mut lines = csv.body.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,"));
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), 4, "FRONTEND, 2 servers, BACKEND: {rows:?}");
        assert!(rows[0].starts_with("kube-apiserver,FRONTEND,"));
        assert!(rows[1].starts_with("kube-apiserver,node-a,"));
        assert!(rows[2].contains(",DOWN,"));
        assert!(rows[3].starts_with("kube-apiserver,BACKEND,"));
    }

    let metrics = get(r.addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(metrics.body.contains("# TYPE lbd_server_up gauge\n"));
    assert!(metrics.body.contains(
        "lbd_server_up{frontend=\"kube-apiserver\",server=\"node-b\",addr=\"127.0.0.1:16444\"} 0\n"
    ));

    let health = get(r.addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    assert_eq!(get(r.addr, "/nope").await.status, 404);
    assert_eq!(get(r.addr, "/stats.json/x").await.status, 404);
    assert_eq!(html.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn head_has_headers_and_no_body() {
    let r = start(None, None).await;
    let full = get(r.addr, "/stats.csv").await;
    let head = request(r.addr, "HEAD", "/stats.csv", "").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    assert_eq!(
        head.header("content-length"),
        Some(full.body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn only_get_and_head_are_allowed() {
    let r = start(None, None).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let resp = request(r.addr, method, "/", "Content-Length: 0\r\n").await;
        assert_eq!(resp.status, 405, "{method}");
        assert_eq!(resp.header("allow"), Some("GET, HEAD"), "{method}");
    }
    // Also with a body: nothing is read into lbd's state.
    let resp = request(r.addr, "POST", "/healthz", "Content-Length: 3\r\n\r\nabc").await;
    assert_eq!(resp.status, 405);
}

#[tokio::test]
async fn basic_auth_guards_everything_but_healthz() {
    let r = start(Some("admin"), Some("s3cr:et")).await;
    for path in ["/", "/stats.json", "/stats.csv", "/metrics"] {
        let resp = get(r.addr, path).await;
        assert_eq!(resp.status, 401, "{path}");
        let challenge = resp.header("www-authenticate").unwrap();
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
        assert!(!resp.body.contains("node-a"), "{path} leaked figures");
    }
    // admin:s3cr:et (a colon in the password is allowed) is YWRtaW46czNjcjpldA==.
    let good = "Authorization: Basic YWRtaW46czNjcjpldA==\r\n";
    for path in ["/", "/stats.json", "/stats.csv", "/metrics"] {
        assert_eq!(
            request(r.addr, "GET", path, good).await.status,
            200,
            "{path}"
        );
    }
    for bad in [
        "Authorization: Basic YWRtaW46czNjcjpldB==\r\n", // one bit off
        "Authorization: Basic YWRtaW46\r\n",             // admin:
        "Authorization: Bearer YWRtaW46czNjcjpldA==\r\n",
        "Authorization: Basic\r\n",
    ] {
        assert_eq!(request(r.addr, "GET", "/", bad).await.status, 401, "{bad}");
    }
    assert_eq!(get(r.addr, "/healthz").await.status, 200);
    // Unknown methods are refused before credentials are looked at.
    assert_eq!(request(r.addr, "DELETE", "/", "").await.status, 405);
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let r = start(None, None).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..3 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
    }
}

#[tokio::test]
async fn slow_request_head_is_cut_off() {
    let r = start(None, None).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    // The server gives up after its 2 s header-read timeout and closes (possibly after a
    // 408); bound the wait at 15 s.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
            .await
            .expect("the server closes a connection that never finishes its request head")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_serve_returns() {
    let mut r = start(None, None).await;
    assert_eq!(get(r.addr, "/healthz").await.status, 200);
    // An idle keep-alive connection must not hold up shutdown past the drain deadline.
    let idle = TcpStream::connect(r.addr).await.unwrap();
    r.stop.take().unwrap().send(()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), &mut r.task)
        .await
        .expect("serve returns within its drain deadline")
        .unwrap();
    assert!(res.is_ok());
    assert!(TcpStream::connect(r.addr).await.is_err(), "still accepting");
    drop(idle);
}

#[tokio::test]
async fn figures_follow_the_source() {
    let r = start(None, None).await;
    assert!(get(r.addr, "/stats.csv")
        .await
        .body
        .contains("kube-apiserver,node-b,"));
    {
        let mut snap = r.source.0.lock().unwrap();
        snap.frontends[0].servers[1].status = ServerStatus::Up;
        snap.frontends[0].servers[1].name = "node-b2".to_owned();
    }
    let page = get(r.addr, "/").await.body;
    assert!(page.contains("<tr class=\"srv st-up\" data-server=\"node-b2\">"));
    let metrics = get(r.addr, "/metrics").await.body;
    assert!(metrics.contains("server=\"node-b2\",addr=\"127.0.0.1:16444\"} 1\n"));
}

/// Regression: 64 connections that send nothing locked `/`, `/metrics` and `/stats.json`
/// out (200 gave a 14.5 s wait for a real GET). Now a new connection at the limit closes
/// the one idle longest, so a scrape always gets through, at once.
#[tokio::test]
async fn idle_connections_cannot_starve_the_stats_page() {
    let r = start(None, None).await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(r.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for path in ["/metrics", "/", "/stats.json"] {
        let t0 = Instant::now();
        let resp = get(r.addr, path).await;
        let waited = t0.elapsed();
        assert_eq!(resp.status, 200, "{path}");
        assert!(
            waited < Duration::from_secs(1),
            "{path} served after {waited:?}"
        );
    }
    // The slots stay bounded: most of the silent ones were closed by the server.
    let mut closed = 0;
    for s in &mut silent {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 200 - 64,
        "only {closed} of 200 silent connections closed"
    );
}
