//! Shared helpers of the installer tests (`install_*.rs`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use common::config::Cluster;
use lbctl::install::{Date, InstallState, TlsMaterial, Tools};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The example clusters, by short name.
pub fn clusters() -> Vec<(&'static str, Cluster)> {
    [
        ("reference", "examples/cluster.toml"),
        ("second", "examples/second-cluster.toml"),
        ("campus", "examples/campus-cluster.toml"),
    ]
    .into_iter()
    .map(|(short, rel)| {
        let path = repo_root().join(rel);
        let cluster = common::config::load(&path)
            .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
        (short, cluster)
    })
    .collect()
}

pub fn golden_date() -> Date {
    Date {
        year: 2026,
        month: 11,
        day: 24,
    }
}

/// Fixed TLS text for golden files (real certificates are random; see install_manifests.rs).
pub fn placeholder_tls(cluster: &Cluster) -> TlsMaterial {
    let pem = |kind: &str, what: &str| {
        format!(
            "-----BEGIN {kind}-----\nR09MREVO {what} {}\n-----END {kind}-----\n",
            cluster.name
        )
    };
    TlsMaterial {
        ca_cert_pem: pem("CERTIFICATE", "ca"),
        ca_key_pem: pem("PRIVATE KEY", "ca-key"),
        cert_pem: pem("CERTIFICATE", "leaf"),
        key_pem: pem("PRIVATE KEY", "leaf-key"),
    }
}

/// The deterministic state every golden file is rendered with.
pub fn golden_state(cluster: &Cluster) -> InstallState {
    let mut s = InstallState::empty(golden_date());
    s.token = Some(format!("golden-token-{}", cluster.name));
    s.tools = Tools {
        named_checkconf: true,
        named_checkzone: true,
        named_running: true,
        ..Tools::default()
    };
    s.tls = Some(placeholder_tls(cluster));
    s
}

/// Panic with an actionable message when a tool the tests need is missing (never skip):
/// the program must be in scripts/test-tools.txt, which scripts/test.sh installs.
pub fn require_tool(program: &str) {
    k3sha_support::tools::require(program);
}

/// Run a command, returning (success, stdout + stderr).
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = k3sha_support::tools::command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Write a plan's files under `dir` (as `--render` would) and return their paths there.
pub fn write_under(dir: &Path, plan: &lbctl::install::Plan) {
    for f in &plan.files {
        let dest = dir.join(f.path.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, &f.contents).unwrap();
    }
}
