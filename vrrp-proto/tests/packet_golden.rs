//! Codec conformance: golden bytes and round trips.
//!
//! Index:
//! - `hand_*`: byte arrays written out and checksummed by hand (the sums are in the
//!   comments), for v2 / v3 over IPv4 / IPv6 in each checksum mode.
//! - `keepalived_*`: adverts captured from a real keepalived (Debian 2.2.7) with
//!   `tests/golden/capture.sh`; we must decode them and re-encode the same bytes.
//! - `ipv4_*`: raw IPv4 framing: options (IHL > 5) and Ethernet padding.
//! - `drop_*`: one test per decode error, asserting its counter key.
//! - `prop_*`: proptest round trips and never-panic on arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use proptest::prelude::*;
use vrrp_proto::packet::{
    decode, encode, split_ipv4, Advert, ChecksumMode, DecodeError, Version, IPPROTO_VRRP, MCAST_V4,
    MCAST_V6,
};

const MODES: [ChecksumMode; 3] = [
    ChecksumMode::Keepalived,
    ChecksumMode::Rfc9568,
    ChecksumMode::Either,
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn group4() -> IpAddr {
    IpAddr::V4(MCAST_V4)
}

fn group6() -> IpAddr {
    IpAddr::V6(MCAST_V6)
}

/// Read a golden hex file: `#` lines are comments, the rest whitespace-separated bytes.
fn golden(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn v3_one_vip() -> Advert {
    Advert {
        version: Version::V3,
        vrid: 51,
        priority: 150,
        interval_cs: 100,
        addrs: vec![ip("192.168.1.100")],
        auth: None,
    }
}

// ----- hand-computed golden bytes -----

/// VRRPv3 / IPv4, keepalived form. Message words: 3133 9601 0064 0000 c0a8 0164 sum to
/// 0x89a5. Pseudo-header c0a8 010b e000 0012 0070 000c sums to 0xa242. 0x89a5 + 0xa242 =
/// 0x12be7, folded 0x2be8, complement 0xd417.
const V3_V4_KEEPALIVED: [u8; 12] = [0x31, 51, 150, 1, 0x00, 0x64, 0xd4, 0x17, 192, 168, 1, 100];

/// Same message, RFC 9568 form (no pseudo-header): complement of 0x89a5 = 0x765a.
const V3_V4_RFC9568: [u8; 12] = [0x31, 51, 150, 1, 0x00, 0x64, 0x76, 0x5a, 192, 168, 1, 100];

#[test]
fn hand_v3_ipv4_keepalived_form() {
    let (s, d) = (ip("192.168.1.11"), group4());
    for mode in [ChecksumMode::Keepalived, ChecksumMode::Either] {
        assert_eq!(
            encode(&v3_one_vip(), s, d, mode),
            V3_V4_KEEPALIVED,
            "{mode:?}"
        );
        assert_eq!(decode(&V3_V4_KEEPALIVED, s, d, mode), Ok(v3_one_vip()));
    }
    assert_eq!(
        decode(&V3_V4_KEEPALIVED, s, d, ChecksumMode::Rfc9568),
        Err(DecodeError::BadChecksum)
    );
}

#[test]
fn hand_v3_ipv4_rfc9568_form() {
    let (s, d) = (ip("192.168.1.11"), group4());
    assert_eq!(
        encode(&v3_one_vip(), s, d, ChecksumMode::Rfc9568),
        V3_V4_RFC9568
    );
    for mode in [ChecksumMode::Rfc9568, ChecksumMode::Either] {
        assert_eq!(decode(&V3_V4_RFC9568, s, d, mode), Ok(v3_one_vip()));
    }
    assert_eq!(
        decode(&V3_V4_RFC9568, s, d, ChecksumMode::Keepalived),
        Err(DecodeError::BadChecksum)
    );
}

#[test]
fn hand_v3_ipv4_keepalived_form_depends_on_addresses() {
    // The pseudo-header binds the checksum to src and dst: the same bytes from another
    // source fail in keepalived mode.
    assert_eq!(
        decode(
            &V3_V4_KEEPALIVED,
            ip("192.168.1.12"),
            group4(),
            ChecksumMode::Keepalived
        ),
        Err(DecodeError::BadChecksum)
    );
    // Unicast: dst 192.168.1.12 in the pseudo-header. c0a8 010b c0a8 010c 0070 000c sums
    // to 0x83e4; + 0x89a5 = 0x10d89, folded 0x0d8a, complement 0xf275.
    let uni = encode(
        &v3_one_vip(),
        ip("192.168.1.11"),
        ip("192.168.1.12"),
        ChecksumMode::Keepalived,
    );
    assert_eq!(&uni[6..8], &[0xf2, 0x75]);
}

#[test]
fn hand_v3_ipv4_keepalived_old_unicast_checksum_is_accepted() {
    // keepalived's `old_unicast_checksum`: a unicast advert whose pseudo-header carries the
    // multicast group instead of the real destination. Keepalived and Either accept it;
    // strict RFC 9568 does not.
    let (s, group) = (ip("192.168.1.11"), group4());
    let unicast_dst = ip("192.168.1.12");
    let old_form = encode(&v3_one_vip(), s, group, ChecksumMode::Keepalived);
    for mode in [ChecksumMode::Keepalived, ChecksumMode::Either] {
        assert_eq!(
            decode(&old_form, s, unicast_dst, mode),
            Ok(v3_one_vip()),
            "{mode:?}"
        );
    }
    assert_eq!(
        decode(&old_form, s, unicast_dst, ChecksumMode::Rfc9568),
        Err(DecodeError::BadChecksum)
    );
}

#[test]
fn hand_v3_ipv4_two_vips_priority_zero() {
    // 3133 0002 000a 0000 0a00 0064 0a00 0065 + pseudo 0a00 0001 e000 0012 0070 0010,
    // checksum 0xcf63.
    let adv = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 0,
        interval_cs: 10,
        addrs: vec![ip("10.0.0.100"), ip("10.0.0.101")],
        auth: None,
    };
    let bytes = [
        0x31, 51, 0, 2, 0x00, 0x0a, 0xcf, 0x63, 10, 0, 0, 100, 10, 0, 0, 101,
    ];
    let (s, d) = (ip("10.0.0.1"), group4());
    assert_eq!(encode(&adv, s, d, ChecksumMode::Keepalived), bytes);
    assert_eq!(decode(&bytes, s, d, ChecksumMode::Keepalived), Ok(adv));
}

#[test]
fn hand_v2_ipv4_password() {
    // 2133 6401 0101 0000 c0a8 0164 6b33 732d 6861 0000: no pseudo-header in v2, checksum
    // 0x70fb; the same in every mode.
    let adv = Advert {
        version: Version::V2,
        vrid: 51,
        priority: 100,
        interval_cs: 1,
        addrs: vec![ip("192.168.1.100")],
        auth: Some(*b"k3s-ha\0\0"),
    };
    let bytes = [
        0x21, 51, 100, 1, 1, 1, 0x70, 0xfb, 192, 168, 1, 100, b'k', b'3', b's', b'-', b'h', b'a',
        0, 0,
    ];
    let (s, d) = (ip("192.168.1.11"), group4());
    for mode in MODES {
        assert_eq!(encode(&adv, s, d, mode), bytes, "{mode:?}");
        assert_eq!(decode(&bytes, s, d, mode), Ok(adv.clone()), "{mode:?}");
    }
}

#[test]
fn hand_v2_ipv4_no_auth_owner() {
    // 2107 ff01 0001 0000 c0a8 0164 + 8 zero bytes: checksum 0x1de9.
    let adv = Advert {
        version: Version::V2,
        vrid: 7,
        priority: 255,
        interval_cs: 1,
        addrs: vec![ip("192.168.1.100")],
        auth: None,
    };
    let bytes = [
        0x21, 7, 255, 1, 0, 1, 0x1d, 0xe9, 192, 168, 1, 100, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let (s, d) = (ip("192.168.1.11"), group4());
    assert_eq!(encode(&adv, s, d, ChecksumMode::Keepalived), bytes);
    assert_eq!(decode(&bytes, s, d, ChecksumMode::Rfc9568), Ok(adv));
}

#[test]
fn hand_v3_ipv6_always_pseudo_header() {
    // RFC 8200 section 8.1 pseudo-header: fe80::1, ff02::12, length 24, next header 112.
    // Checksum 0xd98e in every mode.
    let adv = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 200,
        interval_cs: 100,
        addrs: vec![ip("2001:db8::100")],
        auth: None,
    };
    let mut bytes = vec![0x31, 51, 200, 1, 0x00, 0x64, 0xd9, 0x8e];
    bytes.extend_from_slice(&"2001:db8::100".parse::<Ipv6Addr>().unwrap().octets());
    let (s, d) = (ip("fe80::1"), group6());
    for mode in MODES {
        assert_eq!(encode(&adv, s, d, mode), bytes, "{mode:?}");
        assert_eq!(decode(&bytes, s, d, mode), Ok(adv.clone()), "{mode:?}");
    }
}

// ----- real keepalived captures -----

/// Split a captured IPv4 packet, decode it, and re-encode: the bytes must be identical.
fn check_capture_v4(name: &str, want: &Advert) -> Vec<u8> {
    let pkt = golden(name);
    let (meta, msg) = split_ipv4(&pkt).unwrap();
    assert_eq!(meta.ttl, 255);
    assert_eq!(meta.protocol, IPPROTO_VRRP);
    let (s, d) = (IpAddr::V4(meta.src), IpAddr::V4(meta.dst));
    for mode in [ChecksumMode::Keepalived, ChecksumMode::Either] {
        let adv = decode(msg, s, d, mode).unwrap();
        assert_eq!(&adv, want);
        assert_eq!(
            encode(&adv, s, d, mode),
            msg,
            "{name} re-encoded in {mode:?}"
        );
    }
    msg.to_vec()
}

#[test]
fn keepalived_v3_ipv4_default_checksum_is_the_keepalived_form() {
    let want = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 150,
        interval_cs: 100,
        addrs: vec![ip("10.213.7.100")],
        auth: None,
    };
    let msg = check_capture_v4("keepalived-2.2.7-v3-ipv4.hex", &want);
    // keepalived's default includes the pseudo-header, so strict RFC 9568 refuses it, and
    // our RFC 9568 encoding differs.
    let (s, d) = (ip("10.213.7.11"), group4());
    assert_eq!(
        decode(&msg, s, d, ChecksumMode::Rfc9568),
        Err(DecodeError::BadChecksum)
    );
    let rfc = encode(&want, s, d, ChecksumMode::Rfc9568);
    assert_eq!(&rfc[6..8], &[0x26, 0x2e]);
}

