//! The lab's scenarios, end to end, with real vrrpd, lbd and stand-in backends in network
//! namespaces on this test's own subnet (10.77.1.0/24; no host link).
//!
//! Index (one lab, scenarios in sequence: the timings must not compete for 2 cores):
//! - planned maintenance hands the VIP over with zero failed requests;
//! - connections open through the VIP survive maintenance on/off, a vrrpd restart and an
//!   lbd upgrade on the holder; a cable cut during the drain leaves no black hole;
//! - link loss of the VIP holder: the VIP serves again within 3 x interval + skew + 200 ms
//!   and every failed request was sent inside that window;
//! - a stopped backend is out of rotation within interval x fall (+ one check timeout);
//! - a recovered node gets traffic again;
//! - a drain made on the VIP holder holds on the next holder and across a restart of every
//!   daemon (and so does the holder's maintenance).

use e2e::{show, LabGuard};
use lbctl::lab::scenarios;

const CONFIG: &str = r#"
[cluster]
name = "e2e"
domain = "e2e.test"

[vip]
address = "10.77.1.100/24"

[vrrp]
interval = "200ms"

[[nodes]]
name = "s1"
address = "10.77.1.11"
role = "server"

[[nodes]]
name = "s2"
address = "10.77.1.12"
role = "server"

[[nodes]]
name = "s3"
address = "10.77.1.13"
role = "server"

[[nodes]]
name = "a1"
address = "10.77.1.21"
role = "agent"

[[services]]
name = "kube-apiserver"
listen = 8443
backend_port = 6443
check = { interval = "200ms", timeout = "200ms", fall = 2, rise = 2 }
timeouts = { connect = "300ms" }

[[services]]
name = "ingress-http"
listen = 80
backend_port = 30080
check = { interval = "200ms", timeout = "200ms", fall = 2, rise = 2 }
timeouts = { connect = "300ms" }

[[services]]
name = "postgres"
listen = 5432
backend_port = 15432
check = { interval = "200ms", timeout = "200ms", fall = 2, rise = 2 }
"#;

#[test]
fn lab_scenarios() {
    if !k3sha_support::netns::require_root("e2e lab scenarios") {
        return;
    }
    // A descriptor of the caller that is not close-on-exec (as a shell's lock or socket):
    // the lab's daemons must not inherit it.
    let marker = std::env::temp_dir().join(format!("k3sha-e2e-fd-{}", std::process::id()));
    let fd = nix::fcntl::open(
        &marker,
        nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let mut lab = LabGuard::up("a", CONFIG).expect("lab up");
    for n in lab.state.servers() {
        for p in &n.procs {
            let held: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", p.pid))
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| *t == marker)
                .collect();
            assert!(
                held.is_empty(),
                "{} on {} holds the caller's file",
                p.what,
                n.name
            );
        }
    }
    drop(fd);
    let _ = std::fs::remove_file(&marker);
    // Without a host link, the hints run in the client namespace (run on the host they
    // would reach the real network the lab's addresses belong to).
    let hints = lbctl::lab::describe(&lab.state).unwrap();
    let client_ns = lab.state.client.as_ref().unwrap().ns.clone();
    for line in hints
        .lines()
        .filter(|l| l.contains("curl") || l.contains("--cluster"))
    {
        assert!(
            line.trim_start()
                .starts_with(&format!("ip netns exec {client_ns} ")),
            "{line}"
        );
    }

    // Every service has stand-ins: a custom one (postgres 5432 -> 15432) answers through
    // the VIP from every server.
    let r = scenarios::run_one(&mut lab.state, "every-service").unwrap();
    show(&r);
    let pg = r
        .iter()
        .find(|s| s.name == "service-postgres")
        .expect("postgres probed");
    assert!(pg.passed, "{:?} {:?}", pg.notes, pg.outcome);

    let r = scenarios::run_one(&mut lab.state, "planned-maintenance").unwrap();
    show(&r);
    assert_eq!(
        r[0].outcome.failed, 0,
        "planned maintenance must not fail a request"
    );
    assert!(r[0].passed, "{:?}", r[0].notes);

    // Established connections survive every planned move of the VIP and an lbd upgrade
    // (keep-alive HTTP and an echo stream, every byte checked), and an unplanned loss of
    // the old holder in the middle of a drain leaves no black hole.
    let r = scenarios::run_one(&mut lab.state, "connections-survive-handover").unwrap();
    show(&r);
    assert!(r[0].passed, "{:?} {:?}", r[0].notes, r[0].outcome);
    let r = scenarios::run_one(&mut lab.state, "handover-then-cable-cut").unwrap();
    show(&r);
    assert!(r[0].passed, "{:?} {:?}", r[0].notes, r[0].outcome);

    let r = scenarios::run_one(&mut lab.state, "vip-failover-link").unwrap();
    show(&r);
    let link = &r[0];
    let bound = link.bound_ms.unwrap();
    assert!(
        link.recovered_ms.unwrap() <= bound,
        "VIP serving again after {:?} ms, bound {bound} ms",
        link.recovered_ms
    );
    assert!(
        link.passed,
        "failed requests outside the window: {:?}",
        link.notes
    );

    let r = scenarios::run_one(&mut lab.state, "backend-out-and-back").unwrap();
    show(&r);
    let b = &r[0];
    assert!(
        b.recovered_ms.unwrap() <= b.bound_ms.unwrap(),
        "backend DOWN after {:?} ms, bound {:?}",
        b.recovered_ms,
        b.bound_ms
    );
    assert!(b.passed, "{:?}", b.notes);

    let r = scenarios::run_one(&mut lab.state, "app-node-failure").unwrap();
    show(&r);
    assert!(
        r[0].notes
            .iter()
            .any(|n| n.contains("requests then reached s")),
        "{:?}",
        r[0].notes
    );
    assert!(
        r[0].passed,
        "traffic must come back to the recovered node: {:?}",
        r[0].notes
    );

    // A drain is the cluster's: it follows the VIP and survives a restart of every daemon.
    let r = scenarios::run_one(&mut lab.state, "drain-follows-vip").unwrap();
    show(&r);
    assert!(r[0].passed, "{:?} {:?}", r[0].notes, r[0].outcome);
}
