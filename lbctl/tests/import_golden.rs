//! `lbctl import` on configurations shaped like the ones Kubernetes HA guides publish
//! (written for these tests): golden cluster.toml and notes, plus the facts each must keep.
//!
//! Each directory under `tests/golden/import/` holds the inputs (`keepalived-*.conf`, one
//! per node, in name order; `haproxy.cfg`; optionally `name-domain.txt`) and the expected
//! outputs `cluster.toml` and `notes.txt`. Regenerate with
//! `K3SHA_BLESS=1 cargo test -p lbctl --test import_golden`, then review the diff.
//!
//! Index:
//! - `golden_cases_match`: every case's text and notes; each text reads back (parse and
//!   validate) to the cluster the import returned, and the golden file to the same one.
//! - `kubeadm_keeps_v2_password_priorities_and_the_https_check`
//! - `kubeadm_ssl_hello_checks_tls_and_ranks_equal_priorities`
//! - `k3s_three_nodes_keep_unicast_weights_pools_and_stats`
//! - `send_proxy_check_send_proxy_and_accept_proxy_are_mapped` (haproxy-proxy-protocol)
//! - `external_load_balancers_move_the_api_port_and_say_so`
//! - `keepalived_alone_gives_default_services_and_peer_nodes`
//! - `ties_ah_auth_and_fractional_intervals_are_reported`
//! - `equal_priorities_at_the_floor_import_and_validate`
//! - `nothing_to_import_is_an_error`
//! - `an_ipv6_only_instance_becomes_address6`
//! - `cli_writes_refuses_to_overwrite_and_the_file_checks`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::{Balance, CheckKind, Cluster, TrackEffect};
use lbctl::import::{import, render_notes, ImportError, ImportOptions, Imported, Source};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/import")
}

fn source(dir: &Path, name: &str) -> Source {
    Source {
        label: name.to_owned(),
        text: std::fs::read_to_string(dir.join(name)).unwrap(),
    }
}

fn options(case: &str) -> ImportOptions {
    let dir = root().join(case);
    let mut ka: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("keepalived-") && n.ends_with(".conf"))
        .collect();
    ka.sort();
    let nd = std::fs::read_to_string(dir.join("name-domain.txt")).ok();
    let mut nd = nd.iter().flat_map(|t| t.lines().map(str::to_owned));
    ImportOptions {
        keepalived: ka.iter().map(|n| source(&dir, n)).collect(),
        haproxy: dir
            .join("haproxy.cfg")
            .exists()
            .then(|| source(&dir, "haproxy.cfg")),
        name: nd.next(),
        domain: nd.next(),
    }
}

fn run(case: &str) -> Imported {
    match import(&options(case)) {
        Ok(i) => i,
        Err(e) => panic!("{case}: {e}"),
    }
}

fn node_priority(c: &Cluster, name: &str) -> u8 {
    c.node(name).unwrap().priority.unwrap()
}

const CASES: &[&str] = &[
    "kubeadm",
    "kubeadm-ssl-hello",
    "k3s-3-node",
    "haproxy-proxy-protocol",
    "k3s-external-lb",
];

