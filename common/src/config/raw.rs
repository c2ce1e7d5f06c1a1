//! Raw serde structs: exactly what may be written in cluster.toml, nothing validated yet.
//!
//! Every struct denies unknown fields. Values that validation may reject are kept as
//! [`Spanned`] so the error can point at their line and column.
//!
//! The same structs are the schema writers use: they are also `Serialize`, and
//! [`to_string`] renders them as cluster.toml text (`lbctl import` builds a [`Raw`] and
//! renders it), so a key renamed here is renamed for the reader and the writers at once.
//! A writer makes values with [`unspanned`]; unset options and empty tables are left out.

use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
pub use toml::ser::Error as WriteError;
pub use toml::Spanned;

use super::error::ConfigError;

/// A value with its place in the text (`0..0` for one made by a writer).
pub type S<T> = Spanned<T>;

/// A value for a writer: it has no place in any text yet.
pub fn unspanned<T>(value: T) -> S<T> {
    Spanned::new(0..0, value)
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub cluster: RawCluster,
    pub vip: S<RawVip>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub vrrp: RawVrrp,
    pub nodes: S<Vec<S<RawNode>>>,
    pub services: Option<S<Vec<S<RawService>>>>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub stats: RawStats,
    #[serde(default, skip_serializing_if = "is_default")]
    pub lbd: RawLbd,
    #[serde(default, skip_serializing_if = "is_default")]
    pub k3s: RawK3s,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: S<String>,
    pub domain: S<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawVip {
    pub address: Option<S<String>>,
    pub address6: Option<S<String>>,
    pub interface: Option<S<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawVrrp {
    pub vrid: Option<S<i64>>,
    pub version: Option<S<i64>>,
    pub interval: Option<S<String>>,
    pub preempt: Option<bool>,
    pub preempt_delay: Option<S<String>>,
    pub accept_mode: Option<bool>,
    pub only_cluster_nodes: Option<bool>,
    pub password: Option<S<String>>,
    pub checksum: Option<S<String>>,
    pub unicast: Option<bool>,
    pub garp_repeat: Option<S<i64>>,
    pub garp_interval: Option<S<String>>,
    pub garp_refresh: Option<S<String>>,
    pub virtual_mac: Option<bool>,
    pub notify: Option<S<String>>,
    pub handover_timeout: Option<S<String>>,
    pub drain_established: Option<S<String>>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub track: RawTrack,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrack {
    /// `"off"`, `"fault"`, or a weight such as `-50`.
    pub lbd: Option<S<RawEffect>>,
    pub lbd_service: Option<S<String>>,
    pub lbd_interval: Option<S<String>>,
    pub link: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<S<RawTrackScript>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawEffect {
    Weight(i64),
    Word(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrackScript {
    pub name: S<String>,
    pub command: S<String>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub effect: Option<S<RawEffect>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: S<String>,
    pub address: S<String>,
    pub address6: Option<S<String>>,
    pub role: S<String>,
    pub priority: Option<S<i64>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: S<String>,
    pub listen: S<i64>,
    pub bind: Option<S<String>>,
    pub backend_port: Option<S<i64>>,
    pub backends: Option<S<RawBackends>>,
    pub balance: Option<S<String>>,
    pub check: Option<RawCheck>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub timeouts: RawTimeouts,
    pub max_connections: Option<S<i64>>,
    pub retries: Option<S<i64>>,
    pub close_on_down: Option<bool>,
    /// `"v1"`, `"v2"` or `"off"`: the PROXY protocol header sent to the servers.
    pub proxy_protocol: Option<S<String>>,
    /// Version 2 TLVs to add: `"crc32c"`, `"unique-id"`.
    pub proxy_protocol_tlvs: Option<S<Vec<S<String>>>>,
    /// Read a PROXY protocol header (v1 or v2) from every client, as HAProxy's
    /// `bind ... accept-proxy`; only from `trusted_proxies`.
    pub accept_proxy: Option<bool>,
    /// Networks (CIDR) whose connections may carry a PROXY header.
    pub trusted_proxies: Option<S<Vec<S<String>>>>,
}

/// `backends = "servers"` (a role) or a list of `"host:port"` / `{ address, weight, backup }`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawBackends {
    Role(String),
    List(Vec<S<RawBackend>>),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: S<String>,
    pub weight: Option<S<i64>>,
    pub backup: Option<bool>,
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

/// The reverse of the reader: a role as a string, a plain entry (no weight, no backup) as
/// `"host:port"`, any other as a table.
impl Serialize for RawBackends {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        match self {
            RawBackends::Role(role) => s.serialize_str(role),
            RawBackends::List(list) => {
                let mut seq = s.serialize_seq(Some(list.len()))?;
                for b in list {
                    let b = b.get_ref();
                    if b.weight.is_none() && b.backup.is_none() {
                        seq.serialize_element(b.address.get_ref())?;
                    } else {
                        seq.serialize_element(b)?;
                    }
                }
                seq.end()
            }
        }
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

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub kind: Option<S<String>>,
    pub path: Option<S<String>>,
    pub expect: Option<S<Vec<S<i64>>>>,
    pub host: Option<S<String>>,
    pub interval: Option<S<String>>,
    pub fast_interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub rise: Option<S<i64>>,
    pub fall: Option<S<i64>>,
    pub ca: Option<S<String>>,
    pub client_cert: Option<S<String>>,
    pub client_key: Option<S<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<S<String>>,
    pub idle: Option<S<String>>,
    pub tunnel: Option<S<String>>,
    pub half_close: Option<S<String>>,
    /// How long a client may take to send its PROXY header (`accept_proxy`).
    pub proxy_header: Option<S<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStats {
    pub listen: Option<S<String>>,
    pub user: Option<S<String>>,
    pub password: Option<S<String>>,
    pub refresh: Option<S<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLbd {
    pub max_connections: Option<S<i64>>,
    pub drain_timeout: Option<S<String>>,
    pub peer_port: Option<S<i64>>,
    pub threads: Option<S<i64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawK3s {
    pub version: Option<S<String>>,
    pub server_args: Option<Vec<S<String>>>,
    pub agent_args: Option<Vec<S<String>>>,
    pub airgap: Option<S<String>>,
}

/// cluster.toml text of `raw`, tables in the order of [`Raw`]'s fields; arrays of two or
/// more values one value a line. An unset option (`None`) is left out by the TOML writer
/// itself, so the fields need no `skip_serializing_if` of their own.
pub fn to_string(raw: &Raw) -> Result<String, WriteError> {
    toml::to_string_pretty(raw)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    fn u<T>(v: T) -> S<T> {
        unspanned(v)
    }

    fn text(v: &str) -> Option<S<String>> {
        Some(u(v.to_owned()))
    }

    /// Every key of the schema set (struct literals without `..`: a new field must be
    /// added here), written and read back: the writer and the reader agree on every key.
    #[test]
    fn every_key_written_is_read_back() {
        let script = |name: &str, effect: RawEffect| RawTrackScript {
            name: u(name.to_owned()),
            command: u("/bin/true --flag \"quoted\"".to_owned()),
            interval: text("2s"),
            timeout: text("1s"),
            rise: Some(u(2)),
            fall: Some(u(3)),
            effect: Some(u(effect)),
        };
        let check = RawCheck {
            kind: text("https"),
            path: text("/readyz"),
            expect: Some(u(vec![u(200), u(204)])),
            host: text("api.k3s.local"),
            interval: text("2s"),
            fast_interval: text("500ms"),
            timeout: text("1s"),
            rise: Some(u(2)),
            fall: Some(u(3)),
            ca: text("/etc/ca.pem"),
            client_cert: text("/etc/client.pem"),
            client_key: text("/etc/client.key"),
        };
        let timeouts = RawTimeouts {
            connect: text("auto"),
            idle: text("1m"),
            tunnel: text("1h"),
            half_close: text("10s"),
            proxy_header: text("3s"),
        };
        let service = |name: &str, backends: RawBackends| RawService {
            name: u(name.to_owned()),
            listen: u(8443),
            bind: text("vip"),
            backend_port: Some(u(6443)),
            backends: Some(u(backends)),
            balance: text("leastconn"),
            check: Some(check.clone()),
            timeouts: timeouts.clone(),
            max_connections: Some(u(1000)),
            retries: Some(u(2)),
            close_on_down: Some(true),
            proxy_protocol: text("v2"),
            proxy_protocol_tlvs: Some(u(vec![u("crc32c".to_owned())])),
            accept_proxy: Some(true),
            trusted_proxies: Some(u(vec![
                u("10.0.0.0/24".to_owned()),
                u("fd00::/64".to_owned()),
            ])),
        };
        let raw = Raw {
            cluster: RawCluster {
                name: u("k3s".to_owned()),
                domain: u("k3s.local".to_owned()),
            },
            vip: u(RawVip {
                address: text("10.0.0.100/24"),
                address6: text("fd00::100/64"),
                interface: text("eth0"),
            }),
            vrrp: RawVrrp {
                vrid: Some(u(51)),
                version: Some(u(3)),
                interval: text("1s"),
                preempt: Some(false),
                preempt_delay: text("5s"),
                accept_mode: Some(true),
                only_cluster_nodes: Some(true),
                password: text("secret"),
                checksum: text("rfc"),
                unicast: Some(true),
                garp_repeat: Some(u(5)),
                garp_interval: text("10ms"),
                garp_refresh: text("1m"),
                virtual_mac: Some(true),
                notify: text("/usr/local/bin/notify"),
                handover_timeout: text("2s"),
                drain_established: text("10m"),
                track: RawTrack {
                    lbd: Some(u(RawEffect::Weight(-50))),
                    lbd_service: text("api"),
                    lbd_interval: text("1s"),
                    link: Some(true),
                    script: vec![
                        u(script("a", RawEffect::Word("fault".to_owned()))),
                        u(script("b", RawEffect::Weight(-10))),
                    ],
                },
            },
            nodes: u(vec![u(RawNode {
                name: u("server-1".to_owned()),
                address: u("10.0.0.1".to_owned()),
                address6: text("fd00::1"),
                role: u("server".to_owned()),
                priority: Some(u(150)),
            })]),
            services: Some(u(vec![
                u(service("api", RawBackends::Role("servers".to_owned()))),
                u(service(
                    "pool",
                    RawBackends::List(vec![
                        u(RawBackend {
                            address: u("10.0.0.1:30443".to_owned()),
                            weight: None,
                            backup: None,
                        }),
                        u(RawBackend {
                            address: u("10.0.0.2:30443".to_owned()),
                            weight: Some(u(3)),
                            backup: Some(true),
                        }),
                    ]),
                )),
            ])),
            stats: RawStats {
                listen: text(":9000"),
                user: text("admin"),
                password: text("p"),
                refresh: text("10s"),
            },
            lbd: RawLbd {
                max_connections: Some(u(20_000)),
                drain_timeout: text("30s"),
                peer_port: Some(u(8405)),
                threads: Some(u(2)),
            },
            k3s: RawK3s {
                version: text("v1.33.2+k3s1"),
                server_args: Some(vec![u("--disable=traefik".to_owned())]),
                agent_args: Some(vec![u("--node-label=a=b".to_owned())]),
                airgap: text("/var/lib/airgap"),
            },
        };
        let written = to_string(&raw).unwrap();
        let back = from_str(&written, None).unwrap_or_else(|e| panic!("{e}\n{written}"));
        assert_eq!(back, raw, "{written}");
        assert_eq!(to_string(&back).unwrap(), written);
        // Tables in the schema's order.
        let heads: Vec<&str> = written.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(heads[..4], ["[cluster]", "[vip]", "[vrrp]", "[vrrp.track]"]);
        assert_eq!(heads.last(), Some(&"[k3s]"));
    }

    #[test]
    fn unset_options_and_empty_tables_are_left_out() {
        let raw = Raw {
            cluster: RawCluster {
                name: u("k3s".to_owned()),
                domain: u("k3s.local".to_owned()),
            },
            vip: u(RawVip {
                address: text("10.0.0.100/24"),
                address6: None,
                interface: None,
            }),
            vrrp: RawVrrp::default(),
            nodes: u(vec![u(RawNode {
                name: u("a".to_owned()),
                address: u("10.0.0.1".to_owned()),
                address6: None,
                role: u("server".to_owned()),
                priority: None,
            })]),
            services: None,
            stats: RawStats::default(),
            lbd: RawLbd::default(),
            k3s: RawK3s::default(),
        };
        let written = to_string(&raw).unwrap();
        assert_eq!(
            written,
            "[cluster]\nname = \"k3s\"\ndomain = \"k3s.local\"\n\n[vip]\naddress = \"10.0.0.100/24\"\n\n\
             [[nodes]]\nname = \"a\"\naddress = \"10.0.0.1\"\nrole = \"server\"\n"
        );
        assert_eq!(from_str(&written, None).unwrap(), raw);
    }
}
