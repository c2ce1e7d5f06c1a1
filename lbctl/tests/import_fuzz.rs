//! `lbctl import` never panics, whatever it is fed, and every `Ok` it returns is a
//! cluster.toml that `common::config::parse` accepts.
//!
//! Index:
//! - `any_text_never_panics`: arbitrary strings as keepalived.conf and haproxy.cfg.
//! - `config_shaped_text_never_panics`: lines built from both formats' keywords, braces,
//!   quotes, addresses and numbers, so the mapping code (not just the tokenizer) runs.
//! - `deep_nesting_and_huge_lines_are_bounded`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use lbctl::import::{import, ImportOptions, Source};
use proptest::prelude::*;

fn check(k: Vec<String>, h: Option<String>) {
    let opts = ImportOptions {
        keepalived: k
            .into_iter()
            .enumerate()
            .map(|(i, text)| Source {
                label: format!("k{i}.conf"),
                text,
            })
            .collect(),
        haproxy: h.map(|text| Source {
            label: "h.cfg".into(),
            text,
        }),
        name: None,
        domain: None,
    };
    if let Ok(i) = import(&opts) {
        if let Err(e) = common::config::parse(&i.toml, None) {
            panic!("Ok but invalid: {e}\n{}", i.toml);
        }
    }
}

const WORDS: &[&str] = &[
    "vrrp_instance",
    "VI_1",
    "{",
    "}",
    "state",
    "MASTER",
    "BACKUP",
    "interface",
    "eth0",
    "virtual_router_id",
    "priority",
    "advert_int",
    "nopreempt",
    "preempt_delay",
    "virtual_ipaddress",
    "unicast_src_ip",
    "unicast_peer",
    "authentication",
    "auth_type",
    "PASS",
    "AH",
    "auth_pass",
    "track_script",
    "vrrp_script",
    "chk",
    "script",
    "weight",
    "interval",
    "rise",
    "fall",
    "global_defs",
    "vrrp_version",
    "router_id",
    "notify",
    "garp_master_repeat",
    "garp_master_refresh",
    "use_vmac",
    "accept",
    "no_accept",
    "version",
    "frontend",
    "backend",
    "listen",
    "defaults",
    "global",
    "bind",
    "*:8443",
    ":80",
    ":6443",
    "default_backend",
    "use_backend",
    "server",
    "default-server",
    "check",
    "inter",
    "2s",
    "backup",
    "balance",
    "roundrobin",
    "leastconn",
    "source",
    "first",
    "option",
    "httpchk",
    "GET",
    "/healthz",
    "http-check",
    "expect",
    "status",
    "200,401",
    "200-299",
    "connect",
    "ssl",
    "timeout",
    "client",
    "tunnel",
    "client-fin",
    "maxconn",
    "retries",
    "mode",
    "tcp",
    "http",
    "stats",
    "enable",
    "auth",
    "a:b",
    "10.0.0.1",
    "10.0.0.2:6443",
    "10.0.0.3:6443",
    "10.0.0.100",
    "10.0.0.100/24",
    "10.0.0.100/33",
    "fd00::1",
    "[fd00::2]:6443",
    "host:6443",
    "0",
    "1",
    "2",
    "3",
    "255",
    "256",
    "-5",
    "0.5",
    "1e9",
    "99999999999999999999",
    "\"q w\"",
    "'x",
    "\\",
    "#",
    "!",
    "dev",
    "from",
    "",
    "\t",
    "ümlaut",
    "s1",
    "s2",
    "cp-1",
];

fn line() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..7).prop_map(|w| w.join(" "))
}

fn doc() -> impl Strategy<Value = String> {
    prop::collection::vec(line(), 0..40).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_text_never_panics(k in prop::collection::vec(".{0,400}", 0..3), h in prop::option::of(".{0,400}")) {
        check(k, h);
    }

    #[test]
    fn config_shaped_text_never_panics(k in prop::collection::vec(doc(), 0..3), h in prop::option::of(doc())) {
        check(k, h);
    }
}

#[test]
fn deep_nesting_and_huge_lines_are_bounded() {
    let deep = "vrrp_instance X {\n".repeat(100_000);
    let wide = format!("global\n maxconn {}\n", "9".repeat(1 << 20));
    let braces = "{}".repeat(200_000);
    check(vec![deep, braces], Some(wide));
}

/// Every golden input with one line removed: the `Ok` path runs on hundreds of near-real
/// configurations (and must still produce valid files), the `Err` path on the rest.
#[test]
fn golden_inputs_with_a_line_removed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/import");
    let (mut ok, mut total) = (0, 0);
    for case in ["kubeadm", "k3s-3-node", "k3s-external-lb"] {
        let dir = root.join(case);
        let mut ka: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".conf"))
            .collect();
        ka.sort();
        let k: Vec<String> = ka
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let h = std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap();
        let drop_line = |t: &str, i: usize| -> String {
            t.lines()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, l)| l)
                .collect::<Vec<_>>()
                .join("\n")
        };
        for i in 0..h.lines().count() {
            total += 1;
            let opts = ImportOptions {
                keepalived: k
                    .iter()
                    .enumerate()
                    .map(|(n, t)| Source {
                        label: format!("k{n}"),
                        text: t.clone(),
                    })
                    .collect(),
                haproxy: Some(Source {
                    label: "h".into(),
                    text: drop_line(&h, i),
                }),
                name: None,
                domain: None,
            };
            if let Ok(got) = import(&opts) {
                common::config::parse(&got.toml, None).unwrap();
                ok += 1;
            }
        }
        for i in 0..k[0].lines().count() {
            total += 1;
            let mut kk = k.clone();
            kk[0] = drop_line(&k[0], i);
            check(kk.clone(), Some(h.clone()));
            let opts = ImportOptions {
                keepalived: kk
                    .into_iter()
                    .map(|t| Source {
                        label: "k".into(),
                        text: t,
                    })
                    .collect(),
                haproxy: Some(Source {
                    label: "h".into(),
                    text: h.clone(),
                }),
                name: None,
                domain: None,
            };
            if import(&opts).is_ok() {
                ok += 1;
            }
        }
    }
    assert!(
        ok * 10 >= total * 8,
        "only {ok} of {total} near-golden inputs imported"
    );
}
