//! Raw structs -> the validated [`Cluster`], filling defaults.
//!
//! Every rejection names the key path, the place, the value and what is allowed; the
//! golden tests in `tests/config_errors.rs` pin each whole message.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{display_path, ConfigError};
use super::model::*;
use super::raw::*;

/// Ports a k3s server listens on itself: lbd must never take them.
pub(crate) const K3S_PORTS: &[(u16, u16)] = &[(6443, 6444), (2379, 2382), (10248, 10259)];

const DURATION_ALLOWED: &str = "a duration such as \"100ms\", \"2s\", \"1m30s\" or \"1h\"";
/// `vrrp.drain_established` when unset: long enough for the watches and log streams a
/// maintenance window interrupts today, short enough that a forgotten flow ends.
pub(crate) const DEFAULT_DRAIN_ESTABLISHED: std::time::Duration =
    std::time::Duration::from_secs(600);

struct Ctx<'a> {
    text: &'a str,
    file: PathBuf,
}

type R<T> = Result<T, ConfigError>;

impl Ctx<'_> {
    fn err(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        problem: impl Into<String>,
        found: Option<String>,
        allowed: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = span
            .filter(|s| !(s.start == 0 && s.end == 0))
            .map_or((0, 0), |s| line_col(self.text, s.start));
        let allowed = allowed.into();
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            key: key.into(),
            problem: problem.into(),
            found,
            allowed: (!allowed.is_empty()).then_some(allowed),
        }
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    fn duration(&self, v: &S<String>, key: &str) -> R<Duration> {
        parse_duration(v.get_ref()).ok_or_else(|| {
            self.err(
                Some(v.span()),
                key,
                "not a duration",
                Some(quote(v.get_ref())),
                DURATION_ALLOWED,
            )
        })
    }

    fn opt_duration(&self, v: &Option<S<String>>, key: &str, default: Duration) -> R<Duration> {
        v.as_ref().map_or(Ok(default), |v| self.duration(v, key))
    }

    /// A duration within `lo..=hi`.
    fn duration_in(
        &self,
        v: &Option<S<String>>,
        key: &str,
        default: Duration,
        lo: Duration,
        hi: Duration,
    ) -> R<Duration> {
        let d = self.opt_duration(v, key, default)?;
        if d < lo || d > hi {
            let span = v.as_ref().map(Spanned::span);
            let found = v.as_ref().map(|v| quote(v.get_ref()));
            return Err(self.err(
                span,
                key,
                "duration out of range",
                found,
                format!("{} to {}", format_duration(lo), format_duration(hi)),
            ));
        }
        Ok(d)
    }

    fn int_in(&self, v: &Option<S<i64>>, key: &str, default: i64, lo: i64, hi: i64) -> R<i64> {
        match v {
            None => Ok(default),
            Some(v) if (lo..=hi).contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => Err(self.err(
                Some(v.span()),
                key,
                "number out of range",
                Some(v.get_ref().to_string()),
                format!("an integer from {lo} to {hi}"),
            )),
        }
    }

    fn word<T: Copy>(
        &self,
        v: &Option<S<String>>,
        key: &str,
        default: T,
        choices: &[(&str, T)],
    ) -> R<T> {
        let Some(v) = v else { return Ok(default) };
        choices
            .iter()
            .find(|(w, _)| *w == v.get_ref())
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let allowed: Vec<String> = choices.iter().map(|(w, _)| quote(w)).collect();
                self.err(
                    Some(v.span()),
                    key,
                    "unknown value",
                    Some(quote(v.get_ref())),
                    format!("one of {}", allowed.join(", ")),
                )
            })
    }
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

use toml::Spanned;

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    super::raw::line_col(text, offset)
}

/// `100ms`, `2s`, `1m30s`, `1h`, `1.5s`, `0`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = num.parse().ok()?;
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return None,
        };
        if !secs.is_finite() || secs > 86_400.0 * 365.0 {
            return None;
        }
        total += Duration::from_secs_f64(secs);
        rest = tail;
    }
    // Round to whole milliseconds: nothing in k3s-ha is finer.
    Some(Duration::from_millis(
        u64::try_from(total.as_millis()).ok()?,
    ))
}

fn net_contains_v4(net: IpNet4, a: Ipv4Addr) -> bool {
    let mask = if net.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(net.prefix))
    };
    u32::from(net.addr) & mask == u32::from(a) & mask
}

fn net_contains_v6(net: IpNet6, a: Ipv6Addr) -> bool {
    let mask = if net.prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(net.prefix))
    };
    u128::from(net.addr) & mask == u128::from(a) & mask
}

