//! vrrpd's trackers, notify command and systemd notifications with real processes in
//! namespaces. Needs root.
//!
//! - `scripts_lbd_and_notify` (10.66): a track script with a weight moves the VIP when it fails
//!   and back when it recovers; lbd's health (a stand-in answering `status` on each node's
//!   `lbd.sock`, as lbd does) forces a fault when the tracked frontend has no server UP and
//!   when lbd does not answer; the notify command sees every transition.
//! - `systemd_ready_watchdog_and_stopping` (10.68): READY=1, WATCHDOG=1 at half of
//!   WATCHDOG_USEC, STOPPING=1 on SIGTERM, on a NOTIFY_SOCKET of the test's own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::ctl::Response;
use common::proto::lbd::{self, ServerStatus};
use k3sha_support::standin::StandIn;
use support::{serial, Settings, TestCluster};

/// What the stand-in lbd reports: 0 = a server UP, 1 = all servers DOWN, 2 = not answering.
const HEALTHY: u8 = 0;
const ALL_DOWN: u8 = 1;
const SILENT: u8 = 2;

/// A stand-in for lbd's control socket: answers `status` with a `frontends` list like
/// lbd's snapshot, health taken from `mode`; served until the guard is dropped.
fn stand_in_lbd(run_dir: &Path, mode: Arc<AtomicU8>) -> StandIn {
    let handler = move |req: lbd::Request| {
        let mode = mode.clone();
        async move {
            match mode.load(Ordering::SeqCst) {
                SILENT => {
                    // Do not answer within the tracker's timeout.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Response::err("late")
                }
                m => match req {
                    lbd::Request::Status => {
                        let st = if m == HEALTHY {
                            ServerStatus::Up
                        } else {
                            ServerStatus::Down
                        };
                        let addr = "127.0.0.1:1".parse().unwrap();
                        let any = "0.0.0.0:1".parse().unwrap();
                        let snap = lbd::Snapshot::new(
                            "stand-in",
                            "test",
                            vec![
                                lbd::FrontendStats::new(
                                    "kube-apiserver",
                                    any,
                                    vec![
                                        lbd::ServerStats::new("a", addr, ServerStatus::Down),
                                        lbd::ServerStats::new("b", addr, st),
                                    ],
                                ),
                                lbd::FrontendStats::new(
                                    "ingress-http",
                                    any,
                                    vec![lbd::ServerStats::new("a", addr, ServerStatus::Up)],
                                ),
                            ],
                        );
                        Response::from_result(Ok::<_, String>(lbd::Answer::Status(Box::new(snap))))
                    }
                    _ => Response::err("unknown command"),
                },
            }
        }
    };
    StandIn::serve(run_dir, "lbd", handler)
}

