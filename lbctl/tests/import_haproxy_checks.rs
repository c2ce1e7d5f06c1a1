//! `lbctl import`'s health checks against the real thing: for each way a haproxy.cfg can
//! choose its check, Debian's HAProxy and lbd (running the imported cluster.toml) must call
//! the same servers UP and DOWN.
//!
//! Five stand-in servers on loopback, the same for every case, in this order:
//! `https200` (TLS, HTTP 200), `https500` (TLS, HTTP 500), `http200` (plain HTTP 200),
//! `silent` (accepts, never answers) and `dead` (a closed port). One haproxy.cfg holds a
//! `listen` section per case, each with its own `defaults` before it. HAProxy runs it (after
//! `haproxy -c`) with a stats socket; once every server has a settled check status, its
//! UP/DOWN per server is recorded. Then `lbctl import` converts the same file, lbd runs the
//! result (the real lbd binary, on loopback ports), and its
//! `/stats.csv` must agree with HAProxy's, server by server, with the check kind the case
//! expects.
//!
//! Two set-ups make HAProxy mark every server DOWN (an SSLv3 hello inside TLS; `http-check`
//! rules without a `send` under an inherited `option httpchk`): those are run too, HAProxy
//! must call every server DOWN, and the import must ask for a review.
//!
//! haproxy is required (`k3sha_support::tools`): the test fails, naming the package, when it is
//! missing. Checks run every 200 ms with rise 1 / fall 1, so each side settles in a second
//! or two; every wait is bounded.
//!
//! Index:
//! - `every_check_mapping_agrees_with_haproxy`
//! - `protocol_checks_pass_haproxy_c_and_are_listed`
//! - `notes_name_every_check_option_and_ignored_rule`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k3sha_support::netns::{self, NsChild};
use k3sha_support::ports::free_port;
use lbctl::import::{import, render_notes, ImportOptions, Imported, Source};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The stand-ins, in the order of every case's expectation string.
const ROLES: [&str; 5] = ["https200", "https500", "http200", "silent", "dead"];

/// One backend: how HAProxy is told to check it, and what both sides must conclude.
struct Case {
    name: &'static str,
    /// Extra lines of the `defaults` section before this case's `listen`.
    defaults: &'static [&'static str],
    /// The `listen` section's check lines.
    body: &'static [&'static str],
    /// Extra words on every `server` line.
    server: &'static str,
    /// The imported `check.kind`.
    kind: &'static str,
    /// UP (`U`) or DOWN (`D`) per stand-in, in [`ROLES`] order.
    want: &'static str,
    /// HAProxy marks everything DOWN here: the import must ask for a review, lbd is not
    /// compared.
    review: bool,
}

const fn case(
    name: &'static str,
    defaults: &'static [&'static str],
    body: &'static [&'static str],
    server: &'static str,
    kind: &'static str,
    want: &'static str,
) -> Case {
    Case {
        name,
        defaults,
        body,
        server,
        kind,
        want,
        review: false,
    }
}

