//! Regressions found from outside (issue [7]), each with real vrrpd processes in network
//! namespaces of their own. Needs root (skips loudly otherwise).
//!
//! - `a_vip_that_cannot_be_added_is_a_fault` (10.81): vrrpd without CAP_NET_ADMIN won the
//!   election, could not add the VIP, and went on reporting "VIP held here". Now it
//!   resigns at once, the next server holds the VIP, and the status says what is missing.
//! - `strangers_on_the_link_cannot_take_the_vip` (10.82 / fd82): an advert with priority
//!   255 from an agent's IPv4 address, or from a link-local address that is no server's,
//!   demoted the master (IPv6 had no allow-list; agents were on the IPv4 one). Now both
//!   are dropped and counted.
//! - `split_brain_heal_moves_clients_back_within_an_interval` (10.83): after a partition,
//!   when the better master's advert reached the lower master first, nobody re-announced
//!   and a client kept the loser's MAC for about 7 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{inject_adverts, ms, serial, Settings, TestCluster};

fn drops(st: &Value, reason: &str) -> u64 {
    st["counters"]["drops"][reason].as_u64().unwrap_or(0)
}

#[test]
fn a_vip_that_cannot_be_added_is_a_fault() {
    if !k3sha_support::netns::require_root("vrrpd netns a_vip_that_cannot_be_added_is_a_fault") {
        return;
    }
    let _g = serial();
    let s = Settings::new(81);
    let mut c = TestCluster::new("81", s);
    // n1 (priority 200) runs without CAP_NET_ADMIN, as under a unit drop-in that takes it
    // away: netlink refuses the VIP.
    let setpriv = k3sha_support::tools::require("setpriv");
    c.servers[0].wrapper = vec![
        setpriv.display().to_string(),
        "--inh-caps=-net_admin".into(),
        "--bounding-set=-net_admin".into(),
    ];
    c.start_all();
    for i in 0..3 {
        c.wait_ctl(i, Duration::from_secs(10));
    }
    // n2 holds the VIP; n1 never does.
    c.wait_sole_holder(c.vip4, 1, Duration::from_secs(5));
    let t0 = Instant::now();
    let mut st = c.status(0);
    while st["state"] != "fault" && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
        st = c.status(0);
    }
    assert_eq!(st["state"], "fault", "{st:#}");
    let reason = st["vip_error"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("could not add the VIP 10.81.0.100/24 to eth0")
            && reason.contains("Operation not permitted")
            && reason.contains("CAP_NET_ADMIN"),
        "{st:#}"
    );
    assert_eq!(st["vips_on_interface"], serde_json::json!([]), "{st:#}");
    assert!(st["counters"]["vip_install_failures"].as_u64() >= Some(1));
    // The journal (stderr here) says it as an error.
    assert!(
        c.log(0)
            .contains("could not add the VIP 10.81.0.100/24 to eth0"),
        "{}",
        c.log(0)
    );
    // After the retry n1 is a backup that leaves the working master alone.
    std::thread::sleep(Duration::from_millis(1500));
    let st = c.status(0);
    assert_eq!(st["state"], "backup", "{st:#}");
    assert!(st["vip_error"]["reason"].is_string(), "{st:#}");
    assert_eq!(c.holders(c.vip4), vec![1]);
    let n2 = c.status(1);
    assert_eq!(n2["state"], "master");
    assert_eq!(n2["vips_on_interface"], serde_json::json!(["10.81.0.100"]));
}

