//! The packet side of a planned handover (docs/handover.md), in nftables, written through
//! `nft -j -f -` (Debian's nftables, its JSON interface) as one atomic batch per change.
//!
//! Three tables, all named `k3s_ha`, each holding only what this module rendered:
//!
//! - `ip k3s_ha` / `ip6 k3s_ha`, chain `prerouting` (hook prerouting, priority mangle,
//!   after conntrack). A TCP packet to a VIP that is not a SYN and that conntrack does
//!   not know (state new: its SYN never reached this node; or invalid) belongs to a flow
//!   another node serves. Such a packet, dropped by the hook, leaves no conntrack entry
//!   behind, so every packet of a foreign flow stays "new" here.
//!   - while steering: it is cloned to every node this one forwards to (`dup to ...
//!     device ...`: to that node's MAC, no routing change) with its TTL / hop limit set
//!     to [`FORWARDED_TTL`], and dropped here, so this node's stack never answers it with a reset. The
//!     node that serves the flow takes its copy; the others drop theirs (next rule).
//!     New flows are served here from their first SYN.
//!   - always: such a packet that arrives with TTL / hop limit [`FORWARDED_TTL`] or
//!     less was forwarded here by another node and is not ours: it is dropped (not reset, not forwarded again).
//!     A packet is forwarded once at most, so two nodes forwarding to each other never
//!     loop.
//!
//!   (`dup` exists only in the `ip`/`ip6` families, hence two tables and not one `inet`
//!   table; nft's `socket` expression cannot say "no local socket": its lookup also
//!   matches the listener. A conntrack entry evicted while its flow lives (an idle flow
//!   past `nf_conntrack_tcp_timeout_established`) makes the flow look foreign during a
//!   drain.)
//! - `arp k3s_ha`, only while IPv4 VIPs are parked on `lo`: ARP requests for them are
//!   dropped (the kernel would answer for any local address on any interface), and this
//!   node's own ARP requests that would carry a parked VIP as their sender address carry
//!   the node's address instead (or they would pull the clients back). No sysctl is
//!   changed (vrrpd's unit has ProtectKernelTunables). An IPv6 VIP parked on `lo` needs no
//!   rule: the kernel answers neighbour solicitations only for addresses on the interface
//!   they arrive on.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// The TTL / hop limit a forwarded packet is sent with, and at or below which a packet
/// counts as forwarded: never forwarded again. (`dup` in prerouting decrements it, so it
/// arrives as 1; a client's own packets on the LAN carry 64 or more.)
pub const FORWARDED_TTL: u8 = 2;

/// Our tables' name in every family.
pub const TABLE: &str = "k3s_ha";

/// How long one `nft` run may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the tables must say, for both families at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Every VIP (foreign flows forwarded here are dropped, always).
    pub vips: Vec<IpAddr>,
    /// VIP -> a node to forward its foreign flows to (one pair per node).
    pub steer: Vec<(IpAddr, IpAddr)>,
    /// IPv4 VIPs parked on `lo`, hidden from ARP; with the node's IPv4 address, which
    /// this node's own ARP requests carry instead of a parked VIP.
    pub parked_v4: Vec<std::net::Ipv4Addr>,
    pub node_v4: Option<std::net::Ipv4Addr>,
    /// The interface the clients and the previous holder are on.
    pub device: String,
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

fn daddr(vip: IpAddr) -> Value {
    json!({"match": {"op": "==",
        "left": {"payload": {"protocol": family(vip), "field": "daddr"}},
        "right": vip.to_string()}})
}

fn rule(fam: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": fam, "table": TABLE, "chain": chain, "expr": expr}}})
}

/// Add the table and a base chain (idempotent), then flush the chain: the rules that
/// follow in the same batch are its whole content.
fn table_with_chain(out: &mut Vec<Value>, fam: &str, chain: &str, hook: &str, prio: i32) {
    out.push(json!({"add": {"table": {"family": fam, "name": TABLE}}}));
    out.push(
        json!({"add": {"chain": {"family": fam, "table": TABLE, "name": chain,
        "type": "filter", "hook": hook, "prio": prio, "policy": "accept"}}}),
    );
    out.push(json!({"flush": {"chain": {"family": fam, "table": TABLE, "name": chain}}}));
}

