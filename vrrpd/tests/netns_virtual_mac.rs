//! `virtual_mac = true` with real sockets and a real bridge (RFC 5798 7.3). Needs root
//! (skips loudly otherwise).
//!
//! - `virtual_mac_moves_with_the_vip` (10.78 / fd78, VRID 78): every node has macvlans
//!   `vrrp4.78` / `vrrp6.78` with 00:00:5e:00:01:4e / 00:00:5e:00:02:4e; the master holds
//!   the VIPs there as host addresses; the client resolves them to the virtual MACs and the
//!   master's adverts leave from the virtual MAC; after link loss the client's entries do
//!   not change at all and the VIPs answer again from n2 (the bridge learned the MAC's new
//!   port); after preemption back too. On exit the macvlans are gone and the base
//!   interface's arp_ignore is back to 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use support::{ms, serial, Prober, Settings, TestCluster};

const VMAC4: &str = "00:00:5e:00:01:4e";
const VMAC6: &str = "00:00:5e:00:02:4e";

/// vrrpd's virtual MAC interface for `vip`'s family.
fn vdev(vip: IpAddr) -> impl Fn(usize) -> &'static str {
    move |_| {
        if vip.is_ipv6() {
            "vrrp6.78"
        } else {
            "vrrp4.78"
        }
    }
}

fn wait_vholder(c: &TestCluster, vip: IpAddr, want: usize, timeout: Duration) -> Duration {
    c.wait_sole_holder_on(vip, want, timeout, vdev(vip))
}

#[test]
fn virtual_mac_moves_with_the_vip() {
    if !k3sha_support::netns::require_root("vrrpd netns virtual_mac_moves_with_the_vip") {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(78);
    s.ipv6_vip = true;
    s.vrrp_extra = "virtual_mac = true\n".into();
    let mut c = TestCluster::new("78", s);
    c.start_all();
    for i in 0..3 {
        c.wait_ctl(i, Duration::from_secs(10));
    }
    wait_vholder(&c, c.vip4, 0, Duration::from_secs(5));
    wait_vholder(&c, c.vip6, 0, Duration::from_secs(5));
    // Every node has both macvlans, with the RFC's MACs; the VIP is on none of the bases.
    for i in 0..3 {
        let ns = c.ns(&c.servers[i].name);
        assert_eq!(ns.mac("vrrp4.78").unwrap(), VMAC4);
        assert_eq!(ns.mac("vrrp6.78").unwrap(), VMAC6);
        assert_eq!(ns.sysctl_get("net.ipv4.conf.eth0.arp_ignore").unwrap(), "1");
    }
    assert!(c.holders(c.vip4).is_empty(), "VIP on a base interface");
    let st = c.status(0);
    assert_eq!(st["virtual_mac"]["interface"], "vrrp4.78", "{st:#}");
    assert_eq!(st["virtual_mac"]["mac"], VMAC4);

    let p4 = Prober::start(c.client(), c.vip4);
    let p6 = Prober::start(c.client(), c.vip6);
    assert!(p4
        .wait_reply_after(Instant::now(), Duration::from_secs(3))
        .is_some());
    assert!(p6
        .wait_reply_after(Instant::now(), Duration::from_secs(3))
        .is_some());
    assert_eq!(c.client_neighbour(c.vip4).as_deref(), Some(VMAC4));
    assert_eq!(c.client_neighbour(c.vip6).as_deref(), Some(VMAC6));
    // The node's own address still resolves to its own MAC (the macvlan ignores it).
    c.client()
        .exec("ping", &["-c", "1", "-W", "1", "10.78.0.11"])
        .unwrap();
    assert_eq!(
        c.client_neighbour("10.78.0.11".parse().unwrap()),
        Some(c.mac(0))
    );

    // The master's adverts leave from the virtual MAC.
    // tcpdump must be there: a missing one would be an empty capture, not an error.
    let tcpdump = k3sha_support::tools::require("tcpdump");
    let dump = c
        .client()
        .exec(
            "timeout",
            &[
                "5",
                &tcpdump.to_string_lossy(),
                "-l",
                "-t",
                "-e",
                "-n",
                "-c",
                "6",
                "-i",
                "eth0",
                "proto",
                "112",
            ],
        )
        .unwrap();
    let adverts: Vec<&str> = dump.lines().filter(|l| l.contains("VRRP")).collect();
    assert!(adverts.len() >= 5, "too few adverts seen:\n{dump}");
    for l in &adverts {
        assert!(
            l.starts_with(&format!("{VMAC4} >")) || l.starts_with(&format!("{VMAC6} >")),
            "advert not from a virtual MAC: {l}"
        );
    }

    // Link loss: the VIPs move to n2; the client's entries stay the same MACs, and the
    // VIPs answer again once the bridge learned where the MAC is now.
    let t_cut = Instant::now();
    c.lab.set_cable("n1", false).unwrap();
    wait_vholder(&c, c.vip4, 1, Duration::from_secs(5));
    let r4 = p4
        .wait_reply_after(Instant::now(), Duration::from_secs(5))
        .expect("IPv4 VIP answers again");
    let r6 = p6
        .wait_reply_after(Instant::now(), Duration::from_secs(5))
        .expect("IPv6 VIP answers again");
    let bound = c.master_down(150) + Duration::from_millis(240);
    eprintln!(
        "MEASURED virtual MAC link loss: v4 answering after {} ms, v6 after {} ms (bound {} ms)",
        ms(r4.duration_since(t_cut)),
        ms(r6.duration_since(t_cut)),
        ms(bound)
    );
    assert!(r4.duration_since(t_cut) <= bound);
    assert!(r6.duration_since(t_cut) <= bound);
    assert_eq!(c.client_neighbour(c.vip4).as_deref(), Some(VMAC4));
    assert_eq!(c.client_neighbour(c.vip6).as_deref(), Some(VMAC6));

    // n1 returns and preempts: it answers again, same MACs.
    c.lab.set_cable("n1", true).unwrap();
    wait_vholder(&c, c.vip4, 0, Duration::from_secs(5));
    wait_vholder(&c, c.vip6, 0, Duration::from_secs(5));
    let t = Instant::now();
    assert!(p4.wait_reply_after(t, Duration::from_secs(3)).is_some());
    assert!(p6.wait_reply_after(t, Duration::from_secs(3)).is_some());
    assert_eq!(c.client_neighbour(c.vip4).as_deref(), Some(VMAC4));
    for i in 0..3 {
        let d = &c.status(i)["counters"]["drops"];
        assert!(d.as_object().is_none_or(|m| m.is_empty()), "drops: {d}");
    }

    // A clean exit leaves no macvlan behind and restores arp_ignore.
    for i in 0..3 {
        let (status, _) = c.stop(i);
        assert!(status.success(), "n{} exited {status}", i + 1);
        let ns = c.ns(&c.servers[i].name);
        assert!(ns.mac("vrrp4.78").is_err(), "vrrp4.78 left on n{}", i + 1);
        assert!(ns.mac("vrrp6.78").is_err(), "vrrp6.78 left on n{}", i + 1);
        assert_eq!(ns.sysctl_get("net.ipv4.conf.eth0.arp_ignore").unwrap(), "0");
        assert_eq!(
            ns.sysctl_get("net.ipv4.conf.eth0.arp_announce").unwrap(),
            "0"
        );
    }
}
