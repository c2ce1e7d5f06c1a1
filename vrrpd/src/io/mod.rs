//! The I/O shell's system interface: everything vrrpd does to the network besides thinking.
//!
//! - [`iface`]: find the VRRP interface (by name, or the one holding the node's address),
//!   its index, MAC, IPv4 addresses and IPv6 link-local address (`getifaddrs`).
//! - [`socket`]: raw IP protocol 112 sockets, IPv4 (header included on receive, for the TTL)
//!   and IPv6 (hop limit and destination from `IPV6_RECVHOPLIMIT` / `IPV6_RECVPKTINFO`),
//!   multicast group joined, TTL / hop limit 255, loopback off, bound to the device; sends
//!   pick the source address with `IP_PKTINFO` / `IPV6_PKTINFO`.
//! - [`netlink`]: add / remove the VIPs (idempotent, IPv6 with `nodad`) and watch link state
//!   (rtnetlink, `RTNLGRP_LINK`).
//! - [`announce`]: gratuitous ARP and unsolicited neighbour advertisements, built here and
//!   sent on an `AF_PACKET` socket from the interface's MAC.
//! - [`responder`]: `accept_mode = false`: answer ARP / neighbour solicitations for the
//!   VIPs without adding them (so nothing on the node accepts their traffic).
//! - [`vmac`]: `virtual_mac = true`: the macvlan with the RFC's virtual router MAC that
//!   holds the VIP and sends the adverts and announcements.
//! - [`steer`]: the nftables side of a planned handover: mark the flows that began here,
//!   forward the unknown ones to the previous holder, hide a parked VIP from ARP.
//! - [`timer`]: the deadline timer (`timerfd`, microseconds; tokio's wheel is 1-2 ms late).
//!
//! Nothing in here decides anything: the core ([`crate::core`]) does.

pub mod announce;
pub mod iface;
pub mod netlink;
pub mod responder;
pub mod socket;
pub mod steer;
pub mod timer;
pub mod vmac;

pub use announce::Announcer;
pub use iface::Interface;
pub use netlink::{LinkEvents, Netlink};
pub use responder::Responder;
pub use socket::{RxMeta, VrrpSocket};
pub use timer::DeadlineTimer;

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;

/// Register an fd that `inner` owns with tokio. `AsyncFd::new` is deprecated because a
/// caller could close or replace the fd behind tokio's back; every caller here hands over
/// the owning value (a `Socket`, a `TimerFd`), which then lives inside the `AsyncFd`.
pub(crate) fn register<T: AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    #[allow(deprecated)]
    AsyncFd::new(inner)
}

/// A system-level failure of the shell, one variant per thing an operator would fix
/// differently.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A syscall failed (`what` names it and its arguments).
    // The cause is part of the message and deliberately not a `#[source]`, so that
    // `{:#}` chains do not print it twice.
    #[error("{what}: {err}")]
    Sys { what: String, err: std::io::Error },
    #[error("netlink {what}: {err}")]
    Netlink { what: String, err: rtnetlink::Error },
    #[error("no interface holds the address {0}")]
    NoInterfaceFor(IpAddr),
    #[error("no interface named {0:?}")]
    NoSuchInterface(String),
    #[error("the kernel reported no IPv4 settings (IFLA_INET_CONF) for link {0}")]
    NoIpv4Conf(u32),
    #[error("interface {0} has no IPv6 link-local address")]
    NoLinkLocal(String),
    #[error("interface {0} has no IPv4 address")]
    NoIpv4(String),
    #[error("interface {0} has no Ethernet (AF_PACKET) address")]
    NoLinkAddress(String),
}

impl IoError {
    /// The errno behind this error, when the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            IoError::Sys { err, .. } => err.raw_os_error(),
            IoError::Netlink {
                err: rtnetlink::Error::NetlinkError(m),
                ..
            } => m.code.map(|c| -c.get()),
            _ => None,
        }
    }

    pub(crate) fn sys(what: impl Into<String>, source: impl Into<std::io::Error>) -> IoError {
        IoError::Sys {
            what: what.into(),
            err: source.into(),
        }
    }
}
