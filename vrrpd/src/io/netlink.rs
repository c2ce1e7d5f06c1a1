//! rtnetlink: the VIPs on the interface, and the interface's link state.

use std::net::IpAddr;

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{DefaultNla, NLA_F_NESTED};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InetDevConf, LinkAttribute, LinkFlags,
    LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, MulticastGroup};

use super::IoError;

/// `IFLA_INET_CONF` inside `IFLA_AF_SPEC` / `AF_INET` (linux/if_link.h).
const IFLA_INET_CONF: u16 = 1;
/// `IPV4_DEVCONF_*` ids (linux/ip.h).
pub const IPV4_DEVCONF_RP_FILTER: u16 = 8;
pub const IPV4_DEVCONF_ARP_ANNOUNCE: u16 = 18;
pub const IPV4_DEVCONF_ARP_IGNORE: u16 = 19;

/// A netlink route connection (its I/O task runs on the current tokio runtime).
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

/// The address an `AddressMessage` is about (IPv4: `IFA_LOCAL`, IPv6: `IFA_ADDRESS`).
fn message_addr(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// (address, MAC) of a neighbour entry that has a link-layer address.
fn neighbour_entry(m: &NeighbourMessage) -> Option<(IpAddr, [u8; 6])> {
    let dst = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        _ => None,
    })?;
    let mac = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
        _ => None,
    })?;
    Some((dst, mac))
}

fn link_is_up(m: &LinkMessage) -> bool {
    m.header.flags.contains(LinkFlags::Up) && m.header.flags.contains(LinkFlags::Running)
}