fn wait_state(c: &TestCluster, i: usize, state: &str, timeout: Duration) {
    let t0 = std::time::Instant::now();
    loop {
        if c.status(i)["state"] == state {
            return;
        }
        if t0.elapsed() > timeout {
            c.dump_logs();
            panic!(
                "{} never reached {state}: {:#}",
                c.servers[i].name,
                c.status(i)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Wait (up to 3 s) until the notify file holds exactly `want`, then check that it still
/// does 300 ms later (a notify command runs asynchronously, after the transition).
fn wait_lines(p: &Path, want: &[&str]) {
    let t0 = std::time::Instant::now();
    while lines(p) != want && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(p), want, "{}", p.display());
}

#[test]
fn scripts_lbd_and_notify() {
    if !k3sha_support::netns::require_root("vrrpd netns scripts_lbd_and_notify") {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(66);
    s.vrrp_extra = "notify = \"/bin/sh -c 'echo $0 >> $NOTIFY_FILE'\"".into();
    s.track = "lbd = \"fault\"\nlbd_interval = \"100ms\"\n\n\
               [[vrrp.track.script]]\nname = \"flag\"\ncommand = \"test ! -e $FLAG_FILE\"\n\
               interval = \"100ms\"\ntimeout = \"1s\"\nrise = 1\nfall = 2\neffect = -120\n"
        .into();
    let mut c = TestCluster::new("66", s);
    let mut modes = Vec::new();
    let mut stand_ins = Vec::new();
    for i in 0..3 {
        let dir = c.dir.path().to_path_buf();
        let k = i + 1;
        c.servers[i].env = vec![
            (
                "NOTIFY_FILE".into(),
                dir.join(format!("notify-n{k}")).display().to_string(),
            ),
            (
                "FLAG_FILE".into(),
                dir.join(format!("flag-n{k}")).display().to_string(),
            ),
        ];
        let mode = Arc::new(AtomicU8::new(HEALTHY));
        stand_ins.push(stand_in_lbd(&c.servers[i].run_dir, mode.clone()));
        modes.push(mode);
    }
    // n1 first, and the others once it is master: started together, n2 (master-down
    // interval 341 ms) takes the VIP when n1 (322 ms) is more than ~20 ms late to start,
    // and its notify file then starts backup, master, backup. That is VRRP, not a fault.
    c.start(0);
    c.wait_ctl(0, Duration::from_secs(10));
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(5));
    for i in 1..3 {
        c.start(i);
        c.wait_ctl(i, Duration::from_secs(10));
    }
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(5));
    let notify1 = c.dir.path().join("notify-n1");
    let notify2 = c.dir.path().join("notify-n2");
    wait_lines(&notify1, &["backup", "master"]);
    wait_lines(&notify2, &["backup"]);
    let st = c.status(0);
    assert_eq!(st["tracking"]["fault"], false, "{st:#}");
    assert_eq!(st["tracking"]["priority_offset"], 0);

    // The script fails on n1: priority 200 - 120 = 80, below n2 (150) and n3 (100).
    std::fs::write(c.dir.path().join("flag-n1"), "").unwrap();
    c.wait_sole_holder(c.vip4, 1, Duration::from_secs(3));
    let st = c.status(0);
    assert_eq!(st["effective_priority"], 80, "{st:#}");
    assert_eq!(st["tracking"]["priority_offset"], -120);
    assert_eq!(st["state"], "backup");
    // It recovers: n1 preempts back.
    std::fs::remove_file(c.dir.path().join("flag-n1")).unwrap();
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(3));
    assert_eq!(c.status(0)["effective_priority"], 200);

    // lbd on n1 reports no healthy apiserver backend: fault.
    modes[0].store(ALL_DOWN, Ordering::SeqCst);
    wait_state(&c, 0, "fault", Duration::from_secs(3));
    c.wait_sole_holder(c.vip4, 1, Duration::from_secs(3));
    modes[0].store(HEALTHY, Ordering::SeqCst);
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(3));

    // lbd on n1 does not answer: fault as well.
    modes[0].store(SILENT, Ordering::SeqCst);
    wait_state(&c, 0, "fault", Duration::from_secs(5));
    c.wait_sole_holder(c.vip4, 1, Duration::from_secs(3));
    let st = c.status(0);
    let trackers = st["tracking"]["trackers"].as_array().unwrap().clone();
    assert!(
        trackers
            .iter()
            .any(|t| t["name"] == "lbd" && t["ok"] == false),
        "{st:#}"
    );
    modes[0].store(HEALTHY, Ordering::SeqCst);
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(8));

    std::thread::sleep(Duration::from_millis(300));
    let n1 = lines(&notify1);
    eprintln!("notify on n1: {n1:?}");
    assert_eq!(n1.first().map(String::as_str), Some("backup"));
    assert_eq!(n1.last().map(String::as_str), Some("master"));
    assert!(n1.iter().filter(|l| *l == "fault").count() >= 2, "{n1:?}");
    assert!(n1.iter().filter(|l| *l == "master").count() >= 4, "{n1:?}");
}

#[test]
fn systemd_ready_watchdog_and_stopping() {
    if !k3sha_support::netns::require_root("vrrpd netns systemd_ready_watchdog_and_stopping") {
        return;
    }
    let _g = serial();
    let mut c = TestCluster::new("68", Settings::new(68));
    let sock_path = c.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    c.servers[0].env = vec![
        ("NOTIFY_SOCKET".into(), sock_path.display().to_string()),
        ("WATCHDOG_USEC".into(), "200000".into()),
    ];
    c.start(0);
    let t0 = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while t0.elapsed() < Duration::from_secs(3) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let master = got
            .iter()
            .any(|m| m.contains("STATUS=master, VIP 10.68.0.100 held here"));
        if master && got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3 {
            break;
        }
    }
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    // `systemctl status vrrpd` says the state and who holds the VIP.
    assert!(
        got.iter()
            .any(|m| m.contains("STATUS=backup, VIP 10.68.0.100 held by nobody known")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|m| m.contains("STATUS=master, VIP 10.68.0.100 held here")),
        "{got:?}"
    );
    assert!(
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{got:?}"
    );
    c.sigterm(0);
    let st = c.wait_exit(0);
    assert!(st.success());
    let mut rest = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")), "{rest:?}");
    assert!(
        rest.iter()
            .any(|m| m.contains("STATUS=stopping (handing over): ")),
        "{rest:?}"
    );
}
