//! Configuration errors: every one names the file, the place, the key, the value and what
//! is allowed, so an operator can fix the file without reading code.

use std::fmt;
use std::path::{Path, PathBuf};

/// A cluster.toml problem. `Display` gives the whole operator-facing message:
///
/// `FILE:LINE:COL: KEY: PROBLEM (found VALUE); allowed: ALLOWED`
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `<cluster.toml>` for text without a path.
    pub file: PathBuf,
    /// 1-based line and column of the offending value (0 when not tied to a place).
    pub line: usize,
    pub column: usize,
    /// Key path such as `nodes[1].address`; empty for whole-file problems.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// The offending value as written, if any.
    pub found: Option<String>,
    /// What is allowed instead.
    pub allowed: Option<String>,
}

impl ConfigError {
    pub(crate) fn io(path: &Path, e: &std::io::Error) -> Self {
        ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            problem: format!("cannot read file: {e}"),
            found: None,
            allowed: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.problem)?;
        if let Some(found) = &self.found {
            write!(f, " (found {found})")?;
        }
        if let Some(allowed) = &self.allowed {
            write!(f, "; allowed: {allowed}")?;
        }
        Ok(())
    }
}

/// How a path is shown in messages.
pub(crate) fn display_path(path: Option<&Path>) -> PathBuf {
    path.map_or_else(|| PathBuf::from("<cluster.toml>"), Path::to_path_buf)
}
