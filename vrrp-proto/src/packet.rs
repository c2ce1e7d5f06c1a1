//! VRRP packet codec: VRRPv3 (RFC 5798 section 5, as revised by RFC 9568) and VRRPv2
//! (RFC 3768 section 5), over IPv4 and IPv6.
//!
//! Pure functions over byte slices. [`decode`] checks everything the receive rules of
//! RFC 5798 section 7.1 ask of the message itself (version, type, length against the
//! address count, checksum, address family) and returns one [`DecodeError`] variant per
//! cause, whose [`DecodeError::reason`] is the drop-counter key. Checks that need the
//! instance's state (TTL, VRID, source, our own adverts, v2 authentication) live in
//! [`crate::core`].
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |   v3
//! |   Auth Type   |   Adver Int   |          Checksum             |   v2
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  IPvX Address(es) (4 or 16 bytes each)        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          v2 only: Authentication Data (8 bytes)               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! # The IPv4 VRRPv3 checksum
//!
//! RFC 5798 section 5.2.8 said the checksum covers "a pseudo-header"; keepalived reads that
//! as the IPv4 pseudo-header (source, destination, zero, protocol 112, VRRP length) and does
//! so by default (`vrrp_build_vrrp_v3` / `vrrp_in_chk` in keepalived's `vrrp.c`), with the
//! per-instance option `v3_checksum_as_v2` to leave it out. RFC 9568 section 5.2.8 settles
//! that for IPv4 the checksum covers the VRRP message only. [`ChecksumMode`] picks:
//! `Keepalived` (pseudo-header), `Rfc9568` (message only), `Either` (send the keepalived
//! form, accept both). IPv6 always includes the RFC 8200 section 8.1 pseudo-header; VRRPv2
//! over IPv4 never does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How the IPv4 VRRPv3 checksum is computed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumMode {
    /// keepalived's default: the IPv4 pseudo-header is included (as RFC 5798 wrote it).
    Keepalived,
    /// RFC 9568 errata form: for IPv4, the checksum covers the VRRP message only.
    Rfc9568,
    /// Send keepalived's form, accept either on receive (for mixed migrations).
    Either,
}

/// IP protocol number of VRRP (RFC 5798 section 5.1.1.4).
pub const IPPROTO_VRRP: u8 = 112;
/// IPv4 multicast group for adverts (RFC 5798 section 5.1.1.2).
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group for adverts (RFC 5798 section 5.1.2.2).
pub const MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit every advert is sent with and must arrive with (RFC 5798 5.1.1.3).
pub const VRRP_TTL: u8 = 255;
/// Type of an ADVERTISEMENT (RFC 5798 section 5.2.2): the only type defined.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// VRRPv2 authentication type "simple text password" (RFC 2338 section 5.3.6).
pub const AUTH_TYPE_PASSWORD: u8 = 1;
/// Length of the fixed VRRP header.
pub const HEADER_LEN: usize = 8;
/// Length of the VRRPv2 authentication data trailer.
pub const V2_AUTH_LEN: usize = 8;
/// Largest VRRPv3 Max Adver Int: 12 bits of centiseconds.
pub const MAX_INTERVAL_CS: u16 = 0x0fff;

/// One VRRP advertisement, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// v3: Max Adver Int in centiseconds (12 bits); v2: Adver Int in seconds (8 bits).
    pub interval_cs: u16,
    /// All of one family (the family of the IP header's addresses).
    pub addrs: Vec<IpAddr>,
    /// v2 simple password (auth type 1); `None` = auth type 0. Always `None` for v3.
    pub auth: Option<[u8; 8]>,
}

/// The protocol version: RFC 3768 (v2, IPv4 only, seconds) or RFC 5798 / RFC 9568 (v3).
/// Serialized as its number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "u8", try_from = "u8")]
pub enum Version {
    V2,
    V3,
}

