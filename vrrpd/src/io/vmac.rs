//! `virtual_mac = true`: the VIP lives on a macvlan with the RFC's virtual router MAC
//! (00-00-5E-00-01-{VRID} for IPv4, 00-00-5E-00-02-{VRID} for IPv6; RFC 5798 7.3), so a
//! failover moves no client's ARP / ND entry: switches learn the MAC's new port from the
//! new master's adverts and gratuitous ARP, which are sent from that interface.
//!
//! Per instance, at start: a macvlan `vrrp4.<vrid>` / `vrrp6.<vrid>` on the VRRP interface
//! (mode private; a stale one from a killed run is deleted first), no IPv6 address of its
//! own (every node has the same MAC, so an EUI-64 link-local would collide), for IPv6 a
//! copy of the base interface's link-local (the adverts' source must sit on the sending
//! interface), brought up. Interface settings (`net.ipv4.conf.<if>.*`, set over rtnetlink
//! since the unit keeps /proc/sys read-only): `arp_ignore = 1` on the base interface and on
//! the macvlan (each answers ARP only for its own addresses: the base never for the VIP,
//! the macvlan never for the node's address), `arp_announce = 2` on the base (its ARP
//! requests carry the node's address, never the VIP) and `rp_filter = 0` on the macvlan
//! (requests arrive on it, replies route out of the base). The base interface's old values
//! are put back when vrrpd exits.
//!
//! The master adds the VIP to the macvlan as a host address (/32, /128: the subnet route
//! stays on the base interface), announces it from there and sends its adverts through it.
//! Adverts are received on the base interface's socket, except those sent from the same
//! virtual MAC by another node: Linux hands a frame whose source is a local macvlan's
//! (private mode) MAC to that macvlan, so the macvlan's socket reads those (and only
//! those: a source-MAC filter keeps everything else from being read twice).

use std::net::{IpAddr, Ipv6Addr};

use tracing::{info, warn};

use super::netlink::{IPV4_DEVCONF_ARP_ANNOUNCE, IPV4_DEVCONF_ARP_IGNORE, IPV4_DEVCONF_RP_FILTER};
use super::{Announcer, Interface, IoError, Netlink, VrrpSocket};

/// The virtual router MAC of `vrid` for the family (RFC 5798 7.3).
pub fn virtual_mac(vrid: u8, v6: bool) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, if v6 { 0x02 } else { 0x01 }, vrid]
}

/// The macvlan's name for this instance (at most 15 bytes: "vrrp6.255").
pub fn vmac_name(vrid: u8, v6: bool) -> String {
    format!("vrrp{}.{vrid}", if v6 { 6 } else { 4 })
}

/// One instance's virtual MAC interface, with what sends through it.
#[derive(Debug)]
pub struct Vmac {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// VRRP socket on the macvlan: adverts leave through it (from the virtual MAC), and it
    /// receives the adverts other nodes send from the same virtual MAC, which the kernel
    /// delivers to the macvlan and not to the base interface.
    pub sock: VrrpSocket,
    pub announcer: Announcer,
}