#[test]
fn strangers_on_the_link_cannot_take_the_vip() {
    if !k3sha_support::netns::require_root("vrrpd netns strangers_on_the_link_cannot_take_the_vip")
    {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(82);
    s.ipv6_vip = true;
    // An agent at .21: it never runs vrrpd, so it is not on the allow-list.
    s.extra_toml =
        "\n[[nodes]]\nname = \"a1\"\naddress = \"10.82.0.21\"\naddress6 = \"fd82::21\"\nrole = \"agent\"\n"
            .into();
    // The "agent" host on the link, and a stranger with only a link-local address.
    s.extra_hosts = vec![
        (
            "agent".into(),
            vec!["10.82.0.21/24".into(), "fd82::21/64".into()],
        ),
        ("stranger".into(), vec!["10.82.0.77/24".into()]),
    ];
    let mut c = TestCluster::new("82", s);
    c.start_all();
    for i in 0..3 {
        c.wait_ctl(i, Duration::from_secs(10));
    }
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(5));
    c.wait_sole_holder(c.vip6, 0, Duration::from_secs(5));
    // Every server has learned the other servers' link-locals (and no other).
    for i in 0..3 {
        let t0 = Instant::now();
        loop {
            let st = c.status(i);
            let v6 = &st["instances"][1];
            assert_eq!(v6["family"], "ipv6");
            let learned = v6["learned_sources"]["sources"]
                .as_object()
                .map_or(0, serde_json::Map::len);
            if learned == 2 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "n{}: learned {learned} link-locals: {v6:#}",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let link_local = |host: &str| -> IpAddr {
        c.ns(host)
            .addrs("eth0")
            .unwrap()
            .into_iter()
            .find(|a| matches!(a, IpAddr::V6(v) if v.segments()[0] == 0xfe80))
            .unwrap()
    };
    let agent4: IpAddr = "10.82.0.21".parse().unwrap();
    let stranger6 = link_local("stranger");
    let agent6 = link_local("agent");
    let before: Vec<Value> = (0..3).map(|i| c.status(i)).collect();
    // 30 adverts each at 10 ms, priority 255: any one accepted would demote the master.
    inject_adverts(c.ns("agent"), agent4, 82, 255, vec![c.vip4], 30, ms_(10));
    inject_adverts(
        c.ns("stranger"),
        stranger6,
        82,
        255,
        vec![c.vip6],
        30,
        ms_(10),
    );
    inject_adverts(c.ns("agent"), agent6, 82, 255, vec![c.vip6], 30, ms_(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.holders(c.vip4), vec![0], "the IPv4 VIP moved");
    assert_eq!(c.holders(c.vip6), vec![0], "the IPv6 VIP moved");
    for (i, was) in before.iter().enumerate() {
        let st = c.status(i);
        let v4 = &st["instances"][0];
        let v6 = &st["instances"][1];
        let d4 = drops(v4, "source") - drops(&was["instances"][0], "source");
        let d6 = drops(v6, "source") - drops(&was["instances"][1], "source");
        assert!(d4 >= 25, "n{}: IPv4 source drops {d4}: {v4:#}", i + 1);
        assert!(d6 >= 50, "n{}: IPv6 source drops {d6}: {v6:#}", i + 1);
        assert!(
            v6["learned_sources"]["counters"]["rejected"].as_u64() >= Some(1),
            "{v6:#}"
        );
        let want = if i == 0 { "master" } else { "backup" };
        assert_eq!(v4["state"], want);
        assert_eq!(v6["state"], want);
        assert_eq!(
            v6["transitions"].as_array().map(Vec::len),
            was["instances"][1]["transitions"].as_array().map(Vec::len),
            "n{}: an IPv6 transition happened",
            i + 1
        );
    }
    // The servers still fail over to each other over IPv6 (learned sources work).
    c.lab.set_cable("n1", false).unwrap();
    c.wait_sole_holder(c.vip6, 1, Duration::from_secs(3));
    c.lab.set_cable("n1", true).unwrap();
    c.wait_sole_holder(c.vip6, 0, Duration::from_secs(3));
}

fn ms_(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn split_brain_heal_moves_clients_back_within_an_interval() {
    if !k3sha_support::netns::require_root(
        "vrrpd netns split_brain_heal_moves_clients_back_within_an_interval",
    ) {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(83);
    s.interval_ms = 200;
    let mut c = TestCluster::new("83", s);
    c.start_all();
    for i in 0..3 {
        c.wait_ctl(i, Duration::from_secs(10));
    }
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(5));
    let p = support::Prober::start(c.client(), c.vip4);
    assert!(p
        .wait_reply_after(Instant::now(), Duration::from_secs(3))
        .is_some());
    let (mac1, mac2) = (c.mac(0), c.mac(1));
    let br = &c.lab.bridge;
    br.ip(&[
        "link",
        "add",
        "br1",
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
    ])
    .unwrap();
    br.link_set("br1", true).unwrap();
    let port1 = c.lab.host("n1").unwrap().port.clone();
    let mut observed_better_first = false;
    for round in 0..3 {
        // Partition: n1 alone (its link stays up, so it stays master), n2 takes over for
        // n3 and the client.
        br.ip(&["link", "set", &port1, "master", "br1"]).unwrap();
        c.wait_holder(c.vip4, 1, Duration::from_secs(3));
        let t0 = Instant::now();
        while c.client_neighbour(c.vip4).as_deref() != Some(mac2.as_str()) {
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "client never moved to n2"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(c.status(0)["state"], "master", "n1 must stay master alone");
        // Heal right after n2's periodic advert, so n1's advert reaches n2 first.
        let tx = |c: &TestCluster| c.status(1)["counters"]["tx_adverts"].as_u64().unwrap();
        let sent = tx(&c);
        let t0 = Instant::now();
        while tx(&c) == sent {
            assert!(t0.elapsed() < Duration::from_secs(1));
            std::thread::sleep(Duration::from_millis(1));
        }
        let n2_tx_at_heal = tx(&c);
        br.ip(&["link", "set", &port1, "master", "br0"]).unwrap();
        let healed = Instant::now();
        let moved = loop {
            if c.client_neighbour(c.vip4).as_deref() == Some(mac1.as_str()) {
                break healed.elapsed();
            }
            assert!(
                healed.elapsed() < Duration::from_secs(10),
                "round {round}: the client still resolves the VIP to n2"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        c.wait_sole_holder(c.vip4, 0, Duration::from_secs(2));
        // n2 sent only its last advert (no periodic one) before stepping down: n1 spoke
        // first.
        let n2 = c.status(1);
        let better_first = n2["counters"]["tx_adverts"].as_u64() == Some(n2_tx_at_heal + 1);
        eprintln!(
            "MEASURED split-brain heal, round {round}: client back on n1 after {} ms \
             (interval {} ms; n1's advert first: {better_first})",
            ms(moved),
            ms(c.interval)
        );
        assert!(
            moved <= c.interval + Duration::from_millis(60),
            "round {round}: the client moved back after {moved:?}"
        );
        observed_better_first |= better_first;
        if observed_better_first && round >= 1 {
            break;
        }
    }
    assert!(
        observed_better_first,
        "never saw the better master's advert arrive first"
    );
}

/// Regression: SIGUSR1 (keepalived's "dump data") killed vrrpd silently. SIGUSR1, SIGUSR2
/// and SIGRTMIN+2 (keepalived's DATA, STATS, JSON) now write the status to the log and to
/// `RUN_DIR/vrrpd.status.json`; the VIP stays where it is (10.84).
#[test]
fn dump_signals_write_the_status_and_keep_the_vip() {
    if !k3sha_support::netns::require_root(
        "vrrpd netns dump_signals_write_the_status_and_keep_the_vip",
    ) {
        return;
    }
    let _g = serial();
    let mut c = TestCluster::new("84", Settings::new(84));
    c.start_all();
    for i in 0..3 {
        c.wait_ctl(i, Duration::from_secs(10));
    }
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(5));
    let file = c.servers[0].run_dir.join("vrrpd.status.json");
    let pid = c.servers[0].child.as_ref().unwrap().pid().unwrap();
    for signo in [
        nix::libc::SIGUSR1,
        nix::libc::SIGUSR2,
        nix::libc::SIGRTMIN() + 2,
    ] {
        let _ = std::fs::remove_file(&file);
        // kill(1) with a raw number: real-time signals have no nix name.
        let rc = k3sha_support::tools::command("kill")
            .arg(format!("-{signo}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(rc.success());
        let t0 = Instant::now();
        while !file.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "no dump for signal {signo}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(v["state"], "master", "{v:#}");
        assert!(v["counters"]["tx_adverts"].as_u64() > Some(0));
        assert_eq!(c.status(0)["state"], "master", "vrrpd must still run");
    }
    assert_eq!(c.holders(c.vip4), vec![0]);
    let log = c.log(0);
    assert!(
        log.contains("status dump") && log.contains("SIGRTMIN+2"),
        "{log}"
    );
}