impl Version {
    /// The number in the header's version field.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    pub fn from_number(n: u8) -> Option<Version> {
        match n {
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            _ => None,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl From<Version> for u8 {
    fn from(v: Version) -> u8 {
        v.number()
    }
}

impl TryFrom<u8> for Version {
    type Error = String;
    fn try_from(n: u8) -> Result<Version, String> {
        Version::from_number(n).ok_or_else(|| format!("VRRP version {n} is not 2 or 3"))
    }
}

/// Why a packet was dropped: one variant per cause an operator must tell apart, counted
/// in `Counters::drops` under [`DropReason::as_str`].
/// Serialized as [`DropReason::as_str`] (kebab-case of the variant).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    // The codec's (see [`DecodeError`]).
    Truncated,
    Length,
    Type,
    Checksum,
    Family,
    IpHeader,
    NotVrrp,
    // The receive checks of RFC 5798 section 7.1 (and ours).
    /// IP TTL / hop limit is not 255.
    Ttl,
    /// Another VRID.
    Vrid,
    /// A version we do not speak, or not the one configured.
    Version,
    /// Not on the source allow-list (`only_cluster_nodes`).
    Source,
    /// Our own advert, looped back.
    Own,
    /// VRRPv2 authentication type unknown, or its data not ours.
    Auth,
    /// Advertisement interval zero, or (v2) not ours.
    Interval,
    /// We are the address owner: RFC 5798 7.1 discards every advert of the VRID.
    Owner,
}

impl DropReason {
    /// The stable counter key (status JSON, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Length => "length",
            DropReason::Version => "version",
            DropReason::Type => "type",
            DropReason::Checksum => "checksum",
            DropReason::Family => "family",
            DropReason::Auth => "auth",
            DropReason::IpHeader => "ip-header",
            DropReason::NotVrrp => "not-vrrp",
            DropReason::Ttl => "ttl",
            DropReason::Vrid => "vrid",
            DropReason::Source => "source",
            DropReason::Own => "own",
            DropReason::Interval => "interval",
            DropReason::Owner => "owner",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a received packet was dropped by the codec: one variant per cause an operator
/// must tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: {len} bytes, need at least {need}")]
    Truncated { len: usize, need: usize },
    #[error("length {actual} does not match {expected} for the address count")]
    LengthMismatch { expected: usize, actual: usize },
    #[error("unsupported VRRP version {0}")]
    BadVersion(u8),
    #[error("unknown VRRP message type {0}")]
    BadType(u8),
    #[error("bad checksum")]
    BadChecksum,
    #[error("address family mismatch between the IP header and the message")]
    BadAddrFamily,
    #[error("unknown VRRPv2 authentication type {0}")]
    BadAuthType(u8),
    #[error("malformed IPv4 header")]
    BadIpHeader,
    #[error("IP protocol {0} is not VRRP")]
    NotVrrp(u8),
}

impl DecodeError {
    /// The drop reason this error is counted under (`Counters::drops`).
    pub fn reason(&self) -> DropReason {
        match self {
            DecodeError::Truncated { .. } => DropReason::Truncated,
            DecodeError::LengthMismatch { .. } => DropReason::Length,
            DecodeError::BadVersion(_) => DropReason::Version,
            DecodeError::BadType(_) => DropReason::Type,
            DecodeError::BadChecksum => DropReason::Checksum,
            DecodeError::BadAddrFamily => DropReason::Family,
            DecodeError::BadAuthType(_) => DropReason::Auth,
            DecodeError::BadIpHeader => DropReason::IpHeader,
            DecodeError::NotVrrp(_) => DropReason::NotVrrp,
        }
    }
}

/// Length of the VRRP message for `count` addresses of `family_len` bytes.
fn message_len(version: Version, count: usize, family_len: usize) -> usize {
    HEADER_LEN
        + count * family_len
        + if version == Version::V2 {
            V2_AUTH_LEN
        } else {
            0
        }
}

/// Encode the VRRP message (no IP header: the kernel adds it). `src`/`dst` are the IP
/// header's addresses, needed for the pseudo-header checksum.
///
/// Infallible by design: addresses not of `src`'s family are skipped and at most 255 are
/// written; v3 ignores `auth`; the v3 interval is masked to 12 bits.
pub fn encode(adv: &Advert, src: IpAddr, dst: IpAddr, csum: ChecksumMode) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let addrs: Vec<&IpAddr> = adv
        .addrs
        .iter()
        .filter(|a| a.is_ipv6() == v6)
        .take(255)
        .collect();
    let alen = if v6 { 16 } else { 4 };
    let len = message_len(adv.version, addrs.len(), alen);
    let mut out = Vec::with_capacity(len);
    out.push((adv.version.number() << 4) | TYPE_ADVERTISEMENT);
    out.push(adv.vrid);
    out.push(adv.priority);
    out.push(addrs.len() as u8);
    if adv.version == Version::V2 {
        out.push(if adv.auth.is_some() {
            AUTH_TYPE_PASSWORD
        } else {
            0
        });
        out.push(u8::try_from(adv.interval_cs).unwrap_or(u8::MAX));
    } else {
        out.extend_from_slice(&(adv.interval_cs & MAX_INTERVAL_CS).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    for a in addrs {
        match a {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
    }
    if adv.version == Version::V2 {
        out.extend_from_slice(&adv.auth.unwrap_or([0; 8]));
    }
    let pseudo = uses_pseudo_header(adv.version, src, csum);
    let sum = checksum(&out, src, dst, pseudo);
    out[6..8].copy_from_slice(&sum.to_be_bytes());
    out
}

/// Whether the sent checksum includes the pseudo-header.
fn uses_pseudo_header(version: Version, src: IpAddr, csum: ChecksumMode) -> bool {
    match src {
        IpAddr::V6(_) => true,
        IpAddr::V4(_) if version == Version::V2 => false,
        // Either sends keepalived's form.
        IpAddr::V4(_) => !matches!(csum, ChecksumMode::Rfc9568),
    }
}

/// Decode a VRRP message (no IP header). `src`/`dst` are the IP header's addresses.
pub fn decode(
    msg: &[u8],
    src: IpAddr,
    dst: IpAddr,
    csum: ChecksumMode,
) -> Result<Advert, DecodeError> {
    if src.is_ipv6() != dst.is_ipv6() {
        return Err(DecodeError::BadAddrFamily);
    }
    if msg.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            len: msg.len(),
            need: HEADER_LEN,
        });
    }
    let number = msg[0] >> 4;
    let kind = msg[0] & 0x0f;
    let Some(version) = Version::from_number(number) else {
        return Err(DecodeError::BadVersion(number));
    };
    if kind != TYPE_ADVERTISEMENT {
        return Err(DecodeError::BadType(kind));
    }
    let count = usize::from(msg[3]);
    let alen = if src.is_ipv6() { 16 } else { 4 };
    let expected = message_len(version, count, alen);
    if msg.len() < expected {
        return Err(DecodeError::Truncated {
            len: msg.len(),
            need: expected,
        });
    }
    if msg.len() != expected {
        return Err(DecodeError::LengthMismatch {
            expected,
            actual: msg.len(),
        });
    }
    if !checksum_ok(msg, version, src, dst, csum) {
        return Err(DecodeError::BadChecksum);
    }
    let (interval_cs, auth) = if version == Version::V2 {
        let auth = match msg[4] {
            0 => None,
            AUTH_TYPE_PASSWORD => {
                let mut pw = [0u8; 8];
                pw.copy_from_slice(&msg[expected - V2_AUTH_LEN..expected]);
                Some(pw)
            }
            other => return Err(DecodeError::BadAuthType(other)),
        };
        (u16::from(msg[5]), auth)
    } else {
        (u16::from_be_bytes([msg[4], msg[5]]) & MAX_INTERVAL_CS, None)
    };
    let addrs = msg[HEADER_LEN..HEADER_LEN + count * alen]
        .chunks_exact(alen)
        .map(|c| {
            if let Ok(b) = <[u8; 16]>::try_from(c) {
                IpAddr::V6(Ipv6Addr::from(b))
            } else {
                IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            }
        })
        .collect();
    Ok(Advert {
        version,
        vrid: msg[1],
        priority: msg[2],
        interval_cs,
        addrs,
        auth,
    })
}

