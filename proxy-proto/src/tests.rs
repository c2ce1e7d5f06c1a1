//! The codec against bytes HAProxy 2.6 sent (`send-proxy`, `send-proxy-v2`, `proxy-v2-options
//! crc32c,unique-id`; captured from a loopback listener), the specification's examples, and
//! properties over arbitrary input (proptest): never a panic, a prefix of a header is
//! `Incomplete`, what decodes re-encodes to the same header.
#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const MAX: usize = 4096;
const PAYLOAD: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

/// HAProxy `send-proxy-v2`, an IPv4 client 127.0.0.1:45678 to 127.0.0.1:39001, then the
/// client's request in the same read.
const HAPROXY_V2_TCP4: &str =
    "0d0a0d0a000d0a515549540a2111000c7f0000017f000001b26e9859474554202f20485454502f312e300d0a0d0a";
/// The same from [::1]:45679.
const HAPROXY_V2_TCP6: &str = "0d0a0d0a000d0a515549540a212100240000000000000000000000000000000100000000000000000000000000000001b26f9859474554202f20485454502f312e300d0a0d0a";
/// `proxy-v2-options crc32c,unique-id` (an empty unique id: no `unique-id-format` in the
/// frontend), from 127.0.0.1:45682 to 127.0.0.1:39003.
const HAPROXY_V2_CRC: &str = "0d0a0d0a000d0a515549540a211100167f0000017f000001b272985b03000429ab77b1050000474554202f20485454502f312e300d0a0d0a";
/// `send-proxy`.
const HAPROXY_V1: &[u8] = b"PROXY TCP4 127.0.0.1 127.0.0.1 45681 39002\r\nGET / HTTP/1.0\r\n\r\n";

fn complete(bytes: &[u8]) -> (Header<'_>, usize) {
    match decode(bytes, MAX) {
        Ok(Decoded::Complete { header, len }) => (header, len),
        other => panic!("{other:?}"),
    }
}

