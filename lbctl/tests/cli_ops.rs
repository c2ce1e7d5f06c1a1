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

/// `lbctl upgrade lbd` says what happened and its exit status tells the package's postinst
/// what to do: 0 done, 1 the new lbd did not take over (the old one serves), 3 the running
/// lbd predates upgrades (restart it), 4 no lbd here.
#[test]
fn upgrade_lbd_tells_its_outcomes_apart() {
    use common::proto::lbd;
    let run = |dir: &Path| {
        let out = lbctl()
            .args(["upgrade", "lbd", "--timeout", "3", "--run-dir"])
            .arg(dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(dir.path());
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("lbd is not running here"), "{err}");

    // A done upgrade: the new PID, and what the old one does now.
    let guard = StandIn::serve(dir.path(), "lbd", |req: lbd::Request| async move {
        match req {
            lbd::Request::Upgrade(u) => {
                assert_eq!(u.timeout_ms, Some(3000));
                Response::from_result(Ok(lbd::Upgraded {
                    old_pid: 100,
                    new_pid: 200,
                    binary: "/usr/sbin/lbd".into(),
                    new_version: "0.2.0".into(),
                    took_ms: 12,
                    draining: 41,
                    drain_timeout_ms: 30_000,
                }))
            }
            other => Response::err(format!("not served here: {other:?}")),
        }
    });
    let (code, out, err) = run(dir.path());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "lbd upgraded: PID 200 (/usr/sbin/lbd 0.2.0) accepts on every listener since 12 ms after the request\n\
         PID 100 no longer accepts; it finishes its 41 open connection(s) (at most 30 s) and exits\n"
    );
    drop(guard);

    // The new one failed: the old one's reason.
    let guard = StandIn::serve(dir.path(), "lbd", |_: lbd::Request| async move {
        Response::err("upgrade failed, the running lbd goes on serving: the new lbd /usr/sbin/lbd (PID 7) did not take over: bad file")
    });
    let (code, out, err) = run(dir.path());
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("goes on serving") && err.contains("bad file"),
        "{err}"
    );
    drop(guard);

    // An lbd from before upgrades answers with serde's message for an unknown command.
    let _guard = StandIn::serve(dir.path(), "lbd", |req: serde_json::Value| async move {
        Response::err(format!(
            "bad request: unknown variant `upgrade`, expected one of `status`, `reload` (got {})",
            req["cmd"]
        ))
    });
    let (code, _, err) = run(dir.path());
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("predates upgrades") && err.contains("systemctl restart lbd"),
        "{err}"
    );
}
