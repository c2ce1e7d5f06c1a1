//! Raw serde structs (in progress).
use std::path::Path;

use super::ConfigError;

pub(crate) struct Raw;

pub(crate) fn from_str(_text: &str, path: Option<&Path>) -> Result<Raw, ConfigError> {
    Err(ConfigError {
        file: path.map(Path::to_path_buf).unwrap_or_else(|| "<cluster.toml>".into()),
        line: 0,
        column: 0,
        key: String::new(),
        problem: "parser not written yet".into(),
        found: None,
        allowed: None,
    })
}
