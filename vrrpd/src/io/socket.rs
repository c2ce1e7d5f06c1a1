//! Raw IP protocol 112 sockets, one per address family.
//!
//! IPv4: a raw socket delivers the IP header, which carries the TTL and both addresses
//! ([`crate::packet::split_ipv4`] parses it). IPv6: the header is not delivered; the hop
//! limit and the destination come as `IPV6_HOPLIMIT` / `IPV6_PKTINFO` control messages and
//! the source as the peer address of `recvmsg`.
//!
//! Sends go out with TTL / hop limit 255 (multicast and unicast alike) from the source
//! address given to [`VrrpSocket::send`], chosen with `IP_PKTINFO` / `IPV6_PKTINFO`, so the
//! adverts leave from the node's primary (v4) or link-local (v6) address even while the
//! interface also holds the VIP.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn, SockaddrIn6,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{Interface, IoError};
use crate::packet::{split_ipv4, IPPROTO_VRRP, MCAST_V4, MCAST_V6};

/// TTL / hop limit of every VRRP packet (RFC 5798 5.1.1.3, 5.1.2.3).
const TTL: u32 = 255;

/// Addresses and TTL of a received packet, as the core's `Received` wants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
}

/// What one receive produced.
#[derive(Debug)]
pub enum Rx<'b> {
    /// A VRRP message (without IP header) and where it came from.
    Packet(RxMeta, &'b [u8]),
    /// An IPv4 packet whose header did not parse (counted by the caller, then ignored).
    BadIpHeader(crate::packet::DropReason),
}

/// A raw VRRP socket for one family on one interface.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ifindex: u32,
    v6: bool,
}