fn reencoded(h: &Header<'_>) -> Vec<u8> {
    let mut buf = [0u8; MAX];
    let n = h.write(&mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn haproxy_v2_ipv4_and_ipv6_decode_and_reencode_byte_for_byte() {
    for (capture, src, dst) in [
        (HAPROXY_V2_TCP4, "127.0.0.1:45678", "127.0.0.1:39001"),
        (HAPROXY_V2_TCP6, "[::1]:45679", "[::1]:39001"),
    ] {
        let bytes = hex(capture);
        let (h, len) = complete(&bytes);
        assert_eq!(&bytes[len..], PAYLOAD);
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!(
            h.addresses,
            Some(Addresses {
                source: sa(src),
                destination: sa(dst)
            })
        );
        assert!(h.tlvs.is_empty());
        assert_eq!(reencoded(&h), bytes[..len]);
    }
}

#[test]
fn haproxy_v2_crc32c_is_checked_and_written_the_same() {
    let bytes = hex(HAPROXY_V2_CRC);
    let (h, len) = complete(&bytes);
    assert_eq!(&bytes[len..], PAYLOAD);
    let tlvs: Vec<(u8, &[u8])> = h.tlvs.iter().map(|t| (t.kind, t.value)).collect();
    assert_eq!(
        tlvs,
        [
            (tlv::CRC32C, &[0x29, 0xab, 0x77, 0xb1][..]),
            (tlv::UNIQUE_ID, &[][..])
        ]
    );
    // Our writer, asked for the same TLVs in the same order, sends the same bytes.
    let mut buf = [0u8; 128];
    let mut w = V2Writer::new(&mut buf, Command::Proxy, h.addresses.as_ref()).unwrap();
    w.crc32c().unwrap();
    w.tlv(tlv::UNIQUE_ID, b"").unwrap();
    let n = w.finish().unwrap();
    assert_eq!(buf[..n], bytes[..len]);
    // One bit changed anywhere in the header: refused (mostly by the checksum), except in
    // the CRC TLV's own type byte (28): then there is no checksum to check, by design.
    for i in (0..len).filter(|&i| i != 28) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        let got = decode(&bad, MAX);
        assert!(
            !matches!(got, Ok(Decoded::Complete { .. })),
            "bit flip at {i} accepted: {got:?}"
        );
    }
    let mut bad = bytes.clone();
    bad[32] ^= 1; // inside the CRC value (31..35)
    assert_eq!(decode(&bad, MAX), Err(DecodeError::V2Crc32c));
}

#[test]
fn haproxy_v1_decodes_and_reencodes_byte_for_byte() {
    let (h, len) = complete(HAPROXY_V1);
    assert_eq!(&HAPROXY_V1[len..], PAYLOAD);
    assert_eq!((h.version, h.command), (Version::V1, Command::Proxy));
    assert_eq!(
        h.addresses,
        Some(Addresses {
            source: sa("127.0.0.1:45681"),
            destination: sa("127.0.0.1:39002")
        })
    );
    assert_eq!(reencoded(&h), HAPROXY_V1[..len]);
}

#[test]
fn crc32c_check_value() {
    // RFC 3720 B.4 / the usual check value of CRC-32C.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
}

#[test]
fn v1_examples_of_the_specification() {
    let (h, len) = complete(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /");
    assert_eq!(len, 47);
    assert_eq!(h.addresses.unwrap().source, sa("192.168.0.1:56324"));
    let (h, len) = complete(b"PROXY UNKNOWN\r\n");
    assert_eq!((h.command, h.addresses, len), (Command::Local, None, 15));
    // "the receiver must ignore anything presented before the CRLF"
    let (h, _) = complete(b"PROXY UNKNOWN ffff:f::f:ffff 1.2.3.4 65535 x\r\n");
    assert_eq!(h.addresses, None);
    let long = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(long.len(), V1_WRITE_MAX);
    let (h, len) = complete(long);
    assert_eq!(len, V1_WRITE_MAX);
    assert_eq!(h.addresses.unwrap().destination.port(), 65535);
}

#[test]
fn v1_refusals_name_their_cause() {
    let cases: &[(&[u8], DecodeError)] = &[
        (b"GET / HTTP/1.1\r\n", DecodeError::Signature),
        (b"PROXY\r\n", DecodeError::Signature),
        (
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            DecodeError::V1Protocol,
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", DecodeError::V1Fields),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            DecodeError::V1Fields,
        ),
        (
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            DecodeError::V1Fields,
        ),
        (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", DecodeError::V1Address),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", DecodeError::V1Address),
        (
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            DecodeError::V1Address,
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", DecodeError::V1Port),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            DecodeError::V1Port,
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n", DecodeError::V1Port),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", DecodeError::V1LineEnd),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx", DecodeError::V1LineEnd),
        (b"PROXY UNKNOWN\n\r\n", DecodeError::V1LineEnd),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            decode(bytes, MAX),
            Err(*want),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX_LEN, b'x');
    assert_eq!(decode(&long, MAX), Err(DecodeError::V1TooLong));
    long.truncate(V1_MAX_LEN - 1);
    assert_eq!(
        decode(&long, MAX),
        Ok(Decoded::Incomplete {
            at_least: V1_MAX_LEN + 1
        })
    );
    long.push(b'\r');
    assert_eq!(decode(&long, MAX), Err(DecodeError::V1TooLong));
}

#[test]
fn v2_refusals_name_their_cause() {
    let base = hex(HAPROXY_V2_TCP4);
    let with = |i: usize, v: u8| {
        let mut b = base.clone();
        b[i] = v;
        b
    };
    assert_eq!(decode(&with(3, 0), MAX), Err(DecodeError::Signature));
    assert_eq!(decode(&with(12, 0x11), MAX), Err(DecodeError::V2Version(1)));
    assert_eq!(decode(&with(12, 0x22), MAX), Err(DecodeError::V2Command(2)));
    assert_eq!(
        decode(&with(13, 0x41), MAX),
        Err(DecodeError::V2Family(0x41))
    );
    assert_eq!(
        decode(&with(13, 0x13), MAX),
        Err(DecodeError::V2Family(0x13))
    );
    assert_eq!(
        decode(&with(13, 0x21), MAX),
        Err(DecodeError::V2AddressLength { len: 12, need: 36 })
    );
    assert_eq!(
        decode(&with(14, 1), 256),
        Err(DecodeError::V2TooLong { len: 284, max: 256 })
    );
    // A TLV that runs past the header's end.
    let mut b = base[..28].to_vec();
    b[15] = 12 + 4;
    b.extend_from_slice(&[tlv::NOOP, 0, 2, 0]);
    assert_eq!(decode(&b, MAX), Err(DecodeError::V2Tlv));
    let mut b = base[..28].to_vec();
    b[15] = 12 + 2;
    b.extend_from_slice(&[tlv::NOOP, 0]);
    assert_eq!(decode(&b, MAX), Err(DecodeError::V2Tlv));
    let mut b = base[..28].to_vec();
    b[15] = 12 + 5;
    b.extend_from_slice(&[tlv::CRC32C, 0, 2, 0, 0]);
    assert_eq!(decode(&b, MAX), Err(DecodeError::V2Crc32cLength(2)));
}

#[test]
fn v2_local_unspec_and_unix_use_the_real_endpoints() {
    let mut buf = [0u8; 64];
    let n = V2Writer::new(&mut buf, Command::Local, None)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(buf[..n], hex("0d0a0d0a000d0a515549540a20000000"));
    let (h, len) = complete(&buf[..n]);
    assert_eq!((h.command, h.addresses, len), (Command::Local, None, 16));
    // LOCAL with an address block: "must not assume zero is presented for LOCAL".
    let mut b = hex(HAPROXY_V2_TCP4);
    b[12] = 0x20;
    let (h, len) = complete(&b);
    assert_eq!((h.command, h.addresses, len), (Command::Local, None, 28));
    // AF_UNIX stream: accepted, without addresses.
    let mut b = hex("0d0a0d0a000d0a515549540a213100d8");
    b.resize(16 + 216, 0);
    let (h, len) = complete(&b);
    assert_eq!((h.command, h.addresses, len), (Command::Proxy, None, 232));
}

#[test]
fn writers_send_ipv4_clients_of_dual_stack_sockets_as_ipv4() {
    let a = Addresses {
        source: sa("[::ffff:10.1.2.3]:40000"),
        destination: sa("[::ffff:10.9.9.9]:443"),
    };
    let mut buf = [0u8; 128];
    let n = write_v1(&mut buf, Some(&a)).unwrap();
    assert_eq!(&buf[..n], b"PROXY TCP4 10.1.2.3 10.9.9.9 40000 443\r\n");
    let n = V2Writer::new(&mut buf, Command::Proxy, Some(&a))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(n, 28);
    assert_eq!(
        complete(&buf[..n]).0.addresses.unwrap().source,
        sa("10.1.2.3:40000")
    );
    // One side IPv6: both as IPv6, as HAProxy does.
    let mixed = Addresses {
        source: sa("10.1.2.3:40000"),
        destination: sa("[fd00::1]:443"),
    };
    let n = write_v1(&mut buf, Some(&mixed)).unwrap();
    assert_eq!(
        &buf[..n],
        b"PROXY TCP6 ::ffff:10.1.2.3 fd00::1 40000 443\r\n"
    );
    let n = V2Writer::new(&mut buf, Command::Proxy, Some(&mixed))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!((n, buf[13]), (V2_INET6_LEN, 0x21));
    assert_eq!(write_v1(&mut buf[..20], Some(&mixed)), Err(BufferTooSmall));
    assert_eq!(
        V2Writer::new(&mut buf[..30], Command::Proxy, Some(&mixed)).err(),
        Some(BufferTooSmall)
    );
}

#[test]
fn every_prefix_of_a_header_is_incomplete() {
    let mut all: Vec<Vec<u8>> = vec![
        hex(HAPROXY_V2_TCP4),
        hex(HAPROXY_V2_TCP6),
        hex(HAPROXY_V2_CRC),
        HAPROXY_V1.to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
    ];
    all.push(hex("0d0a0d0a000d0a515549540a20000000"));
    for bytes in all {
        let (_, len) = complete(&bytes);
        for cut in 0..len {
            match decode(&bytes[..cut], MAX) {
                Ok(Decoded::Incomplete { at_least }) => {
                    assert!(
                        at_least > cut && at_least <= len.max(cut + 2),
                        "{cut}: {at_least}"
                    )
                }
                other => panic!("prefix of {cut} bytes: {other:?}"),
            }
        }
    }
}

fn addr_strategy() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(a, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(a, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), p)),
    ]
}