pub(crate) fn validate(raw: Raw, text: &str, path: Option<&Path>) -> R<Cluster> {
    let cx = Ctx {
        text,
        file: display_path(path),
    };

    // [cluster]
    let name = raw.cluster.name.get_ref().trim().to_owned();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(cx.err(
            Some(raw.cluster.name.span()),
            "cluster.name",
            "invalid cluster name",
            Some(quote(raw.cluster.name.get_ref())),
            "letters, digits, '-' and '_'",
        ));
    }
    let domain = raw
        .cluster
        .domain
        .get_ref()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if !is_dns_name(&domain) {
        return Err(cx.err(
            Some(raw.cluster.domain.span()),
            "cluster.domain",
            "invalid DNS domain",
            Some(quote(raw.cluster.domain.get_ref())),
            "dot-separated labels of letters, digits and '-', e.g. \"k3s.test.local\"",
        ));
    }

    let nodes = validate_nodes(&cx, &raw.nodes)?;
    let vip = validate_vip(&cx, &raw.vip, &raw.nodes, &nodes)?;
    let vrrp = validate_vrrp(&cx, &raw.vrrp)?;
    let stats = validate_stats(&cx, &raw.stats)?;
    let services = validate_services(
        &cx,
        raw.services.as_ref(),
        &raw.nodes,
        &nodes,
        &stats,
        &raw.stats,
    )?;
    let lbd = LbdSettings {
        max_connections: u32::try_from(cx.int_in(
            &raw.lbd.max_connections,
            "lbd.max_connections",
            50_000,
            1,
            10_000_000,
        )?)
        .unwrap_or(u32::MAX),
        drain_timeout: cx.duration_in(
            &raw.lbd.drain_timeout,
            "lbd.drain_timeout",
            Duration::from_secs(30),
            Duration::ZERO,
            Duration::from_secs(3600),
        )?,
        peer_port: u16::try_from(cx.int_in(
            &raw.lbd.peer_port,
            "lbd.peer_port",
            i64::from(DEFAULT_PEER_PORT),
            0,
            65_535,
        )?)
        .unwrap_or(DEFAULT_PEER_PORT),
        threads: match &raw.lbd.threads {
            None => None,
            Some(_) => Some(
                u16::try_from(cx.int_in(&raw.lbd.threads, "lbd.threads", 1, 1, 256)?).unwrap_or(1),
            ),
        },
    };
    if lbd.peer_port != 0 {
        let taken = services
            .iter()
            .find(|s| s.listen == lbd.peer_port)
            .map(|s| format!("service {:?}", s.name))
            .or_else(|| {
                (stats.listen.map(|l| l.port()) == Some(lbd.peer_port))
                    .then(|| "the stats page".to_owned())
            });
        if let Some(by) = taken {
            return Err(cx.err(
                raw.lbd.peer_port.as_ref().map(Spanned::span),
                "lbd.peer_port",
                format!("port {} is taken by {by}", lbd.peer_port),
                raw.lbd.peer_port.as_ref().map(|p| p.get_ref().to_string()),
                "a port no service or stats page listens on, or 0 (no sharing)",
            ));
        }
    }

    let k3s = validate_k3s(&cx, &raw.k3s)?;

    let mut cluster = Cluster {
        source: path.map(Path::to_path_buf),
        name,
        domain,
        vip,
        vrrp,
        nodes,
        services,
        stats,
        lbd,
        k3s,
    };

    // Tracking settings that refer to services.
    if let Some(svc) = &raw.vrrp.track.lbd_service {
        if cluster.service(svc.get_ref()).is_none() {
            let names: Vec<String> = cluster.services.iter().map(|s| quote(&s.name)).collect();
            return Err(cx.err(
                Some(svc.span()),
                "vrrp.track.lbd_service",
                "no service of that name",
                Some(quote(svc.get_ref())),
                format!("one of {}", names.join(", ")),
            ));
        }
    }
    derive_priorities(&cx, &raw.nodes, &mut cluster.nodes)?;
    Ok(cluster)
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn validate_nodes(cx: &Ctx<'_>, raw: &S<Vec<S<RawNode>>>) -> R<Vec<Node>> {
    if raw.get_ref().is_empty() {
        return Err(cx.err(
            Some(raw.span()),
            "nodes",
            "no nodes",
            None,
            "at least one [[nodes]] entry with role = \"server\"",
        ));
    }
    let mut out: Vec<Node> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut addrs: HashMap<IpAddr, usize> = HashMap::new();
    for (i, rn) in raw.get_ref().iter().enumerate() {
        let rn = rn.get_ref();
        let key = |k: &str| format!("nodes[{i}].{k}");
        let name = rn.name.get_ref().clone();
        if !is_dns_name(&name) || name.contains('.') {
            return Err(cx.err(
                Some(rn.name.span()),
                key("name"),
                "invalid node name",
                Some(quote(&name)),
                "a host name: letters, digits and '-', e.g. \"lx-k3s-server-01\"",
            ));
        }
        if let Some(&j) = names.get(&name) {
            let first = cx.line_of(&raw.get_ref()[j].get_ref().name.span());
            return Err(cx.err(
                Some(rn.name.span()),
                key("name"),
                format!("duplicate node name, already used by nodes[{j}] on line {first}"),
                Some(quote(&name)),
                "a name no other node has",
            ));
        }
        names.insert(name.clone(), i);
        let address: IpAddr = rn.address.get_ref().parse().map_err(|_| {
            cx.err(
                Some(rn.address.span()),
                key("address"),
                "not an IP address",
                Some(quote(rn.address.get_ref())),
                "an IPv4 or IPv6 address without prefix, e.g. \"192.168.168.111\"",
            )
        })?;
        let address6: Option<Ipv6Addr> = match &rn.address6 {
            None => None,
            Some(a) => Some(a.get_ref().parse().map_err(|_| {
                cx.err(
                    Some(a.span()),
                    key("address6"),
                    "not an IPv6 address",
                    Some(quote(a.get_ref())),
                    "an IPv6 address without prefix, e.g. \"fd00:168::111\"",
                )
            })?),
        };
        for (k, a, span) in [("address", Some(address), rn.address.span())]
            .into_iter()
            .chain(
                rn.address6
                    .iter()
                    .map(|s| ("address6", address6.map(IpAddr::V6), s.span())),
            )
        {
            let Some(a) = a else { continue };
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() && !is_test_loopback(a) {
                return Err(cx.err(
                    Some(span),
                    key(k),
                    "not a usable node address",
                    Some(quote(&a.to_string())),
                    "a unicast address on the cluster network",
                ));
            }
            if let Some(&j) = addrs.get(&a) {
                let first = cx.line_of(&raw.get_ref()[j].get_ref().address.span());
                return Err(cx.err(
                    Some(span),
                    key(k),
                    format!("duplicate node address, already used by nodes[{j}] on line {first}"),
                    Some(quote(&a.to_string())),
                    "an address no other node has",
                ));
            }
            addrs.insert(a, i);
        }
        let role = match rn.role.get_ref().as_str() {
            "server" => Role::Server,
            "agent" => Role::Agent,
            other => {
                return Err(cx.err(
                    Some(rn.role.span()),
                    key("role"),
                    "unknown role",
                    Some(quote(other)),
                    "\"server\" or \"agent\"",
                ))
            }
        };
        let priority = match (&rn.priority, role) {
            (None, _) => None,
            (Some(p), Role::Agent) => {
                return Err(cx.err(
                    Some(p.span()),
                    key("priority"),
                    "agents do not run vrrpd, so they take no VRRP priority",
                    Some(p.get_ref().to_string()),
                    "priority only on nodes with role = \"server\"",
                ))
            }
            (Some(p), Role::Server) => Some(
                u8::try_from(cx.int_in(&Some(p.clone()), &key("priority"), 0, 1, 254)?)
                    .unwrap_or(1),
            ),
        };
        out.push(Node {
            name,
            address,
            address6,
            role,
            priority,
        });
    }
    if !out.iter().any(|n| n.role == Role::Server) {
        return Err(cx.err(
            Some(raw.span()),
            "nodes",
            "no node has role = \"server\"",
            None,
            "at least one server: servers run vrrpd and lbd",
        ));
    }
    Ok(out)
}

/// Tests and the lab may run nodes on 127.0.0.0/8 addresses (one loopback per node).
fn is_test_loopback(a: IpAddr) -> bool {
    matches!(a, IpAddr::V4(v4) if v4.is_loopback())
}

/// Servers without an explicit priority get one from their order: 200, 190, 180, ...,
/// skipping values other servers chose, so every priority is unique.
fn derive_priorities(cx: &Ctx<'_>, raw: &S<Vec<S<RawNode>>>, nodes: &mut [Node]) -> R<()> {
    let mut taken: HashMap<u8, usize> = HashMap::new();
    for (i, (n, rn)) in nodes.iter().zip(raw.get_ref()).enumerate() {
        if let (Some(p), Some(rp)) = (n.priority, &rn.get_ref().priority) {
            if let Some(&j) = taken.get(&p) {
                return Err(cx.err(
                    Some(rp.span()),
                    format!("nodes[{i}].priority"),
                    format!(
                        "duplicate VRRP priority, already used by nodes[{j}] ({})",
                        nodes[j].name
                    ),
                    Some(p.to_string()),
                    "a priority from 1 to 254 that no other server has",
                ));
            }
            taken.insert(p, i);
        }
    }
    let servers = nodes.iter().filter(|n| n.role == Role::Server).count();
    let step = u8::try_from((199 / servers.max(1)).clamp(1, 10)).unwrap_or(1);
    let mut next: u8 = 200;
    for n in nodes.iter_mut().filter(|n| n.role == Role::Server) {
        if n.priority.is_some() {
            continue;
        }
        while taken.contains_key(&next) {
            next = next.checked_sub(1).filter(|&p| p >= 1).ok_or_else(|| {
                cx.err(
                    Some(raw.span()),
                    "nodes",
                    "cannot give every server a unique priority",
                    None,
                    "at most 254 servers",
                )
            })?;
        }
        n.priority = Some(next);
        taken.insert(next, usize::MAX);
        next = next.saturating_sub(step).max(1);
    }
    Ok(())
}