/// Delete our table of `fam` (after an `add`, so the batch does not fail when it is
/// not there).
fn no_table(out: &mut Vec<Value>, fam: &str) {
    out.push(json!({"add": {"table": {"family": fam, "name": TABLE}}}));
    out.push(json!({"delete": {"table": {"family": fam, "name": TABLE}}}));
}

/// The nft JSON batch that makes the kernel's tables say `r` (one transaction: it all
/// applies or nothing does).
pub fn render(r: &Rules) -> Value {
    let mut out = Vec::new();
    for fam in ["ip", "ip6"] {
        let vips: Vec<IpAddr> = r
            .vips
            .iter()
            .copied()
            .filter(|v| family(*v) == fam)
            .collect();
        if vips.is_empty() {
            no_table(&mut out, fam);
            continue;
        }
        // Priority mangle (-150): after conntrack (-200), so the flow's state is known.
        table_with_chain(&mut out, fam, "prerouting", "prerouting", -150);
        let ttl = if fam == "ip" { "ttl" } else { "hoplimit" };
        let ttl_is = |op: &str| {
            json!({"match": {"op": op,
                "left": {"payload": {"protocol": fam, "field": ttl}}, "right": FORWARDED_TTL}})
        };
        for vip in &vips {
            let foreign = vec![
                daddr(*vip),
                json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}),
                json!({"match": {"op": "==",
                    "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, "syn"]},
                    "right": 0}}),
                json!({"match": {"op": "in", "left": {"ct": {"key": "state"}},
                    "right": ["new", "invalid"]}}),
            ];
            let to: Vec<IpAddr> = r
                .steer
                .iter()
                .filter(|(v, _)| v == vip)
                .map(|(_, t)| *t)
                .collect();
            if !to.is_empty() {
                let mut e = foreign.clone();
                e.push(ttl_is(">"));
                e.push(json!({"counter": null}));
                e.push(json!({"mangle": {"key": {"payload": {"protocol": fam, "field": ttl}}, "value": FORWARDED_TTL}}));
                for t in &to {
                    e.push(json!({"dup": {"addr": t.to_string(), "dev": r.device}}));
                }
                e.push(json!({"drop": null}));
                out.push(rule(fam, "prerouting", e));
            }
            let mut e = foreign;
            e.push(ttl_is("<="));
            e.push(json!({"drop": null}));
            out.push(rule(fam, "prerouting", e));
        }
    }
    match (r.parked_v4.is_empty(), r.node_v4) {
        (false, Some(node)) => {
            table_with_chain(&mut out, "arp", "input", "input", 0);
            table_with_chain(&mut out, "arp", "output", "output", 0);
            for vip in &r.parked_v4 {
                out.push(rule(
                    "arp",
                    "input",
                    vec![
                        json!({"match": {"op": "==",
                            "left": {"payload": {"protocol": "arp", "field": "operation"}},
                            "right": "request"}}),
                        json!({"match": {"op": "==",
                            "left": {"payload": {"protocol": "arp", "field": "daddr ip"}},
                            "right": vip.to_string()}}),
                        json!({"drop": null}),
                    ],
                ));
                out.push(rule(
                    "arp",
                    "output",
                    vec![
                        json!({"match": {"op": "==",
                            "left": {"payload": {"protocol": "arp", "field": "saddr ip"}},
                            "right": vip.to_string()}}),
                        json!({"mangle": {"key": {"payload": {"protocol": "arp", "field": "saddr ip"}},
                            "value": node.to_string()}}),
                    ],
                ));
            }
        }
        _ => no_table(&mut out, "arp"),
    }
    json!({ "nftables": out })
}

/// The batch that removes all three tables.
pub fn render_none() -> Value {
    let mut out = Vec::new();
    for fam in ["ip", "ip6", "arp"] {
        no_table(&mut out, fam);
    }
    json!({ "nftables": out })
}

