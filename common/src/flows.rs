//! The TCP flows the kernel still carries on a set of local addresses, from sock_diag
//! (the interface `ss` reads): what a node that parked a VIP after a planned handover
//! still serves, and what the new holder forwards to it (`vrrp_proto::core::Action::{ParkVips, Steer}`).
//!
//! Counted: every TCP socket whose local address is one of the addresses, in a state that
//! still needs the peer's packets (SYN_RECV, ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT,
//! LAST_ACK, CLOSING). Not counted: listeners, TIME_WAIT and closed sockets, and sockets
//! on an address that is no longer local (no packet can reach them).

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};

use crate::proto::lbd::FlowCount;

/// The states of a flow that still needs packets from its peer.
fn live_states() -> StateFlags {
    StateFlags::SYN_RECV
        | StateFlags::ESTABLISHED
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

/// The addresses of `of` that are assigned to an interface of this network namespace now.
pub fn local_addresses(of: &[IpAddr]) -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(a) = ifa.address else { continue };
        let ip = if let Some(v4) = a.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = a.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if of.contains(&ip) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// Count the live TCP flows on `addresses` (blocking: one sock_diag dump per family).
pub fn count(addresses: &[IpAddr]) -> io::Result<FlowCount> {
    let local = local_addresses(addresses)?;
    let mut flows = 0u64;
    for family in [AF_INET, AF_INET6] {
        flows += dump(family, &mut |id: &SocketId| {
            local.contains(&id.source_address.to_canonical())
        })?;
    }
    Ok(FlowCount {
        flows,
        local_addresses: local.len() as u64,
    })
}

/// One dump of `family`'s TCP sockets in a live state; the number `keep` says yes to.
fn dump(family: u8, keep: &mut dyn FnMut(&SocketId) -> bool) -> io::Result<u64> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut req = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: live_states(),
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut n = 0u64;
    let mut rx = vec![0u8; 64 * 1024];
    // A dump ends with NLMSG_DONE; the bound only guards against a kernel that never says
    // so (64 KiB per read: over 200 sockets each, so this is millions of sockets).
    for _ in 0..100_000 {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r))
                    if keep(&r.header.socket_id) =>
                {
                    n += 1;
                }
                NetlinkPayload::Done(_) => return Ok(n),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("sock_diag: {e:?}")));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
    Err(io::Error::other("sock_diag: the dump did not end"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_live_flows_on_the_addresses() {
        // Loopback is local everywhere; a listener alone is no flow.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let l = std::net::TcpListener::bind((lo, 0)).unwrap();
        let before = count(&[lo]).unwrap();
        assert_eq!(before.local_addresses, 1);
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let after = count(&[lo]).unwrap();
        // Both ends of the connection have 127.0.0.1 as their local address.
        assert!(after.flows >= before.flows + 2, "{before:?} -> {after:?}");
        // An address that is not local counts nothing.
        let far: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(count(&[far]).unwrap(), FlowCount::default());
        drop((c, s));
    }
}
