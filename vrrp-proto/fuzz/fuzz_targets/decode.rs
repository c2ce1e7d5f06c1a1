//! The VRRP decoder on arbitrary bytes: `split_ipv4` and `decode` never panic, and
//! whatever decodes re-encodes to something that decodes to the same advert.
//!
//! Input layout: byte 0 picks the checksum mode (bits 0-1) and the family (bit 7); then
//! the IP header's source and destination (4 + 4 or 16 + 16 bytes); the rest is the VRRP
//! message. The whole input (after byte 0) is also tried as a raw IPv4 packet.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use vrrp_proto::packet::{decode, encode, split_ipv4, ChecksumMode};

fn round_trip(msg: &[u8], src: IpAddr, dst: IpAddr, mode: ChecksumMode) {
    if let Ok(adv) = decode(msg, src, dst, mode) {
        let bytes = encode(&adv, src, dst, mode);
        assert_eq!(
            decode(&bytes, src, dst, mode),
            Ok(adv.clone()),
            "mode {mode:?}"
        );
        // What we send must be accepted by a peer in Either mode.
        assert_eq!(decode(&bytes, src, dst, ChecksumMode::Either), Ok(adv));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mode = match sel & 3 {
        0 => ChecksumMode::Keepalived,
        1 => ChecksumMode::Rfc9568,
        _ => ChecksumMode::Either,
    };
    if let Ok((meta, msg)) = split_ipv4(rest) {
        assert!(msg.len() <= rest.len());
        round_trip(msg, IpAddr::V4(meta.src), IpAddr::V4(meta.dst), mode);
    }
    if sel & 0x80 != 0 {
        if rest.len() >= 32 {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&rest[..16]);
            d.copy_from_slice(&rest[16..32]);
            let (src, dst) = (Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into());
            round_trip(&rest[32..], src, dst, mode);
        }
    } else if rest.len() >= 8 {
        let src = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]).into();
        let dst = Ipv4Addr::new(rest[4], rest[5], rest[6], rest[7]).into();
        round_trip(&rest[8..], src, dst, mode);
        // Mismatched families must be refused, never panic.
        let _ = decode(&rest[8..], src, Ipv6Addr::LOCALHOST.into(), mode);
    }
});
