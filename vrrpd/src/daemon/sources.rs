//! Which IPv6 link-local addresses belong to the cluster's servers (`only_cluster_nodes`).
//!
//! IPv6 adverts come from link-local addresses, which cluster.toml does not list, and the
//! hop limit 255 only proves that the sender is on the link, as any stranger there is. So a
//! link-local source is accepted only once it is known to be a server's: the kernel's
//! neighbour table maps it to the same MAC as one of the server's listed addresses
//! (`address`, `address6`).
//!
//! ```text
//!  startup, every LINK_POLL ──> learn_all: nudge every peer's listed addresses and the
//!                               EUI-64 link-local of its MAC; every neighbour entry with a
//!                               peer's MAC is learned (stable-privacy link-locals too)
//!  advert from an unknown link-local ──> held (at most HELD_MAX) ──> resolve(source):
//!        nudge it, read the neighbour table until its MAC is known (RESOLVE_TIMEOUT)
//!          a peer's MAC ──> learned, the core's allow-list grows, held adverts delivered
//!          no peer's MAC ──> rejected for REJECT_FOR, held adverts go to the core, which
//!                            drops and counts them ("source")
//! ```
//!
//! A "nudge" is an empty UDP datagram to the discard port (9): sending it makes the kernel
//! resolve the address (ND / ARP), which is all we want from it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::map::Peer;
use crate::io::Netlink;

/// How long a link-local whose MAC is no server's stays refused before it is looked at
/// again.
pub const REJECT_FOR: Duration = Duration::from_secs(10);
/// How long a resolution may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_millis(250);
/// Adverts held while their source is resolved; more are handed to the core (dropped).
pub const HELD_MAX: usize = 16;

/// An advert waiting for its source to be resolved.
#[derive(Debug, Clone)]
pub struct Held {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

/// What to do with an advert from `src`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Known (or not subject to learning): hand it to the core now.
    Deliver,
    /// Unknown: hold it; start resolving `src` if `start` is set.
    Hold { start: bool },
}

/// Counters for the status (a protocol type: lbctl reads them).
pub use common::proto::vrrpd::LearnCounters;

/// The learned link-locals of one IPv6 instance.
#[derive(Debug)]
pub struct SourceLearner {
    ifindex: u32,
    peers: Vec<Peer>,
    /// MACs that count as a server's whatever the peer table says (the VRRP virtual MAC of
    /// this VRID, which every server's macvlan answers with).
    extra_macs: Vec<[u8; 6]>,
    base: Vec<IpAddr>,
    learned: BTreeMap<Ipv6Addr, String>,
    rejected: HashMap<Ipv6Addr, Instant>,
    resolving: Option<Ipv6Addr>,
    held: Vec<Held>,
    pub counters: LearnCounters,
}

impl SourceLearner {
    /// `base`: the allow-list from the plan (the servers' listed IPv6 addresses).
    pub fn new(
        ifindex: u32,
        peers: Vec<Peer>,
        base: Vec<IpAddr>,
        extra_macs: Vec<[u8; 6]>,
    ) -> SourceLearner {
        SourceLearner {
            ifindex,
            peers,
            extra_macs,
            base,
            learned: BTreeMap::new(),
            rejected: HashMap::new(),
            resolving: None,
            held: Vec::new(),
            counters: LearnCounters::default(),
        }
    }

    /// The allow-list for the core: the listed addresses and every learned link-local.
    pub fn allowed(&self) -> Vec<IpAddr> {
        let mut v = self.base.clone();
        v.extend(self.learned.keys().map(|a| IpAddr::V6(*a)));
        v
    }

    /// Learned link-locals and whose they are, for the status.
    pub fn learned(&self) -> &BTreeMap<Ipv6Addr, String> {
        &self.learned
    }

    pub fn verdict(&mut self, src: IpAddr, now: Instant) -> Verdict {
        let IpAddr::V6(ll) = src else {
            return Verdict::Deliver;
        };
        if !is_link_local(ll) || self.base.contains(&src) || self.learned.contains_key(&ll) {
            return Verdict::Deliver;
        }
        if self
            .rejected
            .get(&ll)
            .is_some_and(|t| now.saturating_duration_since(*t) < REJECT_FOR)
        {
            return Verdict::Deliver; // the core drops and counts it
        }
        match self.resolving {
            Some(r) if r == ll => Verdict::Hold { start: false },
            Some(_) => {
                self.counters.not_held += 1;
                Verdict::Deliver
            }
            None => {
                self.resolving = Some(ll);
                Verdict::Hold { start: true }
            }
        }
    }