fn validate_vip(
    cx: &Ctx<'_>,
    raw: &S<RawVip>,
    raw_nodes: &S<Vec<S<RawNode>>>,
    nodes: &[Node],
) -> R<Vip> {
    let r = raw.get_ref();
    let v4 = match &r.address {
        None => None,
        Some(a) => {
            let net = parse_net(a.get_ref()).and_then(|(ip, p)| match ip {
                IpAddr::V4(addr) if p <= 32 => Some(IpNet4 { addr, prefix: p }),
                _ => None,
            });
            Some((
                net.ok_or_else(|| {
                    cx.err(
                        Some(a.span()),
                        "vip.address",
                        "not an IPv4 address with prefix length",
                        Some(quote(a.get_ref())),
                        "e.g. \"192.168.168.100/24\"",
                    )
                })?,
                a.span(),
            ))
        }
    };
    let v6 = match &r.address6 {
        None => None,
        Some(a) => {
            let net = parse_net(a.get_ref()).and_then(|(ip, p)| match ip {
                IpAddr::V6(addr) if p <= 128 => Some(IpNet6 { addr, prefix: p }),
                _ => None,
            });
            Some((
                net.ok_or_else(|| {
                    cx.err(
                        Some(a.span()),
                        "vip.address6",
                        "not an IPv6 address with prefix length",
                        Some(quote(a.get_ref())),
                        "e.g. \"fd00:168::100/64\"",
                    )
                })?,
                a.span(),
            ))
        }
    };
    if v4.is_none() && v6.is_none() {
        return Err(cx.err(
            Some(raw.span()),
            "vip",
            "no virtual address",
            None,
            "address = \"A.B.C.D/PREFIX\" and/or address6 = \"X::Y/PREFIX\"",
        ));
    }
    let servers: Vec<(usize, &Node)> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.role == Role::Server)
        .collect();
    if let Some((net, span)) = &v4 {
        for (i, n) in nodes.iter().enumerate() {
            if n.address == IpAddr::V4(net.addr) {
                return Err(cx.err(
                    Some(span.clone()),
                    "vip.address",
                    format!(
                        "the VIP is the address of node {:?} (nodes[{i}], line {})",
                        n.name,
                        cx.line_of(&raw_nodes.get_ref()[i].get_ref().address.span())
                    ),
                    Some(quote(&net.addr.to_string())),
                    "an unused address in the servers' subnet",
                ));
            }
        }
        for (i, n) in &servers {
            if let IpAddr::V4(a) = n.address {
                if !net_contains_v4(*net, a) {
                    return Err(cx.err(
                        Some(span.clone()),
                        "vip.address",
                        format!(
                            "the VIP's subnet {}/{} does not contain server {:?} at {a} (nodes[{i}])",
                            mask_v4(*net),
                            net.prefix,
                            n.name
                        ),
                        Some(quote(&format!("{}/{}", net.addr, net.prefix))),
                        "an address and prefix covering every server's address: VRRP works within one subnet",
                    ));
                }
            }
        }
    }
    if let Some((net, span)) = &v6 {
        for (i, n) in nodes.iter().enumerate() {
            if n.address6 == Some(net.addr) || n.address == IpAddr::V6(net.addr) {
                return Err(cx.err(
                    Some(span.clone()),
                    "vip.address6",
                    format!("the VIP is the address of node {:?} (nodes[{i}])", n.name),
                    Some(quote(&net.addr.to_string())),
                    "an unused address in the servers' subnet",
                ));
            }
        }
        for (i, n) in &servers {
            let a = match (n.address6, n.address) {
                (Some(a), _) | (None, IpAddr::V6(a)) => a,
                _ => continue,
            };
            if !net_contains_v6(*net, a) {
                return Err(cx.err(
                    Some(span.clone()),
                    "vip.address6",
                    format!(
                        "the VIP's subnet does not contain server {:?} at {a} (nodes[{i}])",
                        n.name
                    ),
                    Some(quote(&format!("{}/{}", net.addr, net.prefix))),
                    "an address and prefix covering every server's IPv6 address",
                ));
            }
        }
    }
    let interface = match &r.interface {
        None => None,
        Some(i) => {
            let s = i.get_ref();
            if s.is_empty() || s.len() > 15 || s.contains(['/', ' ', ':']) {
                return Err(cx.err(
                    Some(i.span()),
                    "vip.interface",
                    "invalid interface name",
                    Some(quote(s)),
                    "a Linux interface name of 1 to 15 characters, e.g. \"eth0\"",
                ));
            }
            Some(s.clone())
        }
    };
    Ok(Vip {
        v4: v4.map(|(n, _)| n),
        v6: v6.map(|(n, _)| n),
        interface,
    })
}

fn mask_v4(net: IpNet4) -> Ipv4Addr {
    let mask = if net.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(net.prefix))
    };
    Ipv4Addr::from(u32::from(net.addr) & mask)
}

fn parse_net(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    Some((a.parse().ok()?, p.parse().ok()?))
}

fn effect(cx: &Ctx<'_>, v: &S<RawEffect>, key: &str) -> R<TrackEffect> {
    const ALLOWED: &str = "\"off\", \"fault\", or a weight from -253 to 253 other than 0 (added to the priority while failing)";
    match v.get_ref() {
        RawEffect::Word(w) if w == "off" => Ok(TrackEffect::Off),
        RawEffect::Word(w) if w == "fault" => Ok(TrackEffect::Fault),
        RawEffect::Word(w) => Err(cx.err(
            Some(v.span()),
            key,
            "unknown tracking effect",
            Some(quote(w)),
            ALLOWED,
        )),
        RawEffect::Weight(n) if (-253..=253).contains(n) && *n != 0 => {
            Ok(TrackEffect::Weight(i16::try_from(*n).unwrap_or(0)))
        }
        RawEffect::Weight(n) => Err(cx.err(
            Some(v.span()),
            key,
            "tracking weight out of range",
            Some(n.to_string()),
            ALLOWED,
        )),
    }
}

