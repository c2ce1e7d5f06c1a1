//! `lbctl status` and friends against real control sockets (served in-process by
//! `k3sha_support::standin` over `common::ctl`): a daemon that does not answer, a
//! permission error for a user outside root and the k3s-ha group, and the answer rendered
//! for one that does answer.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::Command;

use common::ctl::Response;
use common::proto::vrrpd;
use k3sha_support::standin::StandIn;

fn lbctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lbctl"))
}

/// Serve a fake vrrpd on `dir/vrrpd.sock` until the returned guard is dropped.
fn fake_vrrpd(dir: &Path) -> StandIn {
    StandIn::serve(dir, "vrrpd", |req: vrrpd::Request| async move {
        match req {
            // vrrpd's answer as it goes over the wire (the parts a reader
            // may not do without).
            vrrpd::Request::Status => Response::ok(serde_json::json!({
                "node": "s1", "interface": "eth0", "vrid": 51, "version": 3,
                "accept_mode": true, "config": null, "reloads": 0,
                "last_reload_error": null, "stopping": false,
                "state": "master", "base_priority": 200,
                "effective_priority": 200, "master": "10.0.0.1",
                "vips": ["10.0.0.100"], "master_adver_interval_ms": 1000,
                "maintenance": false, "fault": false, "holding_vips": true,
                "family": "ipv4", "primary": "10.0.0.1",
                "vips_on_interface": ["10.0.0.100"], "vips_answered": [],
                "instances": [{
                    "state": "master", "base_priority": 200,
                    "effective_priority": 200, "master": "10.0.0.1",
                    "vips": ["10.0.0.100"], "master_adver_interval_ms": 1000,
                    "maintenance": false, "fault": false, "holding_vips": true,
                    "family": "ipv4", "primary": "10.0.0.1",
                    "vips_on_interface": ["10.0.0.100"], "vips_answered": []
                }]
            })),
            other => Response::err(format!("not served here: {other:?}")),
        }
    })
}

#[test]
fn status_reports_a_missing_daemon_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let out = lbctl()
        .args(["status", "--run-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("vrrpd: vrrpd is not running here: nothing answers on"),
        "{text}"
    );
    assert!(text.contains("lbd: lbd is not running here"), "{text}");
    assert!(
        String::from_utf8(out.stderr).unwrap().is_empty(),
        "no stack trace"
    );
}

#[test]
fn status_renders_a_daemon_that_answers() {
    let dir = tempfile::tempdir().unwrap();
    let _stop = fake_vrrpd(dir.path());
    let out = lbctl()
        .args(["status", "--run-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("VRRP master (priority 200, base 200); VIP 10.0.0.100 held here"),
        "{text}"
    );
    let out = lbctl()
        .args(["status", "--json", "--run-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["vrrp"]["state"], "master");
    assert!(v["lbd"]["error"].as_str().unwrap().contains("not running"));
}

#[test]
fn a_user_outside_root_and_k3s_ha_gets_a_permission_error() {
    // Needs root to switch to user nobody.
    if !k3sha_support::netns::require_root("a_user_outside_root_and_k3s_ha_gets_a_permission_error")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Let `nobody` reach the socket file itself, so the socket's own 0660 mode is tested.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let _stop = fake_vrrpd(dir.path());
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_lbctl"))
        .args(["maintenance", "on", "--run-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "error: permission denied on {}: run as root or as a member of group k3s-ha\n",
            dir.path().join("vrrpd.sock").display()
        )
    );
}

/// Regression: `lbctl status --cluster` exited 0 when every node was NOT ANSWERING.
#[test]
fn cluster_status_fails_when_a_node_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.toml");
    // Loopback addresses nothing listens on (stats port 1: refused at once).
    std::fs::write(
        &cfg,
        "[cluster]\nname = \"t\"\ndomain = \"t.example\"\n[vip]\naddress = \"127.0.57.100/24\"\n\
         [stats]\nlisten = \":1\"\n\
         [[nodes]]\nname = \"s1\"\naddress = \"127.0.57.11\"\nrole = \"server\"\n\
         [[nodes]]\nname = \"s2\"\naddress = \"127.0.57.12\"\nrole = \"server\"\n",
    )
    .unwrap();
    let out = lbctl()
        .args(["status", "--cluster", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("NOT ANSWERING"), "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
}
