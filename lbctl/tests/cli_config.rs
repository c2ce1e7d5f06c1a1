//! `lbctl config check`: exit codes, text, JSON, and the error path.

use std::path::Path;
use std::process::Command;

fn lbctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lbctl"))
}

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.toml")
}

#[test]
fn valid_file_prints_each_node_and_exits_0() {
    let out = lbctl()
        .args(["config", "check"])
        .arg(example())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(": valid\n"), "{text}");
    assert!(
        text.contains(
            "lx-k3s-server-01 (server, 192.168.168.111)\n  vrrpd: priority 200, master when all servers are up"
        ),
        "{text}"
    );
    assert!(
        text.contains("lx-k3s-server-03 (server, 192.168.168.113)\n  vrrpd: priority 180, backup"),
        "{text}"
    );
    assert!(
        text.contains("lbd: kube-apiserver :8443 -> 6443 leastconn"),
        "{text}"
    );
    assert!(
        text.contains("-> lx-k3s-server-02 192.168.168.112:30443"),
        "{text}"
    );
    assert!(
        text.contains("lx-k3s-agent-02 (agent, 192.168.168.122)\n  runs no vrrpd and no lbd"),
        "{text}"
    );
}

#[test]
fn json_output_is_the_same_model() {
    let out = lbctl()
        .args(["config", "check", "--json"])
        .arg(example())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["domain"], "k3s.test.local");
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5);
    assert_eq!(nodes[0]["runs"]["vrrpd"]["priority"], 200);
    assert_eq!(nodes[0]["runs"]["vrrpd"]["initial_role"], "master");
    assert_eq!(nodes[1]["runs"]["vrrpd"]["initial_role"], "backup");
    let fe = nodes[2]["runs"]["lbd"]["frontends"].as_array().unwrap();
    let ports: Vec<_> = fe
        .iter()
        .map(|f| {
            (
                f["listen"].as_u64().unwrap(),
                f["backend_port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [(8443, 6443), (80, 30080), (443, 30443)]);
    assert_eq!(nodes[3]["runs"], serde_json::json!({}));
}

#[test]
fn invalid_file_exits_1_with_the_whole_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cluster.toml");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace("192.168.168.112", "192.168.168.111");
    std::fs::write(&bad, text).unwrap();
    let out = lbctl()
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "error: {}:19:11: nodes[1].address: duplicate node address, already used by \
             nodes[0] on line 14 (found \"192.168.168.111\"); allowed: an address no other \
             node has\n",
            bad.display()
        )
    );
    let out = lbctl()
        .args(["config", "check", "--json"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["line"], 19);
    assert_eq!(v["key"], "nodes[1].address");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = lbctl()
        .args(["config", "check", "/nonexistent/cluster.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        "error: /nonexistent/cluster.toml: cannot read file: No such file or directory (os error 2)\n"
    );
}

/// Regression: `lbctl config check --json FILE | head` panicked on EPIPE. A reader that
/// went away ends lbctl quietly (exit 141, as SIGPIPE would).
#[test]
fn a_closed_pipe_is_not_a_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = lbctl()
        .args(["config", "check", "--json"])
        .arg(example())
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.status.code(), Some(141));
}

/// Regressions: every backend was printed once per server, and a service whose backends
/// use three ports was shown as `-> 18081`.
#[test]
fn services_are_shown_once_with_their_real_ports() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(
        &f,
        "[cluster]\nname = \"t\"\ndomain = \"t.example\"\n[vip]\naddress = \"10.1.0.100/24\"\n\
         [[nodes]]\nname = \"s1\"\naddress = \"10.1.0.11\"\nrole = \"server\"\n\
         [[nodes]]\nname = \"s2\"\naddress = \"10.1.0.12\"\nrole = \"server\"\n\
         [[services]]\nname = \"pg\"\nlisten = 5432\n\
         backends = [\"10.1.0.11:18081\", \"10.1.0.12:18082\", \"10.1.0.13:18083\"]\n",
    )
    .unwrap();
    let out = lbctl().args(["config", "check"]).arg(&f).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("lbd: pg :5432 -> 3 backends roundrobin"),
        "{text}"
    );
    for b in ["10.1.0.11:18081", "10.1.0.12:18082", "10.1.0.13:18083"] {
        assert_eq!(text.matches(b).count(), 1, "{b} in:\n{text}");
    }
}