fn validate_vrrp(cx: &Ctx<'_>, r: &RawVrrp) -> R<Vrrp> {
    let vrid = u8::try_from(cx.int_in(&r.vrid, "vrrp.vrid", 51, 1, 255)?).unwrap_or(51);
    let version = match &r.version {
        None => 3,
        Some(v) if matches!(v.get_ref(), 2 | 3) => u8::try_from(*v.get_ref()).unwrap_or(3),
        Some(v) => {
            return Err(cx.err(
                Some(v.span()),
                "vrrp.version",
                "unsupported VRRP version",
                Some(v.get_ref().to_string()),
                "3 (RFC 5798/9568) or 2 (RFC 3768, for keepalived running VRRPv2)",
            ))
        }
    };
    let interval = cx.opt_duration(&r.interval, "vrrp.interval", Duration::from_secs(1))?;
    let interval_ok = if version == 3 {
        interval >= Duration::from_millis(10)
            && interval <= Duration::from_millis(40_950)
            && interval.as_millis() % 10 == 0
    } else {
        interval >= Duration::from_secs(1)
            && interval <= Duration::from_secs(255)
            && interval.as_millis() % 1000 == 0
    };
    if !interval_ok {
        let allowed = if version == 3 {
            "VRRPv3: whole centiseconds from 10ms to 40.95s (40950ms)"
        } else {
            "VRRPv2: whole seconds from 1s to 255s"
        };
        return Err(cx.err(
            r.interval.as_ref().map(Spanned::span),
            "vrrp.interval",
            "advertisement interval out of range",
            r.interval.as_ref().map(|v| quote(v.get_ref())),
            allowed,
        ));
    }
    let password = match &r.password {
        None => None,
        Some(p) if version != 2 => {
            return Err(cx.err(
                Some(p.span()),
                "vrrp.password",
                "VRRPv3 has no authentication (RFC 5798 section 9)",
                Some("(hidden)".into()),
                "a password only with version = 2; for VRRPv3 remove it",
            ))
        }
        Some(p) if p.get_ref().is_empty() || p.get_ref().len() > 8 => {
            return Err(cx.err(
                Some(p.span()),
                "vrrp.password",
                "VRRPv2 simple passwords are 1 to 8 bytes",
                Some(format!("{} bytes", p.get_ref().len())),
                "1 to 8 bytes (keepalived truncates longer ones)",
            ))
        }
        Some(p) => Some(p.get_ref().clone()),
    };
    let checksum = cx.word(
        &r.checksum,
        "vrrp.checksum",
        ChecksumMode::Keepalived,
        &[
            ("keepalived", ChecksumMode::Keepalived),
            ("rfc9568", ChecksumMode::Rfc9568),
            ("either", ChecksumMode::Either),
        ],
    )?;
    // A stopping master keeps the VIP until a successor announces itself. If its
    // priority-0 advert is lost, the backups need a whole Master_Down_Interval
    // (3 x interval + skew < 4 x interval) to take over, so the bound must exceed that.
    let default_handover = (interval * 6).max(Duration::from_secs(2));
    let notify = match &r.notify {
        Some(n) if n.get_ref().trim().is_empty() => {
            return Err(cx.err(
                Some(n.span()),
                "vrrp.notify",
                "empty command",
                Some("\"\"".into()),
                "a command line, run with the new state as its last argument",
            ))
        }
        n => n.as_ref().map(|n| n.get_ref().clone()),
    };
    let t = &r.track;
    let mut scripts: Vec<TrackScript> = Vec::new();
    for (i, s) in t.script.iter().enumerate() {
        let s = s.get_ref();
        let key = |k: &str| format!("vrrp.track.script[{i}].{k}");
        if scripts.iter().any(|o| &o.name == s.name.get_ref()) {
            return Err(cx.err(
                Some(s.name.span()),
                key("name"),
                "duplicate track script name",
                Some(quote(s.name.get_ref())),
                "a name no other script has",
            ));
        }
        if s.command.get_ref().trim().is_empty() {
            return Err(cx.err(
                Some(s.command.span()),
                key("command"),
                "empty command",
                Some("\"\"".into()),
                "a command line; exit status 0 means healthy",
            ));
        }
        let interval = cx.duration_in(
            &s.interval,
            &key("interval"),
            Duration::from_secs(2),
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        scripts.push(TrackScript {
            name: s.name.get_ref().clone(),
            command: s.command.get_ref().clone(),
            interval,
            timeout: cx.duration_in(
                &s.timeout,
                &key("timeout"),
                interval,
                Duration::from_millis(10),
                Duration::from_secs(3600),
            )?,
            rise: u32::try_from(cx.int_in(&s.rise, &key("rise"), 2, 1, 100)?).unwrap_or(2),
            fall: u32::try_from(cx.int_in(&s.fall, &key("fall"), 2, 1, 100)?).unwrap_or(2),
            effect: s
                .effect
                .as_ref()
                .map_or(Ok(TrackEffect::Fault), |e| effect(cx, e, &key("effect")))?,
        });
    }
    Ok(Vrrp {
        vrid,
        version,
        interval,
        preempt: r.preempt.unwrap_or(true),
        preempt_delay: cx.duration_in(
            &r.preempt_delay,
            "vrrp.preempt_delay",
            Duration::ZERO,
            Duration::ZERO,
            Duration::from_secs(1000),
        )?,
        accept_mode: r.accept_mode.unwrap_or(true),
        only_cluster_nodes: r.only_cluster_nodes.unwrap_or(true),
        password,
        checksum,
        unicast: r.unicast.unwrap_or(false),
        garp_repeat: u32::try_from(cx.int_in(&r.garp_repeat, "vrrp.garp_repeat", 5, 0, 100)?)
            .unwrap_or(5),
        garp_interval: cx.duration_in(
            &r.garp_interval,
            "vrrp.garp_interval",
            Duration::from_millis(50),
            Duration::ZERO,
            Duration::from_secs(10),
        )?,
        garp_refresh: cx.duration_in(
            &r.garp_refresh,
            "vrrp.garp_refresh",
            Duration::from_secs(60),
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?,
        virtual_mac: r.virtual_mac.unwrap_or(false),
        notify,
        handover_timeout: cx.duration_in(
            &r.handover_timeout,
            "vrrp.handover_timeout",
            default_handover,
            interval * 4,
            Duration::from_secs(600),
        )?,
        drain_established: cx.duration_in(
            &r.drain_established,
            "vrrp.drain_established",
            DEFAULT_DRAIN_ESTABLISHED,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?,
        track: Track {
            lbd: t.lbd.as_ref().map_or(Ok(TrackEffect::Weight(-50)), |e| {
                effect(cx, e, "vrrp.track.lbd")
            })?,
            lbd_service: t.lbd_service.as_ref().map(|s| s.get_ref().clone()),
            lbd_interval: cx.duration_in(
                &t.lbd_interval,
                "vrrp.track.lbd_interval",
                Duration::from_secs(1),
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )?,
            link: t.link.unwrap_or(true),
            scripts,
        },
    })
}

fn parse_listen(s: &str) -> Option<SocketAddr> {
    if let Some(port) = s.strip_prefix(':') {
        return Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port.parse().ok()?,
        ));
    }
    s.parse().ok()
}

/// `v1.33.2+k3s1` (also `-rc1` pre-releases): what k3s's install script accepts as
/// `INSTALL_K3S_VERSION`.
fn is_k3s_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let Some((semver, build)) = rest.split_once('+') else {
        return false;
    };
    let (core, pre) = match semver.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (semver, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    nums.len() == 3
        && nums
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && pre.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()))
        && build
            .strip_prefix("k3s")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn validate_k3s(cx: &Ctx<'_>, r: &RawK3s) -> R<K3s> {
    let version = match &r.version {
        None => DEFAULT_K3S_VERSION.to_owned(),
        Some(v) if is_k3s_version(v.get_ref()) => v.get_ref().clone(),
        Some(v) => {
            return Err(cx.err(
                Some(v.span()),
                "k3s.version",
                "not a k3s release",
                Some(quote(v.get_ref())),
                format!("a k3s release tag such as \"{DEFAULT_K3S_VERSION}\""),
            ))
        }
    };
    let args = |list: &Option<Vec<S<String>>>, key: &str| -> R<Vec<String>> {
        let mut out = Vec::new();
        for (i, a) in list.iter().flatten().enumerate() {
            let s = a.get_ref();
            // They end up on the k3s unit's command line: one flag per entry, nothing a
            // shell or systemd would split or interpret.
            let ok = s.starts_with("--")
                && s.len() > 2
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "\"'\\$`;&|<>".contains(c));
            if !ok {
                return Err(cx.err(
                    Some(a.span()),
                    format!("{key}[{i}]"),
                    "not a k3s flag",
                    Some(quote(s)),
                    "one flag per entry, e.g. \"--flannel-backend=wireguard-native\": starting with --, without spaces, quotes or shell characters",
                ));
            }
            out.push(s.clone());
        }
        Ok(out)
    };
    let server_args = args(&r.server_args, "k3s.server_args")?;
    let agent_args = args(&r.agent_args, "k3s.agent_args")?;
    let airgap = match &r.airgap {
        None => None,
        Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(char::is_whitespace) => {
            Some(PathBuf::from(p.get_ref()))
        }
        Some(p) => {
            return Err(cx.err(
                Some(p.span()),
                "k3s.airgap",
                "not an absolute path",
                Some(quote(p.get_ref())),
                "an absolute directory holding k3s, install.sh and the airgap images, e.g. \"/opt/k3s-airgap\"",
            ))
        }
    };
    Ok(K3s {
        version,
        server_args,
        agent_args,
        airgap,
    })
}