/// A header's meaning: the command, the canonical addresses, the TLVs.
type Meaning = (
    Command,
    Option<(SocketAddr, SocketAddr)>,
    Vec<(u8, Vec<u8>)>,
);

/// What a receiver acts on.
fn meaning(h: &Header<'_>) -> Meaning {
    (
        h.command,
        h.addresses
            .map(|a| (canonical(a.source), canonical(a.destination))),
        h.tlvs.iter().map(|t| (t.kind, t.value.to_vec())).collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes, and bytes that start like a header: no panic; a complete header
    /// lies within the input and re-encodes to one with the same meaning.
    #[test]
    fn decode_never_panics_and_round_trips(
        start in prop_oneof![
            Just(Vec::new()),
            Just(b"PROXY ".to_vec()),
            Just(b"PROXY TCP4 ".to_vec()),
            Just(b"PROXY TCP6 ".to_vec()),
            Just(V2_SIGNATURE.to_vec()),
            Just(hex("0d0a0d0a000d0a515549540a2111")),
            Just(hex("0d0a0d0a000d0a515549540a2121")),
        ],
        rest in proptest::collection::vec(any::<u8>(), 0..300),
        max in 16usize..600,
    ) {
        let mut bytes = start;
        bytes.extend_from_slice(&rest);
        match decode(&bytes, max) {
            Ok(Decoded::Complete { header, len }) => {
                prop_assert!(len <= bytes.len());
                let again = reencoded(&header);
                let (h2, len2) = complete(&again);
                prop_assert_eq!(len2, again.len());
                prop_assert_eq!(meaning(&header), meaning(&h2));
            }
            Ok(Decoded::Incomplete { at_least }) => prop_assert!(at_least > bytes.len()),
            Err(_) => {}
        }
    }

    /// What our writers produce, for any addresses and TLVs, decodes to what was written.
    #[test]
    fn written_headers_decode_to_what_was_written(
        src in addr_strategy(),
        dst in addr_strategy(),
        v2 in any::<bool>(),
        local in any::<bool>(),
        crc in any::<bool>(),
        tlvs in proptest::collection::vec((any::<u8>().prop_filter("not crc", |t| *t != tlv::CRC32C),
            proptest::collection::vec(any::<u8>(), 0..40)), 0..4),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let a = Addresses { source: src, destination: dst };
        let mut buf = vec![0u8; 1024];
        let n = if v2 {
            let cmd = if local { Command::Local } else { Command::Proxy };
            let mut w = V2Writer::new(&mut buf, cmd, Some(&a)).unwrap();
            for (k, v) in &tlvs {
                w.tlv(*k, v).unwrap();
            }
            if crc {
                w.crc32c().unwrap();
            }
            w.finish().unwrap()
        } else {
            write_v1(&mut buf, (!local).then_some(&a)).unwrap()
        };
        buf.truncate(n);
        buf.extend_from_slice(&payload);
        let (h, len) = complete(&buf);
        prop_assert_eq!(len, n);
        if local {
            prop_assert_eq!(h.command, Command::Local);
            prop_assert_eq!(h.addresses, None);
        } else {
            let got = h.addresses.unwrap();
            let (s, d) = (canonical(src), canonical(dst));
            if s.is_ipv4() == d.is_ipv4() {
                prop_assert_eq!((canonical(got.source), canonical(got.destination)), (s, d));
            } else {
                // Mixed families travel as IPv6, the IPv4 side mapped.
                prop_assert_eq!(canonical(got.source), s);
                prop_assert_eq!(canonical(got.destination), d);
            }
        }
        if v2 {
            let got: Vec<(u8, Vec<u8>)> = h
                .tlvs
                .iter()
                .filter(|t| t.kind != tlv::CRC32C)
                .map(|t| (t.kind, t.value.to_vec()))
                .collect();
            prop_assert_eq!(got, tlvs);
            prop_assert_eq!(h.tlvs.get(tlv::CRC32C).is_some(), crc);
        }
    }
}
