//! End-to-end test support: a lab guard that removes everything it made on drop, and the
//! report of a scenario run.

use std::path::{Path, PathBuf};

use lbctl::lab::scenarios::ScenarioReport;
use lbctl::lab::{self, LabOptions, LabState};

/// A running lab, torn down (processes, namespaces) when dropped, also on panic.
pub struct LabGuard {
    state_dir: PathBuf,
    _tmp: tempfile_dir::TempDir,
    pub state: LabState,
}

/// Directory holding the workspace's built binaries (next to the test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/e2e-HASH -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

impl LabGuard {
    /// Start a lab for `config_text` under a namespace prefix unique to this process.
    pub fn up(tag: &str, config_text: &str) -> anyhow::Result<LabGuard> {
        let tmp = tempfile_dir::TempDir::new()?;
        let state_dir = tmp.path().join("lab");
        let opts = LabOptions {
            config_text: config_text.to_owned(),
            config_origin: format!("e2e {tag}"),
            prefix: format!("e2e{tag}{}", std::process::id() % 100_000),
            state_dir: state_dir.clone(),
            host_link: false,
            bin_dir: bin_dir(),
        };
        let state = lab::up(&opts)?;
        Ok(LabGuard {
            state_dir,
            _tmp: tmp,
            state,
        })
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.state_dir) {
            eprintln!("e2e: lab cleanup failed: {e:#}");
        }
    }
}

/// Print each scenario's outcome to stderr (cargo test shows it when the test fails).
pub fn show(r: &[ScenarioReport]) {
    for s in r {
        eprintln!(
            "{}: passed={} recovered={:?} bound={:?} {:?} notes={:?}",
            s.name, s.passed, s.recovered_ms, s.bound_ms, s.outcome, s.notes
        );
    }
}

/// A minimal temp dir (avoids a runtime dependency on tempfile in the library).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new() -> std::io::Result<TempDir> {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir().join(format!("k3sha-e2e-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p)?;
            Ok(TempDir(p))
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
