//! `lbctl install k3s --render DIR`: the render root is the node being planned, not this
//! machine. Regression: the k3s target inspected this machine's /usr/local/bin/k3s and
//! systemctl instead of the render root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod install_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn lbctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lbctl"))
}

#[test]
fn render_inspects_the_render_root() {
    let root = tempfile::tempdir().unwrap();
    let cfg = install_support::repo_root().join("examples/cluster.toml");
    // The render root already has k3s installed (a stand-in that reports its version).
    let bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let k3s = bin.join("k3s");
    std::fs::write(
        &k3s,
        format!(
            "#!/bin/sh\necho \"k3s version {} (00000000)\"\n",
            lbctl::install::K3S_VERSION
        ),
    )
    .unwrap();
    std::fs::set_permissions(&k3s, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(root.path().join("etc/k3s-ha")).unwrap();
    std::fs::write(root.path().join("etc/k3s-ha/k3s-token"), "t0ken\n").unwrap();
    let out = lbctl()
        .arg("--config")
        .arg(&cfg)
        .args(["install", "k3s", "--node", "lx-k3s-server-02", "--render"])
        .arg(root.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // The binary in the root counts: the install keeps it (no k3s download).
    assert!(text.contains("INSTALL_K3S_SKIP_DOWNLOAD=true"), "{text}");
    assert!(
        root.path().join("etc/rancher/k3s/config.yaml").is_file(),
        "config written under the root"
    );
}