fn validate_stats(cx: &Ctx<'_>, r: &RawStats) -> R<Stats> {
    let listen = match &r.listen {
        None => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8404)),
        Some(l) if l.get_ref() == "off" => None,
        Some(l) => Some(
            parse_listen(l.get_ref())
                .filter(|a| a.port() != 0)
                .ok_or_else(|| {
                    cx.err(
                        Some(l.span()),
                        "stats.listen",
                        "not a listen address",
                        Some(quote(l.get_ref())),
                        "\":PORT\", \"IP:PORT\" or \"[IPv6]:PORT\", e.g. \":8404\", or \"off\" (no stats page)",
                    )
                })?,
        ),
    };
    match (&r.user, &r.password) {
        (Some(u), None) => {
            return Err(cx.err(
                Some(u.span()),
                "stats.password",
                "stats.user is set without a password",
                None,
                "both stats.user and stats.password, or neither",
            ))
        }
        (None, Some(p)) => {
            return Err(cx.err(
                Some(p.span()),
                "stats.user",
                "stats.password is set without a user",
                None,
                "both stats.user and stats.password, or neither",
            ))
        }
        _ => {}
    }
    let refresh = cx.duration_in(
        &r.refresh,
        "stats.refresh",
        Duration::from_secs(5),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )?;
    Ok(Stats {
        listen,
        user: r.user.as_ref().map(|u| u.get_ref().clone()),
        password: r.password.as_ref().map(|p| p.get_ref().clone()),
        refresh_secs: u32::try_from(refresh.as_secs()).unwrap_or(5),
    })
}

fn k3s_port(p: u16) -> bool {
    K3S_PORTS.iter().any(|&(lo, hi)| (lo..=hi).contains(&p))
}

/// The reference lab's services, used when no `[[services]]` is written.
fn default_services(nodes: &[Node]) -> Vec<Service> {
    let servers: Vec<&Node> = nodes.iter().filter(|n| n.role == Role::Server).collect();
    let backends = |port: u16| -> Vec<Backend> {
        servers
            .iter()
            .map(|n| Backend {
                name: n.name.clone(),
                addr: SocketAddr::new(n.address, port),
                weight: 1,
                backup: false,
            })
            .collect()
    };
    let tcp_check = default_check(CheckKind::Tcp, "/", vec![200]);
    vec![
        Service {
            name: "kube-apiserver".into(),
            listen: 8443,
            bind: None,
            backend_port: 6443,
            backends: backends(6443),
            balance: Balance::LeastConn,
            check: default_check(CheckKind::Https, "/readyz", vec![200, 401]),
            timeouts: default_timeouts(),
            max_connections: 0,
            retries: 3,
            close_on_down: false,
            proxy_protocol: None,
            proxy_tlvs: ProxyTlvs::default(),
            accept_proxy: None,
        },
        Service {
            name: "ingress-http".into(),
            listen: 80,
            bind: None,
            backend_port: 30080,
            backends: backends(30080),
            balance: Balance::RoundRobin,
            check: tcp_check.clone(),
            timeouts: default_timeouts(),
            max_connections: 0,
            retries: 3,
            close_on_down: false,
            proxy_protocol: None,
            proxy_tlvs: ProxyTlvs::default(),
            accept_proxy: None,
        },
        Service {
            name: "ingress-https".into(),
            listen: 443,
            bind: None,
            backend_port: 30443,
            backends: backends(30443),
            balance: Balance::RoundRobin,
            check: tcp_check,
            timeouts: default_timeouts(),
            max_connections: 0,
            retries: 3,
            close_on_down: false,
            proxy_protocol: None,
            proxy_tlvs: ProxyTlvs::default(),
            accept_proxy: None,
        },
    ]
}

fn default_check(kind: CheckKind, path: &str, expect: Vec<u16>) -> Check {
    Check {
        kind,
        path: path.into(),
        expect,
        host: None,
        interval: Duration::from_secs(1),
        fast_interval: Duration::from_millis(250),
        timeout: Duration::from_secs(1),
        rise: 2,
        fall: 2,
        ca: None,
        client_cert: None,
        client_key: None,
    }
}

fn default_timeouts() -> Timeouts {
    Timeouts {
        // A LAN connect either completes in well under a millisecond or the server is gone:
        // give up after an advert interval and retry on another server.
        connect: ConnectTimeout::Auto,
        idle: Duration::from_secs(60),
        tunnel: Duration::from_secs(3600),
        half_close: Duration::from_secs(30),
    }
}