#[test]
fn golden_cases_match() {
    let bless = std::env::var_os("K3SHA_BLESS").is_some();
    let mut failures = Vec::new();
    for case in CASES {
        let got = run(case);
        // The text is what the daemons will read: it must read back (every key the
        // importer wrote is one the reader knows) and validate, to what import() returned.
        let back = common::config::parse(&got.toml, None)
            .unwrap_or_else(|e| panic!("{case}: the output does not read back: {e}"));
        assert_eq!(
            back, got.cluster,
            "{case}: the output reads back differently"
        );
        // The golden file means the same cluster: a change of formatting alone keeps this.
        if !bless {
            let path = root().join(case).join("cluster.toml");
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            match common::config::parse(&want, None) {
                Ok(c) if c == got.cluster => {}
                Ok(c) => failures.push(format!(
                    "{case}/cluster.toml: another cluster than the golden file's:\n--- want\n{c:#?}\n--- got\n{:#?}",
                    got.cluster
                )),
                Err(e) => failures.push(format!("{case}/cluster.toml: the golden file does not validate: {e}")),
            }
        }
        for (file, text) in [
            ("cluster.toml", got.toml.clone()),
            ("notes.txt", render_notes(&got.notes)),
        ] {
            let path = root().join(case).join(file);
            if bless {
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if want != text {
                failures.push(format!(
                    "{case}/{file} differs:\n--- want\n{want}\n--- got\n{text}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(K3SHA_BLESS=1 to regenerate)",
        failures.join("\n")
    );
}

#[test]
fn kubeadm_keeps_v2_password_priorities_and_the_https_check() {
    let got = run("kubeadm");
    let c = &got.cluster;
    // keepalived without vrrp_version speaks VRRPv2: vrrpd must too, with the password.
    assert_eq!(c.vrrp.version, 2);
    assert_eq!(c.vrrp.password.as_deref(), Some("k8sVIP42"));
    assert_eq!(c.vrrp.vrid, 51);
    assert_eq!(c.vrrp.interval, Duration::from_secs(1));
    assert_eq!(c.vip.v4.unwrap().addr.to_string(), "10.20.0.100");
    assert_eq!(c.vip.v4.unwrap().prefix, 24);
    assert_eq!(c.vip.interface.as_deref(), Some("ens18"));
    // Each file's priority lands on its node (by router_id = the HAProxy server name).
    assert_eq!(node_priority(c, "cp-1"), 101);
    assert_eq!(node_priority(c, "cp-2"), 100);
    assert_eq!(node_priority(c, "cp-3"), 99);
    let s = &c.vrrp.track.scripts;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].command, "/etc/keepalived/check_apiserver.sh");
    assert_eq!(
        (s[0].interval, s[0].rise, s[0].fall),
        (Duration::from_secs(3), 2, 10)
    );
    assert_eq!(s[0].effect, TrackEffect::Weight(-2));
    let api = c.service("apiserver").unwrap();
    assert_eq!((api.listen, api.backend_port), (8443, 6443));
    assert_eq!(api.backends.len(), 3);
    assert_eq!(api.balance, Balance::RoundRobin);
    assert_eq!(api.check.kind, CheckKind::Https);
    assert_eq!(api.check.path, "/healthz");
    assert_eq!(api.check.expect, vec![200]);
    assert_eq!(
        (api.check.interval, api.check.rise, api.check.fall),
        (Duration::from_secs(2), 2, 3)
    );
    assert_eq!(api.check.timeout, Duration::from_secs(10));
    assert_eq!(
        api.timeouts.connect,
        common::config::ConnectTimeout::Fixed(Duration::from_secs(5))
    );
    assert_eq!(api.timeouts.idle, Duration::from_secs(35));
    assert_eq!(api.retries, 1);
    let notes = render_notes(&got.notes);
    for must in [
        "keepalived-cp1.conf:16: state MASTER",
        "haproxy.cfg:22: timeout queue 20s",
        "haproxy.cfg:18: option forwardfor except 127.0.0.0/8",
        "virtual_ipaddress 10.20.0.100 (no prefix)",
        "wrote vrrp.version = 2",
    ] {
        assert!(notes.contains(must), "missing {must:?} in\n{notes}");
    }
    // The same unmapped setting in the second and third files is not listed again.
    assert!(
        !notes.contains("keepalived-cp2.conf:15: vrrp_version"),
        "{notes}"
    );
}

#[test]
fn kubeadm_ssl_hello_checks_tls_and_ranks_equal_priorities() {
    let got = run("kubeadm-ssl-hello");
    let c = &got.cluster;
    // `option httpchk` then `option ssl-hello-chk`: HAProxy runs the last one, a TLS hello;
    // an http check would call every apiserver DOWN.
    let api = c.service("apiserver").unwrap();
    assert_eq!(api.check.kind, CheckKind::Tls);
    // 101 (MASTER), 100, 100: keepalived elects the higher address among the two 100s.
    assert_eq!(node_priority(c, "cp-1"), 101);
    assert_eq!(node_priority(c, "cp-3"), 100);
    assert_eq!(node_priority(c, "cp-2"), 99);
    let notes = render_notes(&got.notes);
    for must in [
        "haproxy.cfg:49: apiserver: several check options: option httpchk GET /healthz (line 46), option ssl-hello-chk (line 49): HAProxy keeps only the last one",
        "haproxy.cfg:47: http-check expect status 200: ignored by HAProxy",
        "apiserver: check kind tls",
        "keepalived-cp2.conf:19: priority 100",
    ] {
        assert!(notes.contains(must), "missing {must:?} in\n{notes}");
    }
}

/// `send-proxy` / `send-proxy-v2` become `proxy_protocol`, `proxy-v2-options` the TLVs lbd
/// has, `bind ... accept-proxy` becomes `accept_proxy` trusting every source (as HAProxy
/// did, with a note to narrow it); what lbd cannot do is a note, not a silent loss.
#[test]
fn send_proxy_check_send_proxy_and_accept_proxy_are_mapped() {
    use common::config::ProxyProtocol;
    let got = run("haproxy-proxy-protocol");
    let c = &got.cluster;
    let api = c.service("k3s-api").unwrap();
    assert_eq!(
        (api.proxy_protocol, api.accept_proxy.is_some()),
        (None, false)
    );
    let http = c.service("ingress-http").unwrap();
    assert_eq!(http.proxy_protocol, Some(ProxyProtocol::V2));
    assert!(http.proxy_tlvs.crc32c && http.proxy_tlvs.unique_id);
    let ap = http.accept_proxy.as_ref().unwrap();
    assert!(
        ap.trusts("198.51.100.7".parse().unwrap()) && ap.trusts("2001:db8::7".parse().unwrap())
    );
    let https = c.service("ingress-https").unwrap();
    assert_eq!(https.proxy_protocol, Some(ProxyProtocol::V1));
    assert!(!https.proxy_tlvs.crc32c && https.accept_proxy.is_none());
    // check-send-proxy alone: lbd's checks follow the service's setting.
    assert_eq!(c.service("metrics").unwrap().proxy_protocol, None);
    let notes = render_notes(&got.notes);
    for want in [
        "haproxy.cfg:20: accept-proxy: ingress-http: imported as accept_proxy = true",
        "haproxy.cfg:24: default-server proxy-v2-options ssl: lbd adds only the crc32c and unique-id TLVs",
        "haproxy.cfg:35: server server-2 send-proxy-v2-ssl-cn: sent as send-proxy-v2",
        "haproxy.cfg:35: server server-2: ingress-https: the servers differ in send-proxy",
        "haproxy.cfg:40: server server-1 check-send-proxy: without send-proxy",
    ] {
        assert!(notes.contains(want), "{want} not in\n{notes}");
    }
}

#[test]
fn k3s_three_nodes_keep_unicast_weights_pools_and_stats() {
    let got = run("k3s-3-node");
    let c = &got.cluster;
    assert_eq!(
        (c.name.as_str(), c.domain.as_str()),
        ("k3s-prod", "k3s.example.org")
    );
    assert_eq!(c.vrrp.version, 3);
    assert!(c.vrrp.unicast);
    assert!(!c.vrrp.preempt);
    assert_eq!(c.vrrp.vrid, 42);
    // +20 while `killall -0 haproxy` succeeds == priority + 20, -20 while lbd is unhealthy.
    assert_eq!(node_priority(c, "server-1"), 140);
    assert_eq!(node_priority(c, "server-2"), 130);
    assert_eq!(node_priority(c, "server-3"), 120);
    assert_eq!(c.vrrp.track.lbd, TrackEffect::Weight(-20));
    assert!(c.vrrp.track.scripts.is_empty());
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["k3s-api", "ingress-http", "ingress-https"]);
    let api = c.service("k3s-api").unwrap();
    assert_eq!(api.balance, Balance::LeastConn);
    assert_eq!(api.check.kind, CheckKind::Tcp);
    assert_eq!(api.timeouts.tunnel, Duration::from_secs(3600));
    let https = c.service("ingress-https").unwrap();
    assert_eq!(https.balance, Balance::Source);
    let backups: Vec<String> = https
        .backends
        .iter()
        .filter(|b| b.backup)
        .map(|b| b.addr.to_string())
        .collect();
    assert_eq!(backups, ["192.168.50.13:30443"]);
    assert_eq!(c.stats.listen.map(|l| l.port()), Some(9000));
    assert_eq!(c.stats.user.as_deref(), Some("admin"));
    assert_eq!(c.lbd.max_connections, 20_000);
    let notes = render_notes(&got.notes);
    assert!(
        notes.contains("notify_master /usr/local/bin/vip-notify.sh master"),
        "{notes}"
    );
    assert!(
        notes.contains("chk_haproxy: checks HAProxy, which lbd replaces"),
        "{notes}"
    );
}

#[test]
fn external_load_balancers_move_the_api_port_and_say_so() {
    let got = run("k3s-external-lb");
    let c = &got.cluster;
    let api = &c.services[0];
    assert_eq!((api.listen, api.backend_port), (8443, 6443));
    assert_eq!(c.vrrp.version, 2);
    assert_eq!(c.vrrp.track.lbd, TrackEffect::Fault);
    // The file's own node is unknown: priorities are derived (200, 190, 180).
    assert_eq!(node_priority(c, "server-1"), 200);
    let notes = render_notes(&got.notes);
    assert!(
        notes.contains("haproxy.cfg:2: k3s-frontend: port 6443: k3s itself listens on 6443"),
        "{notes}"
    );
    assert!(
        notes.contains("priority 200: cannot tell which node"),
        "{notes}"
    );
    assert!(notes.contains("default-server downinter 5s"), "{notes}");
}

fn src(label: &str, text: &str) -> Source {
    Source {
        label: label.into(),
        text: text.into(),
    }
}

#[test]
fn keepalived_alone_gives_default_services_and_peer_nodes() {
    let k =
        "vrrp_instance V { interface eth0\n virtual_router_id 7\n priority 150\n advert_int 0.5\n\
             unicast_src_ip 10.9.0.1\n unicast_peer {\n 10.9.0.2\n 10.9.0.3\n }\n\
             virtual_ipaddress {\n 10.9.0.100/24\n fd00::100/64\n }\n}\n\
             global_defs { vrrp_version 3 }\n";
    let got = import(&ImportOptions {
        keepalived: vec![src("k.conf", k)],
        ..ImportOptions::default()
    })
    .unwrap();
    let c = &got.cluster;
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.address.to_string()).collect();
    assert_eq!(addrs, ["10.9.0.1", "10.9.0.2", "10.9.0.3"]);
    assert_eq!(c.nodes[0].priority, Some(150));
    // Nodes without a file go below the known priority.
    assert_eq!(
        (c.nodes[1].priority, c.nodes[2].priority),
        (Some(149), Some(148))
    );
    assert_eq!(c.vrrp.interval, Duration::from_millis(500));
    assert_eq!(c.vip.v6.unwrap().prefix, 64);
    assert_eq!(c.services.len(), 3, "the default services");
}

#[test]
fn ties_ah_auth_and_fractional_intervals_are_reported() {
    let file = |prio: u8, src_ip: &str| {
        format!(
            "vrrp_instance X {{\n virtual_router_id 9\n priority {prio}\n advert_int 1.5\n\
             unicast_src_ip {src_ip}\n authentication {{\n auth_type AH\n auth_pass x\n }}\n\
             virtual_ipaddress {{\n 10.8.0.100/32\n }}\n}}\n"
        )
    };
    let hap = "backend b\n server a 10.8.0.1:6443 check\n server b 10.8.0.2:6443 check\n\
               frontend f\n bind :8443\n default_backend b\n";
    let got = import(&ImportOptions {
        keepalived: vec![
            src("a.conf", &file(100, "10.8.0.1")),
            src("b.conf", &file(100, "10.8.0.2")),
        ],
        haproxy: Some(src("h.cfg", hap)),
        name: Some("t".into()),
        domain: Some("t.local".into()),
    })
    .unwrap();
    let c = &got.cluster;
    // Same priority: keepalived prefers the higher address; so does the import.
    assert_eq!(node_priority(c, "b"), 100);
    assert_eq!(node_priority(c, "a"), 99);
    assert_eq!(
        c.vrrp.interval,
        Duration::from_secs(2),
        "VRRPv2 needs whole seconds"
    );
    assert_eq!(
        c.vip.v4.unwrap().prefix,
        24,
        "a /32 cannot cover the servers"
    );
    assert_eq!(c.vrrp.password, None);
    let notes = render_notes(&got.notes);
    for must in [
        "a.conf:6: auth_type AH: IPsec AH is not supported",
        "a.conf:3: priority 100: shared with b (keepalived ranks equal priorities by `state MASTER`, then by the higher address); vrrpd needs unique priorities: wrote 99 for a",
        "equal priorities: the numbers changed, and one outcome with them",
        "advert_int: 1500ms is not allowed for VRRPv2: wrote 2s",
        "virtual_ipaddress 10.8.0.100/32",
    ] {
        assert!(notes.contains(must), "missing {must:?} in\n{notes}");
    }
}

#[test]
fn equal_priorities_at_the_floor_import_and_validate() {
    // Before: 1 and 1, or 2, 2, 1, put two nodes at priority 1 and the import failed.
    let file = |prio: u8, k: u8, state: &str| {
        format!(
            "vrrp_instance X {{\n state {state}\n virtual_router_id 9\n priority {prio}\n\
             unicast_src_ip 10.8.0.{k}\n virtual_ipaddress {{\n 10.8.0.100/24\n }}\n}}\n"
        )
    };
    let hap = |n: u8| {
        let mut h = String::from("frontend f\n bind :8443\n default_backend b\nbackend b\n");
        for k in 1..=n {
            h.push_str(&format!(" server s{k} 10.8.0.{k}:6443 check\n"));
        }
        h
    };
    for (prios, want) in [
        (&[1u8, 1][..], &[1u8, 2][..]),
        (&[2, 2, 1][..], &[2, 3, 1][..]),
        (&[1, 1, 1][..], &[1, 2, 3][..]),
    ] {
        let got = import(&ImportOptions {
            keepalived: prios
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    src(
                        &format!("k{}.conf", i + 1),
                        &file(*p, i as u8 + 1, "BACKUP"),
                    )
                })
                .collect(),
            haproxy: Some(src("h.cfg", &hap(prios.len() as u8))),
            name: Some("t".into()),
            domain: Some("t.local".into()),
        })
        .unwrap_or_else(|e| panic!("{prios:?}: {e}"));
        let got: Vec<u8> = got
            .cluster
            .nodes
            .iter()
            .map(|n| n.priority.unwrap())
            .collect();
        assert_eq!(got, want, "{prios:?}");
    }
    // state MASTER wins a tie over the higher address, as in keepalived.
    let got = import(&ImportOptions {
        keepalived: vec![
            src("k1.conf", &file(100, 1, "MASTER")),
            src("k2.conf", &file(100, 2, "BACKUP")),
        ],
        haproxy: Some(src("h.cfg", &hap(2))),
        name: Some("t".into()),
        domain: Some("t.local".into()),
    })
    .unwrap();
    assert_eq!(node_priority(&got.cluster, "s1"), 100);
    assert_eq!(node_priority(&got.cluster, "s2"), 99);
}