impl Netlink {
    /// Open a connection; must be called inside a tokio runtime (it spawns the I/O task).
    pub fn new() -> Result<Netlink, IoError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| IoError::sys("netlink socket", e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Addresses on interface `index`, with their prefix length.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, IoError> {
        Ok(self
            .address_messages(index)
            .await?
            .iter()
            .filter_map(|m| message_addr(m).map(|a| (a, m.header.prefix_len)))
            .collect())
    }

    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>, IoError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|source| IoError::Netlink {
                what: format!("list addresses of interface {index}"),
                err: source,
            })
    }

    /// Add `addr/prefix` to interface `index` unless it is there already (IPv6: `nodad`,
    /// the VIP must answer at once). Returns whether it was added.
    pub async fn add_addr(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<bool, IoError> {
        if self.addresses(index).await?.iter().any(|(a, _)| *a == addr) {
            return Ok(false);
        }
        let mut req = self.handle.address().add(index, addr, prefix);
        if addr.is_ipv6() {
            let m = req.message_mut();
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            // Added by someone else in between: the goal is reached.
            Err(_) if self.addresses(index).await?.iter().any(|(a, _)| *a == addr) => Ok(false),
            Err(source) => Err(IoError::Netlink {
                what: format!("add {addr}/{prefix} to interface {index}"),
                err: source,
            }),
        }
    }

    /// Remove `addr` (any prefix) from interface `index` if present. Returns whether it
    /// was removed.
    pub async fn del_addr(&self, index: u32, addr: IpAddr) -> Result<bool, IoError> {
        let msgs = self.address_messages(index).await?;
        let mut removed = false;
        for m in msgs.into_iter().filter(|m| message_addr(m) == Some(addr)) {
            match self.handle.address().del(m).execute().await {
                Ok(()) => removed = true,
                Err(_) if !self.addresses(index).await?.iter().any(|(a, _)| *a == addr) => {}
                Err(source) => {
                    return Err(IoError::Netlink {
                        what: format!("remove {addr} from interface {index}"),
                        err: source,
                    })
                }
            }
        }
        Ok(removed)
    }

    /// The index of the interface called `name`, if there is one.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, IoError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(m) => Ok(m.map(|m| m.header.index)),
            // ENODEV: no such link.
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -(nix::errno::Errno::ENODEV as i32) =>
            {
                Ok(None)
            }
            Err(source) => Err(IoError::Netlink {
                what: format!("get link {name}"),
                err: source,
            }),
        }
    }

    /// Create a macvlan `name` on interface `base` (mode private: it hears nothing its
    /// siblings send) with link address `mac`, still down. Returns its index.
    pub async fn add_macvlan(&self, name: &str, base: u32, mac: [u8; 6]) -> Result<u32, IoError> {
        let msg = rtnetlink::LinkMacVlan::new(name, base, MacVlanMode::Private)
            .address(mac.to_vec())
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|source| IoError::Netlink {
                what: format!("create macvlan {name}"),
                err: source,
            })?;
        self.link_index(name)
            .await?
            .ok_or_else(|| IoError::NoSuchInterface(name.to_owned()))
    }

    /// `RTM_SETLINK` with `msg`; `what` names it in the error.
    async fn set_link(
        &self,
        msg: LinkMessage,
        what: impl FnOnce() -> String,
    ) -> Result<(), IoError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|source| IoError::Netlink {
                what: what(),
                err: source,
            })
    }

    /// Set link `index` administratively up.
    pub async fn set_up(&self, index: u32) -> Result<(), IoError> {
        let msg = rtnetlink::LinkUnspec::new_with_index(index).up().build();
        self.set_link(msg, || format!("set link {index} up")).await
    }

    /// Delete link `index`.
    pub async fn del_link(&self, index: u32) -> Result<(), IoError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|source| IoError::Netlink {
                what: format!("delete link {index}"),
                err: source,
            })
    }

    /// The IPv4 per-interface settings (`net.ipv4.conf.<if>.*`) of link `index`, as the
    /// kernel reports them in `IFLA_AF_SPEC` (no /proc needed: the unit hides /proc/sys).
    pub async fn ipv4_conf(&self, index: u32) -> Result<InetDevConf, IoError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = links
            .try_next()
            .await
            .map_err(|source| IoError::Netlink {
                what: format!("get link {index}"),
                err: source,
            })?
            .ok_or_else(|| IoError::NoSuchInterface(format!("index {index}")))?;
        msg.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::AfSpecUnspec(specs) => specs.iter().find_map(|s| match s {
                    AfSpecUnspec::Inet(inet) => inet.iter().find_map(|i| match i {
                        AfSpecInet::DevConf(c) => Some(*c),
                        _ => None,
                    }),
                    _ => None,
                }),
                _ => None,
            })
            .ok_or(IoError::NoIpv4Conf(index))
    }

    /// Set IPv4 per-interface settings of link `index` (`IPV4_DEVCONF_*` id, value) with
    /// `RTM_SETLINK` (CAP_NET_ADMIN; /proc/sys may be read-only). Zero values are sent too
    /// (the crate's own request type skips them, which would make restoring a 0 a no-op).
    pub async fn set_ipv4_conf(&self, index: u32, values: &[(u16, u32)]) -> Result<(), IoError> {
        let mut nested = Vec::with_capacity(values.len() * 8);
        for (id, v) in values {
            nested.extend_from_slice(&8u16.to_ne_bytes()); // nla_len: header + u32
            nested.extend_from_slice(&id.to_ne_bytes());
            nested.extend_from_slice(&v.to_ne_bytes());
        }
        let conf = DefaultNla::new(IFLA_INET_CONF | NLA_F_NESTED, nested);
        let msg = rtnetlink::LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::Other(conf),
            ])]))
            .build();
        self.set_link(msg, || {
            format!("set IPv4 settings {values:?} of link {index}")
        })
        .await
    }

    /// No IPv6 address generation on link `index` (`addr_gen_mode none`; set before up).
    pub async fn set_no_addr_gen(&self, index: u32) -> Result<(), IoError> {
        let msg = rtnetlink::LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        self.set_link(msg, || format!("set addr_gen_mode none on link {index}"))
            .await
    }

    /// The neighbour tables (ARP and IPv6 ND) of interface `index`: (address, link-layer
    /// address) for every entry that has one (reachable, stale, delay, probe, permanent).
    pub async fn neighbours(&self, index: u32) -> Result<Vec<(IpAddr, [u8; 6])>, IoError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let msgs: Vec<NeighbourMessage> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_collect()
                .await
                .map_err(|source| IoError::Netlink {
                    what: "list neighbours".into(),
                    err: source,
                })?;
            out.extend(
                msgs.iter()
                    .filter(|m| m.header.ifindex == index)
                    .filter_map(neighbour_entry),
            );
        }
        Ok(out)
    }

    /// Is interface `index` up with carrier right now?
    pub async fn link_up(&self, index: u32) -> Result<bool, IoError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(m)) => Ok(link_is_up(&m)),
            Ok(None) => Ok(false),
            Err(source) => Err(IoError::Netlink {
                what: format!("get link {index}"),
                err: source,
            }),
        }
    }
}

/// Link state changes of one interface, from the kernel's `RTNLGRP_LINK` notifications.
#[derive(Debug)]
pub struct LinkEvents {
    index: u32,
    rx: UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
}

impl LinkEvents {
    /// Subscribe; must be called inside a tokio runtime.
    pub fn subscribe(index: u32) -> Result<LinkEvents, IoError> {
        let (conn, _handle, rx) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
            .map_err(|e| IoError::sys("netlink link-notification socket", e))?;
        tokio::spawn(conn);
        Ok(LinkEvents { index, rx })
    }

    /// The next up/down state reported for our interface (`None`: the connection ended).
    /// Repeats are possible (every attribute change is reported); callers compare.
    pub async fn next(&mut self) -> Option<bool> {
        loop {
            let (msg, _) = self.rx.next().await?;
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))
                    if m.header.index == self.index =>
                {
                    return Some(link_is_up(&m))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m))
                    if m.header.index == self.index =>
                {
                    return Some(false)
                }
                _ => {}
            }
        }
    }
}
