//! Raw serde structs: exactly what may be written in cluster.toml, nothing validated yet.
//!
//! Every struct denies unknown fields. Values that validation may reject are kept as
//! [`Spanned`] so the error can point at their line and column.

use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::error::ConfigError;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    pub(crate) cluster: RawCluster,
    pub(crate) vip: S<RawVip>,
    #[serde(default)]
    pub(crate) vrrp: RawVrrp,
    pub(crate) nodes: S<Vec<S<RawNode>>>,
    pub(crate) services: Option<S<Vec<S<RawService>>>>,
    #[serde(default)]
    pub(crate) stats: RawStats,
    #[serde(default)]
    pub(crate) lbd: RawLbd,
    #[serde(default)]
    pub(crate) k3s: RawK3s,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub(crate) name: S<String>,
    pub(crate) domain: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVip {
    pub(crate) address: Option<S<String>>,
    pub(crate) address6: Option<S<String>>,
    pub(crate) interface: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVrrp {
    pub(crate) vrid: Option<S<i64>>,
    pub(crate) version: Option<S<i64>>,
    pub(crate) interval: Option<S<String>>,
    pub(crate) preempt: Option<bool>,
    pub(crate) preempt_delay: Option<S<String>>,
    pub(crate) accept_mode: Option<bool>,
    pub(crate) only_cluster_nodes: Option<bool>,
    pub(crate) password: Option<S<String>>,
    pub(crate) checksum: Option<S<String>>,
    pub(crate) unicast: Option<bool>,
    pub(crate) garp_repeat: Option<S<i64>>,
    pub(crate) garp_interval: Option<S<String>>,
    pub(crate) garp_refresh: Option<S<String>>,
    pub(crate) virtual_mac: Option<bool>,
    pub(crate) notify: Option<S<String>>,
    pub(crate) handover_timeout: Option<S<String>>,
    #[serde(default)]
    pub(crate) track: RawTrack,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrack {
    /// `"off"`, `"fault"`, or a weight such as `-50`.
    pub(crate) lbd: Option<S<RawEffect>>,
    pub(crate) lbd_service: Option<S<String>>,
    pub(crate) lbd_interval: Option<S<String>>,
    pub(crate) link: Option<bool>,
    #[serde(default)]
    pub(crate) script: Vec<S<RawTrackScript>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawEffect {
    Weight(i64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrackScript {
    pub(crate) name: S<String>,
    pub(crate) command: S<String>,
    pub(crate) interval: Option<S<String>>,
    pub(crate) timeout: Option<S<String>>,
    pub(crate) rise: Option<S<i64>>,
    pub(crate) fall: Option<S<i64>>,
    pub(crate) effect: Option<S<RawEffect>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub(crate) name: S<String>,
    pub(crate) address: S<String>,
    pub(crate) address6: Option<S<String>>,
    pub(crate) role: S<String>,
    pub(crate) priority: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) name: S<String>,
    pub(crate) listen: S<i64>,
    pub(crate) bind: Option<S<String>>,
    pub(crate) backend_port: Option<S<i64>>,
    pub(crate) backends: Option<S<RawBackends>>,
    pub(crate) balance: Option<S<String>>,
    pub(crate) check: Option<RawCheck>,
    #[serde(default)]
    pub(crate) timeouts: RawTimeouts,
    pub(crate) max_connections: Option<S<i64>>,
    pub(crate) retries: Option<S<i64>>,
    pub(crate) close_on_down: Option<bool>,
}

/// `backends = "servers"` (a role) or a list of `"host:port"` / `{ address, weight, backup }`.
#[derive(Debug)]
pub(crate) enum RawBackends {
    Role(String),
    List(Vec<S<RawBackend>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub(crate) address: S<String>,
    pub(crate) weight: Option<S<i64>>,
    pub(crate) backup: Option<bool>,
}

impl<'de> Deserialize<'de> for RawBackends {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBackends;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a node role such as \"servers\", or a list of \"host:port\" or { address = \"host:port\", weight = N, backup = true }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawBackends::Role(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<S<RawBackendEntry>>()? {
                    let span = b.span();
                    let mut entry = b.into_inner().0;
                    if entry.address.span() == (0..0) {
                        entry.address = Spanned::new(span.clone(), entry.address.into_inner());
                    }
                    out.push(Spanned::new(span, entry));
                }
                Ok(RawBackends::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One list entry: a bare `"host:port"` string or a table.
struct RawBackendEntry(RawBackend);

impl<'de> Deserialize<'de> for RawBackendEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBackendEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "\"host:port\" or { address = \"host:port\", weight = N, backup = true }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                // The span is filled in from the enclosing `Spanned` by the caller.
                Ok(RawBackendEntry(RawBackend {
                    address: Spanned::new(0..0, v.to_owned()),
                    weight: None,
                    backup: None,
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawBackend::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawBackendEntry)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    pub(crate) kind: Option<S<String>>,
    pub(crate) path: Option<S<String>>,
    pub(crate) expect: Option<S<Vec<S<i64>>>>,
    pub(crate) host: Option<S<String>>,
    pub(crate) interval: Option<S<String>>,
    pub(crate) fast_interval: Option<S<String>>,
    pub(crate) timeout: Option<S<String>>,
    pub(crate) rise: Option<S<i64>>,
    pub(crate) fall: Option<S<i64>>,
    pub(crate) ca: Option<S<String>>,
    pub(crate) client_cert: Option<S<String>>,
    pub(crate) client_key: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub(crate) connect: Option<S<String>>,
    pub(crate) idle: Option<S<String>>,
    pub(crate) tunnel: Option<S<String>>,
    pub(crate) half_close: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStats {
    pub(crate) listen: Option<S<String>>,
    pub(crate) user: Option<S<String>>,
    pub(crate) password: Option<S<String>>,
    pub(crate) refresh: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLbd {
    pub(crate) max_connections: Option<S<i64>>,
    pub(crate) drain_timeout: Option<S<String>>,
    pub(crate) peer_port: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawK3s {
    pub(crate) version: Option<S<String>>,
    pub(crate) server_args: Option<Vec<S<String>>>,
    pub(crate) agent_args: Option<Vec<S<String>>>,
    pub(crate) airgap: Option<S<String>>,
}

/// Parse the text into raw structs; syntax, type and unknown-key errors come out here.
pub(crate) fn from_str(text: &str, path: Option<&Path>) -> Result<Raw, ConfigError> {
    let file = super::error::display_path(path);
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        ConfigError {
            file: file.clone(),
            line,
            column,
            key: String::new(),
            problem: format!("invalid TOML: {}", e.message()),
            found: None,
            allowed: None,
        }
    })?;
    serde_path_to_error::deserialize::<_, Raw>(de).map_err(|e| {
        // Spanned<T> shows up in serde's path as a private field; drop it.
        let key = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "")
            .replace("$__serde_spanned_private_value", "");
        let inner = e.into_inner();
        let (line, column) = inner
            .span()
            .map(|s| line_col(text, s.start))
            .unwrap_or((0, 0));
        let (problem, allowed) = split_serde_message(inner.message());
        ConfigError {
            file,
            line,
            column,
            key: if key == "." { String::new() } else { key },
            problem,
            found: None,
            allowed,
        }
    })
}

/// serde says e.g. "unknown field `vipp`, expected one of `a`, `b`"; split the allowed part off.
fn split_serde_message(msg: &str) -> (String, Option<String>) {
    let msg = msg.trim_end_matches('\n');
    for sep in [", expected one of ", ", expected "] {
        if let Some((problem, allowed)) = msg.split_once(sep) {
            let allowed = match allowed {
                "i64" | "u64" | "i32" | "u32" | "u16" | "u8" => "an integer",
                "f64" => "a number",
                other => other,
            };
            return (problem.to_owned(), Some(allowed.to_owned()));
        }
    }
    (msg.to_owned(), None)
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}
