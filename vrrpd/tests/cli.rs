//! vrrpd as a program, before it touches the network: startup errors. No root needed.
//!
//! - `a_bad_config_names_the_file_once`: regression, the path was printed twice
//!   (`loading F: F:8:1: ...`).
//! - `an_unusable_control_socket_is_a_startup_error`: regression, with a directory where
//!   `RUN_DIR/vrrpd.sock` belongs vrrpd logged an error and ran on, unreachable by lbctl.
//! - Both: no terminal colour codes in a pipe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GOOD: &str = r#"
[cluster]
name = "t"
domain = "t.example"

[vip]
address = "10.1.0.100/24"

[[nodes]]
name = "s1"
address = "10.1.0.11"
role = "server"
"#;

/// Run vrrpd with these arguments; (exit code, stderr). Bounded by 10 s.
fn vrrpd(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vrrpd"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "vrrpd did not exit: {}",
                std::fs::read_to_string(&err_path).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), std::fs::read_to_string(&err_path).unwrap())
}

#[test]
fn a_bad_config_names_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.toml");
    std::fs::write(
        &cfg,
        GOOD.replace("address = \"10.1.0.100/24\"", "adress = \"10.1.0.100/24\""),
    )
    .unwrap();
    let (code, err) = vrrpd(&[
        "--config".as_ref(),
        cfg.as_os_str(),
        "--node".as_ref(),
        "s1".as_ref(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    let path = cfg.display().to_string();
    assert_eq!(
        err.trim_end(),
        format!(
            "vrrpd: {path}:7:1: vip.adress: unknown field `adress`; allowed: `address`, \
             `address6`, `interface`"
        )
    );
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
}

#[test]
fn an_unusable_control_socket_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.toml");
    std::fs::write(&cfg, GOOD).unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(run.join("vrrpd.sock")).unwrap();
    let (code, err) = vrrpd(&[
        "--config".as_ref(),
        cfg.as_os_str(),
        "--node".as_ref(),
        "s1".as_ref(),
        "--run-dir".as_ref(),
        run.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    let sock = run.join("vrrpd.sock").display().to_string();
    assert!(
        err.contains(&format!("vrrpd: control socket {sock}: ")),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
}
