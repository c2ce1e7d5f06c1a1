//! `lbctl config check`: validate cluster.toml and show, per node, what it will run.

use std::fmt::Write as _;

use common::config::{format_duration, Cluster, Node, Role, Service, TrackEffect};
use serde_json::{json, Value};

/// The highest-priority server: the master once all servers are up (with preemption).
fn initial_master(c: &Cluster) -> Option<&Node> {
    c.servers().max_by_key(|n| n.priority.unwrap_or(0))
}

fn vip_text(c: &Cluster) -> String {
    let mut parts = Vec::new();
    if let Some(v4) = c.vip.v4 {
        parts.push(format!("{}/{}", v4.addr, v4.prefix));
    }
    if let Some(v6) = c.vip.v6 {
        parts.push(format!("{}/{}", v6.addr, v6.prefix));
    }
    parts.join(" + ")
}

fn effect_text(e: TrackEffect) -> String {
    match e {
        TrackEffect::Off => "off".into(),
        TrackEffect::Fault => "fault".into(),
        TrackEffect::Weight(w) => format!("{w:+}"),
    }
}

fn check_text(s: &Service) -> String {
    let c = &s.check;
    let what = match c.kind {
        common::config::CheckKind::Tcp => "tcp connect".to_owned(),
        common::config::CheckKind::Tls => "tls handshake".to_owned(),
        k => {
            let codes: Vec<String> = c.expect.iter().map(u16::to_string).collect();
            format!("{} GET {} expect {}", k.as_str(), c.path, codes.join(","))
        }
    };
    format!(
        "{what} every {} (timeout {}, rise {}, fall {})",
        format_duration(c.interval),
        format_duration(c.timeout),
        c.rise,
        c.fall
    )
}