const CASES: &[Case] = &[
    // The kubeadm HA guide's older haproxy.cfg: HAProxy keeps the last option.
    case(
        "kubeadm-ssl-hello",
        &[],
        &["option httpchk GET /healthz", "option ssl-hello-chk"],
        "",
        "tls",
        "UUDDD",
    ),
    case(
        "ssl-hello-then-httpchk",
        &[],
        &["option ssl-hello-chk", "option httpchk GET /healthz"],
        "check-ssl",
        "https",
        "UDDDD",
    ),
    case(
        "httpchk",
        &[],
        &["option httpchk GET /healthz"],
        "",
        "http",
        "DDUDD",
    ),
    case("no-option", &[], &[], "", "tcp", "UUUUD"),
    case("check-ssl", &[], &[], "check-ssl", "tls", "UUDDD"),
    case(
        "tcp-check-connect",
        &[],
        &["option tcp-check", "tcp-check connect"],
        "",
        "tcp",
        "UUUUD",
    ),
    case(
        "tcp-check-connect-ssl",
        &[],
        &["option tcp-check", "tcp-check connect ssl"],
        "",
        "tls",
        "UUDDD",
    ),
    case(
        "httpchk-then-tcp-check",
        &[],
        &["option httpchk GET /healthz", "option tcp-check"],
        "",
        "tcp",
        "UUUUD",
    ),
    // The current kubeadm guide.
    case(
        "http-check-connect-ssl",
        &[],
        &[
            "option httpchk",
            "http-check connect ssl",
            "http-check send meth GET uri /healthz",
            "http-check expect status 200",
        ],
        "",
        "https",
        "UDDDD",
    ),
    case(
        "tcp-check-connect-on-check-ssl",
        &[],
        &["option tcp-check", "tcp-check connect"],
        "check-ssl",
        "tcp",
        "UUUUD",
    ),
    case(
        "http-check-connect-on-check-ssl",
        &[],
        &[
            "option httpchk",
            "http-check connect",
            "http-check send meth GET uri /healthz",
        ],
        "check-ssl",
        "http",
        "DDUDD",
    ),
    case("server-ssl", &[], &[], "ssl", "tls", "UUDDD"),
    case(
        "httpchk-from-defaults",
        &["option httpchk GET /healthz"],
        &[],
        "",
        "http",
        "DDUDD",
    ),
    case(
        "httpchk-from-defaults-check-ssl",
        &["option httpchk GET /healthz"],
        &[],
        "check-ssl",
        "https",
        "UDDDD",
    ),
    case(
        "httpchk-from-defaults-then-ssl-hello",
        &["option httpchk GET /healthz"],
        &["option ssl-hello-chk"],
        "",
        "tls",
        "UUDDD",
    ),
    // Inheritance: a repeated `option tcp-check` keeps the inherited rules; a section's own
    // check option drops inherited http-check rules; its own rules replace inherited ones.
    case(
        "tcp-check-repeated-keeps-rules",
        &["option tcp-check", "tcp-check connect ssl"],
        &["option tcp-check"],
        "",
        "tls",
        "UUDDD",
    ),
    case(
        "own-httpchk-drops-inherited-rules",
        &["option httpchk GET /healthz", "http-check connect ssl"],
        &["option httpchk GET /healthz"],
        "",
        "http",
        "DDUDD",
    ),
    case(
        "own-tcp-check-rules-replace-inherited",
        &["option tcp-check", "tcp-check connect ssl"],
        &["tcp-check connect"],
        "",
        "tcp",
        "UUUUD",
    ),
    // HAProxy marks every server DOWN in these two.
    Case {
        review: true,
        ..case(
            "ssl-hello-with-check-ssl",
            &[],
            &["option ssl-hello-chk"],
            "check-ssl",
            "tls",
            "DDDDD",
        )
    },
    Case {
        review: true,
        ..case(
            "expect-without-send-from-defaults",
            &["option httpchk GET /healthz"],
            &["http-check expect status 200"],
            "",
            "http",
            "DDDDD",
        )
    },
];

// ---------------------------------------------------------------------------------------
// Stand-in servers

/// The five stand-ins on 127.0.0.1, served by a runtime of their own (stopped on drop).
struct StandIns {
    ports: [u16; 5],
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for StandIns {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// Read one request head (bounded), answer `code`, close.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, code: u16) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let read_head = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    if !tokio::time::timeout(Duration::from_secs(2), read_head)
        .await
        .unwrap_or(false)
    {
        return;
    }
    let reason = if code == 200 {
        "OK"
    } else {
        "Internal Server Error"
    };
    let resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{code}"
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn start_stand_ins() -> StandIns {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let acceptor = tls_acceptor();
    let mut ports = [0u16; 5];
    for (i, role) in ROLES.iter().enumerate() {
        let std_l = TcpListener::bind("127.0.0.1:0").unwrap();
        ports[i] = std_l.local_addr().unwrap().port();
        if *role == "dead" {
            // Bound for a free port, closed at once: connections are refused.
            drop(std_l);
            continue;
        }
        std_l.set_nonblocking(true).unwrap();
        let acceptor = acceptor.clone();
        let role = *role;
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(std_l).unwrap();
            // The silent server holds what it accepted (a bounded number) without a word.
            let mut held = std::collections::VecDeque::new();
            loop {
                let Ok((s, _)) = l.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                match role {
                    "silent" => {
                        held.push_back(s);
                        if held.len() > 256 {
                            held.pop_front();
                        }
                    }
                    "http200" => {
                        tokio::spawn(answer(s, 200));
                    }
                    _ => {
                        let acc = acceptor.clone();
                        let code = if role == "https200" { 200 } else { 500 };
                        tokio::spawn(async move {
                            if let Ok(Ok(t)) =
                                tokio::time::timeout(Duration::from_secs(2), acc.accept(s)).await
                            {
                                answer(t, code).await;
                            }
                        });
                    }
                }
            }
        });
    }
    StandIns {
        ports,
        rt: Some(rt),
    }
}

// ---------------------------------------------------------------------------------------
// haproxy.cfg

const DEFAULTS: &str =
    "defaults\n    mode tcp\n    timeout connect 500ms\n    timeout client 5s\n    \
     timeout server 5s\n    timeout check 500ms\n    \
     default-server inter 200ms fastinter 200ms downinter 200ms rise 1 fall 1\n";

