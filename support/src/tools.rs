//! The external programs the tests, benchmarks and the lab run, from one list:
//! `scripts/test-tools.txt`, which `scripts/test.sh` reads to install them.
//!
//! A test never runs a program by bare name and hopes: it asks [`require`] (or
//! [`command`]), which
//! - panics when the program is not in the list (so the install script would not install
//!   it on a fresh machine), and
//! - panics naming the package when the program is listed but not installed,
//!
//! instead of letting a missing program turn into an empty capture and a vague assertion
//! later. Library code (the lab) uses [`find`], which returns the same facts as an error.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `scripts/test-tools.txt`, as compiled in.
pub const LIST: &str = include_str!("../../scripts/test-tools.txt");

/// Directories searched besides `PATH` (root's sbin directories are not on every user's
/// PATH, and the PyPI tools live in the test virtual environment).
pub const EXTRA_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    VENV_BIN,
];

/// Where `scripts/test.sh` puts the PyPI tools.
pub const VENV_BIN: &str = "/opt/k3s-ha-test-venv/bin";

/// Where a listed program comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Debian(String),
    PyPi(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Debian(p) => write!(f, "Debian package {p}"),
            Source::PyPi(p) => write!(f, "PyPI package {p}"),
        }
    }
}

/// Why a program cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error(
        "program `{0}` is not listed in scripts/test-tools.txt, so scripts/test.sh would not \
         install it on a fresh machine: add it there with the package it comes from"
    )]
    NotListed(String),
    #[error(
        "program `{name}` is not installed ({from}); scripts/test.sh installs it when run as \
         root, or install it yourself"
    )]
    Missing { name: String, from: Source },
}

/// Every (program, source) in the list, in file order.
pub fn listed() -> Vec<(String, Source)> {
    parse(LIST)
}

fn parse(text: &str) -> Vec<(String, Source)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?.to_owned();
            let src = parts.next()?;
            let source = match src.strip_prefix("pypi:") {
                Some(p) => Source::PyPi(p.to_owned()),
                None => Source::Debian(src.to_owned()),
            };
            Some((name, source))
        })
        .collect()
}

/// The source of a listed program.
pub fn source(name: &str) -> Option<Source> {
    listed()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
}

/// Where `name` is installed: `PATH`, then [`EXTRA_DIRS`]. `name` may be an absolute path
/// (`/usr/sbin/keepalived`): its file name must be listed.
pub fn find(name: &str) -> Result<PathBuf, ToolError> {
    let base = Path::new(name)
        .file_name()
        .map_or_else(|| name.to_owned(), |f| f.to_string_lossy().into_owned());
    let source = source(&base).ok_or_else(|| ToolError::NotListed(base.clone()))?;
    let missing = || ToolError::Missing {
        name: base.clone(),
        from: source.clone(),
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(missing())
        };
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(&base))
        .find(|p| is_executable(p))
        .ok_or_else(missing)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// For tests: the path of `name`, or a panic that says what to install.
pub fn require(name: &str) -> PathBuf {
    match find(name) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// For tests: a [`Command`] for `name`, after [`require`].
pub fn command(name: &str) -> Command {
    Command::new(require(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_parses_and_names_every_source() {
        let all = listed();
        assert!(all.len() > 20, "{all:?}");
        assert_eq!(
            source("tcpdump"),
            Some(Source::Debian("tcpdump".into())),
            "tcpdump must be installed by scripts/test.sh"
        );
        assert_eq!(
            source("kubernetes-validate"),
            Some(Source::PyPi("kubernetes-validate".into()))
        );
        let mut names: Vec<_> = all.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a program is listed twice");
    }

    #[test]
    fn unlisted_and_missing_programs_are_named() {
        assert_eq!(
            find("surely-not-a-program"),
            Err(ToolError::NotListed("surely-not-a-program".into()))
        );
        let e = find("/nonexistent/dir/tcpdump").unwrap_err();
        assert_eq!(
            e.to_string(),
            "program `tcpdump` is not installed (Debian package tcpdump); scripts/test.sh \
             installs it when run as root, or install it yourself"
        );
        assert!(find("sh").is_ok());
    }
}