fn validate_services(
    cx: &Ctx<'_>,
    raw: Option<&S<Vec<S<RawService>>>>,
    raw_nodes: &S<Vec<S<RawNode>>>,
    nodes: &[Node],
    stats: &Stats,
    raw_stats: &RawStats,
) -> R<Vec<Service>> {
    let Some(raw) = raw else {
        let services = default_services(nodes);
        if let Some(s) = services
            .iter()
            .find(|s| Some(s.listen) == stats.listen.map(|l| l.port()))
        {
            return Err(cx.err(
                raw_stats.listen.as_ref().map(Spanned::span),
                "stats.listen",
                format!(
                    "port {} is taken by the default service {:?}",
                    s.listen, s.name
                ),
                raw_stats.listen.as_ref().map(|l| quote(l.get_ref())),
                "a port no service listens on",
            ));
        }
        return Ok(services);
    };
    let _ = raw_nodes;
    let mut out: Vec<Service> = Vec::new();
    let mut ports: HashMap<u16, usize> = HashMap::new();
    for (i, rs) in raw.get_ref().iter().enumerate() {
        let rs = rs.get_ref();
        let key = |k: &str| format!("services[{i}].{k}");
        let name = rs.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(cx.err(
                Some(rs.name.span()),
                key("name"),
                "invalid service name",
                Some(quote(&name)),
                "letters, digits, '-' and '_'",
            ));
        }
        if let Some(j) = out.iter().position(|s| s.name == name) {
            return Err(cx.err(
                Some(rs.name.span()),
                key("name"),
                format!("duplicate service name, already used by services[{j}]"),
                Some(quote(&name)),
                "a name no other service has",
            ));
        }
        let listen =
            u16::try_from(cx.int_in(&Some(rs.listen.clone()), &key("listen"), 0, 1, 65535)?)
                .unwrap_or(0);
        if let Some(&j) = ports.get(&listen) {
            let first = cx.line_of(&raw.get_ref()[j].get_ref().listen.span());
            return Err(cx.err(
                Some(rs.listen.span()),
                key("listen"),
                format!(
                    "port already used by services[{j}] ({:?}) on line {first}",
                    out[j].name
                ),
                Some(listen.to_string()),
                "one service per port",
            ));
        }
        if k3s_port(listen) {
            return Err(cx.err(
                Some(rs.listen.span()),
                key("listen"),
                "k3s itself listens on this port on servers",
                Some(listen.to_string()),
                "any port except 6443-6444, 2379-2382 and 10248-10259 (the API is proxied on 8443)",
            ));
        }
        if Some(listen) == stats.listen.map(|l| l.port()) {
            return Err(cx.err(
                Some(rs.listen.span()),
                key("listen"),
                "port taken by the stats page (stats.listen)",
                Some(listen.to_string()),
                "a port other than the stats page's",
            ));
        }
        ports.insert(listen, i);
        let bind = match &rs.bind {
            None => None,
            Some(b) => Some(b.get_ref().parse::<IpAddr>().map_err(|_| {
                cx.err(Some(b.span()), key("bind"), "not an IP address", Some(quote(b.get_ref())), "an IP address such as the VIP (bound with IP_FREEBIND), or omit for the wildcard")
            })?),
        };
        let backend_port = match &rs.backend_port {
            None => None,
            Some(p) => Some(
                u16::try_from(cx.int_in(&Some(p.clone()), &key("backend_port"), 0, 1, 65535)?)
                    .unwrap_or(0),
            ),
        };
        let backends = match &rs.backends {
            None => role_backends(
                cx,
                "servers",
                None,
                &key("backends"),
                backend_port,
                rs,
                nodes,
            )?,
            Some(b) => match b.get_ref() {
                RawBackends::Role(role) => role_backends(
                    cx,
                    role,
                    Some(b.span()),
                    &key("backends"),
                    backend_port,
                    rs,
                    nodes,
                )?,
                RawBackends::List(list) => list_backends(
                    cx,
                    list,
                    Some(b.span()),
                    &key("backends"),
                    backend_port,
                    nodes,
                )?,
            },
        };
        if backends.iter().all(|b| b.backup) {
            return Err(cx.err(
                rs.backends.as_ref().map(Spanned::span),
                key("backends"),
                "every backend is a backup",
                None,
                "at least one backend with backup = false",
            ));
        }
        let backend_port =
            backend_port.unwrap_or_else(|| backends.first().map_or(listen, |b| b.addr.port()));
        let is_api = backend_port == 6443;
        let balance = cx.word(
            &rs.balance,
            &key("balance"),
            if is_api {
                Balance::LeastConn
            } else {
                Balance::RoundRobin
            },
            &[
                ("roundrobin", Balance::RoundRobin),
                ("leastconn", Balance::LeastConn),
                ("source", Balance::Source),
            ],
        )?;
        let check = validate_check(cx, rs.check.as_ref(), &key("check"), is_api)?;
        let t = &rs.timeouts;
        let d = default_timeouts();
        let big = Duration::from_secs(7 * 86_400);
        let timeouts = Timeouts {
            connect: match &t.connect {
                Some(v) if v.get_ref() == "auto" => ConnectTimeout::Auto,
                None => d.connect,
                Some(v) if parse_duration(v.get_ref()).is_none() => {
                    return Err(cx.err(
                        Some(v.span()),
                        key("timeouts.connect"),
                        "not a duration",
                        Some(quote(v.get_ref())),
                        format!("\"auto\" (fit to the VRRP interval), or {DURATION_ALLOWED}"),
                    ));
                }
                Some(_) => ConnectTimeout::Fixed(cx.duration_in(
                    &t.connect,
                    &key("timeouts.connect"),
                    Duration::ZERO,
                    Duration::from_millis(1),
                    Duration::from_secs(300),
                )?),
            },
            idle: cx.duration_in(
                &t.idle,
                &key("timeouts.idle"),
                d.idle,
                Duration::from_millis(1),
                big,
            )?,
            tunnel: cx.duration_in(
                &t.tunnel,
                &key("timeouts.tunnel"),
                d.tunnel,
                Duration::from_millis(1),
                big,
            )?,
            half_close: cx.duration_in(
                &t.half_close,
                &key("timeouts.half_close"),
                d.half_close,
                Duration::from_millis(1),
                big,
            )?,
        };
        let (proxy_protocol, proxy_tlvs, accept_proxy) = validate_proxy(cx, rs, &key)?;
        out.push(Service {
            name,
            listen,
            bind,
            backend_port,
            backends,
            balance,
            check,
            timeouts,
            max_connections: u32::try_from(cx.int_in(
                &rs.max_connections,
                &key("max_connections"),
                0,
                0,
                10_000_000,
            )?)
            .unwrap_or(0),
            retries: u32::try_from(cx.int_in(&rs.retries, &key("retries"), 3, 0, 10)?).unwrap_or(3),
            close_on_down: rs.close_on_down.unwrap_or(false),
            proxy_protocol,
            proxy_tlvs,
            accept_proxy,
        });
    }
    if out.is_empty() {
        return Err(cx.err(
            Some(raw.span()),
            "services",
            "empty service list",
            None,
            "at least one [[services]] entry, or none written for the defaults",
        ));
    }
    Ok(out)
}

