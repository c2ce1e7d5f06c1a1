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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::sys::socket::{recvfrom, sendto, LinkAddr, MsgFlags};
use serde_json::{json, Value};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::announce::{arp_reply_frame, icmpv6_checksum, na_frame, ALL_NODES, ALL_NODES_MAC};
use super::announce::{ETH_P_ARP, ETH_P_IPV6};
use super::iface::link_addr;
use super::IoError;

/// `sll_pkttype` of a frame this host sent.
const PACKET_OUTGOING: u8 = 4;

/// Why a frame got no answer. `Foreign` (an ARP or NS for some other address) is the
/// normal case and is not counted; the rest are malformed input, counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// Well-formed, but not a question about one of our VIPs (or not a question at all).
    Foreign,
    /// From our own MAC (our own announcements, looped back).
    Own,
    Truncated,
    /// ARP for something other than IPv4 over Ethernet.
    ArpFormat,
    /// IPv6 solicitation whose hop limit is not 255 (RFC 4861 7.1.1).
    HopLimit,
    /// ICMPv6 checksum wrong.
    Checksum,
    /// ICMPv6 length, code or option malformed (RFC 4861 7.1.1).
    Malformed,
}

impl NoAnswer {
    pub fn reason(self) -> &'static str {
        match self {
            NoAnswer::Foreign => "foreign",
            NoAnswer::Own => "own",
            NoAnswer::Truncated => "truncated",
            NoAnswer::ArpFormat => "arp_format",
            NoAnswer::HopLimit => "hop_limit",
            NoAnswer::Checksum => "checksum",
            NoAnswer::Malformed => "malformed",
        }
    }
}

/// The reply to `frame` (a whole Ethernet frame) if it asks where one of `vips` is.
/// `router`: the Router flag of NAs ([`super::announce::ipv6_forwarding`]).
pub fn answer(
    frame: &[u8],
    mac: [u8; 6],
    vips: &[IpAddr],
    router: bool,
) -> Result<Vec<u8>, NoAnswer> {
    if frame.len() < 14 {
        return Err(NoAnswer::Truncated);
    }
    let src_mac: [u8; 6] = frame[6..12].try_into().map_err(|_| NoAnswer::Truncated)?;
    if src_mac == mac {
        return Err(NoAnswer::Own);
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_ARP => answer_arp(&frame[14..], mac, vips),
        ETH_P_IPV6 => answer_ns(&frame[14..], src_mac, mac, vips, router),
        _ => Err(NoAnswer::Foreign),
    }
}

fn answer_arp(arp: &[u8], mac: [u8; 6], vips: &[IpAddr]) -> Result<Vec<u8>, NoAnswer> {
    if arp.len() < 28 {
        return Err(NoAnswer::Truncated);
    }
    if arp[0..6] != [0, 1, 8, 0, 6, 4] {
        return Err(NoAnswer::ArpFormat);
    }
    if arp[6..8] != [0, 1] {
        return Err(NoAnswer::Foreign); // a reply, not a request
    }
    let sha: [u8; 6] = arp[8..14].try_into().map_err(|_| NoAnswer::Truncated)?;
    let spa = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
    let tpa = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
    // A gratuitous ARP (sender = target) announces, it does not ask.
    if spa == tpa || !vips.contains(&IpAddr::V4(tpa)) {
        return Err(NoAnswer::Foreign);
    }
    if sha == mac {
        return Err(NoAnswer::Own);
    }
    Ok(arp_reply_frame(mac, tpa, sha, spa))
}