    /// Keep an advert until its source is resolved; `false`: too many held (deliver it).
    pub fn hold(&mut self, h: Held) -> bool {
        if self.held.len() >= HELD_MAX {
            self.counters.not_held += 1;
            return false;
        }
        self.held.push(h);
        true
    }

    /// A resolution ended: `owner` is the server it belongs to, `None` if it is nobody's
    /// (or did not resolve). Returns the held adverts to hand to the core, in order.
    pub fn resolved(&mut self, ll: Ipv6Addr, owner: Option<String>, now: Instant) -> Vec<Held> {
        if self.resolving == Some(ll) {
            self.resolving = None;
        }
        match owner {
            Some(name) => {
                tracing::info!(source = %ll, server = %name, "learned a server's IPv6 link-local address");
                self.counters.learned += 1;
                self.learned.insert(ll, name);
            }
            None => {
                tracing::warn!(source = %ll, "IPv6 advert from a link-local address that belongs to no server: refused");
                self.counters.rejected += 1;
                self.rejected.insert(ll, now);
            }
        }
        self.rejected
            .retain(|_, t| now.saturating_duration_since(*t) < REJECT_FOR);
        std::mem::take(&mut self.held)
    }

    /// Inputs for [`resolve`] / [`learn_all`] (they run off the daemon loop).
    pub fn lookup(&self) -> Lookup {
        Lookup {
            ifindex: self.ifindex,
            peers: self.peers.clone(),
            extra_macs: self.extra_macs.clone(),
        }
    }

    /// A reload changed the servers: keep what was learned of those still there.
    pub fn replan(&mut self, peers: Vec<Peer>, base: Vec<IpAddr>) {
        self.learned
            .retain(|_, name| peers.iter().any(|p| &p.name == name) || name == "the virtual MAC");
        self.peers = peers;
        self.base = base;
    }

    /// Merge what [`learn_all`] found; returns whether the allow-list changed.
    pub fn merge(&mut self, found: BTreeMap<Ipv6Addr, String>) -> bool {
        let mut changed = false;
        for (ll, name) in found {
            if !self.learned.contains_key(&ll) {
                tracing::info!(source = %ll, server = %name, "learned a server's IPv6 link-local address");
                self.counters.learned += 1;
                self.learned.insert(ll, name);
                self.rejected.remove(&ll);
                changed = true;
            }
        }
        changed
    }
}

/// What a resolution needs, detached from the daemon.
#[derive(Debug, Clone)]
pub struct Lookup {
    ifindex: u32,
    peers: Vec<Peer>,
    extra_macs: Vec<[u8; 6]>,
}

pub fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// The EUI-64 link-local address of `mac` (RFC 4291 appendix A): what Linux gives an
/// interface with `addr_gen_mode` 0, its default.
pub fn eui64_link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 0x02, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

/// Make the kernel resolve each address (an empty datagram to the discard port).
async fn nudge(ifindex: u32, addrs: &[IpAddr]) {
    for a in addrs {
        let (bind, to): (SocketAddr, SocketAddr) = match a {
            IpAddr::V4(v4) => (
                SocketAddr::from(([0, 0, 0, 0], 0)),
                SocketAddr::from((*v4, 9)),
            ),
            IpAddr::V6(v6) => {
                let scope = if is_link_local(*v6) { ifindex } else { 0 };
                (
                    SocketAddr::from(([0u16; 8], 0)),
                    SocketAddr::V6(SocketAddrV6::new(*v6, 9, 0, scope)),
                )
            }
        };
        if let Ok(s) = tokio::net::UdpSocket::bind(bind).await {
            // Errors (no route, refused) say nothing we need: the neighbour table tells.
            let _ = s.send_to(&[], to).await;
        }
    }
}

/// Whose MAC is `mac`: a peer's (by any listed address), or one of the extra MACs.
fn owner_of(l: &Lookup, table: &[(IpAddr, [u8; 6])], mac: [u8; 6]) -> Option<String> {
    if l.extra_macs.contains(&mac) {
        return Some("the virtual MAC".into());
    }
    l.peers
        .iter()
        .find(|p| {
            p.addrs
                .iter()
                .any(|a| table.iter().any(|(t, m)| t == a && *m == mac))
        })
        .map(|p| p.name.clone())
}

