//! `cluster.toml`: one file, identical on every node, describing the whole cluster.
//!
//! Loading is two steps: serde (with `deny_unknown_fields`) into the raw structs of
//! `raw.rs`, which keep the source spans of every value that validation may complain about,
//! then `validate.rs` turns them into the [`Cluster`] model, filling defaults. Every error is
//! a [`ConfigError`] naming file, line, column, key path, the bad value and what is allowed.

// Config errors are rich on purpose (they are the whole operator message) and only ever
// travel on the cold path of loading a file, so their size does not matter.
#![allow(clippy::result_large_err)]

mod error;
mod identify;
mod model;
pub mod raw;
mod validate;

pub use error::ConfigError;
pub use identify::{identify, identify_with, local_addresses, IdentifyError, NodeSource};
pub use model::*;

/// Port ranges (inclusive) a k3s server listens on itself; lbd never takes them.
pub const K3S_PORTS: &[(u16, u16)] = validate::K3S_PORTS;

use std::path::Path;

/// The reference lab (`examples/cluster.toml`), embedded so the lab and docs need no file.
pub const REFERENCE_LAB: &str = include_str!("../../../examples/cluster.toml");

/// Read and validate a cluster file.
pub fn load(path: &Path) -> Result<Cluster, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
    parse(&text, Some(path))
}

/// Validate cluster text; `path` is used in messages and recorded in [`Cluster::source`].
pub fn parse(text: &str, path: Option<&Path>) -> Result<Cluster, ConfigError> {
    let raw = raw::from_str(text, path)?;
    validate::validate(raw, text, path)
}

/// The embedded reference lab, parsed.
pub fn reference_lab() -> Cluster {
    #[expect(
        clippy::expect_used,
        reason = "the embedded file is checked by a unit test"
    )]
    parse(REFERENCE_LAB, Some(Path::new("examples/cluster.toml")))
        .expect("embedded reference lab is valid")
}
