//! Ethernet frames vrrpd sends and answers, as pure functions: gratuitous ARP and
//! unsolicited neighbour advertisements (RFC 5798 6.4.2 / 6.4.3, RFC 4861 7.2.6), and the
//! `accept_mode = false` responder's parser ([`answer`]: a frame in, the reply or the reason
//! for none out; fuzzed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
const BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1 (all nodes) and its Ethernet multicast address 33:33:00:00:00:01.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

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

/// An unsolicited neighbour advertisement for `vip` from `vip` to all nodes, with the
/// override flag, the Router flag when `router` (see vrrpd's `ipv6_forwarding`) and the target
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
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
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
/// `router`: the Router flag of NAs (vrrpd's `ipv6_forwarding`).
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