/// Resolve one link-local: the server it belongs to, or `None`.
pub async fn resolve(nl: Netlink, l: Lookup, ll: Ipv6Addr) -> Option<String> {
    let mut targets: Vec<IpAddr> = l.peers.iter().flat_map(|p| p.addrs.clone()).collect();
    targets.push(IpAddr::V6(ll));
    nudge(l.ifindex, &targets).await;
    let deadline = Instant::now() + RESOLVE_TIMEOUT;
    let mut wait = Duration::from_millis(1);
    loop {
        if let Ok(table) = nl.neighbours(l.ifindex).await {
            if let Some((_, mac)) = table.iter().find(|(a, _)| *a == IpAddr::V6(ll)) {
                if let Some(owner) = owner_of(&l, &table, *mac) {
                    return Some(owner);
                }
                // Its MAC is known but matches no peer resolved so far: wait for the rest
                // of the peers, then give up.
                let all_peers = l
                    .peers
                    .iter()
                    .all(|p| p.addrs.iter().any(|a| table.iter().any(|(t, _)| t == a)));
                if all_peers {
                    return None;
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(20));
    }
}

/// Learn every peer's link-local we can before its adverts arrive: nudge the peers and the
/// EUI-64 link-locals of their MACs, then take every IPv6 link-local neighbour entry with a
/// peer's MAC. (A backup must know the next master's source before that master's first
/// advert: it may have only the skew difference to accept it.)
pub async fn learn_all(nl: Netlink, l: Lookup) -> BTreeMap<Ipv6Addr, String> {
    let peer_addrs: Vec<IpAddr> = l.peers.iter().flat_map(|p| p.addrs.clone()).collect();
    nudge(l.ifindex, &peer_addrs).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let Ok(table) = nl.neighbours(l.ifindex).await else {
        return BTreeMap::new();
    };
    let guesses: Vec<IpAddr> = table
        .iter()
        .filter(|(a, _)| peer_addrs.contains(a))
        .map(|(_, mac)| IpAddr::V6(eui64_link_local(*mac)))
        .collect();
    nudge(l.ifindex, &guesses).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let Ok(table) = nl.neighbours(l.ifindex).await else {
        return BTreeMap::new();
    };
    table
        .iter()
        .filter_map(|(a, mac)| match a {
            IpAddr::V6(v6) if is_link_local(*v6) => owner_of(&l, &table, *mac).map(|o| (*v6, o)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learner() -> SourceLearner {
        SourceLearner::new(
            2,
            vec![Peer {
                name: "s2".into(),
                addrs: vec!["fd00::12".parse().unwrap()],
            }],
            vec!["fd00::12".parse().unwrap()],
            Vec::new(),
        )
    }

    #[test]
    fn eui64_of_a_mac() {
        assert_eq!(
            eui64_link_local([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn unknown_sources_are_held_once_and_refused_for_a_while() {
        let now = Instant::now();
        let mut l = learner();
        let a: IpAddr = "fe80::a".parse().unwrap();
        let b: IpAddr = "fe80::b".parse().unwrap();
        // Listed and non-link-local sources go straight through.
        assert_eq!(
            l.verdict("fd00::12".parse().unwrap(), now),
            Verdict::Deliver
        );
        assert_eq!(
            l.verdict("10.0.0.1".parse().unwrap(), now),
            Verdict::Deliver
        );
        assert_eq!(l.verdict(a, now), Verdict::Hold { start: true });
        assert_eq!(l.verdict(a, now), Verdict::Hold { start: false });
        // One resolution at a time: another unknown source goes to the core (dropped).
        assert_eq!(l.verdict(b, now), Verdict::Deliver);
        assert!(l.hold(Held {
            src: a,
            dst: a,
            ttl: 255,
            payload: vec![1]
        }));
        let back = l.resolved("fe80::a".parse().unwrap(), None, now);
        assert_eq!(back.len(), 1);
        assert_eq!(l.counters.rejected, 1);
        assert_eq!(l.verdict(a, now + Duration::from_secs(1)), Verdict::Deliver);
        assert_eq!(
            l.verdict(a, now + REJECT_FOR),
            Verdict::Hold { start: true }
        );
        l.resolved(
            "fe80::a".parse().unwrap(),
            Some("s2".into()),
            now + REJECT_FOR,
        );
        assert!(l.allowed().contains(&a));
        assert_eq!(l.verdict(a, now + REJECT_FOR), Verdict::Deliver);
    }

    #[test]
    fn a_mac_belongs_to_the_peer_whose_address_has_it() {
        let l = learner().lookup();
        let table = vec![
            ("fd00::12".parse().unwrap(), [2, 0, 0, 0, 0, 0x12]),
            ("fe80::77".parse().unwrap(), [2, 0, 0, 0, 0, 0x77]),
        ];
        assert_eq!(
            owner_of(&l, &table, [2, 0, 0, 0, 0, 0x12]),
            Some("s2".into())
        );
        assert_eq!(owner_of(&l, &table, [2, 0, 0, 0, 0, 0x77]), None);
    }
}
