//! `virtual_mac = true`: the VIP lives on a macvlan with the RFC's virtual router MAC
//! (00-00-5E-00-01-{VRID} for IPv4, 00-00-5E-00-02-{VRID} for IPv6; RFC 5798 7.3), so a
//! failover moves no client's ARP / ND entry: switches learn the MAC's new port from the
//! new master's adverts and gratuitous ARP, which are sent from that interface.
//!
//! Per instance, at start: a macvlan `vrrp4.<vrid>` / `vrrp6.<vrid>` on the VRRP interface
//! (mode private; a stale one from a killed run is deleted first), no IPv6 address of its
//! own (every node has the same MAC, so an EUI-64 link-local would collide), for IPv6 a
//! copy of the base interface's link-local (the adverts' source must sit on the sending
//! interface), brought up. Sysctls: `arp_ignore = 1` on the base interface and on the
//! macvlan (each answers ARP only for its own addresses: the base never for the VIP, the
//! macvlan never for the node's address), `arp_announce = 2` on the base (its ARP requests
//! carry the node's address, never the VIP) and `rp_filter = 0` on the macvlan (requests
//! arrive on it, replies route out of the base). The base interface's old values are put
//! back when vrrpd exits.
//!
//! The master adds the VIP to the macvlan as a host address (/32, /128: the subnet route
//! stays on the base interface), announces it from there and sends its adverts through it.
//! Adverts are received on the base interface's socket, except those sent from the same
//! virtual MAC by another node: Linux hands a frame whose source is a local macvlan's
//! (private mode) MAC to that macvlan, so the macvlan's socket reads those (and only
//! those: a source-MAC filter keeps everything else from being read twice).

use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use tracing::{info, warn};

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
    /// The IPv6 instance's (00-00-5E-00-02-{VRID}).
    pub v6: bool,
    /// VRRP socket on the macvlan: adverts leave through it (from the virtual MAC), and it
    /// receives the adverts other nodes send from the same virtual MAC, which the kernel
    /// delivers to the macvlan and not to the base interface.
    pub sock: VrrpSocket,
    pub announcer: Announcer,
}

fn sysctl_path(family: &str, ifname: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/{family}/conf/{ifname}/{key}"))
}

fn write_sysctl(family: &str, ifname: &str, key: &str, value: &str) -> Result<(), IoError> {
    let p = sysctl_path(family, ifname, key);
    std::fs::write(&p, value).map_err(|e| IoError::sys(format!("write {}", p.display()), e))
}

fn read_sysctl(family: &str, ifname: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(family, ifname, key))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The base interface's sysctls before vrrpd changed them (interface, key, old value);
/// put back by [`restore_base`].
#[derive(Debug, Default)]
pub struct BaseSysctls {
    saved: Vec<(String, &'static str, String)>,
}

/// What the base interface needs: `arp_ignore = 1` (answer ARP only for its own
/// addresses, never for the VIP on the macvlan) and `arp_announce = 2` (its own ARP
/// requests carry its own address, not the VIP: a request sent while replying from the
/// VIP would otherwise teach every host that the VIP is at the base MAC).
const BASE_SYSCTLS: [(&str, &str); 2] = [("arp_ignore", "1"), ("arp_announce", "2")];

impl Vmac {
    /// Create (or re-create) the macvlan for `vrid` / family on `base` and bring it up.
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
        write_sysctl("ipv6", &name, "addr_gen_mode", "1")?;
        write_sysctl("ipv4", &name, "arp_ignore", "1")?;
        write_sysctl("ipv4", &name, "rp_filter", "0")?;
        for (key, want) in BASE_SYSCTLS {
            if saved.saved.iter().any(|(_, k, _)| *k == key) {
                continue;
            }
            if let Some(old) = read_sysctl("ipv4", &base.name, key) {
                if old != want {
                    write_sysctl("ipv4", &base.name, key, want)?;
                    info!(interface = %base.name, key, old = %old, new = want, "sysctl set for the virtual MAC");
                    saved.saved.push((base.name.clone(), key, old));
                }
            }
        }
        if read_sysctl("ipv4", "all", "rp_filter").as_deref() == Some("1") {
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
            v6,
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

/// Put the base interface's sysctls back as they were before vrrpd started.
pub fn restore_base(saved: &mut BaseSysctls) {
    for (ifname, key, old) in saved.saved.drain(..) {
        match write_sysctl("ipv4", &ifname, key, &old) {
            Ok(()) => info!(interface = %ifname, key, value = %old, "sysctl restored"),
            Err(e) => warn!(error = %e, key, "could not restore a sysctl"),
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
