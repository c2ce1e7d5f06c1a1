//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6), so that hosts and
//! switches on the segment learn at once that the VIP now lives behind this node's MAC.
//!
//! Frames are built here and sent on an `AF_PACKET` raw socket (RFC 5798 6.4.2 / 6.4.3;
//! RFC 4861 7.2.6). The destination `sockaddr_ll` is the interface's own link address as
//! `getifaddrs` reports it (interface index + MAC), so no unsafe code is needed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{sendto, LinkAddr, MsgFlags};
use socket2::{Domain, Socket, Type};

use super::iface::link_addr;
use super::IoError;

pub(crate) const ETH_P_ARP: u16 = 0x0806;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
const BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1 (all nodes) and its Ethernet multicast address 33:33:00:00:00:01.
pub(crate) const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub(crate) const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// Sends announcements on one interface.
#[derive(Debug)]
pub struct Announcer {
    sock: Socket,
    ifname: String,
}

impl Announcer {
    /// Open the `AF_PACKET` socket (protocol 0: it never receives anything).
    pub fn new(ifname: &str) -> Result<Announcer, IoError> {
        let sock = Socket::new(Domain::PACKET, Type::RAW, None)
            .map_err(|e| IoError::sys(format!("socket(AF_PACKET) for {ifname}"), e))?;
        sock.set_nonblocking(true)
            .map_err(|e| IoError::sys("AF_PACKET socket: O_NONBLOCK", e))?;
        Ok(Announcer {
            sock,
            ifname: ifname.to_owned(),
        })
    }

    /// Announce one VIP: a gratuitous ARP request for IPv4, an unsolicited NA with the
    /// override flag to ff02::1 for IPv6. The interface's index and MAC are read afresh.
    pub fn announce(&self, vip: IpAddr) -> Result<(), IoError> {
        let ll = link_addr(&self.ifname)?;
        let mac = ll
            .addr()
            .ok_or_else(|| IoError::NoLinkAddress(self.ifname.clone()))?;
        let frame = match vip {
            IpAddr::V4(v) => garp_frame(mac, v),
            IpAddr::V6(v) => unsolicited_na_frame(mac, v, ipv6_forwarding(&self.ifname)),
        };
        self.send(&ll, &frame)
            .map_err(|e| IoError::sys(format!("announce {vip} on {}", self.ifname), e))
    }

    fn send(&self, ll: &LinkAddr, frame: &[u8]) -> std::io::Result<()> {
        sendto(self.sock.as_raw_fd(), frame, ll, MsgFlags::empty())?;
        Ok(())
    }
}

fn eth_header(out: &mut Vec<u8>, dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ethertype.to_be_bytes());
}

/// A gratuitous ARP request: sender and target protocol address both the VIP, broadcast
/// (what keepalived and `arping -U` send; every Linux host updates an existing entry).
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    arp_frame(BROADCAST, mac, 1, vip, [0; 6], vip)
}

/// An Ethernet ARP frame for IPv4 from `mac`: operation `op` (1 request, 2 reply), sender
/// `mac` / `spa`, target `tha` / `tpa`, padded to the 60-byte Ethernet minimum (no FCS).
fn arp_frame(
    dst: [u8; 6],
    mac: [u8; 6],
    op: u16,
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    eth_header(&mut f, dst, mac, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]); // Ethernet, IPv4, hlen 6, plen 4
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

/// Whether the node routes IPv6 on `ifname` (`net.ipv6.conf.IF.forwarding`): what decides
/// the Router flag of our neighbour advertisements.
///
/// Why not always set it, as RFC 5798 6.4.1 / 6.4.2 ask: there the virtual address is a
/// router (the hosts' default gateway). Here the VIP is a service address (the API and
/// the ingress), and the kernel's own answers for it (a solicited NA from the node that
/// holds it) carry R exactly when the node forwards. An unsolicited NA that disagrees would
/// flip the IsRouter flag of every host's neighbour entry at each handover, and RFC 4861
/// 7.2.5 makes a host that sees IsRouter go from true to false drop that neighbour from its
/// default router list. So R follows forwarding, like the kernel: a k3s node routing pod
/// traffic says R=1, a plain host R=0. Read per announcement (the file is readable even
/// with the unit's read-only /proc/sys); unknown counts as not routing.
pub fn ipv6_forwarding(ifname: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/forwarding"))
        .is_ok_and(|v| v.trim() == "1")
}

