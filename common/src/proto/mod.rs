//! The typed control protocol: every request the daemons serve on their control sockets
//! and every answer they give, defined once and used by all three programs.
//!
//! The transport is [`crate::ctl`]: one JSON line `{"cmd": "...", "args": {...}}` per
//! request, one line `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}` per
//! answer. This module gives those lines their types:
//!
//! - [`vrrpd`]: `status` ([`vrrpd::Status`]), `maintenance`, `reload`;
//! - [`lbd`]: `status` ([`lbd::Snapshot`], also the stats page's `/stats.json`),
//!   `set-server`, `set-weight`, `reload`, `upgrade`.
//!
//! A daemon parses a line into its `Request` enum (an unknown command or a missing argument
//! is answered with serde's message, naming what is allowed) and answers with its `Answer`
//! enum; a client calls the functions here, which send the request and parse the answer
//! into the type that request gets. Renaming a field changes both ends at compile time.
//! The JSON names are the wire format that `lbctl status --json`, the dump files and
//! scripts read, so they change only on purpose.

pub mod lbd;
pub mod vrrpd;

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ctl::{self, CtlError};

/// Send a typed request and parse the answer as `A`.
pub async fn request<A: DeserializeOwned>(
    path: &Path,
    req: &impl Serialize,
    timeout: Duration,
) -> Result<A, CtlError> {
    let line = serde_json::to_value(req).map_err(|e| CtlError::Protocol {
        path: path.into(),
        detail: e.to_string(),
    })?;
    let value = ctl::send_async(path, &line, timeout).await?;
    serde_json::from_value(value).map_err(|e| CtlError::Protocol {
        path: path.into(),
        detail: format!("unexpected answer: {e}"),
    })
}

/// Run one of this module's calls to completion from blocking code (lbctl): a small
/// runtime of its own.
pub fn block_on<T>(
    fut: impl std::future::Future<Output = Result<T, CtlError>>,
) -> Result<T, CtlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Io {
            path: "(runtime)".into(),
            source: e,
        })?;
    rt.block_on(fut)
}

/// An answer with nothing to say: `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Done {}