fn checksum_ok(msg: &[u8], version: Version, src: IpAddr, dst: IpAddr, csum: ChecksumMode) -> bool {
    // A correct message sums (checksum field included) to 0xffff, i.e. the checksum
    // computed over it with the field in place is zero.
    let verify = |pseudo: bool| checksum(msg, src, dst, pseudo) == 0;
    match (src, version) {
        (IpAddr::V6(_), _) => verify(true),
        (IpAddr::V4(_), Version::V2) => verify(false),
        (IpAddr::V4(_), _) => match csum {
            ChecksumMode::Keepalived => verify(true) || keepalived_unicast_compat(msg, src, dst),
            ChecksumMode::Rfc9568 => verify(false),
            ChecksumMode::Either => {
                verify(true) || verify(false) || keepalived_unicast_compat(msg, src, dst)
            }
        },
    }
}

/// keepalived's `old_unicast_checksum` compatibility: a unicast advert whose pseudo-header
/// carries the multicast group instead of the real destination.
fn keepalived_unicast_compat(msg: &[u8], src: IpAddr, dst: IpAddr) -> bool {
    let group = IpAddr::V4(MCAST_V4);
    dst != group && checksum(msg, src, group, true) == 0
}

/// The Internet checksum (RFC 1071) of `msg`, optionally with the IPv4 (RFC 791 style:
/// src, dst, zero, protocol, length) or IPv6 (RFC 8200 section 8.1) pseudo-header.
fn checksum(msg: &[u8], src: IpAddr, dst: IpAddr, pseudo: bool) -> u16 {
    let mut sum: u32 = 0;
    if pseudo {
        let len = msg.len() as u32;
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                sum = add_bytes(sum, &s.octets());
                sum = add_bytes(sum, &d.octets());
                sum += u32::from(IPPROTO_VRRP);
                sum += len & 0xffff;
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                sum = add_bytes(sum, &s.octets());
                sum = add_bytes(sum, &d.octets());
                sum = add_bytes(sum, &len.to_be_bytes());
                sum += u32::from(IPPROTO_VRRP);
            }
            // Mixed families never reach here (decode rejects them, encode uses src's
            // family); sum the message alone.
            _ => {}
        }
    }
    sum = add_bytes(sum, msg);
    !fold(sum)
}

