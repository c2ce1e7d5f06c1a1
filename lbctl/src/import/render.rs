//! Rendering the draft as cluster.toml text.
//!
//! The draft becomes the reader's own schema, [`common::config::raw::Raw`], which
//! [`raw::to_string`] writes: a key is spelled in one place, for the reader and for this
//! writer. The text is a comment block (sources, then the notes) and the tables in the
//! schema's order: cluster, vip, vrrp, nodes, services, stats, lbd.

use std::fmt::Write as _;
use std::time::Duration;

use common::config::format_duration;
use common::config::raw::{
    self, unspanned as u, Raw, RawBackend, RawBackends, RawCheck, RawCluster, RawEffect, RawLbd,
    RawNode, RawService, RawStats, RawTimeouts, RawTrack, RawTrackScript, RawVip, RawVrrp, S,
};

use super::draft::*;
use super::Note;

/// One line of a comment: control characters would end it early.
pub(super) fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The cluster.toml text: the header and the notes as comments, then the tables.
pub(super) fn render(
    d: &Draft,
    name: &str,
    domain: &str,
    sources: &[String],
    notes: &[Note],
) -> Result<String, raw::WriteError> {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(
        w,
        "# cluster.toml converted by `lbctl import` from: {}",
        comment_text(&sources.join(", "))
    );
    let _ = writeln!(
        w,
        "# Review it and run `lbctl config check` on it. Settings that could not be mapped"
    );
    let _ = writeln!(w, "# are listed here, before the tables.");
    let _ = writeln!(w, "#");
    if notes.is_empty() {
        let _ = writeln!(w, "# Every setting was mapped.");
    } else {
        let _ = writeln!(w, "# Not mapped, or changed in meaning ({}):", notes.len());
        for n in notes {
            let _ = writeln!(w, "#   {}", comment_text(&n.to_string()));
        }
    }
    let _ = writeln!(w);
    o.push_str(&raw::to_string(&schema(d, name, domain))?);
    Ok(o)
}

fn text(s: impl Into<String>) -> S<String> {
    u(s.into())
}

fn dur(d: Duration) -> S<String> {
    text(format_duration(d))
}

fn int(n: impl Into<i64>) -> S<i64> {
    u(n.into())
}

/// `None`: fault.
fn effect(e: Option<i16>) -> S<RawEffect> {
    u(e.map_or_else(
        || RawEffect::Word("fault".to_owned()),
        |n| RawEffect::Weight(n.into()),
    ))
}

/// The draft as the schema the reader deserializes.
pub(super) fn schema(d: &Draft, name: &str, domain: &str) -> Raw {
    let v = &d.vrrp;
    let vrrp = RawVrrp {
        vrid: v.vrid.map(int),
        version: (v.version == Some(2)).then(|| int(2)),
        interval: v.interval.map(dur),
        preempt: v.preempt,
        preempt_delay: v.preempt_delay.map(dur),
        accept_mode: v.accept_mode,
        password: v.password.clone().map(text),
        unicast: v.unicast.then_some(true),
        garp_repeat: v.garp_repeat.map(int),
        garp_interval: v.garp_interval.map(dur),
        garp_refresh: v.garp_refresh.map(dur),
        virtual_mac: v.virtual_mac.then_some(true),
        notify: v.notify.clone().map(text),
        track: RawTrack {
            lbd: v.track_lbd.map(effect),
            link: v.track_link,
            script: v
                .scripts
                .iter()
                .map(|s| {
                    u(RawTrackScript {
                        name: text(&s.name),
                        command: text(&s.command),
                        interval: s.interval.map(dur),
                        timeout: s.timeout.map(dur),
                        rise: s.rise.map(int),
                        fall: s.fall.map(int),
                        effect: Some(effect(s.weight)),
                    })
                })
                .collect(),
            ..RawTrack::default()
        },
        ..RawVrrp::default()
    };
    let nodes = d
        .nodes
        .iter()
        .map(|n| {
            u(RawNode {
                name: text(&n.name),
                address: text(n.address.to_string()),
                address6: None,
                role: text("server"),
                priority: n.priority.map(int),
            })
        })
        .collect();
    let services: Vec<S<RawService>> = d.services.iter().map(|s| u(service(s))).collect();
    let st = &d.stats;
    let (user, password) = match (&st.user, &st.password) {
        (Some(u), Some(p)) => (Some(text(u)), Some(text(p))),
        _ => (None, None),
    };
    let stats = RawStats {
        listen: st.listen.map(|p| text(format!(":{p}"))),
        user,
        password,
        refresh: st.refresh.map(dur),
    };
    Raw {
        cluster: RawCluster {
            name: text(name),
            domain: text(domain),
        },
        vip: u(RawVip {
            address: d.vip4.map(|(a, p)| text(format!("{a}/{p}"))),
            address6: d.vip6.map(|(a, p)| text(format!("{a}/{p}"))),
            interface: d.interface.clone().map(text),
        }),
        vrrp,
        nodes: u(nodes),
        services: (!services.is_empty()).then(|| u(services)),
        stats,
        lbd: RawLbd {
            max_connections: d.max_connections.map(int),
            ..RawLbd::default()
        },
        k3s: Default::default(),
    }
}

