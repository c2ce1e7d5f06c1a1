//! `scripts/stages.sh`, which `scripts/test.sh` runs its stages with.
//!
//! Regression: under `set -euo pipefail` a failing `cargo test | tee` ended the script at
//! once, so the summary line and the package test never came, exactly when a reader needed
//! them. Now every stage runs, the summary always comes, and the exit status says whether
//! anything failed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn run(script: &str) -> (i32, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = k3sha_support::tools::command("bash")
        .current_dir(root)
        .arg("-c")
        .arg(format!(". scripts/stages.sh; {script}"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_failing_stage_does_not_stop_the_later_ones_nor_the_summary() {
    let log = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        log.path(),
        "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured\n\
         test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured\n",
    )
    .unwrap();
    let (code, out) = run(&format!(
        "stage first false; stage second echo ran-second; summary {}",
        log.path().display()
    ));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ran-second"), "{out}");
    assert!(out.contains("FAILED  first"), "{out}");
    assert!(out.contains("ok      second"), "{out}");
    assert!(
        out.contains("tests: 7 passed, 3 failed, 1 ignored"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("FAILED: first"), "{out}");
}

#[test]
fn all_stages_passing_exits_zero() {
    let (code, out) = run("stage one true; stage two true; summary");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("all stages passed"), "{out}");
}
