//! From the cluster model to the core's per-family [`crate::core::Config`]s.
//!
//! Pure: the interface facts it needs (the IPv6 link-local address) are passed in.

use std::net::{IpAddr, Ipv6Addr};

use common::config::{Cluster, Node, Role};

use crate::core::{Config, RELEASE_LINGER};
use crate::packet::Version;

/// One VRRP instance to run: the core's config plus the VIP prefix length for netlink.
#[derive(Debug, Clone, PartialEq)]
pub struct InstancePlan {
    pub cfg: Config,
    pub prefix: u8,
    /// IPv6 with `only_cluster_nodes`: adverts come from link-local addresses, which
    /// cluster.toml does not list. The shell accepts a link-local source only once it has
    /// learned that it belongs to one of these servers (the same MAC as the server's
    /// listed addresses). Empty: nothing to learn (IPv4, or no allow-list).
    pub learn_sources_from: Vec<Peer>,
}

/// Another server, as the source learning knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// Its addresses from cluster.toml (`address`, `address6`).
    pub addrs: Vec<IpAddr>,
}

impl InstancePlan {
    pub fn family(&self) -> &'static str {
        if self.cfg.primary.is_ipv6() {
            "ipv6"
        } else {
            "ipv4"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("node {0} is not a server: only servers run vrrpd")]
    NotAServer(String),
    #[error("node {0} has no VRRP priority")]
    NoPriority(String),
    #[error("node {node} has no IPv4 address, but the cluster has an IPv4 VIP")]
    NoIpv4 { node: String },
    #[error(
        "the cluster has an IPv6 VIP but interface {interface} has no IPv6 link-local address"
    )]
    NoLinkLocal { interface: String },
    #[error("the cluster has no VIP")]
    NoVip,
}