impl VrrpSocket {
    /// Open the IPv4 socket on `iface`: 224.0.0.18 joined, TTL 255, loopback off, bound to
    /// the device. Must be called inside a tokio runtime.
    pub fn open_v4(iface: &Interface) -> Result<VrrpSocket, IoError> {
        let ctx = |what: &str| format!("IPv4 VRRP socket on {}: {what}", iface.name);
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )
        .map_err(|e| IoError::sys(ctx("socket(AF_INET, SOCK_RAW, 112)"), e))?;
        s.bind_device(Some(iface.name.as_bytes()))
            .map_err(|e| IoError::sys(ctx("SO_BINDTODEVICE"), e))?;
        s.join_multicast_v4_n(&MCAST_V4, &InterfaceIndexOrAddress::Index(iface.index))
            .map_err(|e| IoError::sys(ctx("join 224.0.0.18"), e))?;
        s.set_multicast_ttl_v4(TTL)
            .map_err(|e| IoError::sys(ctx("IP_MULTICAST_TTL"), e))?;
        s.set_ttl_v4(TTL)
            .map_err(|e| IoError::sys(ctx("IP_TTL"), e))?;
        s.set_multicast_loop_v4(false)
            .map_err(|e| IoError::sys(ctx("IP_MULTICAST_LOOP"), e))?;
        VrrpSocket::finish(s, iface.index, false, ctx)
    }

    /// Open the IPv6 socket on `iface`: ff02::12 joined, hop limit 255, loopback off, bound
    /// to the device, hop limit and destination delivered with every packet.
    pub fn open_v6(iface: &Interface) -> Result<VrrpSocket, IoError> {
        let ctx = |what: &str| format!("IPv6 VRRP socket on {}: {what}", iface.name);
        let s = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )
        .map_err(|e| IoError::sys(ctx("socket(AF_INET6, SOCK_RAW, 112)"), e))?;
        s.bind_device(Some(iface.name.as_bytes()))
            .map_err(|e| IoError::sys(ctx("SO_BINDTODEVICE"), e))?;
        s.join_multicast_v6(&MCAST_V6, iface.index)
            .map_err(|e| IoError::sys(ctx("join ff02::12"), e))?;
        s.set_multicast_hops_v6(TTL)
            .map_err(|e| IoError::sys(ctx("IPV6_MULTICAST_HOPS"), e))?;
        s.set_unicast_hops_v6(TTL)
            .map_err(|e| IoError::sys(ctx("IPV6_UNICAST_HOPS"), e))?;
        s.set_multicast_loop_v6(false)
            .map_err(|e| IoError::sys(ctx("IPV6_MULTICAST_LOOP"), e))?;
        s.set_multicast_if_v6(iface.index)
            .map_err(|e| IoError::sys(ctx("IPV6_MULTICAST_IF"), e))?;
        setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true)
            .map_err(|e| IoError::sys(ctx("IPV6_RECVPKTINFO"), e))?;
        setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true)
            .map_err(|e| IoError::sys(ctx("IPV6_RECVHOPLIMIT"), e))?;
        VrrpSocket::finish(s, iface.index, true, ctx)
    }

    fn finish(
        s: Socket,
        ifindex: u32,
        v6: bool,
        ctx: impl Fn(&str) -> String,
    ) -> Result<VrrpSocket, IoError> {
        s.set_nonblocking(true)
            .map_err(|e| IoError::sys(ctx("O_NONBLOCK"), e))?;
        let fd = super::register(s).map_err(|e| IoError::sys(ctx("register with tokio"), e))?;
        Ok(VrrpSocket { fd, ifindex, v6 })
    }

    pub fn is_v6(&self) -> bool {
        self.v6
    }

    /// Receive only frames whose Ethernet source is `mac` (a classic BPF filter reading
    /// the link-layer header at `SKF_LL_OFF`). For a virtual MAC's macvlan: the kernel
    /// hands it the adverts other nodes send from the same virtual MAC (the base interface
    /// never sees those), while every other frame also reaches the base interface's
    /// socket and must not be read twice.
    pub fn only_from_mac(self, mac: [u8; 6]) -> Result<VrrpSocket, IoError> {
        const SKF_LL_OFF: u32 = 0xffe0_0000; // -0x200000
        let hi = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
        let lo = u32::from(u16::from_be_bytes([mac[4], mac[5]]));
        let prog = [
            socket2::SockFilter::new(0x20, 0, 0, SKF_LL_OFF + 6), // ld [src mac 0..4]
            socket2::SockFilter::new(0x15, 0, 3, hi),             // jeq hi, next, drop
            socket2::SockFilter::new(0x28, 0, 0, SKF_LL_OFF + 10), // ldh [src mac 4..6]
            socket2::SockFilter::new(0x15, 0, 1, lo),             // jeq lo, accept, drop
            socket2::SockFilter::new(0x06, 0, 0, 0xffff),         // accept
            socket2::SockFilter::new(0x06, 0, 0, 0),              // drop
        ];
        self.fd
            .get_ref()
            .attach_filter(&prog)
            .map_err(|e| IoError::sys("VRRP socket: SO_ATTACH_FILTER", e))?;
        Ok(self)
    }

    /// Wait for the next packet; the VRRP message is returned as a slice of `buf`.
    pub async fn recv<'b>(&self, buf: &'b mut [u8]) -> Result<Rx<'b>, IoError> {
        if self.v6 {
            let (meta, n) = loop {
                let mut guard = self
                    .fd
                    .readable()
                    .await
                    .map_err(|e| IoError::sys("IPv6 VRRP socket: poll", e))?;
                match guard.try_io(|fd| recv_v6(fd.get_ref().as_raw_fd(), buf)) {
                    Ok(r) => break r.map_err(|e| IoError::sys("IPv6 VRRP socket: recvmsg", e))?,
                    Err(_would_block) => continue,
                }
            };
            Ok(Rx::Packet(meta, &buf[..n]))
        } else {
            let n = loop {
                let mut guard = self
                    .fd
                    .readable()
                    .await
                    .map_err(|e| IoError::sys("IPv4 VRRP socket: poll", e))?;
                match guard.try_io(|fd| {
                    nix::sys::socket::recv(fd.get_ref().as_raw_fd(), buf, MsgFlags::empty())
                        .map_err(std::io::Error::from)
                }) {
                    Ok(r) => break r.map_err(|e| IoError::sys("IPv4 VRRP socket: recv", e))?,
                    Err(_would_block) => continue,
                }
            };
            let pkt = &buf[..n];
            match split_ipv4(pkt) {
                Ok((m, payload)) => Ok(Rx::Packet(
                    RxMeta {
                        src: IpAddr::V4(m.src),
                        dst: IpAddr::V4(m.dst),
                        ttl: m.ttl,
                    },
                    payload,
                )),
                Err(e) => Ok(Rx::BadIpHeader(e.reason())),
            }
        }
    }

    /// Send one VRRP message (no IP header) to `dst` from `src`.
    pub async fn send(&self, src: IpAddr, dst: IpAddr, payload: &[u8]) -> Result<(), IoError> {
        let what = || format!("send VRRP {src} -> {dst}");
        loop {
            let mut guard = self
                .fd
                .ready(Interest::WRITABLE)
                .await
                .map_err(|e| IoError::sys(what(), e))?;
            let r = guard.try_io(|fd| {
                let raw = fd.get_ref().as_raw_fd();
                match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => send_v4(raw, self.ifindex, s, d, payload),
                    (IpAddr::V6(s), IpAddr::V6(d)) => send_v6(raw, self.ifindex, s, d, payload),
                    _ => Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "source and destination of different families",
                    )),
                }
            });
            match r {
                Ok(r) => return r.map_err(|e| IoError::sys(what(), e)),
                Err(_would_block) => continue,
            }
        }
    }
}

