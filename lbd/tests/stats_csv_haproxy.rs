//! lbd's `/stats.csv` against the real thing: Debian's HAProxy is started with a stats
//! socket, asked for `show stat`, and its columns must be lbd's, in the same order, and its
//! rows must have the same shape (FRONTEND, servers, BACKEND; trailing comma).
//!
//! haproxy is required: the test fails (it does not skip) when it is missing; the README
//! test command (`./scripts/test.sh`) installs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k3sha_support::netns;
use k3sha_support::ports::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const HAPROXY: &str = "/usr/sbin/haproxy";

async fn show_stat(sock: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = UnixStream::connect(sock).await {
            s.write_all(b"show stat\n").await.unwrap();
            let mut out = String::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
                .await
                .expect("haproxy answers show stat")
                .unwrap();
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "haproxy stats socket never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn csv_columns_and_rows_match_haproxy() {
    assert!(
        Path::new(HAPROXY).exists(),
        "{HAPROXY} is missing: run the README test command (./scripts/test.sh), which \
         installs Debian's haproxy, or `apt-get install haproxy`."
    );
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stats.sock");
    let cfg = dir.path().join("haproxy.cfg");
    // A `listen` section is what an lbd frontend is: frontend and backend of one name.
    std::fs::write(
        &cfg,
        format!(
            "global\n  stats socket {sock} mode 600 level admin\n\
             defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
             listen web\n  bind 127.0.0.1:{port}\n  balance roundrobin\n  \
             server a 127.0.0.1:{a} check inter 300ms\n  server b 127.0.0.1:{b} check inter 300ms\n",
            sock = sock.display(),
            port = free_port(),
            a = free_port(),
            b = free_port(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new(HAPROXY);
    cmd.arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Killed and reaped on drop.
    let _haproxy = netns::spawn(cmd).expect("haproxy starts");
    // Wait for both servers' first (failing) check, so every check column is filled.
    let deadline = Instant::now() + Duration::from_secs(15);
    let theirs = loop {
        let out = show_stat(&sock).await;
        if out.matches(",L4CON,").count() == 2 {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "haproxy's checks never ran:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Columns: HAProxy's up to its `-` separator (after it come per-module columns lbd
    // does not emit) are exactly lbd's.
    let header = theirs.lines().next().unwrap();
    let their_cols: Vec<&str> = header
        .trim_start_matches("# ")
        .split(',')
        .take_while(|c| *c != "-")
        .collect();
    assert_eq!(their_cols, lbd::stats::CSV_COLUMNS.to_vec());

    // Rows: the same shape for the same proxy.
    let snap = {
        let mut s: lbd::snapshot::Snapshot =
            serde_json::from_str(SNAPSHOT).expect("test snapshot parses");
        s.frontends[0].name = "web".to_owned();
        s
    };
    let ours = lbd::stats::render_csv(&snap);
    let kinds = |csv: &str| -> Vec<(String, String)> {
        csv.lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut f = l.split(',');
                (f.next().unwrap().to_owned(), f.next().unwrap().to_owned())
            })
            .collect()
    };
    assert_eq!(
        kinds(&ours),
        vec![
            ("web".to_owned(), "FRONTEND".to_owned()),
            ("web".to_owned(), "a".to_owned()),
            ("web".to_owned(), "b".to_owned()),
            ("web".to_owned(), "BACKEND".to_owned()),
        ]
    );
    assert_eq!(kinds(&ours), kinds(&theirs));
    let col = |name: &str| their_cols.iter().position(|c| *c == name).unwrap();
    for (our, their) in ours.lines().skip(1).zip(theirs.lines().skip(1)) {
        assert!(our.ends_with(','), "{our}");
        assert!(their.ends_with(','), "{their}");
        let (o, t): (Vec<&str>, Vec<&str>) = (our.split(',').collect(), their.split(',').collect());
        // The same `type` (0 frontend, 1 backend, 2 server) and `mode`, and lbd fills
        // no column HAProxy leaves empty for that kind of row, except `lastchg` on the
        // BACKEND and `check_duration` on servers: both known, HAProxy prints them when set.
        assert_eq!(o[col("type")], t[col("type")], "{our}\n{their}");
        assert_eq!(o[col("mode")], t[col("mode")]);
        for (i, name) in their_cols.iter().enumerate() {
            if t[i].is_empty() && !o[i].is_empty() {
                assert!(
                    matches!(*name, "check_duration" | "lastchg" | "downtime"),
                    "lbd fills {name}={} where HAProxy leaves it empty:\n{our}\n{their}",
                    o[i]
                );
            }
        }
    }
}

/// A snapshot of one frontend with servers `a` and `b`, as `/stats.json` shows it.
const SNAPSHOT: &str = r#"{
  "node": "n1", "cluster": "c", "version": "0.1.0", "uptime_secs": 5, "now_unix_ms": 0,
  "current_connections": 0, "max_connections": 0, "reloads": 0, "last_reload_error": null,
  "vrrp": null,
  "frontends": [{
    "name": "web", "listen": "127.0.0.1:1", "backend_port": 2, "balance": "roundrobin",
    "status": "OPEN", "current_sessions": 0, "max_sessions": 0, "session_limit": 0,
    "total_sessions": 0, "session_rate": 0, "session_rate_max": 0, "bytes_in": 0,
    "bytes_out": 0, "denied": 0, "no_server": 0,
    "servers": [
      {"name": "a", "addr": "127.0.0.1:3", "status": "DOWN", "transition": null, "weight": 1,
       "backup": false, "check_status": "L4CON", "check_desc": "Connection refused",
       "check_latency_ms": 0.2, "checks_failed": 1, "current_sessions": 0, "max_sessions": 0,
       "total_sessions": 0, "session_rate": 0, "bytes_in": 0, "bytes_out": 0,
       "connect_errors": 0, "retries": 0, "last_change_secs": 1, "downtime_secs": 1,
       "down_transitions": 1},
      {"name": "b", "addr": "127.0.0.1:4", "status": "DOWN", "transition": null, "weight": 1,
       "backup": false, "check_status": "L4CON", "check_desc": "Connection refused",
       "check_latency_ms": 0.2, "checks_failed": 1, "current_sessions": 0, "max_sessions": 0,
       "total_sessions": 0, "session_rate": 0, "bytes_in": 0, "bytes_out": 0,
       "connect_errors": 0, "retries": 0, "last_change_secs": 1, "downtime_secs": 1,
       "down_transitions": 1}
    ]
  }]
}"#;