/// An unsolicited neighbour advertisement for `vip` from `vip` to all nodes, with the
/// override flag, the Router flag when `router` (see [`ipv6_forwarding`]) and the target
/// link-layer address option (RFC 4861 4.4, 7.2.6).
pub fn unsolicited_na_frame(mac: [u8; 6], vip: Ipv6Addr, router: bool) -> Vec<u8> {
    na_frame(mac, vip, ALL_NODES, ALL_NODES_MAC, false, router)
}

/// A neighbour advertisement for `target` (sent from `target`) to `dst` / `dst_mac`:
/// override flag always, solicited flag when it answers a solicitation (RFC 4861 7.2.4),
/// Router flag when `router`, and the target link-layer address option carrying `mac`.
pub fn na_frame(
    mac: [u8; 6],
    target: Ipv6Addr,
    dst: Ipv6Addr,
    dst_mac: [u8; 6],
    solicited: bool,
    router: bool,
) -> Vec<u8> {
    // ICMPv6 NA: type, code, checksum, flags(R S O) + reserved, target, option(2, 1, mac).
    let mut icmp = Vec::with_capacity(32);
    icmp.push(136);
    icmp.push(0);
    icmp.extend_from_slice(&[0, 0]);
    let flags: u32 = 0x2000_0000
        | if solicited { 0x4000_0000 } else { 0 }
        | if router { 0x8000_0000 } else { 0 };
    icmp.extend_from_slice(&flags.to_be_bytes());
    icmp.extend_from_slice(&target.octets());
    icmp.push(2); // target link-layer address
    icmp.push(1); // length in units of 8 bytes
    icmp.extend_from_slice(&mac);
    let csum = icmpv6_checksum(target, dst, &icmp);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    eth_header(&mut f, dst_mac, mac, ETH_P_IPV6);
    f.extend_from_slice(&0x6000_0000u32.to_be_bytes()); // version 6, tc 0, flow 0
    let len = u16::try_from(icmp.len()).unwrap_or(u16::MAX);
    f.extend_from_slice(&len.to_be_bytes());
    f.push(58); // next header ICMPv6
    f.push(255); // hop limit (RFC 4861 requires 255)
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// An ARP reply: `vip` is at `mac`, to the asker (`to_mac`, `to_ip`).
pub fn arp_reply_frame(mac: [u8; 6], vip: Ipv4Addr, to_mac: [u8; 6], to_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(to_mac, mac, 2, vip, to_mac, to_ip)
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and the message (checksum field zero).
pub(crate) fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map(|b| u32::from(*b)).unwrap_or(0);
            sum = sum.wrapping_add(hi | lo);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn garp_layout() {
        let f = garp_frame(MAC, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[10, 1, 2, 3]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 1, 2, 3]);
    }

    #[test]
    fn na_layout_and_checksum_verifies() {
        let vip: Ipv6Addr = "fd00::100".parse().unwrap();
        let f = unsolicited_na_frame(MAC, vip, false);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[0..6], &ALL_NODES_MAC);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14] >> 4, 6);
        assert_eq!(&f[18..20], &[0, 32]);
        assert_eq!(f[20], 58);
        assert_eq!(f[21], 255);
        assert_eq!(&f[22..38], &vip.octets());
        assert_eq!(&f[38..54], &ALL_NODES.octets());
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4], 0x20, "override flag only");
        // A forwarding node says so, as the kernel's own NAs do.
        let r = unsolicited_na_frame(MAC, vip, true);
        assert_eq!(r[54 + 4], 0xa0, "router and override flags");
        assert_eq!(&icmp[8..24], &vip.octets());
        assert_eq!(&icmp[24..26], &[2, 1]);
        assert_eq!(&icmp[26..32], &MAC);
        // A correct checksum makes the sum over pseudo-header + message come out as 0.
        let mut zeroed = icmp.to_vec();
        let sent = u16::from_be_bytes([icmp[2], icmp[3]]);
        zeroed[2] = 0;
        zeroed[3] = 0;
        assert_eq!(icmpv6_checksum(vip, ALL_NODES, &zeroed), sent);
        assert_eq!(icmpv6_checksum(vip, ALL_NODES, icmp), 0);
    }
}
