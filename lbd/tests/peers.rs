//! Admin states are the cluster's: two real lbd processes (nodes n1 at 127.0.0.1 and n2 at
//! 127.0.0.2, one peer port), the drain made on one holds on the other, survives a restart
//! of both, and a stranger on the peer port is refused. Loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proto::lbd::{self as proto, AdminState};
use k3sha_support::netns::{self, NsChild};
use nix::sys::signal::Signal;
use serde_json::Value;

fn free_port() -> u16 {
    // Bound on both nodes' addresses: the peer port is the same on every node.
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.2", p)).is_ok()
            && TcpListener::bind(("127.0.0.3", p)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port");
}

struct Node {
    name: &'static str,
    dir: PathBuf,
    child: Option<NsChild>,
}

impl Node {
    fn start(name: &'static str, dir: &Path, cfg: &Path) -> Node {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("lbd.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbd"));
        cmd.arg("--config")
            .arg(cfg)
            .args(["--node", name, "--run-dir"])
            .arg(dir.join("run"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = netns::spawn(cmd).unwrap();
        let n = Node {
            name,
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let t0 = Instant::now();
        while n.status().is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{name} did not come up: {}",
                n.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("run/lbd.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("lbd.log")).unwrap_or_default()
    }

    fn status(&self) -> Option<proto::Snapshot> {
        common::proto::block_on(proto::status(&self.sock(), Duration::from_secs(2))).ok()
    }

    fn admin_of(&self, server: &str) -> String {
        let s = self.status().expect("status");
        let f = s.frontends.iter().find(|f| f.name == "web").unwrap();
        let srv = f
            .servers
            .iter()
            .find(|x| x.name == server || x.addr.to_string() == server)
            .unwrap();
        srv.status.as_str().to_owned()
    }

    fn wait_admin(&self, server: &str, want: &str) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.admin_of(server) == want {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{}: {server} not {want}: {}\n{}",
                self.name,
                self.admin_of(server),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn set(&self, server: &str, state: AdminState) -> proto::Shared {
        let req = proto::SetServer {
            service: "web".into(),
            server: server.into(),
            state,
        };
        common::proto::block_on(proto::set_server(&self.sock(), req, Duration::from_secs(5)))
            .unwrap()
    }

    fn stop(&mut self) {
        // SIGTERM, up to 10 s to exit, then SIGKILL (dropping `c`).
        if let Some(mut c) = self.child.take() {
            let _ = c.signal(Signal::SIGTERM);
            c.wait_timeout(Duration::from_secs(10));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A backend that accepts and holds connections (checks pass).
fn backend(ip: &str) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let a = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for s in l.incoming().take(10_000) {
            drop(s);
        }
    });
    (a, h)
}

#[test]
fn a_drain_is_the_clusters_and_survives_restarts() {
    let (b1, _t1) = backend("127.0.0.1");
    let (b2, _t2) = backend("127.0.0.2");
    let (peer, web, stats1, stats2) = (free_port(), free_port(), free_port(), free_port());
    let tmp = tempfile::tempdir().unwrap();
    let cfg = |stats: u16| {
        format!(
            r#"[cluster]
name = "p"
domain = "p.test"
[vip]
address = "127.0.0.100/8"
[[nodes]]
name = "n1"
address = "127.0.0.1"
role = "server"
[[nodes]]
name = "n2"
address = "127.0.0.2"
role = "server"
[lbd]
peer_port = {peer}
[stats]
listen = "127.0.0.1:{stats}"
[[services]]
name = "web"
listen = {web}
bind = "{bind}"
backends = [{{ address = "{b1}" }}, {{ address = "{b2}" }}]
check = {{ kind = "tcp", interval = "200ms" }}
"#,
            bind = if stats == stats1 {
                "127.0.0.1"
            } else {
                "127.0.0.2"
            }
        )
    };
    let (c1, c2) = (tmp.path().join("n1.toml"), tmp.path().join("n2.toml"));
    std::fs::write(&c1, cfg(stats1)).unwrap();
    std::fs::write(&c2, cfg(stats2)).unwrap();
    let mut n1 = Node::start("n1", &tmp.path().join("n1"), &c1);
    let mut n2 = Node::start("n2", &tmp.path().join("n2"), &c2);
    let server = b2.to_string();

    // Drain on n1: n2 has it when lbctl gets its answer.
    let shared = n1.set(&server, AdminState::Drain);
    assert_eq!(shared.peers, ["n2"], "{shared:?}\n{}", n1.log());
    assert!(shared.pending.is_empty(), "{shared:?}");
    n1.wait_admin(&server, "DRAIN");
    let took = n2.wait_admin(&server, "DRAIN");
    println!("drain on n1 seen on n2 after {took:?} (after the answer)");

    // Both restart (n2 first, then n1): both keep it, from their own files.
    n2.stop();
    n1.stop();
    let mut n1 = Node::start("n1", &tmp.path().join("n1"), &c1);
    n1.wait_admin(&server, "DRAIN");
    let n2 = Node::start("n2", &tmp.path().join("n2"), &c2);
    n2.wait_admin(&server, "DRAIN");

    // A change while a peer is down reaches it when it is back (n1 retries).
    drop(n2);
    let shared = n1.set(&server, AdminState::Ready);
    assert_eq!(shared.pending.len(), 1, "{shared:?}");
    assert_eq!(shared.pending[0].peer, "n2");
    // n2's own file still says DRAIN; n1's newer change wins when they meet.
    let n2 = Node::start("n2", &tmp.path().join("n2"), &c2);
    let took = n2.wait_admin(&server, "UP");
    println!("enable made while n2 was down reached it {took:?} after its start");

    // A stranger on the peer port (not a server's address) gets nothing and is logged.
    let stranger =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stranger
        .bind(&"127.0.0.3:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    stranger
        .connect(
            &format!("127.0.0.1:{peer}")
                .parse::<SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let mut s: TcpStream = stranger.into();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let sync = serde_json::json!({"cmd": "sync", "args": {"from": "n2", "entries": [{
        "service": "web", "server": server, "state": "maint", "stamp": u64::MAX / 2, "by": "n2"}]}});
    let _ = writeln!(s, "{sync}");
    let mut answer = String::new();
    let _ = BufReader::new(&s).read_line(&mut answer);
    assert!(answer.is_empty(), "a stranger got an answer: {answer}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(n1.admin_of(&server), "UP", "a stranger changed the state");
    assert!(
        n1.log()
            .contains("refused a connection from an address that is no other server"),
        "{}",
        n1.log()
    );

    // A peer claiming another's name is refused too: n1's own port, from n2's address, as
    // "n3".
    let liar = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    liar.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    liar.connect(
        &format!("127.0.0.1:{peer}")
            .parse::<SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let mut s: TcpStream = liar.into();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let lie = serde_json::json!({"cmd": "sync", "args": {"from": "n3", "entries": []}});
    writeln!(s, "{lie}").unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["ok"], false, "{v}");

    // `flows` on the peer port (the new holder of a VIP asks the node that parked it):
    // read from the kernel. This very connection is one flow on n1's 127.0.0.1; an
    // address that is not local counts nothing.
    let flows =
        serde_json::json!({"cmd": "flows", "args": {"addresses": ["127.0.0.1", "192.0.2.1"]}});
    writeln!(s, "{flows}").unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["result"]["local_addresses"], 1, "{v}");
    assert!(v["result"]["flows"].as_u64().unwrap() >= 1, "{v}");
    n1.stop();
}