/// The instances this node runs: one for the IPv4 VIP and one for the IPv6 VIP, whichever
/// the cluster has. `link_local` is the interface's IPv6 link-local address (the source of
/// IPv6 adverts).
pub fn plan(
    cluster: &Cluster,
    node: &Node,
    interface: &str,
    link_local: Option<Ipv6Addr>,
) -> Result<Vec<InstancePlan>, MapError> {
    if node.role != Role::Server {
        return Err(MapError::NotAServer(node.name.clone()));
    }
    let priority = node
        .priority
        .ok_or_else(|| MapError::NoPriority(node.name.clone()))?;
    let v = &cluster.vrrp;
    let password = v.password.as_ref().map(|p| {
        let mut b = [0u8; 8];
        for (dst, src) in b.iter_mut().zip(p.bytes()) {
            *dst = src;
        }
        b
    });
    let others = || cluster.servers().filter(|n| n.name != node.name);
    let base = |primary: IpAddr, vips: Vec<IpAddr>| Config {
        vrid: v.vrid,
        version: if v.version == 2 {
            Version::V2
        } else {
            Version::V3
        },
        priority,
        adver_interval: v.interval,
        preempt: v.preempt,
        preempt_delay: v.preempt_delay,
        accept_mode: v.accept_mode,
        primary,
        vips,
        checksum: v.checksum,
        password: if v.version == 2 { password } else { None },
        allowed_sources: None,
        unicast_peers: Vec::new(),
        garp_repeat: v.garp_repeat,
        garp_interval: v.garp_interval,
        garp_refresh: v.garp_refresh,
        handover_timeout: v.handover_timeout,
        release_linger: RELEASE_LINGER,
        // Parking needs the VIP as a local address: with accept_mode = false nothing on
        // this node serves the VIP, so there is nothing to keep (docs/handover.md).
        drain_established: if v.accept_mode {
            v.drain_established
        } else {
            std::time::Duration::ZERO
        },
    };
    let mut out = Vec::new();
    if let Some(vip4) = cluster.vip.v4 {
        if !node.address.is_ipv4() {
            return Err(MapError::NoIpv4 {
                node: node.name.clone(),
            });
        }
        let mut cfg = base(node.address, vec![IpAddr::V4(vip4.addr)]);
        if v.only_cluster_nodes {
            // Servers only: agents never run vrrpd, so an advert from an agent's address is
            // a stranger (say a hostNetwork pod with NET_RAW) trying to take the VIP.
            cfg.allowed_sources = Some(
                cluster
                    .servers()
                    .map(|n| n.address)
                    .filter(IpAddr::is_ipv4)
                    .collect(),
            );
        }
        if v.unicast {
            cfg.unicast_peers = others()
                .map(|n| n.address)
                .filter(IpAddr::is_ipv4)
                .collect();
        }
        out.push(InstancePlan {
            cfg,
            prefix: vip4.prefix,
            learn_sources_from: Vec::new(),
        });
    }
    if let Some(vip6) = cluster.vip.v6 {
        let ll = link_local.ok_or_else(|| MapError::NoLinkLocal {
            interface: interface.to_owned(),
        })?;
        // IPv6 adverts come from link-local addresses, which cluster.toml does not list. The
        // hop limit 255 only proves the sender is on the link, as any stranger there is:
        // the allow-list starts with the servers' listed IPv6 addresses (unicast peers may
        // send from those) and the shell adds each server's link-local once it has learned
        // it (see `learn_sources_from`).
        let mut cfg = base(IpAddr::V6(ll), vec![IpAddr::V6(vip6.addr)]);
        let mut learn_sources_from = Vec::new();
        if v.only_cluster_nodes {
            cfg.allowed_sources = Some(
                cluster
                    .servers()
                    .flat_map(|n| [Some(n.address), n.address6.map(IpAddr::V6)])
                    .flatten()
                    .filter(IpAddr::is_ipv6)
                    .collect(),
            );
            learn_sources_from = others()
                .map(|n| Peer {
                    name: n.name.clone(),
                    addrs: [Some(n.address), n.address6.map(IpAddr::V6)]
                        .into_iter()
                        .flatten()
                        .collect(),
                })
                .collect();
        }
        if v.unicast {
            cfg.unicast_peers = others()
                .filter_map(|n| {
                    n.address6
                        .map(IpAddr::V6)
                        .or(Some(n.address).filter(IpAddr::is_ipv6))
                })
                .collect();
        }
        out.push(InstancePlan {
            cfg,
            prefix: vip6.prefix,
            learn_sources_from,
        });
    }
    if out.is_empty() {
        return Err(MapError::NoVip);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[cluster]
name = "t"
domain = "t.local"

[vip]
address = "10.9.0.100/24"
address6 = "fd09::100/64"

[vrrp]
unicast = true
interval = "100ms"

[[nodes]]
name = "s1"
address = "10.9.0.11"
address6 = "fd09::11"
role = "server"
priority = 150

[[nodes]]
name = "s2"
address = "10.9.0.12"
address6 = "fd09::12"
role = "server"
priority = 100

[[nodes]]
name = "a1"
address = "10.9.0.21"
role = "agent"
"#;

    #[test]
    fn maps_both_families_with_unicast_peers_and_sources() {
        let c = common::config::parse(TEXT, None).unwrap();
        let s1 = c.node("s1").unwrap();
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let p = plan(&c, s1, "eth0", Some(ll)).unwrap();
        assert_eq!(p.len(), 2);
        let v4 = &p[0].cfg;
        assert_eq!(p[0].prefix, 24);
        assert_eq!(v4.priority, 150);
        assert_eq!(v4.primary, "10.9.0.11".parse::<IpAddr>().unwrap());
        assert_eq!(v4.vips, vec!["10.9.0.100".parse::<IpAddr>().unwrap()]);
        assert_eq!(v4.adver_interval, std::time::Duration::from_millis(100));
        assert_eq!(
            v4.unicast_peers,
            vec!["10.9.0.12".parse::<IpAddr>().unwrap()]
        );
        // Regression: agents were on the allow-list, though they never run vrrpd.
        let allowed = v4.allowed_sources.clone().unwrap();
        assert_eq!(
            allowed,
            vec![
                "10.9.0.11".parse::<IpAddr>().unwrap(),
                "10.9.0.12".parse().unwrap()
            ]
        );
        let v6 = &p[1].cfg;
        assert_eq!(p[1].family(), "ipv6");
        assert_eq!(v6.primary, IpAddr::V6(ll));
        assert_eq!(
            v6.unicast_peers,
            vec!["fd09::12".parse::<IpAddr>().unwrap()]
        );
        // Regression: IPv6 had no allow-list at all. It starts with the servers' listed
        // addresses; their link-locals are learned (the other server's addresses given).
        assert_eq!(
            v6.allowed_sources,
            Some(vec![
                "fd09::11".parse::<IpAddr>().unwrap(),
                "fd09::12".parse().unwrap()
            ])
        );
        assert_eq!(
            p[1].learn_sources_from,
            vec![Peer {
                name: "s2".into(),
                addrs: vec!["10.9.0.12".parse().unwrap(), "fd09::12".parse().unwrap()]
            }]
        );
        assert!(p[0].learn_sources_from.is_empty());
        // No link-local: refused with the interface named.
        assert_eq!(
            plan(&c, s1, "eth0", None),
            Err(MapError::NoLinkLocal {
                interface: "eth0".into()
            })
        );
        // Agents do not run vrrpd.
        assert!(matches!(
            plan(&c, c.node("a1").unwrap(), "eth0", Some(ll)),
            Err(MapError::NotAServer(_))
        ));
    }
}