#[test]
fn keepalived_v3_ipv4_unicast() {
    let want = Advert {
        version: Version::V3,
        vrid: 54,
        priority: 120,
        interval_cs: 100,
        addrs: vec![ip("10.213.7.100")],
        auth: None,
    };
    let pkt = golden("keepalived-2.2.7-v3-unicast-ipv4.hex");
    let (meta, _) = split_ipv4(&pkt).unwrap();
    assert_eq!(meta.dst, Ipv4Addr::new(10, 213, 7, 12));
    check_capture_v4("keepalived-2.2.7-v3-unicast-ipv4.hex", &want);
}

#[test]
fn keepalived_v2_password() {
    let want = Advert {
        version: Version::V2,
        vrid: 52,
        priority: 100,
        interval_cs: 1,
        addrs: vec![ip("10.213.7.100"), ip("10.213.7.101")],
        auth: Some(*b"k3s-ha\0\0"),
    };
    let msg = check_capture_v4("keepalived-2.2.7-v2-pass-ipv4.hex", &want);
    // v2 has no pseudo-header: every mode accepts it.
    let (s, d) = (ip("10.213.7.11"), group4());
    assert_eq!(decode(&msg, s, d, ChecksumMode::Rfc9568), Ok(want));
}

#[test]
fn keepalived_v3_ipv6() {
    let pkt = golden("keepalived-2.2.7-v3-ipv6.hex");
    assert_eq!(pkt[0] >> 4, 6);
    assert_eq!(pkt[6], IPPROTO_VRRP, "next header");
    assert_eq!(pkt[7], 255, "hop limit");
    let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).unwrap()));
    let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[24..40]).unwrap()));
    assert_eq!(src, ip("fe80::ff:fe00:a01"));
    assert_eq!(dst, group6());
    let msg = &pkt[40..];
    let want = Advert {
        version: Version::V3,
        vrid: 53,
        priority: 200,
        interval_cs: 50,
        addrs: vec![ip("fd00:213:7::100")],
        auth: None,
    };
    for mode in MODES {
        assert_eq!(decode(msg, src, dst, mode).as_ref(), Ok(&want), "{mode:?}");
        assert_eq!(encode(&want, src, dst, mode), msg, "{mode:?}");
    }
}

