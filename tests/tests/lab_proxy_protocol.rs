//! The lab with the PROXY protocol on the ingress (`examples/lab-proxy-protocol.toml`, moved
//! to this test's own subnets 10.174.1.0/24 and fd00:174::/64; no host link): real vrrpd and
//! lbd, stand-in backends that require the header and answer with the client it named.
//!
//! - `client-address`: through the VIP, over IPv4 and IPv6, HTTP (v2, CRC32C and unique-id
//!   TLVs) and HTTPS (v1): every answer names the client namespace's own address (neither
//!   lbd's nor a server's);
//! - `every-service`: every service still answers from more than one server, with the
//!   health checks (TCP, and the API's HTTPS without a header) keeping them UP.
//!
//! A test binary of its own, so it never runs beside `lab.rs` (timings on 2 cores).

use e2e::{show, LabGuard};
use lbctl::lab::scenarios;

#[test]
fn the_client_address_reaches_the_stand_ins_through_the_vip() {
    if !k3sha_support::netns::require_root("e2e lab with the PROXY protocol") {
        return;
    }
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/lab-proxy-protocol.toml"),
    )
    .unwrap();
    let config = example
        .replace("10.92.1.", "10.174.1.")
        .replace("fd92::", "fd00:174::");
    let mut lab = LabGuard::up("p", &config).expect("lab up");
    let client = lab.state.client.clone().expect("a client namespace");
    let r = scenarios::run_one(&mut lab.state, "client-address").unwrap();
    show(&r);
    let names: Vec<&str> = r.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "client-address-ingress-http",
            "client-address-ingress-http-ipv6",
            "client-address-ingress-https",
            "client-address-ingress-https-ipv6",
        ]
    );
    for s in &r {
        assert!(s.passed, "{}: {:?}", s.name, s.notes);
        let want = if s.name.ends_with("-ipv6") {
            client.address6.unwrap()
        } else {
            client.address
        };
        assert!(
            s.notes[0].starts_with(&format!("10 of 10 answers named {want}")),
            "{:?}",
            s.notes
        );
    }
    let r = scenarios::run_one(&mut lab.state, "every-service").unwrap();
    show(&r);
    assert!(!r.is_empty());
    for s in &r {
        assert!(s.passed, "{}: {:?}", s.name, s.notes);
    }
}
