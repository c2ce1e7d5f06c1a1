//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6), so that hosts and
//! switches on the segment learn at once that the VIP now lives behind this node's MAC.
//!
//! Frames are built here and sent on an `AF_PACKET` raw socket (RFC 5798 6.4.2 / 6.4.3;
//! RFC 4861 7.2.6). The destination `sockaddr_ll` is the interface's own link address as
//! `getifaddrs` reports it (interface index + MAC), so no unsafe code is needed.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{sendto, LinkAddr, MsgFlags};
use socket2::{Domain, Socket, Type};

use super::iface::link_addr;
use super::IoError;

pub(crate) use vrrp_proto::frames::{garp_frame, unsolicited_na_frame, ETH_P_ARP, ETH_P_IPV6};

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