// ----- raw IPv4 framing -----

/// An IPv4 header (with `options`) around `msg`, then `padding` bytes past Total Length.
fn ipv4_packet(msg: &[u8], options: &[u8], padding: usize) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = 20 + options.len();
    let total = (ihl + msg.len()) as u16;
    let mut p = vec![0x40 | (ihl / 4) as u8, 0xc0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 255, IPPROTO_VRRP, 0, 0]);
    p.extend_from_slice(&[192, 168, 1, 11, 224, 0, 0, 18]);
    p.extend_from_slice(options);
    p.extend_from_slice(msg);
    p.extend(std::iter::repeat_n(0xee, padding));
    p
}

#[test]
fn ipv4_header_with_options_parses() {
    // Router Alert option (RFC 2113): 94 04 00 00.
    let pkt = ipv4_packet(&V3_V4_KEEPALIVED, &[0x94, 0x04, 0x00, 0x00], 0);
    let (meta, msg) = split_ipv4(&pkt).unwrap();
    assert_eq!(msg, V3_V4_KEEPALIVED);
    assert_eq!(meta.src, Ipv4Addr::new(192, 168, 1, 11));
    assert_eq!(meta.dst, MCAST_V4);
    assert_eq!(meta.ttl, 255);
    let adv = decode(
        msg,
        meta.src.into(),
        meta.dst.into(),
        ChecksumMode::Keepalived,
    );
    assert_eq!(adv, Ok(v3_one_vip()));
}

