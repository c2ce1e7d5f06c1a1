//! vrrpd and Debian's keepalived in one VRRP group, in namespaces: the migration an operator
//! does node by node. Needs root and /usr/sbin/keepalived (skips loudly otherwise).
//!
//! Index:
//! - `keepalived_master_vrrpd_backups` (10.71, IPv4 and IPv6 VIPs): keepalived (200)
//!   master, vrrpd (150, 100) backups accept its v4 and v6 adverts with no drop; link loss fails over to vrrpd within
//!   Master_Down_Interval + margin; keepalived preempts back; keepalived's own graceful stop
//!   measured for comparison.
//! - `vrrpd_master_keepalived_backup` (10.72, vrrpd `checksum = "either"`): vrrpd (200)
//!   master, keepalived (150) stays backup (it accepts our adverts); SIGTERM on vrrpd hands
//!   over to keepalived with no lost probe; vrrpd preempts back.
//! - `vrrpv2_password_interop` (10.73, VRRPv2, `auth_type PASS`, 1 s): keepalived master,
//!   vrrpd backup with no auth drop; keepalived stops, vrrpd takes over.
//! - `rfc9568_checksum_against_keepalived_is_counted` (10.74): keepalived 2.2.7 only knows
//!   the pseudo-header form, so vrrpd in `rfc9568` mode counts every keepalived advert as a
//!   checksum drop and keepalived logs ours as invalid: the counters catch a mismatch.
//!   (keepalived stops advertising while it hears our invalid adverts at its own interval,
//!   so vrrpd counts with its adverts silenced by maintenance.)
//! - `unicast_interop_both_directions` (10.75, `unicast = true` / `unicast_peer`):
//!   keepalived master with vrrpd backups, then vrrpd master with keepalived backup.
//! - `virtual_mac_interop` (10.79, vrrpd `virtual_mac = true`, keepalived `use_vmac`):
//!   keepalived master, vrrpd backups hear its adverts from the shared virtual MAC; link
//!   loss moves the VIP to vrrpd, whose client entry is 00:00:5e:00:01:4f; keepalived
//!   preempts back, hearing vrrpd's adverts from the same MAC. (keepalived as master lets
//!   its base MAC leak into the client's entry: it leaves arp_announce at 0.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{keepalived_errors, ms, require_keepalived, serial, Prober, Settings, TestCluster};

/// Scheduling margin on top of Master_Down_Interval (as in the lab's end-to-end tests).
const MARGIN: Duration = Duration::from_millis(200);

fn skip(what: &str) -> bool {
    !k3sha_support::netns::require_root(what) || !require_keepalived(what)
}

/// keepalived on n1, vrrpd on n2 and n3, both vrrpd answering on their control sockets.
fn keepalived_n1_vrrpd_n2_n3(c: &mut TestCluster) {
    c.start_keepalived(0);
    c.start(1);
    c.start(2);
    c.wait_ctl(1, Duration::from_secs(10));
    c.wait_ctl(2, Duration::from_secs(10));
}

fn drops(c: &TestCluster, i: usize) -> serde_json::Value {
    c.status(i)["counters"]["drops"].clone()
}

fn no_drops(c: &TestCluster, i: usize) {
    let d = drops(c, i);
    assert!(
        d.as_object().is_none_or(|m| m.is_empty()),
        "{} dropped packets: {d}",
        c.servers[i].name
    );
}

