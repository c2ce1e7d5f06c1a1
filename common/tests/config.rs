//! cluster.toml: golden error messages and the reference lab.
//!
//! Index:
//! - `golden_errors`: every `tests/golden/config/NAME.toml` must be rejected with exactly the
//!   message in `NAME.err`. Regenerate with `K3SHA_BLESS=1 cargo test -p common --test config`
//!   and review the diff.
//! - `reference_lab_*`: the example file reproduces the reference lab with defaults.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::config::{self, Balance, CheckKind, ChecksumMode, ConnectTimeout, Role};

#[test]
fn golden_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/config");
    let bless = std::env::var_os("K3SHA_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "golden cases missing: {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case).unwrap();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let shown = Path::new("golden").join(&name);
        let got = match config::parse(&text, Some(&shown)) {
            Ok(_) => "ACCEPTED (expected an error)".to_string(),
            Err(e) => e.to_string(),
        };
        let err_path = case.with_extension("err");
        if bless {
            std::fs::write(&err_path, format!("{got}\n")).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&err_path).unwrap_or_default();
        if got != want.trim_end_matches('\n') {
            failures.push(format!(
                "{name}:\n  want: {}\n  got:  {got}",
                want.trim_end()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn reference_lab_defaults() {
    let c = config::reference_lab();
    assert_eq!(c.name, "k3s-lab");
    assert_eq!(c.domain, "k3s.test.local");
    let vip = c.vip.v4.unwrap();
    assert_eq!(
        (vip.addr.to_string(), vip.prefix),
        ("192.168.168.100".into(), 24)
    );
    let servers: Vec<_> = c
        .servers()
        .map(|n| (n.name.as_str(), n.address.to_string(), n.priority))
        .collect();
    assert_eq!(
        servers,
        [
            ("lx-k3s-server-01", "192.168.168.111".into(), Some(200)),
            ("lx-k3s-server-02", "192.168.168.112".into(), Some(190)),
            ("lx-k3s-server-03", "192.168.168.113".into(), Some(180)),
        ]
    );
    let agents: Vec<_> = c
        .nodes
        .iter()
        .filter(|n| n.role == Role::Agent)
        .map(|n| n.address.to_string())
        .collect();
    assert_eq!(agents, ["192.168.168.121", "192.168.168.122"]);
    assert_eq!(c.vrrp.vrid, 51);
    assert_eq!(c.vrrp.version, 3);
    assert_eq!(c.vrrp.interval, Duration::from_secs(1));
    assert!(c.vrrp.preempt && c.vrrp.accept_mode && c.vrrp.only_cluster_nodes);
    assert_eq!(c.vrrp.checksum, ChecksumMode::Keepalived);
    let svc: Vec<_> = c
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.listen, s.backend_port, s.balance))
        .collect();
    assert_eq!(
        svc,
        [
            ("kube-apiserver", 8443, 6443, Balance::LeastConn),
            ("ingress-http", 80, 30080, Balance::RoundRobin),
            ("ingress-https", 443, 30443, Balance::RoundRobin),
        ]
    );
    let api = &c.services[0];
    assert_eq!(api.check.kind, CheckKind::Https);
    assert_eq!(
        (api.check.path.as_str(), api.check.expect.as_slice()),
        ("/readyz", &[200u16, 401][..])
    );
    let addrs: Vec<SocketAddr> = api.backends.iter().map(|b| b.addr).collect();
    assert_eq!(
        addrs,
        [
            "192.168.168.111:6443".parse().unwrap(),
            "192.168.168.112:6443".parse().unwrap(),
            "192.168.168.113:6443".parse().unwrap()
        ]
    );
    assert_eq!(c.stats.listen, Some("0.0.0.0:8404".parse().unwrap()));
    // The connect timeout fits the cluster unless set: one advert interval (1 s here, at
    // most 1 s), or four smoothed connect times when those are longer (at most 10 s).
    assert_eq!(api.timeouts.connect, ConnectTimeout::Auto);
    let auto = ConnectTimeout::Auto;
    let ms = Duration::from_millis;
    assert_eq!(auto.for_server(ms(1000), None), ms(1000));
    assert_eq!(auto.for_server(ms(100), None), ms(100));
    assert_eq!(auto.for_server(ms(100), Some(ms(1))), ms(100));
    assert_eq!(auto.for_server(ms(100), Some(ms(60))), ms(240));
    assert_eq!(auto.for_server(ms(3000), None), ms(1000));
    assert_eq!(auto.for_server(ms(100), Some(ms(9000))), ms(10_000));
    assert_eq!(
        ConnectTimeout::Fixed(ms(5)).for_server(ms(100), Some(ms(60))),
        ms(5)
    );
}

#[test]
fn explicit_services_and_backends_parse() {
    let text = r#"
[cluster]
name = "x"
domain = "x.example"
[vip]
address = "127.0.0.100/8"
address6 = "fd00::100/64"
[vrrp]
interval = "100ms"
unicast = true
checksum = "either"
track = { lbd = "fault", link = false, script = [{ name = "etcd", command = "true", interval = "1s", effect = -20 }] }
[[nodes]]
name = "n1"
address = "127.0.0.1"
address6 = "fd00::1"
role = "server"
priority = 100
[[nodes]]
name = "n2"
address = "127.0.0.2"
role = "server"
[[services]]
name = "api"
listen = 18443
backends = ["127.0.0.1:16443", { address = "n2:16443", weight = 2 }, { address = "127.0.0.3:16443", backup = true }]
balance = "source"
retries = 1
check = { kind = "http", path = "/healthz", expect = [200, 204], interval = "200ms", rise = 1, fall = 2 }
timeouts = { connect = "1s", tunnel = "2h" }
[[services]]
name = "web"
listen = 18080
backends = ["127.0.0.1:18081"]
timeouts = { connect = "auto" }
[stats]
listen = "127.0.0.1:18404"
user = "admin"
password = "pw"
"#;
    let c = config::parse(text, None).unwrap();
    assert_eq!(c.nodes[1].priority, Some(200));
    assert_eq!(c.nodes[0].priority, Some(100));
    let s = &c.services[0];
    assert_eq!(s.backends.len(), 3);
    assert_eq!(
        (s.backends[1].name.as_str(), s.backends[1].weight),
        ("n2", 2)
    );
    assert!(s.backends[2].backup);
    assert_eq!(s.balance, Balance::Source);
    assert_eq!(s.check.fast_interval, Duration::from_millis(200));
    assert_eq!(s.timeouts.tunnel, Duration::from_secs(7200));
    assert_eq!(
        s.timeouts.connect,
        ConnectTimeout::Fixed(Duration::from_secs(1))
    );
    assert_eq!(c.services[1].timeouts.connect, ConnectTimeout::Auto);
    assert_eq!(
        c.vrrp.track.scripts[0].effect,
        config::TrackEffect::Weight(-20)
    );
    assert_eq!(c.vrrp.track.lbd, config::TrackEffect::Fault);
    assert!(c.vip.v6.is_some());
}

/// The PROXY protocol keys: off by default; what is written arrives in the model; the
/// trusted networks match their members only (IPv4 clients of a dual-stack socket too).
#[test]
fn proxy_protocol_keys_parse() {
    let base = r#"
[cluster]
name = "x"
domain = "x.example"
[vip]
address = "10.1.0.100/24"
[[nodes]]
name = "n1"
address = "10.1.0.11"
role = "server"
"#;
    let c = config::parse(base, None).unwrap();
    assert!(c
        .services
        .iter()
        .all(|s| s.proxy_protocol.is_none() && s.accept_proxy.is_none()));
    let text = format!(
        r#"{base}
[[services]]
name = "web"
listen = 80
backend_port = 30080
proxy_protocol = "v2"
proxy_protocol_tlvs = ["unique-id", "crc32c"]
accept_proxy = true
trusted_proxies = ["10.9.0.0/16", "192.0.2.7", "fd00:9::/64"]
timeouts = {{ proxy_header = "1500ms" }}
[[services]]
name = "tls"
listen = 443
backend_port = 30443
proxy_protocol = "v1"
[[services]]
name = "plain"
listen = 8080
backend_port = 30080
proxy_protocol = "off"
"#
    );
    let c = config::parse(&text, None).unwrap();
    let web = &c.services[0];
    assert_eq!(web.proxy_protocol, Some(config::ProxyProtocol::V2));
    assert_eq!(
        web.proxy_tlvs,
        config::ProxyTlvs {
            crc32c: true,
            unique_id: true
        }
    );
    let ap = web.accept_proxy.as_ref().unwrap();
    assert_eq!(ap.timeout, Duration::from_millis(1500));
    let shown: Vec<String> = ap.trusted.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.9.0.0/16", "192.0.2.7/32", "fd00:9::/64"]);
    for (a, want) in [
        ("10.9.255.1", true),
        ("10.10.0.1", false),
        ("::ffff:10.9.0.1", true),
        ("192.0.2.7", true),
        ("192.0.2.8", false),
        ("fd00:9::1234", true),
        ("fd00:8::1", false),
    ] {
        assert_eq!(ap.trusts(a.parse().unwrap()), want, "{a}");
    }
    assert_eq!(
        c.services[1].proxy_protocol,
        Some(config::ProxyProtocol::V1)
    );
    assert_eq!(c.services[1].accept_proxy, None);
    assert_eq!(c.services[2].proxy_protocol, None);
    // The default header timeout, and 0.0.0.0/0 as an explicit "anyone".
    let any = text
        .replace("timeouts = { proxy_header = \"1500ms\" }\n", "")
        .replace(
            "\"10.9.0.0/16\", \"192.0.2.7\", \"fd00:9::/64\"",
            "\"0.0.0.0/0\"",
        );
    let c = config::parse(&any, None).unwrap();
    let ap = c.services[0].accept_proxy.as_ref().unwrap();
    assert_eq!(ap.timeout, Duration::from_secs(3));
    assert!(ap.trusts("203.0.113.9".parse().unwrap()));
    assert!(!ap.trusts("2001:db8::1".parse().unwrap()));
}

/// `lbd.threads` (HAProxy's nbthread) and `stats.listen = "off"` (no stats section): the
/// defaults are one thread per CPU and a page on :8404.
#[test]
fn threads_and_stats_off() {
    let base = "[cluster]\nname = \"t\"\ndomain = \"t.example\"\n[vip]\naddress = \"10.1.0.100/24\"\n[[nodes]]\nname = \"s1\"\naddress = \"10.1.0.11\"\nrole = \"server\"\n";
    let c = config::parse(base, None).unwrap();
    assert_eq!(c.lbd.threads, None);
    assert_eq!(c.stats.listen, Some("0.0.0.0:8404".parse().unwrap()));
    let c = config::parse(
        &format!("{base}[lbd]\nthreads = 2\n[stats]\nlisten = \"off\"\n"),
        None,
    )
    .unwrap();
    assert_eq!(c.lbd.threads, Some(2));
    assert_eq!(c.stats.listen, None);
    // With the page off, its default port is free for a service.
    let c = config::parse(
        &format!("{base}[stats]\nlisten = \"off\"\n[[services]]\nname = \"p\"\nlisten = 8404\nbackends = [\"10.1.0.11:9\"]\n"),
        None,
    )
    .unwrap();
    assert_eq!(c.services[0].listen, 8404);
}

/// Every example in `examples/` parses: docs point operators at them.
#[test]
fn every_example_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p).unwrap();
            config::parse(&text, Some(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 5, "only {n} examples in {}", dir.display());
}
