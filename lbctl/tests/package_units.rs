//! The systemd units and package metadata, checked without building the package (the full
//! build / lintian / install / upgrade / purge run is `packaging/test-package.sh`).
//!
//! Index:
//! - `units_have_the_required_settings`: notify + watchdog, restart, reload by config check
//!   then SIGHUP, the user, the shared run directory kept on stop, ordering.
//! - `units_grant_exactly_the_capabilities_and_families_each_needs`
//! - `units_rate_3_or_lower_offline`: `systemd-analyze security --offline=yes` (skips loudly
//!   when systemd-analyze is missing).
//! - `maintainer_scripts_parse_and_every_asset_exists`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `Key=value` lines of a unit, values of repeated keys in order.
fn unit(name: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo().join("systemd").join(name)).unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once('=').unwrap();
        out.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    out
}

fn one<'a>(u: &'a BTreeMap<String, Vec<String>>, k: &str) -> &'a str {
    let v = u.get(k).unwrap_or_else(|| panic!("{k} missing"));
    assert_eq!(v.len(), 1, "{k} set more than once: {v:?}");
    &v[0]
}

#[test]
fn units_have_the_required_settings() {
    for (name, bin) in [("vrrpd.service", "vrrpd"), ("lbd.service", "lbd")] {
        let u = unit(name);
        assert_eq!(one(&u, "Type"), "notify", "{name}");
        assert!(one(&u, "WatchdogSec").ends_with('s'), "{name}");
        assert_eq!(one(&u, "Restart"), "on-failure", "{name}");
        assert_eq!(
            one(&u, "ExecStart"),
            format!(
                "/usr/sbin/{bin} --config /etc/k3s-ha/cluster.toml --run-dir /run/k3s-ha \
                 --state-dir /var/lib/k3s-ha"
            )
        );
        // What must survive a restart (lbd's admin states, vrrpd's maintenance) is written
        // under ProtectSystem=strict only because systemd makes this directory writable.
        assert_eq!(one(&u, "StateDirectory"), "k3s-ha", "{name}");
        assert_eq!(one(&u, "StateDirectoryMode"), "0750", "{name}");
        assert_eq!(
            u["ExecReload"],
            [
                "/usr/bin/lbctl config check /etc/k3s-ha/cluster.toml",
                "/bin/kill -HUP $MAINPID"
            ],
            "{name}: reload checks the file, then signals"
        );
        assert_eq!(one(&u, "User"), "k3s-ha");
        assert_eq!(one(&u, "Group"), "k3s-ha");
        assert_eq!(one(&u, "RuntimeDirectory"), "k3s-ha");
        assert_eq!(
            one(&u, "RuntimeDirectoryPreserve"),
            "yes",
            "{name}: stopping one unit must not delete the other's socket"
        );
        for k in [
            "NoNewPrivileges",
            "ProtectHome",
            "PrivateTmp",
            "PrivateDevices",
            "ProtectKernelTunables",
            "ProtectControlGroups",
        ] {
            assert_eq!(one(&u, k), "yes", "{name}: {k}");
        }
        assert_eq!(one(&u, "ProtectSystem"), "strict", "{name}");
        assert_eq!(one(&u, "WantedBy"), "multi-user.target", "{name}");
    }
    // vrrpd after lbd: on stop (reverse order) vrrpd hands the VIP over first.
    let v = unit("vrrpd.service");
    assert!(one(&v, "After").split(' ').any(|x| x == "lbd.service"));
    let l = unit("lbd.service");
    assert!(!one(&l, "After").contains("vrrpd"));
}

#[test]
fn units_grant_exactly_the_capabilities_and_families_each_needs() {
    let v = unit("vrrpd.service");
    assert_eq!(
        one(&v, "CapabilityBoundingSet"),
        "CAP_NET_ADMIN CAP_NET_RAW"
    );
    assert_eq!(one(&v, "AmbientCapabilities"), "CAP_NET_ADMIN CAP_NET_RAW");
    assert_eq!(
        one(&v, "RestrictAddressFamilies"),
        "AF_INET AF_INET6 AF_NETLINK AF_PACKET AF_UNIX"
    );
    let l = unit("lbd.service");
    assert_eq!(one(&l, "CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one(&l, "AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    // AF_NETLINK: getifaddrs(3), by which lbd finds which node it is.
    assert_eq!(
        one(&l, "RestrictAddressFamilies"),
        "AF_INET AF_INET6 AF_UNIX AF_NETLINK"
    );
}

#[test]
fn units_rate_3_or_lower_offline() {
    k3sha_support::tools::require("systemd-analyze");
    for name in ["vrrpd.service", "lbd.service"] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(repo().join("systemd").join(name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no score for {name}:\n{text}"));
        eprintln!("MEASURED {name}: systemd-analyze security --offline=yes {score}");
        assert!(score <= 3.0, "{name} rates {score}:\n{text}");
    }
}

#[test]
fn maintainer_scripts_parse_and_every_asset_exists() {
    for s in ["postinst", "prerm", "postrm"] {
        let path = repo().join("packaging/debian").join(s);
        let st = Command::new("sh").arg("-n").arg(&path).status().unwrap();
        assert!(st.success(), "{s} does not parse");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{s}");
        assert!(text.contains("\nset -e\n"), "{s}");
        // Tolerates a machine without systemd running (a container, a build host).
        if text.contains("systemctl") {
            assert!(text.contains("[ -d /run/systemd/system ]"), "{s}");
        }
    }
    let manifest = std::fs::read_to_string(repo().join("lbctl/Cargo.toml")).unwrap();
    let mut n = 0;
    for line in manifest.lines() {
        let line = line.trim();
        let Some(src) = line
            .strip_prefix("[\"../")
            .and_then(|l| l.split('"').next())
        else {
            continue;
        };
        n += 1;
        assert!(
            repo().join(src).exists(),
            "cargo-deb asset {src} does not exist"
        );
    }
    assert!(n >= 10, "only {n} assets found in lbctl/Cargo.toml");
}