#[test]
fn keepalived_master_vrrpd_backups() {
    if skip("keepalived_master_vrrpd_backups") {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(71);
    s.ipv6_vip = true;
    let mut c = TestCluster::new("71", s);
    keepalived_n1_vrrpd_n2_n3(&mut c);
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(5));
    c.wait_sole_holder(c.vip6, 0, Duration::from_secs(5));
    std::thread::sleep(c.interval * 10);
    assert_eq!(c.holders(c.vip4), vec![0]);
    assert_eq!(c.holders(c.vip6), vec![0]);
    for i in [1, 2] {
        let s = c.status(i);
        assert_eq!(s["state"], "backup", "{s:#}");
        assert_eq!(s["master"], "10.71.0.11");
        assert!(s["counters"]["rx_adverts"].as_u64().unwrap() >= 5);
        // The IPv6 instance: keepalived's adverts from its link-local address.
        let v6 = &s["instances"][1];
        assert_eq!(v6["family"], "ipv6");
        assert_eq!(v6["state"], "backup", "{v6:#}");
        assert!(
            v6["master"].as_str().unwrap_or("").starts_with("fe80:"),
            "{v6:#}"
        );
        assert!(
            v6["counters"]["rx_adverts"].as_u64().unwrap() >= 5,
            "{v6:#}"
        );
        assert!(
            v6["counters"]["drops"]
                .as_object()
                .is_none_or(|m| m.is_empty()),
            "{v6:#}"
        );
        no_drops(&c, i);
    }

    let p = Prober::start(c.client(), c.vip4);
    assert!(p
        .wait_reply_after(Instant::now(), Duration::from_secs(3))
        .is_some());
    let t_cut = Instant::now();
    c.lab.set_cable("n1", false).unwrap();
    let took = c.wait_holder(c.vip4, 1, Duration::from_secs(5));
    let reply = p
        .wait_reply_after(Instant::now(), Duration::from_secs(5))
        .unwrap();
    let bound = c.master_down(150) + MARGIN;
    eprintln!(
        "MEASURED keepalived master link loss -> vrrpd: VIP on n2 after {} ms, answering after {} ms (bound {} ms)",
        ms(took),
        ms(reply.duration_since(t_cut)),
        ms(bound)
    );
    assert!(took <= bound);
    assert_eq!(c.client_neighbour(c.vip4), Some(c.mac(1)));
    c.wait_sole_holder(c.vip6, 1, Duration::from_secs(3));

    // keepalived comes back and preempts.
    c.lab.set_cable("n1", true).unwrap();
    let back = c.wait_holder(c.vip4, 0, Duration::from_secs(5));
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(3));
    c.wait_sole_holder(c.vip6, 0, Duration::from_secs(3));
    eprintln!("MEASURED keepalived preempts back after {} ms", ms(back));
    std::thread::sleep(c.interval * 5);
    assert_eq!(c.status(1)["state"], "backup");
    no_drops(&c, 1);
    no_drops(&c, 2);

    // For comparison: keepalived's own graceful stop, with vrrpd as the successor.
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    c.sigterm(0);
    c.wait_holder(c.vip4, 1, Duration::from_secs(5));
    let took = t0.elapsed();
    c.wait_exit(0);
    std::thread::sleep(Duration::from_millis(300));
    let (lost, sent, gap) = p.loss_between(t0, Instant::now() - Duration::from_millis(100));
    eprintln!(
        "MEASURED keepalived graceful stop -> vrrpd: VIP on n2 after {} ms; probes lost \
         {lost}/{sent}, longest gap {} ms (keepalived removes its VIP at once, the successor waits skew)",
        ms(took),
        ms(gap)
    );
    let log = c.log(0);
    assert!(
        keepalived_errors(&log).is_empty(),
        "keepalived complained:\n{log}"
    );
}

#[test]
fn vrrpd_master_keepalived_backup() {
    if skip("vrrpd_master_keepalived_backup") {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(72);
    s.checksum = Some("either".into());
    let mut c = TestCluster::new("72", s);
    // vrrpd master first: started together, keepalived's timer may run out before
    // vrrpd's first advert (vrrpd also writes its nftables rules before it starts the
    // election), and this test is about a keepalived that joins as backup.
    c.start(0);
    c.wait_ctl(0, Duration::from_secs(10));
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(5));
    c.start_keepalived(1);
    c.start(2);
    // keepalived must stay backup: it accepts our adverts (else it would take the VIP).
    let t = Instant::now();
    while t.elapsed() < c.interval * 15 {
        assert_eq!(c.holders(c.vip4), vec![0], "keepalived took the VIP");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = c.log(1);
    assert!(log.contains("Entering BACKUP STATE"), "{log}");
    assert!(!log.contains("Entering MASTER STATE"), "{log}");
    no_drops(&c, 0);
    no_drops(&c, 2);

    let p = Prober::start(c.client(), c.vip4);
    assert!(p
        .wait_reply_after(Instant::now(), Duration::from_secs(3))
        .is_some());
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    c.sigterm(0);
    c.wait_holder(c.vip4, 1, Duration::from_secs(5));
    let took = t0.elapsed();
    let st = c.wait_exit(0);
    let exited = t0.elapsed();
    assert!(st.success());
    c.wait_sole_holder(c.vip4, 1, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    let (lost, sent, gap) = p.loss_between(t0, Instant::now() - Duration::from_millis(100));
    eprintln!(
        "MEASURED vrrpd graceful stop -> keepalived: keepalived holds the VIP {} ms after \
         SIGTERM (skew(150) = {} ms), vrrpd exited after {} ms; probes lost {lost}/{sent}, \
         longest gap {} ms",
        ms(took),
        ms(c.skew(150)),
        ms(exited),
        ms(gap)
    );
    assert_eq!(
        lost, 0,
        "{lost}/{sent} probes lost handing over to keepalived"
    );
    assert_eq!(c.client_neighbour(c.vip4), Some(c.mac(1)));
    let log = c.log(1);
    assert!(log.contains("Entering MASTER STATE"), "{log}");

    // vrrpd returns and preempts keepalived.
    c.start(0);
    let back = c.wait_holder(c.vip4, 0, Duration::from_secs(5));
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(3));
    eprintln!("MEASURED vrrpd preempts keepalived after {} ms", ms(back));
    std::thread::sleep(c.interval * 5);
    no_drops(&c, 0);
    no_drops(&c, 2);
    let log = c.log(1);
    assert!(
        keepalived_errors(&log).is_empty(),
        "keepalived complained:\n{log}"
    );
}

#[test]
fn vrrpv2_password_interop() {
    if skip("vrrpv2_password_interop") {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(73);
    s.version = 2;
    s.interval_ms = 1000;
    s.password = Some("s3cret".into());
    s.priorities = [200, 150, 100];
    let mut c = TestCluster::new("73", s);
    c.start_keepalived(0);
    c.start(1);
    c.wait_ctl(1, Duration::from_secs(10));
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(8));
    std::thread::sleep(Duration::from_secs(3));
    let st = c.status(1);
    assert_eq!(st["state"], "backup", "{st:#}");
    assert_eq!(st["version"], 2);
    assert!(st["counters"]["rx_adverts"].as_u64().unwrap() >= 2);
    no_drops(&c, 1);

    let t0 = Instant::now();
    c.sigterm(0);
    c.wait_holder(c.vip4, 1, Duration::from_secs(8));
    let took = t0.elapsed();
    c.wait_exit(0);
    c.wait_sole_holder(c.vip4, 1, Duration::from_secs(8));
    eprintln!(
        "MEASURED VRRPv2 (1 s) keepalived graceful stop -> vrrpd: VIP on n2 after {} ms \
         (skew(150) = {} ms)",
        ms(took),
        ms(c.skew(150))
    );
    // keepalived returns and preempts; it accepts our v2 adverts meanwhile.
    c.start_keepalived(0);
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(10));
    let log = c.log(0);
    assert!(
        keepalived_errors(&log).is_empty(),
        "keepalived complained:\n{log}"
    );
    no_drops(&c, 1);
}

