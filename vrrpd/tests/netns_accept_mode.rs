//! `accept_mode = false` with real sockets (RFC 5798 6.4.3): the master answers ARP and
//! neighbour solicitations for the VIPs but does not accept traffic addressed to them.
//! Needs root (skips loudly otherwise).
//!
//! - `master_answers_arp_and_nd_but_accepts_nothing` (10.70 / fd70): the VIPs never appear
//!   on any interface; the client resolves both to the master's MAC (the responder's
//!   replies are counted) but gets no answer to a ping; after link loss the backup takes
//!   over and answers, the client's entries follow its GARP / NA; when the old master
//!   preempts back, only it answers a fresh resolution.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{serial, Settings, TestCluster};

/// Wait until server `i` reports `state` (bounded).
fn wait_state(c: &TestCluster, i: usize, state: &str, timeout: Duration) {
    let t0 = Instant::now();
    loop {
        let st = c.status(i);
        if st["state"] == state {
            return;
        }
        if t0.elapsed() > timeout {
            c.dump_logs();
            panic!("after {timeout:?} n{} is not {state}: {st:#}", i + 1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Forget the client's neighbour entry for `vip`, ping `vip` once (it must not answer) and return
/// the MAC the client resolved it to.
fn resolve(c: &TestCluster, vip: IpAddr) -> Option<String> {
    c.client()
        .ip(&["neigh", "flush", "to", &vip.to_string()])
        .unwrap();
    let ping = c
        .client()
        .exec("ping", &["-c", "1", "-W", "1", &vip.to_string()]);
    assert!(ping.is_err(), "{vip} answered a ping: {ping:?}");
    c.client_neighbour(vip)
}

fn replies(st: &Value) -> (u64, u64) {
    let r = &st["responder"];
    (
        r["arp_replies"].as_u64().unwrap_or(0),
        r["na_replies"].as_u64().unwrap_or(0),
    )
}

#[test]
fn master_answers_arp_and_nd_but_accepts_nothing() {
    if !k3sha_support::netns::require_root(
        "vrrpd netns master_answers_arp_and_nd_but_accepts_nothing",
    ) {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(70);
    s.ipv6_vip = true;
    s.vrrp_extra = "accept_mode = false\n".into();
    let mut c = TestCluster::new("70", s);
    c.start_all();
    for i in 0..3 {
        c.wait_ctl(i, Duration::from_secs(10));
    }
    wait_state(&c, 0, "master", Duration::from_secs(5));
    std::thread::sleep(c.interval * 5);
    let st0 = c.status(0);
    assert_eq!(st0["accept_mode"], false);
    for inst in st0["instances"].as_array().unwrap() {
        assert_eq!(inst["state"], "master", "{inst:#}");
        assert_eq!(inst["vips_on_interface"], serde_json::json!([]));
        assert_eq!(inst["vips_answered"].as_array().map(Vec::len), Some(1));
    }
    for i in 1..3 {
        assert_eq!(c.status(i)["state"], "backup");
    }
    assert_eq!(c.holders(c.vip4), Vec::<usize>::new(), "a VIP was added");
    assert_eq!(c.holders(c.vip6), Vec::<usize>::new(), "a VIP was added");

    // The client finds the master by ARP and ND, and the master accepts nothing.
    assert_eq!(resolve(&c, c.vip4), Some(c.mac(0)));
    assert_eq!(resolve(&c, c.vip6), Some(c.mac(0)));
    let (arp, na) = replies(&c.status(0));
    eprintln!("MEASURED responder on the master: {arp} ARP replies, {na} NA replies");
    assert!(arp >= 1 && na >= 1, "{:#}", c.status(0));
    for i in 1..3 {
        assert_eq!(replies(&c.status(i)), (0, 0), "a backup answered");
    }

    // Link loss: n2 takes over; its GARP / NA move the client's existing entries.
    c.lab.set_cable("n1", false).unwrap();
    wait_state(&c, 1, "master", Duration::from_secs(5));
    let t0 = Instant::now();
    while c.client_neighbour(c.vip4) != Some(c.mac(1))
        || c.client_neighbour(c.vip6) != Some(c.mac(1))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the client's entries did not follow n2's announcements: {:?} {:?}",
            c.client_neighbour(c.vip4),
            c.client_neighbour(c.vip6)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(resolve(&c, c.vip4), Some(c.mac(1)));
    assert_eq!(resolve(&c, c.vip6), Some(c.mac(1)));

    // n1 returns and preempts; n2 stops answering (after the 50 ms a preempted master
    // lingers), so a fresh resolution finds n1 only.
    c.lab.set_cable("n1", true).unwrap();
    wait_state(&c, 1, "backup", Duration::from_secs(5));
    wait_state(&c, 0, "master", Duration::from_secs(1));
    let t0 = Instant::now();
    let st1 = loop {
        let st = c.status(1);
        if st["vips_answered"] == serde_json::json!([]) {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "n2 still answers a second after it was preempted: {st:#}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let before = replies(&st1);
    assert_eq!(resolve(&c, c.vip4), Some(c.mac(0)));
    assert_eq!(resolve(&c, c.vip6), Some(c.mac(0)));
    assert_eq!(
        replies(&c.status(1)),
        before,
        "the old master still answered"
    );
    for i in 0..3 {
        let d = &c.status(i)["responder"]["drops"];
        assert!(d.as_object().is_none_or(|m| m.is_empty()), "drops: {d}");
    }
}