/// How long a client behind another balancer may take to send its PROXY header when
/// `timeouts.proxy_header` is not set: the specification asks for at least 3 s, to cover
/// a TCP retransmission.
pub(crate) const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// `proxy_protocol`, `proxy_protocol_tlvs`, `accept_proxy`, `trusted_proxies` and
/// `timeouts.proxy_header` of one service.
fn validate_proxy(
    cx: &Ctx<'_>,
    rs: &RawService,
    key: &dyn Fn(&str) -> String,
) -> R<(Option<ProxyProtocol>, ProxyTlvs, Option<AcceptProxy>)> {
    let version = cx.word(
        &rs.proxy_protocol,
        &key("proxy_protocol"),
        None,
        &[
            ("v1", Some(ProxyProtocol::V1)),
            ("v2", Some(ProxyProtocol::V2)),
            ("off", None),
        ],
    )?;
    let mut tlvs = ProxyTlvs::default();
    if let Some(list) = &rs.proxy_protocol_tlvs {
        if version != Some(ProxyProtocol::V2) {
            return Err(cx.err(
                Some(list.span()),
                key("proxy_protocol_tlvs"),
                "TLVs are part of the PROXY protocol's version 2 only",
                rs.proxy_protocol.as_ref().map(|v| quote(v.get_ref())),
                "proxy_protocol = \"v2\" with these TLVs, or no proxy_protocol_tlvs",
            ));
        }
        for (j, t) in list.get_ref().iter().enumerate() {
            match t.get_ref().as_str() {
                "crc32c" => tlvs.crc32c = true,
                "unique-id" => tlvs.unique_id = true,
                other => {
                    return Err(cx.err(
                        Some(t.span()),
                        format!("{}[{j}]", key("proxy_protocol_tlvs")),
                        "unknown TLV",
                        Some(quote(other)),
                        "\"crc32c\", \"unique-id\"",
                    ))
                }
            }
        }
    }
    let header_timeout = &rs.timeouts.proxy_header;
    let accept = match (rs.accept_proxy.unwrap_or(false), &rs.trusted_proxies) {
        (false, None) => {
            if let Some(t) = header_timeout {
                return Err(cx.err(
                    Some(t.span()),
                    key("timeouts.proxy_header"),
                    "only used with accept_proxy = true",
                    Some(quote(t.get_ref())),
                    "accept_proxy = true with trusted_proxies, or no timeouts.proxy_header",
                ));
            }
            None
        }
        (false, Some(list)) => {
            return Err(cx.err(
                Some(list.span()),
                key("trusted_proxies"),
                "only used with accept_proxy = true",
                None,
                "accept_proxy = true (clients send a PROXY header), or no trusted_proxies",
            ))
        }
        (true, None) => {
            return Err(cx.err(
                Some(rs.name.span()),
                key("trusted_proxies"),
                "accept_proxy = true needs the networks of the balancers in front of lbd: a PROXY header from anyone else would let them choose their own address",
                None,
                "trusted_proxies = [\"CIDR\", ...], e.g. [\"10.0.0.5/32\"]",
            ))
        }
        (true, Some(list)) => {
            if list.get_ref().is_empty() {
                return Err(cx.err(
                    Some(list.span()),
                    key("trusted_proxies"),
                    "empty list: no connection could be accepted",
                    None,
                    "at least one network, e.g. [\"10.0.0.5/32\"]",
                ));
            }
            let mut trusted = Vec::new();
            for (j, n) in list.get_ref().iter().enumerate() {
                trusted.push(parse_ipnet(n.get_ref()).ok_or_else(|| {
                    cx.err(
                        Some(n.span()),
                        format!("{}[{j}]", key("trusted_proxies")),
                        "not a network",
                        Some(quote(n.get_ref())),
                        "an address or ADDRESS/PREFIX with no bits set past the prefix, e.g. \"10.0.0.0/24\", \"192.0.2.7\", \"fd00::/64\"",
                    )
                })?);
            }
            Some(AcceptProxy {
                trusted,
                timeout: cx.duration_in(
                    header_timeout,
                    &key("timeouts.proxy_header"),
                    DEFAULT_PROXY_HEADER_TIMEOUT,
                    Duration::from_millis(100),
                    Duration::from_secs(60),
                )?,
            })
        }
    };
    Ok((version, tlvs, accept))
}

/// `10.0.0.0/24`, `fd00::/64`, or a bare address (a /32 or /128); no host bits past the
/// prefix (`10.0.0.1/24` is a typo for one address or for the network).
fn parse_ipnet(s: &str) -> Option<IpNet> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => {
            if p.is_empty() || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?))
        }
        None => (s.parse::<IpAddr>().ok()?, None),
    };
    let net = match addr {
        IpAddr::V4(a) => IpNet::V4(IpNet4 {
            addr: a,
            prefix: prefix.unwrap_or(32),
        }),
        IpAddr::V6(a) => IpNet::V6(IpNet6 {
            addr: a,
            prefix: prefix.unwrap_or(128),
        }),
    };
    let (bits, host_bits_clear) = match net {
        IpNet::V4(n) => (
            32,
            u32::from(n.addr)
                & !u32::MAX
                    .checked_shl(32 - u32::from(n.prefix.min(32)))
                    .unwrap_or(0)
                == 0,
        ),
        IpNet::V6(n) => (
            128,
            u128::from(n.addr)
                & !u128::MAX
                    .checked_shl(128 - u32::from(n.prefix.min(128)))
                    .unwrap_or(0)
                == 0,
        ),
    };
    let prefix = match net {
        IpNet::V4(n) => n.prefix,
        IpNet::V6(n) => n.prefix,
    };
    (prefix <= bits && host_bits_clear).then_some(net)
}

fn role_backends(
    cx: &Ctx<'_>,
    role: &str,
    span: Option<Range<usize>>,
    key: &str,
    backend_port: Option<u16>,
    rs: &RawService,
    nodes: &[Node],
) -> R<Vec<Backend>> {
    let want = match role {
        "servers" => Role::Server,
        "agents" => Role::Agent,
        other => {
            return Err(cx.err(
                span,
                key,
                "unknown backend role",
                Some(quote(other)),
                "\"servers\", \"agents\", or a list of \"host:port\"",
            ));
        }
    };
    let Some(port) = backend_port else {
        return Err(cx.err(
            Some(rs.name.span()),
            key.replace("backends", "backend_port"),
            "backend_port is required when backends is a role",
            None,
            "a port from 1 to 65535, e.g. 6443",
        ));
    };
    let list: Vec<Backend> = nodes
        .iter()
        .filter(|n| n.role == want)
        .map(|n| Backend {
            name: n.name.clone(),
            addr: SocketAddr::new(n.address, port),
            weight: 1,
            backup: false,
        })
        .collect();
    if list.is_empty() {
        return Err(cx.err(
            span,
            key,
            format!("no node has role {:?}", want.as_str()),
            Some(quote(role)),
            "a role that at least one node has, or an explicit list of \"host:port\"",
        ));
    }
    Ok(list)
}