fn add_bytes(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum = fold(sum + u32::from(u16::from_be_bytes([c[0], c[1]]))).into();
    }
    if let [last] = chunks.remainder() {
        sum = fold(sum + (u32::from(*last) << 8)).into();
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// What [`split_ipv4`] reports from the IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Meta {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
}

/// Split a raw IPv4 packet as a raw socket delivers it (header included): honours IHL > 5
/// (options) and ignores bytes beyond Total Length (Ethernet padding). Returns the header
/// fields and the VRRP message.
pub fn split_ipv4(pkt: &[u8]) -> Result<(Ipv4Meta, &[u8]), DecodeError> {
    if pkt.len() < 20 {
        return Err(DecodeError::Truncated {
            len: pkt.len(),
            need: 20,
        });
    }
    if pkt[0] >> 4 != 4 {
        return Err(DecodeError::BadIpHeader);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(DecodeError::BadIpHeader);
    }
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if total < ihl {
        return Err(DecodeError::BadIpHeader);
    }
    if pkt.len() < total {
        return Err(DecodeError::Truncated {
            len: pkt.len(),
            need: total,
        });
    }
    let meta = Ipv4Meta {
        ttl: pkt[8],
        protocol: pkt[9],
        src: Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
        dst: Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]),
    };
    if meta.protocol != IPPROTO_VRRP {
        return Err(DecodeError::NotVrrp(meta.protocol));
    }
    Ok((meta, &pkt[ihl..total]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, checksum 220d.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&bytes, v4([0; 4]), v4([0; 4]), false), 0x220d);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(
            checksum(&[0x12, 0x34, 0x56], v4([0; 4]), v4([0; 4]), false),
            !(0x1234u16 + 0x5600)
        );
    }

    #[test]
    fn modes_differ_only_for_v3_over_ipv4() {
        let adv = Advert {
            version: Version::V3,
            vrid: 1,
            priority: 100,
            interval_cs: 100,
            addrs: vec![v4([10, 0, 0, 1])],
            auth: None,
        };
        let (s, d) = (v4([10, 0, 0, 2]), IpAddr::V4(MCAST_V4));
        let k = encode(&adv, s, d, ChecksumMode::Keepalived);
        let r = encode(&adv, s, d, ChecksumMode::Rfc9568);
        let e = encode(&adv, s, d, ChecksumMode::Either);
        assert_ne!(k, r);
        assert_eq!(k, e);
        assert_eq!(
            decode(&r, s, d, ChecksumMode::Keepalived),
            Err(DecodeError::BadChecksum)
        );
        assert_eq!(
            decode(&k, s, d, ChecksumMode::Rfc9568),
            Err(DecodeError::BadChecksum)
        );
        assert_eq!(decode(&k, s, d, ChecksumMode::Either).as_ref(), Ok(&adv));
        assert_eq!(decode(&r, s, d, ChecksumMode::Either).as_ref(), Ok(&adv));
    }
}