fn service(s: &DraftService) -> RawService {
    let (backends, backend_port) = match &s.backends {
        DraftBackends::Servers(port) => (RawBackends::Role("servers".to_owned()), Some(*port)),
        DraftBackends::List(list) => (
            RawBackends::List(
                list.iter()
                    .map(|(a, wt, b)| {
                        let plain = *wt == 1 && !*b;
                        u(RawBackend {
                            address: text(a),
                            weight: (!plain).then(|| int(*wt)),
                            backup: (!plain).then_some(*b),
                        })
                    })
                    .collect(),
            ),
            None,
        ),
    };
    let c = &s.check;
    let check = RawCheck {
        kind: c.kind.map(text),
        path: c.path.clone().map(text),
        expect: c
            .expect
            .as_ref()
            .map(|e| u(e.iter().map(|&code| int(code)).collect())),
        interval: c.interval.map(dur),
        fast_interval: c.fast_interval.map(dur),
        timeout: c.timeout.map(dur),
        rise: c.rise.map(int),
        fall: c.fall.map(int),
        ..RawCheck::default()
    };
    RawService {
        name: text(&s.name),
        listen: int(s.listen),
        bind: None,
        backend_port: backend_port.map(int),
        backends: Some(u(backends)),
        balance: s.balance.map(text),
        check: (check != RawCheck::default()).then_some(check),
        timeouts: RawTimeouts {
            connect: s.connect.map(dur),
            idle: s.idle.map(dur),
            tunnel: s.tunnel.map(dur),
            half_close: s.half_close.map(dur),
            proxy_header: None,
        },
        max_connections: s.max_connections.map(int),
        retries: s.retries.map(int),
        close_on_down: None,
        proxy_protocol: s.proxy_protocol.map(text),
        proxy_protocol_tlvs: (!s.proxy_tlvs.is_empty())
            .then(|| u(s.proxy_tlvs.iter().map(|t| text(*t)).collect())),
        accept_proxy: s.accept_proxy.then_some(true),
        trusted_proxies: s
            .accept_proxy
            .then(|| u(vec![text("0.0.0.0/0"), text("::/0")])),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use std::net::IpAddr;

    use common::config::TrackEffect;

    use super::*;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    fn check() -> DraftCheck {
        DraftCheck {
            kind: Some("https"),
            path: Some("/readyz".into()),
            expect: Some(vec![200, 204]),
            interval: secs(2),
            fast_interval: secs(1),
            timeout: secs(1),
            rise: Some(2),
            fall: Some(3),
        }
    }

    fn service(name: &str, listen: u16, backends: DraftBackends) -> DraftService {
        DraftService {
            name: name.into(),
            listen,
            backends,
            balance: Some("leastconn"),
            check: check(),
            connect: secs(3),
            idle: secs(60),
            tunnel: secs(3600),
            half_close: secs(10),
            retries: Some(2),
            max_connections: Some(500),
            proxy_protocol: Some("v2"),
            proxy_tlvs: vec!["crc32c", "unique-id"],
            accept_proxy: true,
        }
    }

    /// Every field of the draft set (struct literals without `..`, so a new one must be
    /// added here): every key the importer can write is one the reader accepts, and means
    /// what the draft said.
    #[test]
    fn every_key_the_importer_writes_reads_back() {
        let node = |k: u8, priority: u8| DraftNode {
            name: format!("server-{k}"),
            address: IpAddr::from([10, 0, 0, k]),
            priority: Some(priority),
        };
        let script = |name: &str, weight: Option<i16>| DraftScript {
            name: name.into(),
            command: "/usr/local/bin/check \"quoted\" \\ back".into(),
            interval: secs(3),
            timeout: secs(2),
            rise: Some(2),
            fall: Some(4),
            weight,
        };
        let d = Draft {
            vip4: Some(("10.0.0.100".parse().unwrap(), 24)),
            vip6: Some(("fd00::100".parse().unwrap(), 64)),
            interface: Some("eth0".into()),
            vrrp: DraftVrrp {
                vrid: Some(51),
                version: Some(2),
                interval: secs(1),
                preempt: Some(false),
                preempt_delay: secs(5),
                accept_mode: Some(true),
                password: Some("k8sVIP".into()),
                unicast: true,
                garp_repeat: Some(3),
                garp_interval: Some(Duration::from_millis(10)),
                garp_refresh: secs(60),
                virtual_mac: false,
                notify: Some("/usr/local/bin/notify".into()),
                track_lbd: Some(Some(-20)),
                track_link: Some(true),
                scripts: vec![script("a", Some(-2)), script("b", None)],
            },
            nodes: vec![node(1, 101), node(2, 100), node(3, 99)],
            services: vec![
                service("api", 8443, DraftBackends::Servers(6443)),
                service(
                    "pool",
                    30443,
                    DraftBackends::List(vec![
                        ("10.0.0.1:443".into(), 1, false),
                        ("10.0.0.2:443".into(), 5, true),
                    ]),
                ),
            ],
            stats: DraftStats {
                listen: Some(9000),
                user: Some("admin".into()),
                password: Some("s3cret".into()),
                refresh: secs(10),
            },
            max_connections: Some(20_000),
        };
        let notes = [Note {
            file: "a.conf".into(),
            line: 3,
            setting: "x\ny".into(),
            reason: "a control character\tstays in the comment".into(),
        }];
        let text = render(&d, "k3s", "k3s.local", &["a.conf".into()], &notes).unwrap();
        let c = common::config::parse(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
        // The notes are comments: the text before `[cluster]` is only comments and blanks.
        let head = text.split("[cluster]").next().unwrap();
        assert!(
            head.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "{text}"
        );
        assert!(
            head.contains("#   a.conf:3: x y: a control character stays"),
            "{text}"
        );
        let heads: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(
            heads[..4],
            ["[cluster]", "[vip]", "[vrrp]", "[vrrp.track]"],
            "{text}"
        );
        assert_eq!(heads.last(), Some(&"[lbd]"), "{text}");
        // What was written is what the draft said.
        assert_eq!((c.vrrp.vrid, c.vrrp.version), (51, 2));
        assert_eq!(c.vrrp.password.as_deref(), Some("k8sVIP"));
        assert!(c.vrrp.unicast && !c.vrrp.preempt && c.vrrp.accept_mode);
        assert_eq!(c.vrrp.track.lbd, TrackEffect::Weight(-20));
        let s = &c.vrrp.track.scripts;
        assert_eq!(s[0].command, "/usr/local/bin/check \"quoted\" \\ back");
        assert_eq!(
            (s[0].effect, s[1].effect),
            (TrackEffect::Weight(-2), TrackEffect::Fault)
        );
        assert_eq!(c.vip.v6.unwrap().prefix, 64);
        assert_eq!(c.node("server-2").unwrap().priority, Some(100));
        let pool = c.service("pool").unwrap();
        assert_eq!(pool.backends.len(), 2);
        assert!(pool.backends[1].backup && pool.backends[1].weight == 5);
        assert_eq!(pool.check.expect, vec![200, 204]);
        assert_eq!(pool.retries, 2);
        assert_eq!(c.service("api").unwrap().backend_port, 6443);
        assert_eq!(c.stats.listen.map(|l| l.port()), Some(9000));
        assert_eq!(c.lbd.max_connections, 20_000);
        assert_eq!(pool.proxy_protocol, Some(common::config::ProxyProtocol::V2));
        assert!(pool.proxy_tlvs.crc32c && pool.proxy_tlvs.unique_id);
        let ap = pool.accept_proxy.as_ref().unwrap();
        assert!(
            ap.trusts("203.0.113.1".parse().unwrap()) && ap.trusts("2001:db8::1".parse().unwrap())
        );
    }
}
