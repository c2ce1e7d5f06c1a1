//! The interface vrrpd runs on, as `getifaddrs(3)` sees it right now.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{LinkAddr, SockaddrLike};

use super::IoError;

/// One network interface: what the shell needs to open sockets and announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
    /// Administratively up and with carrier (`IFF_UP` and `IFF_RUNNING`).
    pub up: bool,
}

/// Is this an IPv6 link-local unicast address (fe80::/10)?
pub fn is_link_local(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

impl Interface {
    /// The interface named `name`.
    pub fn by_name(name: &str) -> Result<Interface, IoError> {
        let all = Interface::all()?;
        all.into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| IoError::NoSuchInterface(name.to_owned()))
    }

    /// The interface holding `addr` (the node's own address).
    pub fn holding(addr: IpAddr) -> Result<Interface, IoError> {
        let all = Interface::all()?;
        all.into_iter()
            .find(|i| match addr {
                IpAddr::V4(a) => i.v4.contains(&a),
                IpAddr::V6(a) => i.v6.contains(&a),
            })
            .ok_or(IoError::NoInterfaceFor(addr))
    }

    /// This interface, read again (addresses and link state may have changed).
    pub fn refresh(&self) -> Result<Interface, IoError> {
        Interface::by_name(&self.name)
    }

    /// The first IPv6 link-local address (the source of IPv6 adverts, RFC 5798 5.1.2.1).
    pub fn link_local(&self) -> Option<Ipv6Addr> {
        self.v6.iter().copied().find(is_link_local)
    }

    /// Every interface with an Ethernet-style link address.
    pub fn all() -> Result<Vec<Interface>, IoError> {
        let addrs: Vec<_> = getifaddrs()
            .map_err(|e| IoError::sys("getifaddrs", e))?
            .collect();
        let mut out: Vec<Interface> = Vec::new();
        for ifa in &addrs {
            let Some(link) = ifa.address.as_ref().and_then(|a| a.as_link_addr()) else {
                continue;
            };
            let Ok(index) = u32::try_from(link.ifindex()) else {
                continue;
            };
            let flags = ifa.flags;
            out.push(Interface {
                name: ifa.interface_name.clone(),
                index,
                mac: link.addr().unwrap_or_default(),
                v4: Vec::new(),
                v6: Vec::new(),
                up: flags.contains(InterfaceFlags::IFF_UP)
                    && flags.contains(InterfaceFlags::IFF_RUNNING),
            });
        }
        for ifa in &addrs {
            let Some(addr) = ifa.address.as_ref() else {
                continue;
            };
            let Some(i) = out.iter_mut().find(|i| i.name == ifa.interface_name) else {
                continue;
            };
            if let Some(a) = addr.as_sockaddr_in() {
                i.v4.push(a.ip());
            } else if let Some(a) = addr.as_sockaddr_in6() {
                i.v6.push(a.ip());
            }
        }
        Ok(out)
    }
}

/// The `AF_PACKET` address of an interface (index and MAC), for sending raw frames.
pub(crate) fn link_addr(name: &str) -> Result<LinkAddr, IoError> {
    getifaddrs()
        .map_err(|e| IoError::sys("getifaddrs", e))?
        .filter(|ifa| ifa.interface_name == name)
        .find_map(|ifa| ifa.address.and_then(|a| a.as_link_addr().copied()))
        .filter(|l| l.family().is_some())
        .ok_or_else(|| IoError::NoLinkAddress(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_by_name_and_address() {
        let lo = Interface::by_name("lo").unwrap();
        assert!(lo.index > 0);
        assert!(lo.v4.contains(&Ipv4Addr::LOCALHOST));
        let by_addr = Interface::holding(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        assert_eq!(by_addr.name, "lo");
        assert!(matches!(
            Interface::by_name("no-such-if0"),
            Err(IoError::NoSuchInterface(_))
        ));
    }

    #[test]
    fn link_local_detection() {
        assert!(is_link_local(&"fe80::1".parse().unwrap()));
        assert!(is_link_local(&"febf::1".parse().unwrap()));
        assert!(!is_link_local(&"fec0::1".parse().unwrap()));
        assert!(!is_link_local(&"fd00::1".parse().unwrap()));
    }
}