fn haproxy_cfg(sock: &Path, ports: &[u16; 5], cases: &[Case]) -> String {
    let mut cfg = format!(
        "global\n    stats socket {} mode 600 level admin\n    ssl-server-verify none\n",
        sock.display()
    );
    for c in cases {
        cfg.push_str(DEFAULTS);
        for l in c.defaults {
            cfg.push_str(&format!("    {l}\n"));
        }
        cfg.push_str(&format!(
            "listen {}\n    bind 127.0.0.1:{}\n",
            c.name,
            free_port()
        ));
        for l in c.body {
            cfg.push_str(&format!("    {l}\n"));
        }
        for (role, port) in ROLES.iter().zip(ports) {
            cfg.push_str(&format!(
                "    server {role} 127.0.0.1:{port} check {}\n",
                c.server
            ));
        }
    }
    cfg
}

/// `haproxy -c`: must pass; returns its warnings.
fn haproxy_check(cfg: &Path) -> String {
    let out = k3sha_support::tools::command("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(cfg)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "haproxy -c failed:\n{text}");
    text
}

fn show_stat(sock: &Path) -> Option<String> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// `/stats.csv` of lbd's stats page.
fn lbd_csv(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /stats.csv HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

/// (proxy, server) -> settled UP (true) / DOWN (false), or `None` for a server still at
/// its first check or between states. `server_of` names a CSV row's server.
fn states(
    csv: &str,
    server_of: &dyn Fn(&str) -> Option<&'static str>,
) -> BTreeMap<(String, &'static str), Option<bool>> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return BTreeMap::new();
    };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |n: &str| cols.iter().position(|c| *c == n).unwrap();
    let (px, sv, st, chk) = (
        col("pxname"),
        col("svname"),
        col("status"),
        col("check_status"),
    );
    let mut out = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        if f.len() <= chk.max(st) {
            continue;
        }
        let Some(role) = server_of(f[sv]) else {
            continue;
        };
        let check = f[chk].trim_start_matches("* ");
        let settled = !check.is_empty() && check != "INI";
        let state = match f[st] {
            "UP" if settled => Some(true),
            "DOWN" if settled => Some(false),
            _ => None,
        };
        out.insert((f[px].to_owned(), role), state);
    }
    out
}

/// Poll `fetch` until every (case, role) is settled twice in a row, 600 ms apart (three
/// check intervals), with the same result; bounded.
fn settle(
    what: &str,
    cases: &[Case],
    fetch: &mut dyn FnMut() -> Option<String>,
    server_of: &dyn Fn(&str) -> Option<&'static str>,
) -> BTreeMap<(String, &'static str), bool> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<BTreeMap<(String, &'static str), bool>> = None;
    let mut seen = String::new();
    loop {
        if let Some(csv) = fetch() {
            let st = states(&csv, server_of);
            let all: Option<BTreeMap<_, _>> = cases
                .iter()
                .flat_map(|c| ROLES.iter().map(move |r| (c.name.to_owned(), *r)))
                .map(|k| st.get(&k).copied().flatten().map(|v| (k, v)))
                .collect();
            if let Some(now) = all {
                if last.as_ref() == Some(&now) {
                    return now;
                }
                last = Some(now);
            } else {
                last = None;
            }
            seen = csv;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: servers did not settle within 30 s; last CSV:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(600));
    }
}

// ---------------------------------------------------------------------------------------
// lbd: the real binary, built with the workspace

/// The lbd binary next to lbctl's (the workspace builds every binary for its tests).
fn lbd_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_lbctl")).with_file_name("lbd");
    assert!(
        p.exists(),
        "{} missing: build it first (cargo build -p lbd; cargo test --workspace does)",
        p.display()
    );
    p
}

/// lbd as a child process; killed (and reaped) on drop, even on panic.
struct Lbd {
    child: NsChild,
    log: PathBuf,
}

