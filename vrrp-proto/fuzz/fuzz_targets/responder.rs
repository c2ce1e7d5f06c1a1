//! The `accept_mode = false` ARP / ND responder's frame parser on arbitrary bytes: it never
//! panics, and any reply it builds is a well-formed answer about one of our VIPs, sent
//! from our MAC.
//!
//! Input layout: the whole input is the received Ethernet frame. The VIPs are fixed (one
//! IPv4, one IPv6) and also the frame's own ARP / ND target when present, so that
//! interesting frames reach the reply builder.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use vrrp_proto::frames::answer;

const OURS: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];

fuzz_target!(|frame: &[u8]| {
    let mut vips = vec![
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100)),
    ];
    // ARP target protocol address / NS target, wherever the frame would carry them.
    if let Some(t) = frame.get(38..42) {
        vips.push(IpAddr::V4(Ipv4Addr::new(t[0], t[1], t[2], t[3])));
    }
    if let Some(t) = frame.get(62..78) {
        let mut a = [0u8; 16];
        a.copy_from_slice(t);
        vips.push(IpAddr::V6(Ipv6Addr::from(a)));
    }
    // Either Router flag; the frame's length picks one.
    if let Ok(reply) = answer(frame, OURS, &vips, frame.len() % 2 == 1) {
        assert_eq!(&reply[6..12], &OURS, "a reply comes from our MAC");
        match u16::from_be_bytes([reply[12], reply[13]]) {
            0x0806 => {
                assert_eq!(reply.len(), 60);
                assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
                let spa = Ipv4Addr::new(reply[28], reply[29], reply[30], reply[31]);
                assert!(vips.contains(&IpAddr::V4(spa)), "answered for {spa}");
            }
            0x86dd => {
                assert_eq!(reply.len(), 14 + 40 + 32);
                assert_eq!(reply[54], 136, "a neighbour advertisement");
                let mut t = [0u8; 16];
                t.copy_from_slice(&reply[62..78]);
                assert!(vips.contains(&IpAddr::V6(Ipv6Addr::from(t))));
            }
            other => panic!("reply with ethertype {other:#x}"),
        }
    }
});