fn answer_ns(
    ip6: &[u8],
    eth_src: [u8; 6],
    mac: [u8; 6],
    vips: &[IpAddr],
    router: bool,
) -> Result<Vec<u8>, NoAnswer> {
    if ip6.len() < 40 {
        return Err(NoAnswer::Truncated);
    }
    if ip6[0] >> 4 != 6 || ip6[6] != 58 {
        return Err(NoAnswer::Foreign);
    }
    let plen = usize::from(u16::from_be_bytes([ip6[4], ip6[5]]));
    let icmp = ip6.get(40..40 + plen).ok_or(NoAnswer::Truncated)?;
    if icmp.first() != Some(&135) {
        return Err(NoAnswer::Foreign);
    }
    let octets = |b: &[u8]| -> Ipv6Addr {
        let a: [u8; 16] = b.try_into().unwrap_or([0; 16]);
        Ipv6Addr::from(a)
    };
    let src = octets(&ip6[8..24]);
    let dst = octets(&ip6[24..40]);
    // RFC 4861 7.1.1 validity checks, in its order.
    if ip6[7] != 255 {
        return Err(NoAnswer::HopLimit);
    }
    if icmpv6_checksum(src, dst, icmp) != 0 {
        return Err(NoAnswer::Checksum);
    }
    if icmp[1] != 0 || icmp.len() < 24 {
        return Err(NoAnswer::Malformed);
    }
    let target = octets(&icmp[8..24]);
    if !vips.contains(&IpAddr::V6(target)) {
        return Err(NoAnswer::Foreign);
    }
    // Options: (type, length in 8-byte units); a zero length is invalid. Keep the
    // source link-layer address if there is one.
    let mut slla = None;
    let mut opts = &icmp[24..];
    while !opts.is_empty() {
        let len = usize::from(*opts.get(1).ok_or(NoAnswer::Malformed)?) * 8;
        if len == 0 || len > opts.len() {
            return Err(NoAnswer::Malformed);
        }
        if opts[0] == 1 && len >= 8 {
            slla = <[u8; 6]>::try_from(&opts[2..8]).ok();
        }
        opts = &opts[len..];
    }
    if src.is_unspecified() {
        // Duplicate address detection: a solicitation from :: must not carry a source
        // link-layer option; answer all nodes, unsolicited (RFC 4861 7.1.1, 7.2.4).
        if slla.is_some() {
            return Err(NoAnswer::Malformed);
        }
        return Ok(na_frame(
            mac,
            target,
            ALL_NODES,
            ALL_NODES_MAC,
            false,
            router,
        ));
    }
    Ok(na_frame(
        mac,
        target,
        src,
        slla.unwrap_or(eth_src),
        true,
        router,
    ))
}

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

    pub fn to_json(&self) -> Value {
        let drops = self.drops.lock().map(|m| json!(*m)).unwrap_or(Value::Null);
        json!({
            "arp_replies": self.arp_replies.load(Ordering::Relaxed),
            "na_replies": self.na_replies.load(Ordering::Relaxed),
            "drops": drops,
        })
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

/// The solicited-node multicast group of `a` (RFC 4291 2.7.1): ff02::1:ffXX:XXXX.
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
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

    pub fn counters_json(&self) -> Value {
        self.counters.to_json()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::announce::garp_frame;

    const OURS: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
    const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn arp_request(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        // A reply frame with the operation patched to "request" has the request's layout.
        let mut f = arp_reply_frame(sha, spa, [0xff; 6], tpa);
        f[20..22].copy_from_slice(&[0, 1]);
        f[32..38].copy_from_slice(&[0; 6]);
        f
    }

    /// A neighbour solicitation for `target` from `src` (with SLLA unless from ::).
    fn ns(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, hop: u8) -> Vec<u8> {
        let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        if !src.is_unspecified() {
            icmp.extend_from_slice(&[1, 1]);
            icmp.extend_from_slice(&PEER);
        }
        let c = icmpv6_checksum(src, dst, &icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut f = vec![0x33, 0x33, 0xff, 0, 1, 0];
        f.extend_from_slice(&PEER);
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        f.extend_from_slice(&0x6000_0000u32.to_be_bytes());
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[58, hop]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&icmp);
        f
    }

    #[test]
    fn arp_request_for_a_vip_gets_a_reply_to_the_asker() {
        let vips = [IpAddr::V4(v4("10.0.0.100"))];
        let req = arp_request(PEER, v4("10.0.0.5"), v4("10.0.0.100"));
        let r = answer(&req, OURS, &vips, false).unwrap();
        assert_eq!(&r[0..6], &PEER, "unicast to the asker");
        assert_eq!(&r[6..12], &OURS);
        assert_eq!(&r[20..22], &[0, 2], "ARP reply");
        assert_eq!(&r[22..28], &OURS, "sender hardware address: ours");
        assert_eq!(&r[28..32], &[10, 0, 0, 100]);
        assert_eq!(&r[32..38], &PEER);
        assert_eq!(&r[38..42], &[10, 0, 0, 5]);
    }

    #[test]
    fn arp_for_other_addresses_gratuitous_and_own_frames_get_nothing() {
        let vips = [IpAddr::V4(v4("10.0.0.100"))];
        let other = arp_request(PEER, v4("10.0.0.5"), v4("10.0.0.7"));
        assert_eq!(answer(&other, OURS, &vips, false), Err(NoAnswer::Foreign));
        let garp = garp_frame(PEER, v4("10.0.0.100"));
        assert_eq!(answer(&garp, OURS, &vips, false), Err(NoAnswer::Foreign));
        let own = garp_frame(OURS, v4("10.0.0.100"));
        assert_eq!(answer(&own, OURS, &vips, false), Err(NoAnswer::Own));
        let req = arp_request(PEER, v4("10.0.0.5"), v4("10.0.0.100"));
        assert_eq!(answer(&req, OURS, &[], false), Err(NoAnswer::Foreign));
        let mut bad = req.clone();
        bad[16] = 0x86; // ptype IPv6
        assert_eq!(answer(&bad, OURS, &vips, false), Err(NoAnswer::ArpFormat));
        assert_eq!(
            answer(&req[..30], OURS, &vips, false),
            Err(NoAnswer::Truncated)
        );
    }

    #[test]
    fn solicitation_gets_a_solicited_override_na_to_the_asker() {
        let vip = v6("fd00::100");
        let src = v6("fd00::5");
        let req = ns(src, solicited_node(vip), vip, 255);
        let r = answer(&req, OURS, &[IpAddr::V6(vip)], false).unwrap();
        assert_eq!(&r[0..6], &PEER, "to the source link-layer address");
        assert_eq!(&r[22..38], &vip.octets(), "from the VIP");
        assert_eq!(&r[38..54], &src.octets(), "to the asker");
        let icmp = &r[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4], 0x60, "solicited and override");
        assert_eq!(&icmp[26..32], &OURS);
        assert_eq!(icmpv6_checksum(vip, src, icmp), 0);
    }

    #[test]
    fn dad_probe_is_answered_to_all_nodes_unsolicited() {
        let vip = v6("fd00::100");
        let req = ns(Ipv6Addr::UNSPECIFIED, solicited_node(vip), vip, 255);
        let r = answer(&req, OURS, &[IpAddr::V6(vip)], false).unwrap();
        assert_eq!(&r[0..6], &ALL_NODES_MAC);
        assert_eq!(&r[38..54], &ALL_NODES.octets());
        assert_eq!(r[54 + 4], 0x20, "override only");
    }

    #[test]
    fn invalid_solicitations_are_dropped_by_reason() {
        let vip = v6("fd00::100");
        let vips = [IpAddr::V6(vip)];
        let src = v6("fd00::5");
        let hop = ns(src, solicited_node(vip), vip, 64);
        assert_eq!(answer(&hop, OURS, &vips, false), Err(NoAnswer::HopLimit));
        let mut csum = ns(src, solicited_node(vip), vip, 255);
        csum[56] ^= 0xff;
        assert_eq!(answer(&csum, OURS, &vips, false), Err(NoAnswer::Checksum));
        let good = ns(src, solicited_node(vip), vip, 255);
        assert_eq!(
            answer(&good[..80], OURS, &vips, false),
            Err(NoAnswer::Truncated)
        );
        let other = ns(src, solicited_node(vip), v6("fd00::7"), 255);
        assert_eq!(answer(&other, OURS, &vips, false), Err(NoAnswer::Foreign));
    }

    #[test]
    fn solicited_node_group() {
        assert_eq!(
            solicited_node(v6("fd00::1:2:3:4567:89ab")),
            v6("ff02::1:ff67:89ab")
        );
    }
}
