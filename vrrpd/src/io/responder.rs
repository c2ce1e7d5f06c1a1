//! `accept_mode = false`: the master answers ARP requests and neighbour solicitations for
//! the VIPs itself, and does not add them to the interface.
//!
//! RFC 5798 6.4.3: a master that is not the address owner "MUST NOT accept packets
//! addressed to the IPvX address(es) associated with the virtual router" unless Accept_Mode
//! is True, yet it must answer ARP / ND for them so that hosts send it the traffic it
//! routes. Not adding the VIP as a local address gives exactly that without a firewall: the
//! kernel does not deliver packets for the VIP to any local socket (with forwarding on it
//! treats them as transit), and this responder supplies the neighbour answers the kernel
//! would have given.
//!
//! Two `AF_PACKET` sockets on the VRRP interface: one for ARP, one for IPv6 with a classic
//! BPF filter that passes ICMPv6 neighbour solicitations only (unicast solicitations too:
//! Linux checks reachability with them, and they never reach an IP socket because the VIP
//! is not local). Each VIPv6's solicited-node group is joined so a real NIC's multicast
//! filter lets the multicast solicitations in. Frames we sent ourselves are skipped.
//!
//! [`answer`] is the pure part (frame in, reply out, or the reason for none) and is fuzzed.

use std::net::{IpAddr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::sys::socket::{recvfrom, sendto, LinkAddr, MsgFlags};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::announce::{ETH_P_ARP, ETH_P_IPV6};
use super::iface::link_addr;
use super::IoError;

/// `sll_pkttype` of a frame this host sent.
const PACKET_OUTGOING: u8 = 4;

pub use vrrp_proto::frames::{answer, solicited_node, NoAnswer};

/// Replies sent and frames dropped, for `vrrpd` status.
#[derive(Debug, Default)]
pub struct ResponderCounters {
    pub arp_replies: AtomicU64,
    pub na_replies: AtomicU64,
    drops: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl ResponderCounters {
    fn count_drop(&self, why: NoAnswer) {
        if let Ok(mut m) = self.drops.lock() {
            *m.entry(why.reason()).or_default() += 1;
        }
    }

    pub fn snapshot(&self) -> common::proto::vrrpd::ResponderCounters {
        common::proto::vrrpd::ResponderCounters {
            arp_replies: self.arp_replies.load(Ordering::Relaxed),
            na_replies: self.na_replies.load(Ordering::Relaxed),
            drops: self
                .drops
                .lock()
                .map(|m| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
                .unwrap_or_default(),
        }
    }
}

/// The running responder: set which VIPs it answers for; it stops with the value.
#[derive(Debug)]
pub struct Responder {
    vips: watch::Sender<Vec<IpAddr>>,
    counters: Arc<ResponderCounters>,
    task: JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Classic BPF on an `ETH_P_IPV6` packet socket: pass ICMPv6 (next header 58, no extension
/// headers) type 135, drop the rest. Offsets count from the Ethernet header.
fn ns_filter() -> [SockFilter; 6] {
    const LD_B_ABS: u16 = 0x30;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    [
        SockFilter::new(LD_B_ABS, 0, 0, 14 + 6), // next header
        SockFilter::new(JEQ_K, 0, 3, 58),
        SockFilter::new(LD_B_ABS, 0, 0, 14 + 40), // ICMPv6 type
        SockFilter::new(JEQ_K, 0, 1, 135),
        SockFilter::new(RET_K, 0, 0, 0xffff),
        SockFilter::new(RET_K, 0, 0, 0),
    ]
}

fn packet_socket(ifname: &str, ethertype: u16) -> Result<AsyncFd<Socket>, IoError> {
    let what = |s: &str| format!("responder socket on {ifname}: {s}");
    let proto = Protocol::from(i32::from(ethertype.to_be()));
    let sock = Socket::new(Domain::PACKET, Type::RAW, Some(proto))
        .map_err(|e| IoError::sys(what("socket(AF_PACKET)"), e))?;
    if ethertype == ETH_P_IPV6 {
        sock.attach_filter(&ns_filter())
            .map_err(|e| IoError::sys(what("SO_ATTACH_FILTER"), e))?;
    }
    // Bound to the interface; protocol 0 in the address keeps the socket's own.
    let ll = link_addr(ifname)?;
    nix::sys::socket::bind(sock.as_raw_fd(), &ll)
        .map_err(|e| IoError::sys(what("bind"), std::io::Error::from(e)))?;
    sock.set_nonblocking(true)
        .map_err(|e| IoError::sys(what("O_NONBLOCK"), e))?;
    super::register(sock).map_err(|e| IoError::sys(what("register with tokio"), e))
}

impl Responder {
    /// Open the sockets on `ifname` (index `ifindex`) and start answering for nothing.
    /// `vmacs`: the MAC to answer with per family (IPv4, IPv6) when it is not the
    /// interface's own (`virtual_mac = true`).
    pub fn spawn(
        ifname: &str,
        ifindex: u32,
        v4: bool,
        v6: bool,
        vmacs: [Option<[u8; 6]>; 2],
    ) -> Result<Responder, IoError> {
        let arp = if v4 {
            Some(packet_socket(ifname, ETH_P_ARP)?)
        } else {
            None
        };
        let ns = if v6 {
            Some(packet_socket(ifname, ETH_P_IPV6)?)
        } else {
            None
        };
        let (tx, rx) = watch::channel(Vec::new());
        let counters = Arc::new(ResponderCounters::default());
        let task = tokio::spawn(run(
            ifname.to_owned(),
            ifindex,
            arp,
            ns,
            rx,
            vmacs,
            Arc::clone(&counters),
        ));
        Ok(Responder {
            vips: tx,
            counters,
            task,
        })
    }

    /// Answer for exactly these VIPs from now on (empty: for none).
    pub fn set(&self, vips: Vec<IpAddr>) {
        self.vips.send_if_modified(|cur| {
            let changed = *cur != vips;
            *cur = vips;
            changed
        });
    }

    pub fn counters(&self) -> common::proto::vrrpd::ResponderCounters {
        self.counters.snapshot()
    }
}

async fn recv_frame(sock: &Option<AsyncFd<Socket>>, buf: &mut [u8]) -> std::io::Result<usize> {
    let Some(sock) = sock else {
        return std::future::pending().await;
    };
    loop {
        let mut guard = sock.readable().await?;
        let r = guard.try_io(|s| {
            recvfrom::<LinkAddr>(s.get_ref().as_raw_fd(), buf).map_err(std::io::Error::from)
        });
        match r {
            Ok(Ok((_, Some(from)))) if from.pkttype() == PACKET_OUTGOING => continue,
            Ok(Ok((n, _))) => return Ok(n),
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

async fn run(
    ifname: String,
    ifindex: u32,
    arp: Option<AsyncFd<Socket>>,
    ns: Option<AsyncFd<Socket>>,
    mut vips: watch::Receiver<Vec<IpAddr>>,
    vmacs: [Option<[u8; 6]>; 2],
    counters: Arc<ResponderCounters>,
) {
    let mut buf_arp = vec![0u8; 2048];
    let mut buf_ns = vec![0u8; 2048];
    // Solicited-node memberships for the VIPv6s answered now (dropped when they change).
    let mut memberships: Vec<UdpSocket> = Vec::new();
    // The interface's link address (index, MAC), read again whenever the VIP set changes
    // (on becoming master), not per frame: a busy segment broadcasts many ARP requests.
    let mut ll: Option<LinkAddr> = None;
    // The Router flag of our NAs, read with the link address.
    let mut router = false;
    loop {
        let frame = tokio::select! {
            r = recv_frame(&arp, &mut buf_arp) => r.map(|n| &buf_arp[..n]),
            r = recv_frame(&ns, &mut buf_ns) => r.map(|n| &buf_ns[..n]),
            changed = vips.changed() => {
                if changed.is_err() {
                    return; // the Responder is gone
                }
                // Join the new groups before leaving the old (closing a socket leaves).
                let joined = join_groups(&vips.borrow(), ifindex);
                drop(std::mem::replace(&mut memberships, joined));
                router = super::announce::ipv6_forwarding(&ifname);
                ll = match link_addr(&ifname) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        warn!(error = %e, interface = %ifname, "responder: no link address");
                        None
                    }
                };
                continue;
            }
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, interface = %ifname, "responder: receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let current = vips.borrow().clone();
        if current.is_empty() {
            continue;
        }
        let Some(ll) = &ll else { continue };
        let is_v6 = frame.get(12..14) == Some(&ETH_P_IPV6.to_be_bytes()[..]);
        let Some(mac) = vmacs[usize::from(is_v6)].or_else(|| ll.addr()) else {
            continue;
        };
        match answer(frame, mac, &current, router) {
            Ok(reply) => {
                let is_arp = reply.get(12..14) == Some(&ETH_P_ARP.to_be_bytes()[..]);
                let (sock, counter) = if is_arp {
                    (&arp, &counters.arp_replies)
                } else {
                    (&ns, &counters.na_replies)
                };
                let Some(sock) = sock else { continue };
                match sendto(sock.get_ref().as_raw_fd(), &reply, ll, MsgFlags::empty()) {
                    Ok(_) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => debug!(error = %e, "responder: reply not sent"),
                }
            }
            Err(NoAnswer::Foreign | NoAnswer::Own) => {}
            Err(why) => {
                debug!(
                    reason = why.reason(),
                    len = frame.len(),
                    "responder: dropped a frame"
                );
                counters.count_drop(why);
            }
        }
    }
}

fn join_groups(vips: &[IpAddr], ifindex: u32) -> Vec<UdpSocket> {
    let mut out = Vec::new();
    for vip in vips {
        let IpAddr::V6(v6) = vip else { continue };
        let joined = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).and_then(|s| {
            s.join_multicast_v6(&solicited_node(*v6), ifindex)
                .map(|()| s)
        });
        match joined {
            Ok(s) => out.push(s),
            Err(e) => warn!(vip = %vip, error = %e, "could not join the solicited-node group"),
        }
    }
    out
}