#[test]
fn nothing_to_import_is_an_error() {
    assert!(matches!(
        import(&ImportOptions::default()),
        Err(ImportError::NoInput)
    ));
    let e = import(&ImportOptions {
        haproxy: Some(src("h.cfg", "frontend f\n bind :80\n")),
        ..ImportOptions::default()
    })
    .unwrap_err();
    assert!(matches!(e, ImportError::NoServers), "{e}");
    let e = import(&ImportOptions {
        keepalived: vec![src(
            "k.conf",
            "vrrp_instance X {\n unicast_src_ip 10.1.1.1\n}\n",
        )],
        ..ImportOptions::default()
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no virtual IP: no vrrp_instance with a virtual_ipaddress in k.conf"
    );
}

#[test]
fn cli_writes_refuses_to_overwrite_and_the_file_checks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cluster.toml");
    let case = root().join("kubeadm");
    let import_cmd = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lbctl"));
        cmd.arg("import");
        for k in [
            "keepalived-cp1.conf",
            "keepalived-cp2.conf",
            "keepalived-cp3.conf",
        ] {
            cmd.arg("--keepalived").arg(case.join(k));
        }
        cmd.arg("--haproxy")
            .arg(case.join("haproxy.cfg"))
            .arg("-o")
            .arg(&out);
        cmd.args(extra);
        cmd.output().unwrap()
    };
    let first = import_cmd(&["--name", "prod", "--domain", "prod.example"]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(
        stderr.contains("setting(s) not mapped or changed in meaning:"),
        "{stderr}"
    );
    assert!(stderr.contains("state MASTER"), "{stderr}");
    let again = import_cmd(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr)
        .contains("exists: not overwritten (--force to replace it)"));
    assert!(import_cmd(&["--force"]).status.success());
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(["config", "check"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn an_ipv6_only_instance_becomes_address6() {
    // keepalived cannot mix families in one instance, so dual-stack set-ups run two.
    let k = "global_defs {\n vrrp_version 3\n}\n\
             vrrp_instance V4 {\n interface eth0\n virtual_router_id 60\n priority 150\n\
             unicast_src_ip 10.60.0.1\n unicast_peer {\n 10.60.0.2\n }\n\
             virtual_ipaddress {\n 10.60.0.100/24\n }\n}\n\
             vrrp_instance V6 {\n interface eth0\n virtual_router_id 60\n priority 150\n\
             virtual_ipaddress {\n fd60::100/64\n }\n}\n\
             vrrp_instance OTHER {\n interface eth0\n virtual_router_id 61\n priority 150\n\
             virtual_ipaddress {\n 10.60.0.200/24\n }\n}\n";
    let got = import(&ImportOptions {
        keepalived: vec![src("k.conf", k)],
        ..ImportOptions::default()
    })
    .unwrap();
    let v6 = got.cluster.vip.v6.unwrap();
    assert_eq!(
        (v6.addr.to_string(), v6.prefix),
        ("fd60::100".to_owned(), 64)
    );
    assert_eq!(got.cluster.vip.v4.unwrap().addr.to_string(), "10.60.0.100");
    let notes = render_notes(&got.notes);
    assert!(
        notes.contains("k.conf:16: vrrp_instance V6: IPv6 VIPs only: merged as vip.address6"),
        "{notes}"
    );
    assert!(
        notes.contains("k.conf:24: vrrp_instance OTHER: k3s-ha runs one VRRP instance per cluster"),
        "{notes}"
    );
}
