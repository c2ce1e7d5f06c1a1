//! The lab on a topology it was not tuned to: three dual-stack servers with 100 ms adverts,
//! every check and timeout left at its default (`timeouts.connect = "auto"`, tcp and https
//! checks every 1 s), on this test's own subnets (10.78.1.0/24, fd78::/64; no host link).
//!
//! With 100 ms adverts a lost master is noticed in ~300 ms, far inside a 1 s connect
//! timeout or a 1 s check interval: only vrrpd telling lbd at once (the `suspect` push)
//! and a connect timeout fit to the interval bring the VIP back inside the protocol's
//! bound. Before them the same cut took 882-1361 ms against a bound of 526 ms.
//!
//! - link loss of the master, three times: serving again (IPv4 and IPv6) within
//!   3 x interval + skew + 200 ms, every failed request sent inside that window;
//! - a cut-off non-master node: out of rotation within interval x fall + timeout (the lab
//!   enforces the bound).
//!
//! A test binary of its own, so it never runs beside `lab.rs` (timings on 2 cores).

use e2e::{show, LabGuard};
use lbctl::lab::scenarios;

const CONFIG: &str = r#"
[cluster]
name = "e2etopo"
domain = "e2etopo.test"

[vip]
address = "10.78.1.100/24"
address6 = "fd78::100/64"

[vrrp]
interval = "100ms"

[[nodes]]
name = "s1"
address = "10.78.1.11"
address6 = "fd78::11"
role = "server"

[[nodes]]
name = "s2"
address = "10.78.1.12"
address6 = "fd78::12"
role = "server"

[[nodes]]
name = "s3"
address = "10.78.1.13"
address6 = "fd78::13"
role = "server"

[[services]]
name = "kube-apiserver"
listen = 8443
backend_port = 6443

[[services]]
name = "ingress-http"
listen = 80
backend_port = 30080
"#;

#[test]
fn dual_stack_100ms_defaults() {
    if !k3sha_support::netns::require_root("e2e lab on a dual-stack 100 ms topology") {
        return;
    }
    let mut lab = LabGuard::up("t", CONFIG).expect("lab up");
    for run in 1..=3 {
        let r = scenarios::run_one(&mut lab.state, "vip-failover-link").unwrap();
        show(&r);
        for family in ["vip-failover-link", "vip-failover-link-ipv6"] {
            let s = r
                .iter()
                .find(|s| s.name == family)
                .unwrap_or_else(|| panic!("run {run}: no {family} in {r:?}"));
            let (got, bound) = (s.recovered_ms.unwrap(), s.bound_ms.unwrap());
            assert!(
                got <= bound,
                "run {run}: {family} serving again after {got:.0} ms, bound {bound:.0} ms"
            );
            assert!(s.passed, "run {run}: {family}: {:?}", s.notes);
        }
    }
    let r = scenarios::run_one(&mut lab.state, "api-node-failure").unwrap();
    show(&r);
    let n = &r[0];
    assert!(
        n.recovered_ms.unwrap() <= n.bound_ms.unwrap(),
        "cut-off node out after {:?} ms, bound {:?}",
        n.recovered_ms,
        n.bound_ms
    );
    assert!(n.passed, "{:?}", n.notes);
}