/// The human report.
pub fn render_text(c: &Cluster) -> String {
    let mut o = String::new();
    let src = c
        .source
        .as_ref()
        .map_or_else(|| "<embedded>".into(), |p| p.display().to_string());
    let v = &c.vrrp;
    let _ = writeln!(o, "{src}: valid");
    let _ = writeln!(o, "cluster {} (domain {})", c.name, c.domain);
    let iface = c
        .vip
        .interface
        .as_deref()
        .unwrap_or("the interface holding the node's address");
    let _ = writeln!(
        o,
        "VIP {} on {iface}; VRRPv{} VRID {}, advert every {}, {}, checksum {}, accept mode {}{}",
        vip_text(c),
        v.version,
        v.vrid,
        format_duration(v.interval),
        if v.preempt {
            format!("preempt (delay {})", format_duration(v.preempt_delay))
        } else {
            "no preempt".into()
        },
        serde_json::to_value(v.checksum)
            .ok()
            .and_then(|x| x.as_str().map(str::to_owned))
            .unwrap_or_default(),
        if v.accept_mode { "on" } else { "off" },
        if v.unicast {
            ", unicast to the other servers"
        } else {
            ", multicast"
        },
    );
    let master = initial_master(c).map(|n| n.name.clone());
    for n in &c.nodes {
        let _ = writeln!(o);
        let _ = writeln!(o, "{} ({}, {})", n.name, n.role.as_str(), n.address);
        if n.role == Role::Agent {
            let _ = writeln!(
                o,
                "  runs no vrrpd and no lbd (agents only reach the API through the VIP)"
            );
            continue;
        }
        let prio = n.priority.unwrap_or(0);
        let role = if master.as_deref() == Some(n.name.as_str()) {
            "master when all servers are up"
        } else {
            "backup"
        };
        let _ = writeln!(
            o,
            "  vrrpd: priority {prio}, {role}; tracks lbd {}, link {}{}",
            effect_text(v.track.lbd),
            if v.track.link { "on" } else { "off" },
            v.track
                .scripts
                .iter()
                .map(|s| format!(", script {} {}", s.name, effect_text(s.effect)))
                .collect::<String>()
        );
    }
    // lbd's services are the same on every server: once.
    let _ = writeln!(o);
    let _ = writeln!(o, "every server runs lbd with:");
    for s in &c.services {
        let bind = s.bind.map_or_else(String::new, |b| b.to_string());
        let mut ports: Vec<u16> = s.backends.iter().map(|b| b.addr.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        let to = match ports.as_slice() {
            [one] => one.to_string(),
            _ => format!("{} backends", s.backends.len()),
        };
        let _ = writeln!(
            o,
            "  lbd: {} {bind}:{} -> {to} {}, retries {}, timeouts connect {} idle {} tunnel {}",
            s.name,
            s.listen,
            s.balance.as_str(),
            s.retries,
            s.timeouts.connect,
            format_duration(s.timeouts.idle),
            format_duration(s.timeouts.tunnel),
        );
        let _ = writeln!(o, "       check {}", check_text(s));
        if let Some(ap) = &s.accept_proxy {
            let nets: Vec<String> = ap.trusted.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                o,
                "       accepts a PROXY header (v1 or v2, within {}) from {} only",
                format_duration(ap.timeout),
                nets.join(", ")
            );
        }
        if let Some(v) = s.proxy_protocol {
            let mut tlvs = Vec::new();
            if s.proxy_tlvs.crc32c {
                tlvs.push("crc32c");
            }
            if s.proxy_tlvs.unique_id {
                tlvs.push("unique-id");
            }
            let tlvs = if tlvs.is_empty() {
                String::new()
            } else {
                format!(" with {}", tlvs.join(", "))
            };
            let _ = writeln!(
                o,
                "       sends a PROXY {} header{tlvs} to every server (checks too)",
                v.as_str()
            );
        }
        for b in &s.backends {
            let mut extra = String::new();
            if b.weight != 1 {
                let _ = write!(extra, " weight {}", b.weight);
            }
            if b.backup {
                extra.push_str(" backup");
            }
            // A backend given as "IP:PORT" is named by its address: once is enough.
            if b.name == b.addr.to_string() {
                let _ = writeln!(o, "       -> {}{extra}", b.addr);
            } else {
                let _ = writeln!(o, "       -> {} {}{extra}", b.name, b.addr);
            }
        }
    }
    let auth = if c.stats.user.is_some() {
        "basic auth"
    } else {
        "no auth"
    };
    match c.stats.listen {
        Some(l) => {
            let _ = writeln!(o, "  stats page http://{l}/ ({auth})");
        }
        None => {
            let _ = writeln!(o, "  no stats page (stats.listen = \"off\")");
        }
    }
    let k = &c.k3s;
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "k3s {}{}{}{} (lbctl install k3s)",
        k.version,
        if k.server_args.is_empty() {
            String::new()
        } else {
            format!(", server args {}", k.server_args.join(" "))
        },
        if k.agent_args.is_empty() {
            String::new()
        } else {
            format!(", agent args {}", k.agent_args.join(" "))
        },
        k.airgap.as_ref().map_or_else(String::new, |d| format!(
            ", air-gapped from {}",
            d.display()
        )),
    );
    o
}

/// The same as JSON.
pub fn render_json(c: &Cluster) -> Value {
    let master = initial_master(c).map(|n| n.name.clone());
    let nodes: Vec<Value> = c
        .nodes
        .iter()
        .map(|n| {
            let runs = if n.role == Role::Server {
                json!({
                    "vrrpd": {
                        "priority": n.priority,
                        "initial_role": if master.as_deref() == Some(n.name.as_str()) { "master" } else { "backup" },
                        "vip": vip_text(c),
                    },
                    "lbd": { "frontends": c.services, "stats": c.stats.listen.map_or_else(|| "off".to_owned(), |l| l.to_string()) },
                })
            } else {
                json!({})
            };
            json!({ "name": n.name, "role": n.role, "address": n.address, "runs": runs })
        })
        .collect();
    json!({
        "valid": true,
        "source": c.source,
        "cluster": c.name,
        "domain": c.domain,
        "vip": c.vip,
        "vrrp": c.vrrp,
        "k3s": c.k3s,
        "nodes": nodes,
    })
}