#[test]
fn ipv4_ethernet_padding_is_ignored() {
    // A 32-byte IP packet in a 60-byte minimum frame: 14 bytes of padding after it.
    let pkt = ipv4_packet(&V3_V4_KEEPALIVED, &[], 14);
    let (_, msg) = split_ipv4(&pkt).unwrap();
    assert_eq!(msg, V3_V4_KEEPALIVED);
    // Options and padding together.
    let pkt = ipv4_packet(&V3_V4_KEEPALIVED, &[1, 1, 1, 0, 0x94, 4, 0, 0], 9);
    let (_, msg) = split_ipv4(&pkt).unwrap();
    assert_eq!(msg, V3_V4_KEEPALIVED);
}

// ----- one test per drop reason -----

#[test]
fn drop_reasons_are_distinct_and_stable() {
    let (s, d) = (ip("192.168.1.11"), group4());
    let k = ChecksumMode::Keepalived;
    let cases: Vec<(Result<Advert, DecodeError>, &str)> = vec![
        (decode(&V3_V4_KEEPALIVED[..7], s, d, k), "truncated"),
        (decode(&V3_V4_KEEPALIVED[..11], s, d, k), "truncated"),
        (
            decode(&[&V3_V4_KEEPALIVED[..], &[0, 0, 0, 0]].concat(), s, d, k),
            "length",
        ),
        (
            decode(&[0x41, 51, 150, 1, 0, 100, 0, 0], s, d, k),
            "version",
        ),
        (decode(&[0x32, 51, 150, 0, 0, 100, 0, 0], s, d, k), "type"),
        (
            decode(
                &[0x31, 51, 151, 1, 0x00, 0x64, 0xd4, 0x17, 192, 168, 1, 100],
                s,
                d,
                k,
            ),
            "checksum",
        ),
        (decode(&V3_V4_KEEPALIVED, s, group6(), k), "family"),
        // v2 auth type 2 (AH) is not accepted.
        (
            {
                let mut m = vec![0x21, 51, 100, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                // 0x2133 + 0x6400 + 0x0201 = 0x8734, complement 0x78cb.
                let sum = 0x78cbu16;
                m[6..8].copy_from_slice(&sum.to_be_bytes());
                decode(&m, s, d, k)
            },
            "auth",
        ),
    ];
    for (i, (res, reason)) in cases.into_iter().enumerate() {
        let err = res.expect_err(reason);
        assert_eq!(err.reason().as_str(), reason, "case {i}: {err:?}");
    }
    let mut bad = ipv4_packet(&V3_V4_KEEPALIVED, &[], 0);
    bad[9] = 17;
    assert_eq!(split_ipv4(&bad).unwrap_err().reason().as_str(), "not-vrrp");
    let mut bad = ipv4_packet(&V3_V4_KEEPALIVED, &[], 0);
    bad[0] = 0x44; // IHL 4
    assert_eq!(split_ipv4(&bad).unwrap_err().reason().as_str(), "ip-header");
    let mut bad = ipv4_packet(&V3_V4_KEEPALIVED, &[], 0);
    bad[0] = 0x65; // version 6
    assert_eq!(split_ipv4(&bad).unwrap_err().reason().as_str(), "ip-header");
    let mut bad = ipv4_packet(&V3_V4_KEEPALIVED, &[], 0);
    bad[3] += 1; // Total Length past the end
    assert_eq!(split_ipv4(&bad).unwrap_err().reason().as_str(), "truncated");
    let bad = ipv4_packet(&V3_V4_KEEPALIVED, &[], 0);
    assert_eq!(
        split_ipv4(&bad[..19]).unwrap_err().reason().as_str(),
        "truncated"
    );
}

#[test]
fn v3_reserved_interval_bits_are_ignored() {
    // Max Adver Int's top 4 bits are reserved (RFC 5798 section 5.2.6): set them and fix
    // the checksum: the folded sum 0x2be8 + 0xf000 = 0x11be8 -> 0x1be9, complement 0xe416.
    let mut m = V3_V4_KEEPALIVED;
    m[4] |= 0xf0;
    m[6..8].copy_from_slice(&[0xe4, 0x16]);
    let adv = decode(&m, ip("192.168.1.11"), group4(), ChecksumMode::Keepalived).unwrap();
    assert_eq!(adv.interval_cs, 100);
}

// ----- property tests -----

fn arb_advert() -> impl Strategy<Value = (Advert, IpAddr, IpAddr)> {
    (
        prop_oneof![Just(Version::V2), Just(Version::V3)],
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
        any::<bool>(),
        prop::collection::vec(any::<[u8; 16]>(), 0..20),
        prop::option::of(any::<[u8; 8]>()),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
    )
        .prop_map(|(version, vrid, priority, interval, v6, raw, auth, s, d)| {
            let to_ip = |b: [u8; 16]| -> IpAddr {
                if v6 {
                    IpAddr::V6(Ipv6Addr::from(b))
                } else {
                    IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                }
            };
            let adv = Advert {
                version,
                vrid,
                priority,
                interval_cs: if version == Version::V2 {
                    interval & 0xff
                } else {
                    interval & 0x0fff
                },
                addrs: raw.into_iter().map(to_ip).collect(),
                auth: if version == Version::V2 { auth } else { None },
            };
            (adv, to_ip(s), to_ip(d))
        })
}

proptest! {
    #[test]
    fn prop_round_trip_every_mode((adv, s, d) in arb_advert()) {
        for mode in MODES {
            let bytes = encode(&adv, s, d, mode);
            prop_assert_eq!(decode(&bytes, s, d, mode), Ok(adv.clone()));
            // Either accepts what every mode sends.
            prop_assert_eq!(decode(&bytes, s, d, ChecksumMode::Either), Ok(adv.clone()));
        }
    }

    #[test]
    fn prop_one_flipped_bit_is_caught((adv, s, d) in arb_advert(), bit in any::<u16>()) {
        // Strict modes only: keepalived mode's unicast fallback (pseudo-header with the
        // group address) could by chance match a flipped bit.
        for mode in [ChecksumMode::Rfc9568, ChecksumMode::Keepalived] {
            if mode == ChecksumMode::Keepalived && s.is_ipv4() && d != group4() {
                continue;
            }
            let mut bytes = encode(&adv, s, d, mode);
            let bit = usize::from(bit) % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            // A single flipped bit always fails some check (a count change: the length).
            prop_assert!(decode(&bytes, s, d, mode).is_err());
        }
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = split_ipv4(&bytes);
        for (s, d) in [(ip("10.0.0.1"), group4()), (ip("fe80::1"), group6())] {
            for mode in MODES {
                if let Ok(adv) = decode(&bytes, s, d, mode) {
                    prop_assert_eq!(decode(&encode(&adv, s, d, mode), s, d, mode), Ok(adv));
                }
            }
        }
    }
}