fn list_backends(
    cx: &Ctx<'_>,
    list: &[S<RawBackend>],
    span: Option<std::ops::Range<usize>>,
    key: &str,
    backend_port: Option<u16>,
    nodes: &[Node],
) -> R<Vec<Backend>> {
    const ALLOWED: &str = "\"IP:PORT\", \"[IPv6]:PORT\" or \"NODE-NAME:PORT\" (PORT may be omitted when backend_port is set)";
    if list.is_empty() {
        return Err(cx.err(
            span,
            key,
            "empty backend list",
            None,
            "at least one backend",
        ));
    }
    let mut out: Vec<Backend> = Vec::new();
    for (j, b) in list.iter().enumerate() {
        let b = b.get_ref();
        let k = format!("{key}[{j}]");
        let text = b.address.get_ref().as_str();
        let bad = || {
            cx.err(
                Some(b.address.span()),
                format!("{k}.address"),
                "not a backend address",
                Some(quote(text)),
                ALLOWED,
            )
        };
        let (addr, name) = if let Ok(sa) = text.parse::<SocketAddr>() {
            (sa, text.to_owned())
        } else if let Ok(ip) = text.parse::<IpAddr>() {
            (
                SocketAddr::new(ip, backend_port.ok_or_else(bad)?),
                text.to_owned(),
            )
        } else {
            let (host, port) = match text.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
                None => (text, backend_port.ok_or_else(bad)?),
            };
            let node = nodes.iter().find(|n| n.name == host).ok_or_else(|| {
                cx.err(
                    Some(b.address.span()),
                    format!("{k}.address"),
                    format!("{host:?} is neither an IP address nor a node name"),
                    Some(quote(text)),
                    ALLOWED,
                )
            })?;
            (SocketAddr::new(node.address, port), node.name.clone())
        };
        if addr.port() == 0 {
            return Err(bad());
        }
        if let Some(o) = out.iter().position(|o| o.addr == addr) {
            return Err(cx.err(
                Some(b.address.span()),
                format!("{k}.address"),
                format!("duplicate backend, same as {key}[{o}]"),
                Some(quote(text)),
                "each backend once",
            ));
        }
        let weight =
            u32::try_from(cx.int_in(&b.weight, &format!("{k}.weight"), 1, 1, 256)?).unwrap_or(1);
        out.push(Backend {
            name,
            addr,
            weight,
            backup: b.backup.unwrap_or(false),
        });
    }
    Ok(out)
}

fn validate_check(cx: &Ctx<'_>, r: Option<&RawCheck>, key: &str, is_api: bool) -> R<Check> {
    let empty = RawCheck::default();
    let r = r.unwrap_or(&empty);
    let k = |s: &str| format!("{key}.{s}");
    let default_kind = if is_api {
        CheckKind::Https
    } else {
        CheckKind::Tcp
    };
    let kind = cx.word(
        &r.kind,
        &k("kind"),
        default_kind,
        &[
            ("tcp", CheckKind::Tcp),
            ("tls", CheckKind::Tls),
            ("http", CheckKind::Http),
            ("https", CheckKind::Https),
        ],
    )?;
    let path = match &r.path {
        None if is_api => "/readyz".to_owned(),
        None => "/".to_owned(),
        Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(char::is_whitespace) => {
            p.get_ref().clone()
        }
        Some(p) => {
            return Err(cx.err(
                Some(p.span()),
                k("path"),
                "not an HTTP path",
                Some(quote(p.get_ref())),
                "a path starting with '/', without spaces, e.g. \"/readyz\"",
            ))
        }
    };
    let expect = match &r.expect {
        None if is_api => vec![200, 401],
        None => vec![200],
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(cx.err(
                    Some(list.span()),
                    k("expect"),
                    "empty status list",
                    None,
                    "HTTP status codes from 100 to 599, e.g. [200, 401]",
                ));
            }
            let mut v = Vec::new();
            for (i, s) in list.get_ref().iter().enumerate() {
                v.push(
                    u16::try_from(cx.int_in(
                        &Some(s.clone()),
                        &format!("{}[{i}]", k("expect")),
                        0,
                        100,
                        599,
                    )?)
                    .unwrap_or(200),
                );
            }
            v
        }
    };
    let d = default_check(kind, "/", Vec::new());
    let interval = cx.duration_in(
        &r.interval,
        &k("interval"),
        d.interval,
        Duration::from_millis(10),
        Duration::from_secs(3600),
    )?;
    let fast_interval = cx.duration_in(
        &r.fast_interval,
        &k("fast_interval"),
        interval.min(d.fast_interval),
        Duration::from_millis(10),
        interval,
    )?;
    let timeout = cx.duration_in(
        &r.timeout,
        &k("timeout"),
        interval.min(Duration::from_secs(1)),
        Duration::from_millis(1),
        Duration::from_secs(3600),
    )?;
    let path_of = |v: &Option<S<String>>| v.as_ref().map(|p| PathBuf::from(p.get_ref()));
    let tls = matches!(kind, CheckKind::Tls | CheckKind::Https);
    for (name, v) in [
        ("ca", &r.ca),
        ("client_cert", &r.client_cert),
        ("client_key", &r.client_key),
    ] {
        if let (Some(v), false) = (v, tls) {
            return Err(cx.err(
                Some(v.span()),
                k(name),
                format!("{name} applies only to TLS checks"),
                Some(quote(v.get_ref())),
                "kind = \"tls\" or \"https\"",
            ));
        }
    }
    match (&r.client_cert, &r.client_key) {
        (Some(c), None) => {
            return Err(cx.err(
                Some(c.span()),
                k("client_key"),
                "client_cert is set without client_key",
                None,
                "both client_cert and client_key (PEM files), or neither",
            ))
        }
        (None, Some(c)) => {
            return Err(cx.err(
                Some(c.span()),
                k("client_cert"),
                "client_key is set without client_cert",
                None,
                "both client_cert and client_key (PEM files), or neither",
            ))
        }
        _ => {}
    }
    let expect_set: BTreeSet<u16> = expect.iter().copied().collect();
    Ok(Check {
        kind,
        path,
        expect: expect_set.into_iter().collect(),
        host: r.host.as_ref().map(|h| h.get_ref().clone()),
        interval,
        fast_interval,
        timeout,
        rise: u32::try_from(cx.int_in(&r.rise, &k("rise"), i64::from(d.rise), 1, 100)?)
            .unwrap_or(d.rise),
        fall: u32::try_from(cx.int_in(&r.fall, &k("fall"), i64::from(d.fall), 1, 100)?)
            .unwrap_or(d.fall),
        ca: path_of(&r.ca),
        client_cert: path_of(&r.client_cert),
        client_key: path_of(&r.client_key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "s", "10", "1x", "-1s", "1s2", "ms"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn subnet_math() {
        let net = IpNet4 {
            addr: Ipv4Addr::new(192, 168, 168, 100),
            prefix: 24,
        };
        assert!(net_contains_v4(net, Ipv4Addr::new(192, 168, 168, 1)));
        assert!(!net_contains_v4(net, Ipv4Addr::new(192, 168, 169, 1)));
        let net0 = IpNet4 {
            addr: Ipv4Addr::new(10, 0, 0, 1),
            prefix: 0,
        };
        assert!(net_contains_v4(net0, Ipv4Addr::new(1, 2, 3, 4)));
        let n6 = IpNet6 {
            addr: "fd00::100".parse().unwrap(),
            prefix: 64,
        };
        assert!(net_contains_v6(n6, "fd00::1".parse().unwrap()));
        assert!(!net_contains_v6(n6, "fd01::1".parse().unwrap()));
    }
}
