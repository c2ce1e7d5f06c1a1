//! The core state machine driven by arbitrary operations and packets: it never panics,
//! after `handle_timeout(now)` its next deadline is in the future (no busy loop), and it
//! holds the VIPs only as master or while handing over.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vrrp_proto::core::{Action, Config, Instance, Received, State};
use vrrp_proto::packet::{encode, Advert, ChecksumMode, Version, MCAST_V4};

fn config(sel: u8) -> Config {
    Config {
        vrid: 7,
        version: if sel & 1 == 0 { Version::V3 } else { Version::V2 },
        priority: [100, 255, 1, 254][usize::from(sel >> 1) & 3],
        // Includes out-of-range values (0, 50 s) the core must tame.
        adver_interval: Duration::from_millis([0, 10, 1000, 50_000][usize::from(sel >> 4) & 3]),
        preempt: sel & 8 == 0,
        preempt_delay: Duration::from_millis(u64::from(sel & 0x30) * 100),
        accept_mode: true,
        primary: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        vips: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))],
        checksum: ChecksumMode::Either,
        password: if sel & 0x40 != 0 {
            Some(*b"secret\0\0")
        } else {
            None
        },
        allowed_sources: None,
        unicast_peers: Vec::new(),
        garp_repeat: u32::from(sel >> 6),
        garp_interval: Duration::from_millis(u64::from(sel & 1) * 300),
        garp_refresh: Duration::from_secs(u64::from(sel >> 7) * 5),
        handover_timeout: Duration::from_secs(3),
        release_linger: vrrp_proto::core::RELEASE_LINGER,
        // Off, or on (parking the VIPs and steering after planned handovers).
        drain_established: Duration::from_secs(u64::from(sel & 4) * 5),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut ops)) = data.split_first() else {
        return;
    };
    let base = Instant::now();
    let mut now = base;
    let mut inst = Instance::new(config(sel), now);
    let mut held = false;
    let mut steps = 0;
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        steps += 1;
        if steps > 500 {
            break;
        }
        let arg = ops.first().copied().unwrap_or(0);
        match op % 10 {
            0 => inst.start(now),
            1 => now += Duration::from_millis(u64::from(arg) * 20),
            2 => {
                // A well-formed advert from a peer with arbitrary priority / interval.
                let src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, arg % 4 + 1));
                let adv = Advert {
                    version: inst.config().version,
                    vrid: 7,
                    priority: arg.wrapping_mul(37),
                    interval_cs: if inst.config().version == Version::V2 {
                        1
                    } else {
                        u16::from(arg)
                    },
                    addrs: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))],
                    auth: inst.config().password,
                };
                let dst = IpAddr::V4(MCAST_V4);
                let payload = encode(&adv, src, dst, ChecksumMode::Keepalived);
                inst.handle_packet(
                    now,
                    Received {
                        src,
                        dst,
                        ttl: 255,
                        payload: &payload,
                    },
                );
            }
            3 => {
                // Arbitrary bytes as a packet.
                let n = usize::from(arg).min(ops.len());
                let src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
                let rx = Received {
                    src,
                    dst: IpAddr::V4(MCAST_V4),
                    ttl: 255,
                    payload: &ops[..n],
                };
                inst.handle_packet(now, rx);
            }
            4 => inst.set_fault(now, arg & 1 == 1),
            5 => inst.set_maintenance(now, arg & 1 == 1),
            6 => inst.set_priority_offset(now, i32::from(arg as i8) * 4),
            7 => inst.shutdown(now),
            8 => inst.reconfigure(now, config(arg)),
            _ => {
                if let Some(t) = inst.poll_timeout() {
                    now = now.max(t);
                }
            }
        }
        inst.handle_timeout(now);
        if let Some(t) = inst.poll_timeout() {
            assert!(
                t > now,
                "deadline {:?} not after now after handle_timeout",
                t - base
            );
        }
        while let Some(a) = inst.poll_action() {
            match a {
                Action::AddVips => held = true,
                Action::RemoveVips => held = false,
                _ => {}
            }
        }
        assert_eq!(held, inst.holds_vips());
        if inst.state() == State::Master {
            assert!(held, "a master holds the VIPs");
        }
        let _ = inst.status(now);
    }
});
