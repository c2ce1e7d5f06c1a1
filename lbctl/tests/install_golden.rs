//! Golden files of everything `lbctl install` renders, for examples/cluster.toml (reference)
//! and examples/second-cluster.toml (second): every file at its system path, plus
//! `steps.txt` (commands and waits in order, then the notes printed to the operator).
//!
//! Regenerate with `K3SHA_BLESS=1 cargo test -p lbctl --test install_golden`, then review
//! the diff.
//!
//! Index:
//! - `golden_files_match`: every target, every node, both clusters.
//! - `replanning_from_the_rendered_files_changes_nothing`: idempotence of plan().
//! - `nothing_of_the_reference_lab_leaks_into_the_second_cluster`.
//! - `dry_run_touches_nothing`: `run(--dry-run --render DIR)` leaves DIR empty.
//! - `render_writes_files_with_their_modes`: token generated once (0600), reused, required.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod install_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use install_support::{clusters, golden_state};
use lbctl::install::{describe_steps, plan, InstallOpts, Plan, Target};

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/install")
}

/// Every (variant dir, plan) for one cluster.
fn variants(cluster: &common::config::Cluster) -> Vec<(String, Plan)> {
    let state = golden_state(cluster);
    let mut out = Vec::new();
    for node in &cluster.nodes {
        let opts = InstallOpts {
            node: Some(node.name.clone()),
            ..InstallOpts::default()
        };
        out.push((
            format!("k3s/{}", node.name),
            plan(cluster, Target::K3s, &opts, &state).unwrap(),
        ));
    }
    let opts = InstallOpts::default();
    out.push((
        "dns".into(),
        plan(cluster, Target::Dns, &opts, &state).unwrap(),
    ));
    out.push((
        "ingress-helmchart".into(),
        plan(cluster, Target::Ingress, &opts, &state).unwrap(),
    ));
    let mut with_helm = state.clone();
    with_helm.tools.helm = true;
    out.push((
        "ingress-helm".into(),
        plan(cluster, Target::Ingress, &opts, &with_helm).unwrap(),
    ));
    out.push((
        "demo-app".into(),
        plan(cluster, Target::DemoApp, &opts, &state).unwrap(),
    ));
    out
}

fn expected_files(p: &Plan) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m: BTreeMap<PathBuf, Vec<u8>> = p
        .files
        .iter()
        .map(|f| {
            let rel = f.path.strip_prefix("/").unwrap().to_path_buf();
            let mut contents = format!("# mode {:04o}\n", f.mode).into_bytes();
            contents.extend_from_slice(&f.contents);
            (rel, contents)
        })
        .collect();
    let mut steps = describe_steps(p);
    steps.push_str("notes:\n");
    for n in &p.notes {
        steps.push_str(&format!("  {n}\n"));
    }
    m.insert("steps.txt".into(), steps.into_bytes());
    m
}

fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn golden_files_match() {
    let bless = std::env::var_os("K3SHA_BLESS").is_some();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (short, cluster) in clusters() {
        for (variant, p) in variants(&cluster) {
            let dir = golden_root().join(short).join(&variant);
            let want = expected_files(&p);
            if bless {
                let _ = std::fs::remove_dir_all(&dir);
                for (rel, contents) in &want {
                    let dest = dir.join(rel);
                    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                    std::fs::write(dest, contents).unwrap();
                }
                continue;
            }
            let have = read_tree(&dir);
            for (rel, contents) in &want {
                checked += 1;
                match have.get(rel) {
                    None => problems.push(format!(
                        "{short}/{variant}: missing golden {}",
                        rel.display()
                    )),
                    Some(g) if g != contents => problems.push(format!(
                        "{short}/{variant}/{}: differs\n--- golden\n{}\n--- rendered\n{}",
                        rel.display(),
                        String::from_utf8_lossy(g),
                        String::from_utf8_lossy(contents)
                    )),
                    Some(_) => {}
                }
            }
            for rel in have.keys().filter(|r| !want.contains_key(*r)) {
                problems.push(format!(
                    "{short}/{variant}: stale golden {} (no longer rendered)",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} golden problem(s); if the change is intended, run with K3SHA_BLESS=1 and review:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        bless || checked > 20,
        "only {checked} golden files compared"
    );
}

#[test]
fn replanning_from_the_rendered_files_changes_nothing() {
    for (_, cluster) in clusters() {
        for target in [Target::Dns, Target::K3s] {
            let opts = InstallOpts {
                node: Some(cluster.nodes[1].name.clone()),
                ..InstallOpts::default()
            };
            let mut state = golden_state(&cluster);
            let first = plan(&cluster, target, &opts, &state).unwrap();
            for f in &first.files {
                state.existing.insert(f.path.clone(), f.contents.clone());
            }
            state.today.day += 1;
            let second = plan(&cluster, target, &opts, &state).unwrap();
            assert_eq!(first.files, second.files, "{} {target:?}", cluster.name);
        }
    }
}

#[test]
fn nothing_of_the_reference_lab_leaks_into_the_second_cluster() {
    let all = clusters();
    let (_, second) = &all[1];
    for (variant, p) in variants(second) {
        for (rel, contents) in expected_files(&p) {
            let text = String::from_utf8_lossy(&contents);
            for needle in ["192.168.168", "k3s.test.local", "lx-k3s", "k3s-lab"] {
                assert!(
                    !text.contains(needle),
                    "{variant}/{}: contains {needle:?}",
                    rel.display()
                );
            }
        }
    }
}

#[test]
fn dry_run_touches_nothing() {
    for (_, cluster) in clusters() {
        let dir = tempfile::tempdir().unwrap();
        for target in [Target::K3s, Target::Dns, Target::Ingress, Target::DemoApp] {
            let opts = InstallOpts {
                dry_run: true,
                render_dir: Some(dir.path().to_path_buf()),
                node: Some(cluster.nodes[1].name.clone()),
            };
            lbctl::install::run(&cluster, target, &opts).unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{}: dry run wrote {left:?}", cluster.name);
    }
}

#[test]
fn render_writes_files_with_their_modes() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_, cluster) = &clusters()[0];
    let dir = tempfile::tempdir().unwrap();
    // The first server generates the token when none exists.
    let opts = InstallOpts {
        render_dir: Some(dir.path().to_path_buf()),
        node: Some(cluster.nodes[0].name.clone()),
        ..InstallOpts::default()
    };
    lbctl::install::run(cluster, Target::K3s, &opts).unwrap();
    let token_path = dir.path().join("etc/k3s-ha/k3s-token");
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert_eq!(token.trim().len(), 64, "{token:?}");
    assert!(token.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let config = dir.path().join("etc/rancher/k3s/config.yaml");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // Re-run: the token is reused, and a joining server finds it.
    lbctl::install::run(cluster, Target::K3s, &opts).unwrap();
    assert_eq!(std::fs::read_to_string(&token_path).unwrap(), token);
    let join = InstallOpts {
        node: Some(cluster.nodes[2].name.clone()),
        ..opts.clone()
    };
    lbctl::install::run(cluster, Target::K3s, &join).unwrap();
    assert_eq!(std::fs::read_to_string(&token_path).unwrap(), token);
    // Without a token a joining node is refused with the way out.
    let empty = tempfile::tempdir().unwrap();
    let join = InstallOpts {
        render_dir: Some(empty.path().to_path_buf()),
        ..join
    };
    let err = lbctl::install::run(cluster, Target::K3s, &join).unwrap_err();
    assert!(
        format!("{err:#}").contains("copy it to this node"),
        "{err:#}"
    );
}