/// The base interface's settings before vrrpd changed them (interface, index, devconf id,
/// name, old value); put back by [`restore_base`].
#[derive(Debug, Default)]
pub struct BaseSysctls {
    saved: Vec<(String, u32, u16, &'static str, u32)>,
}

/// What the base interface needs: `arp_ignore = 1` (answer ARP only for its own
/// addresses, never for the VIP on the macvlan) and `arp_announce = 2` (its own ARP
/// requests carry its own address, not the VIP: a request sent while replying from the
/// VIP would otherwise teach every host that the VIP is at the base MAC; keepalived 2.2.7
/// leaves this at 0 and leaks its base MAC exactly so).
const BASE_SYSCTLS: [(u16, &str, u32); 2] = [
    (IPV4_DEVCONF_ARP_IGNORE, "arp_ignore", 1),
    (IPV4_DEVCONF_ARP_ANNOUNCE, "arp_announce", 2),
];

impl Vmac {
    /// Create (or re-create) the macvlan for `vrid` / family on `base` and bring it up.
    /// Everything goes through rtnetlink (CAP_NET_ADMIN), not /proc/sys, which the
    /// shipped unit keeps read-only and hidden.
    pub async fn create(
        nl: &Netlink,
        base: &Interface,
        vrid: u8,
        v6: bool,
        saved: &mut BaseSysctls,
    ) -> Result<Vmac, IoError> {
        let name = vmac_name(vrid, v6);
        let mac = virtual_mac(vrid, v6);
        if let Some(stale) = nl.link_index(&name).await? {
            warn!(interface = %name, "deleting a virtual MAC interface left by an earlier run");
            nl.del_link(stale).await?;
        }
        let index = nl.add_macvlan(&name, base.index, mac).await?;
        // No address generation before it goes up: every node shares this MAC.
        nl.set_no_addr_gen(index).await?;
        nl.set_ipv4_conf(
            index,
            &[(IPV4_DEVCONF_ARP_IGNORE, 1), (IPV4_DEVCONF_RP_FILTER, 0)],
        )
        .await?;
        let conf = nl.ipv4_conf(base.index).await?;
        for (id, key, want) in BASE_SYSCTLS {
            if saved.saved.iter().any(|(_, _, k, _, _)| *k == id) {
                continue;
            }
            let old = match id {
                IPV4_DEVCONF_ARP_IGNORE => conf.arp_ignore,
                _ => conf.arp_announce,
            };
            let old = u32::try_from(old).unwrap_or(0);
            if old != want {
                nl.set_ipv4_conf(base.index, &[(id, want)]).await?;
                info!(interface = %base.name, key, old, new = want, "interface setting changed for the virtual MAC");
                saved
                    .saved
                    .push((base.name.clone(), base.index, id, key, old));
            }
        }
        // Best effort: /proc/sys is hidden under the shipped unit.
        let all_rp = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter");
        if all_rp.is_ok_and(|v| v.trim() == "1") {
            warn!("net.ipv4.conf.all.rp_filter = 1 (strict) overrides the macvlan's 0: traffic to the VIP may be dropped; use 2 (loose)");
        }
        nl.set_up(index).await?;
        if v6 {
            let ll: Option<Ipv6Addr> = base.link_local();
            match ll {
                Some(ll) => {
                    nl.add_addr(index, IpAddr::V6(ll), 64).await?;
                }
                None => return Err(IoError::NoLinkLocal(base.name.clone())),
            }
        }
        let iface = Interface::by_name(&name)?;
        let sock = if v6 {
            VrrpSocket::open_v6(&iface)?
        } else {
            VrrpSocket::open_v4(&iface)?
        }
        .only_from_mac(mac)?;
        let announcer = Announcer::new(&name)?;
        info!(interface = %name, index, mac = %fmt_mac(mac), "virtual MAC interface up");
        Ok(Vmac {
            name,
            index,
            mac,
            sock,
            announcer,
        })
    }

    /// Delete the macvlan (the VIP on it goes with it).
    pub async fn destroy(self, nl: &Netlink) {
        match nl.del_link(self.index).await {
            Ok(()) => info!(interface = %self.name, "virtual MAC interface deleted"),
            Err(e) => {
                warn!(interface = %self.name, error = %e, "could not delete the virtual MAC interface")
            }
        }
    }
}

/// Put the base interface's settings back as they were before vrrpd started.
pub async fn restore_base(nl: &Netlink, saved: &mut BaseSysctls) {
    for (ifname, index, id, key, old) in saved.saved.drain(..) {
        match nl.set_ipv4_conf(index, &[(id, old)]).await {
            Ok(()) => info!(interface = %ifname, key, value = old, "interface setting restored"),
            Err(e) => warn!(error = %e, key, "could not restore an interface setting"),
        }
    }
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_5798_virtual_router_macs_and_names() {
        assert_eq!(virtual_mac(78, false), [0, 0, 0x5e, 0, 1, 78]);
        assert_eq!(virtual_mac(255, true), [0, 0, 0x5e, 0, 2, 255]);
        assert_eq!(fmt_mac(virtual_mac(1, false)), "00:00:5e:00:01:01");
        assert_eq!(vmac_name(255, true), "vrrp6.255");
        assert!(vmac_name(255, false).len() <= 15, "IFNAMSIZ");
    }
}