#[test]
fn rfc9568_checksum_against_keepalived_is_counted() {
    if skip("rfc9568_checksum_against_keepalived_is_counted") {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(74);
    s.checksum = Some("rfc9568".into());
    let mut c = TestCluster::new("74", s);
    c.start_keepalived(0);
    c.start(1);
    c.wait_ctl(1, Duration::from_secs(10));
    // Neither accepts the other: both end up master.
    c.wait_holder(c.vip4, 0, Duration::from_secs(5));
    c.wait_holder(c.vip4, 1, Duration::from_secs(5));
    std::thread::sleep(c.interval * 5);
    let log = c.log(0);
    assert!(
        log.contains("Invalid VRRPv3 checksum"),
        "keepalived did not flag ours:\n{log}"
    );
    // keepalived 2.2.7 as master re-arms its advert timer on every packet it receives,
    // valid or not: while our adverts arrive on the dot of its own interval it stops
    // advertising. Put vrrpd in maintenance (priority-0 resign, then silent backup) so
    // keepalived advertises again, and count what vrrpd drops.
    let before = drops(&c, 1)["checksum"].as_u64().unwrap_or(0);
    c.ctl(1, "maintenance", json!({"on": true})).unwrap();
    std::thread::sleep(c.interval * 20);
    let d = drops(&c, 1);
    let n = d["checksum"].as_u64().unwrap_or(0) - before;
    eprintln!("MEASURED rfc9568 vrrpd vs keepalived 2.2.7: checksum drops {n} in 20 intervals");
    if n < 10 {
        c.dump_logs();
    }
    assert!(
        n >= 10,
        "expected a checksum drop per keepalived advert, got {d}"
    );
    let st = c.status(1);
    assert_eq!(st["counters"]["rx_adverts"], 0, "{st:#}");
}

#[test]
fn unicast_interop_both_directions() {
    if skip("unicast_interop_both_directions") {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(75);
    s.unicast = true;
    let mut c = TestCluster::new("75", s);
    // keepalived (200) master, vrrpd (150, 100) backups, all unicast.
    keepalived_n1_vrrpd_n2_n3(&mut c);
    c.wait_sole_holder(c.vip4, 0, Duration::from_secs(5));
    std::thread::sleep(c.interval * 10);
    assert_eq!(c.holders(c.vip4), vec![0]);
    for i in [1, 2] {
        let st = c.status(i);
        assert_eq!(st["state"], "backup", "{st:#}");
        assert_eq!(st["master"], "10.75.0.11");
        assert!(
            st["counters"]["rx_adverts"].as_u64().unwrap() >= 5,
            "{st:#}"
        );
        no_drops(&c, i);
    }
    // keepalived stops: vrrpd n2 takes over and keepalived's successor is found by unicast.
    c.sigterm(0);
    c.wait_sole_holder(c.vip4, 1, Duration::from_secs(5));
    c.wait_exit(0);
    // keepalived returns with a priority below n2: it must stay backup, which it does
    // only if it accepts n2's unicast adverts (checksum over the unicast pseudo-header).
    c.settings.priorities = [120, 150, 100];
    c.start_keepalived(0);
    let t = Instant::now();
    while t.elapsed() < c.interval * 20 {
        assert_eq!(c.holders(c.vip4), vec![1], "keepalived took the VIP");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = c.log(0);
    assert!(
        keepalived_errors(&log).is_empty(),
        "keepalived complained:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("VRRP sockpool") && l.contains("unicast")),
        "keepalived did not run unicast:\n{log}"
    );
    no_drops(&c, 1);
    no_drops(&c, 2);
}

#[test]
fn virtual_mac_interop() {
    if skip("virtual_mac_interop") {
        return;
    }
    let _g = serial();
    let mut s = Settings::new(79);
    s.vmac = true;
    let mut c = TestCluster::new("79", s);
    const VMAC: &str = "00:00:5e:00:01:4f";
    // keepalived's macvlan is vrrp.<vrid>, vrrpd's vrrp4.<vrid>.
    let dev = |i: usize| if i == 0 { "vrrp.79" } else { "vrrp4.79" };
    let wait_holder = |c: &TestCluster, want: usize| {
        c.wait_sole_holder_on(c.vip4, want, Duration::from_secs(5), dev)
    };
    keepalived_n1_vrrpd_n2_n3(&mut c);
    wait_holder(&c, 0);
    std::thread::sleep(c.interval * 10);
    for i in [1, 2] {
        let st = c.status(i);
        assert_eq!(st["state"], "backup", "{st:#}");
        assert_eq!(st["master"], "10.79.0.11");
        assert!(
            st["counters"]["rx_adverts"].as_u64().unwrap() >= 5,
            "{st:#}"
        );
        no_drops(&c, i);
    }
    let p = Prober::start(c.client(), c.vip4);
    assert!(p
        .wait_reply_after(Instant::now(), Duration::from_secs(3))
        .is_some());
    // keepalived 2.2.7 sets arp_ignore = 1 and arp_filter = 1 on the base interface for
    // use_vmac but leaves arp_announce at 0: its own ARP request for the client, sent while
    // replying from the VIP, teaches the client the base MAC. (vrrpd sets arp_announce = 2.)
    let ka_arp_announce = c.ns("n1").sysctl_get("net.ipv4.conf.eth0.arp_announce");
    eprintln!(
        "MEASURED keepalived use_vmac master: client entry for the VIP {:?} (n1 base MAC {}, \
         virtual {VMAC}); keepalived's arp_announce {:?}",
        c.client_neighbour(c.vip4),
        c.mac(0),
        ka_arp_announce
    );

    let t_cut = Instant::now();
    c.lab.set_cable("n1", false).unwrap();
    wait_holder(&c, 1);
    let reply = p
        .wait_reply_after(Instant::now(), Duration::from_secs(5))
        .expect("VIP answers again from vrrpd");
    let bound = c.master_down(150) + MARGIN;
    eprintln!(
        "MEASURED keepalived use_vmac -> vrrpd virtual_mac: answering after {} ms (bound {} ms)",
        ms(reply.duration_since(t_cut)),
        ms(bound)
    );
    assert!(reply.duration_since(t_cut) <= bound);
    // vrrpd's gratuitous ARP from the virtual MAC; and its arp_announce = 2 keeps it so.
    std::thread::sleep(c.interval * 5);
    assert_eq!(c.client_neighbour(c.vip4).as_deref(), Some(VMAC));
    assert_eq!(
        c.ns("n2")
            .sysctl_get("net.ipv4.conf.eth0.arp_announce")
            .unwrap(),
        "2"
    );

    // keepalived returns and preempts: it must hear vrrpd's adverts from the shared MAC.
    c.lab.set_cable("n1", true).unwrap();
    wait_holder(&c, 0);
    let t = Instant::now();
    assert!(p.wait_reply_after(t, Duration::from_secs(3)).is_some());
    std::thread::sleep(c.interval * 5);
    assert_eq!(c.status(1)["state"], "backup");
    no_drops(&c, 1);
    no_drops(&c, 2);
    let log = c.log(0);
    assert!(
        keepalived_errors(&log).is_empty(),
        "keepalived complained:\n{log}"
    );
}