/// Run `nft -j -f -` with `batch` on its standard input. The error says what nft said.
pub async fn apply(batch: &Value) -> Result<(), String> {
    let text = batch.to_string();
    let run = async {
        let mut child = tokio::process::Command::new(nft_program())
            .args(["-j", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e} (is nftables installed?)", nft_program()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .await
                .map_err(|e| format!("writing to nft: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("waiting for nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(format!("nft did not finish within {NFT_TIMEOUT:?}")))
}

/// How many packets the steering rules forwarded, per VIP (read from the kernel's
/// counters, for the status).
pub async fn steered_packets() -> Result<Vec<(IpAddr, u64)>, String> {
    let mut found = Vec::new();
    for fam in ["ip", "ip6"] {
        let out = tokio::time::timeout(
            NFT_TIMEOUT,
            tokio::process::Command::new(nft_program())
                .args(["-j", "list", "table", fam, TABLE])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| "nft list timed out".to_owned())?
        .map_err(|e| format!("cannot run {}: {e}", nft_program()))?;
        if !out.status.success() {
            continue; // no table of this family
        }
        let v: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("nft -j list: {e}"))?;
        found.extend(parse_counters(&v));
    }
    Ok(found)
}

/// From `nft -j list table`: (VIP, packets) of every rule that has a counter and a dup.
fn parse_counters(v: &Value) -> Vec<(IpAddr, u64)> {
    let mut out = Vec::new();
    let Some(items) = v.get("nftables").and_then(Value::as_array) else {
        return out;
    };
    for item in items {
        let Some(expr) = item.pointer("/rule/expr").and_then(Value::as_array) else {
            continue;
        };
        if !expr.iter().any(|e| e.get("dup").is_some()) {
            continue;
        }
        let vip = expr.iter().find_map(|e| {
            let m = e.get("match")?;
            (m.pointer("/left/payload/field")? == "daddr")
                .then(|| m.get("right")?.as_str()?.parse::<IpAddr>().ok())
                .flatten()
        });
        let packets = expr
            .iter()
            .find_map(|e| e.pointer("/counter/packets")?.as_u64());
        if let (Some(vip), Some(p)) = (vip, packets) {
            out.push((vip, p));
        }
    }
    out
}

/// `nft` from PATH; `VRRPD_NFT` overrides it (tests, unusual installs).
fn nft_program() -> String {
    std::env::var("VRRPD_NFT").unwrap_or_else(|_| "nft".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn drops_foreign_flows_always_steers_and_hides_only_while_asked() {
        let r = Rules {
            vips: vec![ip("10.0.0.100"), ip("fd00::100")],
            steer: vec![(ip("fd00::100"), ip("fe80::1"))],
            parked_v4: vec![],
            node_v4: Some("10.0.0.1".parse().unwrap()),
            device: "eth0".into(),
        };
        let text = render(&r).to_string();
        // Per VIP one rule dropping what others forwarded; one steering rule (hop limit
        // set to FORWARDED_TTL, then the copy); no ARP table.
        assert_eq!(
            text.matches(r#""right":["new","invalid"]"#).count(),
            3,
            "{text}"
        );
        assert_eq!(text.matches("\"mangle\"").count(), 1, "{text}");
        assert!(text.contains(r#""field":"hoplimit""#), "{text}");
        assert_eq!(text.matches("\"dup\"").count(), 1, "{text}");
        assert!(
            text.contains(r#"{"dup":{"addr":"fe80::1","dev":"eth0"}}"#),
            "{text}"
        );
        assert!(text.contains(r#"{"delete":{"table":{"family":"arp","name":"k3s_ha"}}}"#));
        let parked = Rules {
            parked_v4: vec!["10.0.0.100".parse().unwrap()],
            steer: vec![],
            ..r
        };
        let text = render(&parked).to_string();
        assert!(!text.contains("\"dup\""), "{text}");
        assert!(
            !text.contains("\"mangle\":{\"key\":{\"payload\":{\"field\":\"hoplimit\""),
            "{text}"
        );
        let batch = render(&parked);
        let arp_rules: Vec<&Value> = batch["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.pointer("/add/rule"))
            .filter(|r| r["family"] == "arp")
            .map(|r| &r["expr"])
            .collect();
        assert_eq!(arp_rules.len(), 2, "{text}");
        assert_eq!(arp_rules[0][1]["match"]["right"], "10.0.0.100", "{text}");
        assert_eq!(arp_rules[0][2], json!({"drop": null}), "{text}");
        assert_eq!(arp_rules[1][1]["mangle"]["value"], "10.0.0.1", "{text}");
    }

    /// Forwarding to two nodes is one rule with two copies, after the TTL is set; and a
    /// parked IPv4 VIP gets both ARP rules. (`K3SHA_STEER_DUMP=FILE` also writes the
    /// batch, to try against a real nft by hand: `nft -j -f FILE` in a scratch netns.)
    #[test]
    fn every_kind_of_rule_in_one_batch() {
        let r = Rules {
            vips: vec![ip("10.0.0.100"), ip("fd00::100")],
            steer: vec![
                (ip("10.0.0.100"), ip("10.0.0.1")),
                (ip("10.0.0.100"), ip("10.0.0.3")),
                (ip("fd00::100"), ip("fe80::1")),
            ],
            parked_v4: vec!["10.0.0.100".parse().unwrap()],
            node_v4: Some("10.0.0.2".parse().unwrap()),
            device: "eth0".into(),
        };
        let batch = render(&r);
        if let Ok(f) = std::env::var("K3SHA_STEER_DUMP") {
            std::fs::write(f, batch.to_string()).unwrap();
        }
        let rules: Vec<&Value> = batch["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.pointer("/add/rule"))
            .collect();
        let v4_steer = rules
            .iter()
            .find(|r| r["family"] == "ip" && r.to_string().contains("\"dup\""))
            .expect("an IPv4 steering rule");
        let expr = v4_steer["expr"].as_array().unwrap();
        let at = |key: &str| expr.iter().position(|e| e.get(key).is_some()).unwrap();
        assert_eq!(expr.iter().filter(|e| e.get("dup").is_some()).count(), 2);
        assert!(
            at("mangle") < at("dup"),
            "the TTL is set before the copies: {v4_steer}"
        );
        assert_eq!(
            expr[at("mangle")]["mangle"]["value"],
            u64::from(FORWARDED_TTL)
        );
        assert_eq!(expr.last().unwrap(), &json!({"drop": null}));
        // Per VIP, the rule dropping what others forwarded here.
        for fam in ["ip", "ip6"] {
            assert_eq!(
                rules
                    .iter()
                    .filter(|r| r["family"] == fam && r.to_string().contains(r#""op":"<=""#))
                    .count(),
                1,
                "{fam}"
            );
        }
        assert_eq!(rules.iter().filter(|r| r["family"] == "arp").count(), 2);
    }

    #[test]
    fn a_family_without_vips_has_no_table() {
        let r = Rules {
            vips: vec![ip("10.0.0.100")],
            device: "eth0".into(),
            ..Rules::default()
        };
        let v = render(&r);
        let deletes: Vec<&Value> = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.get("delete"))
            .collect();
        assert_eq!(deletes.len(), 2, "ip6 and arp deleted: {v}");
        assert_eq!(render_none()["nftables"].as_array().unwrap().len(), 6);
    }

    #[test]
    fn counters_are_read_from_the_listing() {
        let listing = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"rule": {"family": "ip", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.0.0.100"}},
                {"mangle": {}}]}},
            {"rule": {"family": "ip", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.0.0.100"}},
                {"counter": {"packets": 680, "bytes": 1}},
                {"dup": {"addr": "10.0.0.1", "dev": "eth0"}}, {"drop": null}]}}
        ]});
        assert_eq!(parse_counters(&listing), vec![(ip("10.0.0.100"), 680)]);
    }
}
