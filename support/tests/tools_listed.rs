//! Every external program the tests, the benchmarks and the lab run is in
//! `scripts/test-tools.txt`, so `scripts/test.sh` installs it on a fresh machine.
//!
//! Regression: `netns_virtual_mac` ran tcpdump, which the install script did not know
//! about; on a fresh machine the capture was empty and the test failed with "too few adverts
//! seen". This scans the sources for the places a program name is written down and fails
//! on any that is not listed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Source trees whose programs a fresh machine must have.
const TREES: &[&str] = &[
    "vrrpd/tests",
    "lbd/tests",
    "lbctl/tests",
    "tests",
    "benches",
    "support/src",
    "lbctl/src/lab",
];

/// Call shapes whose first string argument is a program.
const CALLS: &[&str] = &[
    "Command::new(\"",
    ".command(\"",
    ".exec(\"",
    "require_tool(\"",
    "tools::require(\"",
    "tools::command(\"",
    "tools::find(\"",
];

/// This project's programs (built here, or installed by its package).
const OWN: &[&str] = &["vrrpd", "lbd", "lbctl"];

/// Directories whose programs come from packages.
const SYSTEM_DIRS: &[&str] = &["/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_file() {
        if p.extension().is_some_and(|e| e == "rs") {
            out.push(p.to_path_buf());
        }
        return;
    }
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        rust_files(&e, out);
    }
}

/// `(line, program)` for every program named in `text`.
fn programs(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for call in CALLS {
            let mut rest = line;
            while let Some(i) = rest.find(call) {
                rest = &rest[i + call.len()..];
                if let Some(end) = rest.find('"') {
                    found.push((n + 1, rest[..end].to_owned()));
                }
            }
        }
        // String literals that are system program paths ("/usr/sbin/keepalived").
        for dir in SYSTEM_DIRS {
            let pat = format!("\"{dir}");
            let mut rest = line;
            while let Some(i) = rest.find(&pat) {
                rest = &rest[i + 1..];
                if let Some(end) = rest.find('"') {
                    found.push((n + 1, rest[..end].to_owned()));
                }
            }
        }
    }
    found
}

#[test]
fn every_program_the_tests_run_is_listed() {
    let root = workspace();
    let mut files = Vec::new();
    for t in TREES {
        rust_files(&root.join(t), &mut files);
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut unlisted = Vec::new();
    let mut seen = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (line, prog) in programs(&text) {
            // A command line ("/usr/bin/lbctl config check F"): its first word; a path:
            // its file name. The project's own programs come from the package.
            let first = prog.split_whitespace().next().unwrap_or_default();
            let base = first.rsplit('/').next().unwrap_or(first).to_owned();
            if base.is_empty() || base.contains(['{', '}']) || OWN.contains(&base.as_str()) {
                continue;
            }
            seen += 1;
            if k3sha_support::tools::source(&base).is_none() {
                let rel = f.strip_prefix(&root).unwrap().display().to_string();
                unlisted.push(format!("{rel}:{line}: `{prog}`"));
            }
        }
    }
    assert!(seen > 30, "the scan found only {seen} program names");
    assert!(
        unlisted.is_empty(),
        "programs run by tests but missing from scripts/test-tools.txt (a fresh machine \
         would not have them):\n{}",
        unlisted.join("\n")
    );
}

#[test]
fn the_scan_sees_every_call_shape() {
    let text = r#"
        let a = Command::new("alpha");
        ns.command("beta").arg("x");
        ns.exec("gamma", &[]);
        const K: &str = "/usr/sbin/delta";
        // Command::new("commented-out")
        let b = k3sha_support::tools::require("epsilon");
    "#;
    let names: Vec<String> = programs(text).into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        names,
        ["alpha", "beta", "gamma", "/usr/sbin/delta", "epsilon"]
    );
}