impl Lbd {
    fn start(config: PathBuf, node: String, run_dir: PathBuf) -> Lbd {
        let log = run_dir.with_extension("lbd.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = std::process::Command::new(lbd_bin());
        cmd.arg("--config")
            .arg(&config)
            .arg("--node")
            .arg(&node)
            .arg("--run-dir")
            .arg(&run_dir)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = netns::spawn(cmd).unwrap();
        Lbd { child, log }
    }

    /// Why lbd has already stopped (its exit status and log), if it has.
    fn failed(&mut self) -> Option<String> {
        let status = self.child.try_wait()?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Some(format!("lbd exited ({status}):\n{log}"))
    }
}

/// The keepalived.conf that gives the import its one node and VIP, on loopback.
const KEEPALIVED: &str = "vrrp_instance V {\n    interface lo\n    virtual_router_id 7\n    \
     priority 100\n    unicast_src_ip 127.0.0.1\n    virtual_ipaddress {\n        127.0.0.100/8\n    }\n}\n";

fn run_import(cfg_text: &str) -> Imported {
    let opts = ImportOptions {
        keepalived: vec![Source {
            label: "keepalived.conf".into(),
            text: KEEPALIVED.into(),
        }],
        haproxy: Some(Source {
            label: "haproxy.cfg".into(),
            text: cfg_text.into(),
        }),
        name: Some("checks".into()),
        domain: Some("checks.test".into()),
    };
    match import(&opts) {
        Ok(i) => i,
        Err(e) => panic!("import failed: {e}"),
    }
}

/// The imported file, moved onto loopback: every service listens on 127.0.0.1 only, the
/// stats page on a free loopback port. Nothing about the checks is touched.
fn loopback_toml(toml: &str, stats: u16) -> String {
    assert!(!toml.contains("\n[stats]"), "{toml}");
    let mut out = String::new();
    for l in toml.lines() {
        out.push_str(l);
        out.push('\n');
        if l.starts_with("listen = ") {
            out.push_str("bind = \"127.0.0.1\"\n");
        }
    }
    out.push_str(&format!("\n[stats]\nlisten = \"127.0.0.1:{stats}\"\n"));
    out
}

fn row(want: &str) -> String {
    want.chars()
        .map(|c| if c == 'U' { "UP  " } else { "DOWN" })
        .collect::<Vec<_>>()
        .join(" ")
}

fn letters(m: &BTreeMap<(String, &'static str), bool>, case: &str) -> String {
    ROLES
        .iter()
        .map(|r| match m.get(&(case.to_owned(), *r)) {
            Some(true) => 'U',
            Some(false) => 'D',
            None => '?',
        })
        .collect()
}

#[test]
fn every_check_mapping_agrees_with_haproxy() {
    k3sha_support::tools::require("haproxy");
    let dir = tempfile::tempdir().unwrap();
    let stand = start_stand_ins();
    let sock = dir.path().join("haproxy.sock");
    let cfg_text = haproxy_cfg(&sock, &stand.ports, CASES);
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let warnings = haproxy_check(&cfg);
    eprintln!("haproxy -c:\n{warnings}");

    // HAProxy's verdict.
    let by_name = |s: &str| ROLES.iter().find(|r| **r == s).copied();
    let hap = {
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let mut cmd = k3sha_support::tools::command("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Killed and reaped at the end of this block.
        let _haproxy = netns::spawn(cmd).unwrap();
        settle("haproxy", CASES, &mut || show_stat(&sock), &by_name)
    };

    // The import, and lbd's verdict on the same servers.
    let imported = run_import(&cfg_text);
    let notes = render_notes(&imported.notes);
    let stats = free_port();
    let toml = loopback_toml(&imported.toml, stats);
    let toml_path = dir.path().join("cluster.toml");
    std::fs::write(&toml_path, &toml).unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let node = imported.cluster.nodes[0].name.clone();
    let ports = stand.ports;
    let by_port = move |s: &str| {
        let p: u16 = s.rsplit_once(':')?.1.parse().ok()?;
        ports.iter().position(|q| *q == p).map(|i| ROLES[i])
    };
    let lbd_states = {
        let mut lbd = Lbd::start(toml_path, node, run_dir);
        let addr: SocketAddr = ([127, 0, 0, 1], stats).into();
        let mut fetch = || {
            if let Some(e) = lbd.failed() {
                panic!("lbd: {e}\n--- cluster.toml ---\n{toml}");
            }
            lbd_csv(addr)
        };
        settle("lbd", CASES, &mut fetch, &by_port)
    };

    let mut table = format!(
        "{:<38} {:<6} {:<6} HAProxy / lbd ({})\n",
        "case",
        "want",
        "got",
        ROLES.join(" ")
    );
    let mut failures = Vec::new();
    for c in CASES {
        let svc = imported
            .cluster
            .service(c.name)
            .unwrap_or_else(|| panic!("{}: not imported\n{notes}", c.name));
        let kind = svc.check.kind.as_str();
        let h = letters(&hap, c.name);
        let l = letters(&lbd_states, c.name);
        table.push_str(&format!(
            "{:<38} {:<6} {:<6} {} / {}{}\n",
            c.name,
            c.kind,
            kind,
            row(&h),
            row(&l),
            if c.review { "  (review)" } else { "" }
        ));
        if h != c.want {
            failures.push(format!(
                "{}: HAProxy said {h}, the case expects {}",
                c.name, c.want
            ));
        }
        if kind != c.kind {
            failures.push(format!("{}: imported as {kind}, want {}", c.name, c.kind));
        }
        if c.review {
            let needle = format!("{}: ", c.name);
            let noted = imported
                .notes
                .iter()
                .any(|n| n.to_string().contains(&needle) && n.reason.contains("review"));
            if !noted {
                failures.push(format!("{}: no note asks for a review", c.name));
            }
        } else if l != h {
            failures.push(format!("{}: HAProxy said {h}, lbd said {l}", c.name));
        }
    }
    eprintln!("{table}");
    assert!(
        failures.is_empty(),
        "{}\n\n{table}\n--- notes ---\n{notes}\n--- cluster.toml ---\n{toml}",
        failures.join("\n")
    );
}

#[test]
fn protocol_checks_pass_haproxy_c_and_are_listed() {
    k3sha_support::tools::require("haproxy");
    let dir = tempfile::tempdir().unwrap();
    let options: &[(&str, &[&str])] = &[
        ("mysql-check", &["option mysql-check user haproxy"]),
        ("pgsql-check", &["option pgsql-check user haproxy"]),
        ("redis-check", &["option redis-check"]),
        ("smtpchk", &["option smtpchk HELO checks.test"]),
        ("ldap-check", &["option ldap-check"]),
        ("spop-check", &["option spop-check"]),
        (
            "external-check",
            &["option external-check", "external-check command /bin/true"],
        ),
    ];
    let mut cfg = String::from("global\n    external-check\n    insecure-fork-wanted\n");
    for (name, lines) in options {
        cfg.push_str(DEFAULTS);
        cfg.push_str(&format!(
            "listen {name}\n    bind 127.0.0.1:{}\n",
            free_port()
        ));
        for l in *lines {
            cfg.push_str(&format!("    {l}\n"));
        }
        cfg.push_str(&format!(
            "    server a 127.0.0.1:{} check\n    server b 127.0.0.1:{} check check-ssl verify none\n",
            free_port(),
            free_port()
        ));
    }
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, &cfg).unwrap();
    let warnings = haproxy_check(&path);
    eprintln!("haproxy -c:\n{warnings}");
    let imported = run_import(&cfg);
    let notes = render_notes(&imported.notes);
    for (name, _) in options {
        let svc = imported.cluster.service(name).unwrap();
        // One server has check-ssl: HAProxy talks the protocol inside TLS then, but lbd has
        // one check per service; it must be a connect (tcp or tls), never http.
        assert!(
            matches!(svc.check.kind.as_str(), "tcp" | "tls"),
            "{name}: {:?}",
            svc.check.kind
        );
        let listed = imported
            .notes
            .iter()
            .any(|n| n.setting.contains(&format!("option {name}")) && n.reason.contains("connect"));
        assert!(listed, "option {name} is not listed:\n{notes}");
    }
}

#[test]
fn notes_name_every_check_option_and_ignored_rule() {
    let cfg = "defaults\n    mode tcp\n    option httpchk GET /healthz\n    http-check expect status 200\n\
               listen api\n    bind :8443\n    option httpchk GET /healthz\n    option ssl-hello-chk\n\
               \x20   tcp-check connect\n    server a 127.0.0.2:6443 check\n\
               listen web\n    bind :8080\n    option tcp-check\n    http-check send meth GET uri /\n\
               \x20   server a 127.0.0.2:80 check\n";
    let imported = run_import(cfg);
    let notes = render_notes(&imported.notes);
    for must in [
        // Both options, their lines, which one HAProxy keeps, what was imported.
        "line 7",
        "line 8",
        "ssl-hello-chk",
        // A tcp-check rule under ssl-hello-chk, an http-check rule under tcp-check.
        "haproxy.cfg:9: tcp-check connect",
        "haproxy.cfg:14: http-check send meth GET uri /",
    ] {
        assert!(notes.contains(must), "missing {must:?} in\n{notes}");
    }
    assert_eq!(
        imported.cluster.service("api").unwrap().check.kind.as_str(),
        "tls"
    );
    assert_eq!(
        imported.cluster.service("web").unwrap().check.kind.as_str(),
        "tcp"
    );
    // The API checked with a TLS hello gets the same advice as a TCP connect.
    assert!(notes.contains("/readyz"), "{notes}");
    // Identical notes are listed once.
    let mut lines: Vec<&str> = notes.lines().collect();
    let n = lines.len();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), n, "{notes}");
}