fn send_v4(
    fd: i32,
    ifindex: u32,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
) -> std::io::Result<()> {
    let info = libc_in_pktinfo(ifindex, src);
    let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
    let addr = SockaddrIn::from(SocketAddrV4::new(dst, 0));
    sendmsg(
        fd,
        &[IoSlice::new(payload)],
        &cmsg,
        MsgFlags::empty(),
        Some(&addr),
    )?;
    Ok(())
}

fn send_v6(
    fd: i32,
    ifindex: u32,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    payload: &[u8],
) -> std::io::Result<()> {
    let info = libc_in6_pktinfo(ifindex, src);
    let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
    // Link-local and multicast destinations need the scope (interface) id.
    let addr = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, ifindex));
    sendmsg(
        fd,
        &[IoSlice::new(payload)],
        &cmsg,
        MsgFlags::empty(),
        Some(&addr),
    )?;
    Ok(())
}

fn recv_v6(fd: i32, buf: &mut [u8]) -> std::io::Result<(RxMeta, usize)> {
    let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo, nix::libc::c_int);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
    let src = msg
        .address
        .map(|a| IpAddr::V6(a.ip()))
        .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let mut dst = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    // A missing hop limit reads as 0, which the core drops as a TTL error.
    let mut ttl = 0u8;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                dst = IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            ControlMessageOwned::Ipv6HopLimit(h) => ttl = u8::try_from(h).unwrap_or(0),
            _ => {}
        }
    }
    Ok((RxMeta { src, dst, ttl }, msg.bytes))
}

fn libc_in_pktinfo(ifindex: u32, src: Ipv4Addr) -> nix::libc::in_pktinfo {
    nix::libc::in_pktinfo {
        ipi_ifindex: i32::try_from(ifindex).unwrap_or(0),
        ipi_spec_dst: nix::libc::in_addr {
            s_addr: u32::from_ne_bytes(src.octets()),
        },
        ipi_addr: nix::libc::in_addr { s_addr: 0 },
    }
}

fn libc_in6_pktinfo(ifindex: u32, src: Ipv6Addr) -> nix::libc::in6_pktinfo {
    nix::libc::in6_pktinfo {
        ipi6_addr: nix::libc::in6_addr {
            s6_addr: src.octets(),
        },
        ipi6_ifindex: ifindex,
    }
}
