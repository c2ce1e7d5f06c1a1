//! haproxy.cfg's proxies into services: pairing frontends with backends, and the check
//! lbd runs for each.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use common::config::format_duration;

use super::draft::*;
use super::haproxy::*;
use super::keepalived::*;
use super::notes::Notes;

/// A service before the nodes are known.
pub(super) struct ProtoService {
    pub(super) name: String,
    pub(super) listen: u16,
    /// The `bind` line.
    pub(super) line: usize,
    pub(super) servers: Vec<HServer>,
    pub(super) check: DraftCheck,
    pub(super) balance: Option<&'static str>,
    pub(super) connect: Option<Duration>,
    pub(super) idle: Option<Duration>,
    pub(super) tunnel: Option<Duration>,
    pub(super) half_close: Option<Duration>,
    pub(super) retries: Option<u32>,
    pub(super) max_connections: Option<u32>,
    pub(super) proxy: ProxyImport,
}

/// The PROXY protocol settings of one service, from `send-proxy*`, `proxy-v2-options` and
/// `bind ... accept-proxy`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct ProxyImport {
    /// `"v1"` or `"v2"`.
    pub(super) version: Option<&'static str>,
    pub(super) tlvs: Vec<&'static str>,
    pub(super) accept: bool,
}

/// What the servers and the bind say about the PROXY protocol; every difference from what
/// HAProxy did is a note.
pub(super) fn proxy_of(
    f: &str,
    accept_line: Option<usize>,
    servers: &[HServer],
    notes: &mut Notes,
    name: &str,
) -> ProxyImport {
    let first = servers.first().and_then(|s| s.params.send_proxy);
    let version = first.map(|v| if v == 1 { "v1" } else { "v2" });
    if let Some(odd) = servers.iter().find(|s| s.params.send_proxy != first) {
        notes.add(
            f,
            odd.line,
            &format!("server {}", odd.name),
            format!(
                "{name}: the servers differ in send-proxy; lbd sends the same header to every server of a service: imported as proxy_protocol = {} (the first server's)",
                version.map_or("off".to_owned(), |v| format!("\"{v}\""))
            ),
        );
    }
    for s in servers {
        if s.params.check_send_proxy && s.params.send_proxy.is_none() && version.is_none() {
            notes.add(
                f,
                s.line,
                &format!("server {} check-send-proxy", s.name),
                "without send-proxy: lbd's checks send the header exactly when the service's connections do (proxy_protocol): not imported, the checks send no header",
            );
        }
    }
    let tlvs = match (version, servers.first()) {
        (Some("v2"), Some(s)) => s.params.pp_tlvs.clone(),
        (_, Some(s)) if !s.params.pp_tlvs.is_empty() => {
            notes.add(
                f,
                s.line,
                &format!("server {} proxy-v2-options", s.name),
                "without send-proxy-v2: ignored",
            );
            Vec::new()
        }
        _ => Vec::new(),
    };
    if let Some(line) = accept_line {
        notes.add(
            f,
            line,
            "accept-proxy",
            format!("{name}: imported as accept_proxy = true with trusted_proxies = [\"0.0.0.0/0\", \"::/0\"], which is what HAProxy did (a header from any source); narrow trusted_proxies to the balancers in front of lbd"),
        );
    }
    ProxyImport {
        version,
        tlvs,
        accept: accept_line.is_some(),
    }
}

pub(super) fn max_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

pub(super) fn service_name(s: &str, taken: &BTreeSet<String>) -> String {
    let mut base: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    if base.trim_matches('-').is_empty() {
        base = "service".into();
    }
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// An `http-check` / `tcp-check` rule's words after the keyword.
pub(super) fn rule_args(l: &HLine) -> &[String] {
    l.words.get(2..).unwrap_or_default()
}

/// The transport a `connect` rule opens: TLS with `ssl`; the server's own (`check-ssl`,
/// `ssl`) with `default`; otherwise plain, whatever the server line says.
pub(super) fn connect_tls(l: &HLine, server_tls: bool) -> bool {
    let args = rule_args(l);
    args.iter().any(|w| w == "ssl") || (args.iter().any(|w| w == "default") && server_tls)
}

/// `connect` options other than `ssl` and `default` (and their values).
pub(super) fn connect_extras(l: &HLine) -> Vec<String> {
    const VALUED: &[&str] = &["port", "addr", "sni", "alpn", "proto", "comment"];
    let mut out = Vec::new();
    let mut it = rule_args(l).iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "ssl" | "default" => {}
            k if VALUED.contains(&k) => {
                out.push(format!("{k} {}", next_str(&mut it).unwrap_or("")))
            }
            k => out.push(k.to_owned()),
        }
    }
    out
}

/// The check lbd runs for one backend: the check HAProxy runs there (its check option in
/// force, the rules of that option's kind, the servers' `check-ssl` / `ssl`), with a note for
/// everything lbd does differently or not at all.
pub(super) fn check_of(
    f: &str,
    fe_line: usize,
    be: &Px,
    servers: &[HServer],
    is_api: bool,
    notes: &mut Notes,
    name: &str,
) -> DraftCheck {
    let checked: Vec<&HServer> = servers.iter().filter(|s| s.params.check).collect();
    let mut c = DraftCheck::default();
    let Some(first) = checked.first() else {
        notes.add(
            f,
            fe_line,
            &format!("{name}: servers without `check`"),
            "HAProxy did not health-check them; lbd always does (with check.kind's default)",
        );
        return c;
    };
    if checked.len() < servers.len() {
        notes.add(
            f,
            first.line,
            &format!("{name}: `check` on some servers only"),
            "lbd checks every server of a service",
        );
    }
    let server_tls = first.params.check_tls();
    if let Some(other) = checked.iter().find(|s| s.params.check_tls() != server_tls) {
        notes.add(
            f,
            other.line,
            &format!("{name}: check-ssl / ssl on some servers only"),
            format!(
                "lbd has one check per service: used server {}'s ({})",
                first.name,
                if server_tls { "TLS" } else { "plain" }
            ),
        );
    }
    let opt = be.check.as_ref();
    let in_force = match opt {
        Some(o) => format!("the check in force is `{}` (line {})", o.text, o.line),
        None => "no check option is set".to_owned(),
    };
    // Rules of the other kind: HAProxy ignores them.
    let is_http = matches!(
        opt,
        Some(CheckOpt {
            kind: CheckKindOpt::Http { .. },
            ..
        })
    );
    let is_tcp = matches!(
        opt,
        Some(CheckOpt {
            kind: CheckKindOpt::Tcp,
            ..
        })
    );
    if !is_http {
        for r in &be.http_rules {
            notes.add(
                f,
                r.line,
                &r.text(),
                format!("ignored by HAProxy, as {in_force}: not imported"),
            );
        }
    }
    if !is_tcp {
        for r in &be.tcp_rules {
            notes.add(
                f,
                r.line,
                &r.text(),
                format!("ignored by HAProxy, as {in_force}: not imported"),
            );
        }
    }
    let mut review: Option<String> = None;
    let kind = match opt.map(|o| (&o.kind, o)) {
        None => {
            if server_tls {
                "tls"
            } else {
                "tcp"
            }
        }
        Some((CheckKindOpt::SslHello, o)) => {
            notes.add(f, o.line, &o.text, "mapped to check.kind = \"tls\": HAProxy counts any TLS record back (a handshake, or an alert refusing SSLv3) as UP; lbd completes a TLS handshake (without verifying the certificate), so a server that only refuses is DOWN for lbd");
            if server_tls {
                review = Some(format!("`{}` (line {}) sends an SSLv3 hello inside the TLS connection that check-ssl / ssl opens: no server answers it, and HAProxy marks every server DOWN. Imported the nearest working check, a TLS handshake (check.kind = \"tls\"): review", o.text, o.line));
            }
            "tls"
        }
        Some((CheckKindOpt::Proto(p), o)) => {
            let what = PROTO_CHECKS
                .iter()
                .find(|(n, _)| n == p)
                .map_or("the protocol", |(_, w)| w);
            notes.add(f, o.line, &o.text, format!("lbd only checks the connect (tcp; tls with check-ssl or ssl, as HAProxy's check connection is TLS then): {what} is not checked"));
            if server_tls {
                "tls"
            } else {
                "tcp"
            }
        }
        Some((CheckKindOpt::Tcp, _)) => {
            let mut tls = server_tls;
            let mut connects = be.tcp_rules.iter().filter(|r| r.arg(1) == Some("connect"));
            if let Some(conn) = connects.next() {
                tls = connect_tls(conn, server_tls);
                let extras = connect_extras(conn);
                if !extras.is_empty() {
                    notes.add(f, conn.line, &conn.text(), format!("{} not imported: lbd checks the server's own address and port; only `ssl` and `default` are used", extras.join(", ")));
                }
            }
            for r in connects {
                notes.add(f, r.line, &r.text(), "a further connection in the check sequence: lbd checks one connection: not imported");
            }
            for r in be.tcp_rules.iter().filter(|r| r.arg(1) != Some("connect")) {
                notes.add(f, r.line, &r.text(), "not mapped: lbd's tcp / tls check only connects (and completes the TLS handshake), it sends and expects nothing");
            }
            if tls {
                "tls"
            } else {
                "tcp"
            }
        }
        Some((CheckKindOpt::Http { meth, uri }, o)) => {
            let rules = &be.http_rules;
            let mut tls = server_tls;
            let mut connects = rules.iter().filter(|r| r.arg(1) == Some("connect"));
            if let Some(conn) = connects.next() {
                tls = connect_tls(conn, server_tls);
                let extras = connect_extras(conn);
                if !extras.is_empty() {
                    notes.add(f, conn.line, &conn.text(), format!("{} not imported: lbd checks the server's own address and port; only `ssl` and `default` are used", extras.join(", ")));
                }
            }
            for r in connects {
                notes.add(f, r.line, &r.text(), "a further connection in the check sequence: lbd checks one connection: not imported");
            }
            let (mut meth, mut uri) = (meth.clone(), uri.clone());
            let mut sends = rules.iter().filter(|r| r.arg(1) == Some("send"));
            let send = sends.next();
            if let Some(l) = send {
                let mut it = rule_args(l).iter();
                while let Some(w) = it.next() {
                    match w.as_str() {
                        "meth" => meth = it.next().cloned(),
                        "uri" => uri = it.next().cloned(),
                        "ver" => {
                            it.next();
                        }
                        _ => {
                            notes.add(
                                f,
                                l.line,
                                &l.text(),
                                "only meth and uri are used: lbd sends its own headers",
                            );
                            break;
                        }
                    }
                }
            }
            for r in sends {
                notes.add(f, r.line, &r.text(), "a further request in the check sequence: lbd sends one request per check: not imported");
            }
            let mut expect_line = None;
            for r in rules.iter().filter(|r| r.arg(1) == Some("expect")) {
                let codes = match (r.arg(2), r.arg(3)) {
                    (Some("status"), Some(code)) => parse_status_list(code),
                    _ => None,
                };
                match codes {
                    Some(e) if c.expect.is_none() => {
                        c.expect = Some(e);
                        expect_line = Some(r.line);
                    }
                    Some(_) => notes.add(f, r.line, &r.text(), "lbd checks one list of status codes (check.expect): the first `http-check expect status` is imported"),
                    None => notes.add(f, r.line, &r.text(), "lbd expects a list of status codes (check.expect): only `expect status N[,N...]` (ranges up to 20 codes) is imported"),
                }
            }
            for r in rules
                .iter()
                .filter(|r| !matches!(r.arg(1), Some("connect" | "send" | "expect")))
            {
                notes.add(f, r.line, &r.text(), NO_EQUIVALENT);
            }
            let inherited = !be.own_checks.iter().any(|x| x == o);
            if inherited && be.http_rules_own && send.is_none() {
                review = Some(format!("this section's http-check rules replace those inherited with `{}` (line {}), and none sends a request: HAProxy 2.6 then sends nothing and marks every server DOWN. Imported the check that option describes: review (add `http-check send` to the section, or repeat the option there)", o.text, o.line));
            }
            if let Some(m) = &meth {
                if !m.eq_ignore_ascii_case("GET") {
                    notes.add(
                        f,
                        fe_line,
                        &format!("{name}: httpchk method {m}"),
                        "lbd's HTTP checks send GET",
                    );
                }
            }
            match &uri {
                Some(u) if u.starts_with('/') && !u.contains(char::is_whitespace) => c.path = Some(u.clone()),
                Some(u) => notes.add(f, fe_line, &format!("{name}: httpchk uri {u}"), "not a path: check.path left at its default"),
                None => notes.add(f, fe_line, &format!("{name}: option httpchk without a URI"), "HAProxy sends OPTIONS /; lbd sends GET to check.path (default \"/\", \"/readyz\" for the API)"),
            }
            if expect_line.is_none() {
                notes.add(f, fe_line, &format!("{name}: no http-check expect"), "HAProxy accepts any 2xx or 3xx; lbd accepts the codes in check.expect (default [200], or [200, 401] for the API)");
            }
            if tls {
                "https"
            } else {
                "http"
            }
        }
    };
    c.kind = Some(kind);
    if be.own_checks.len() > 1 {
        let last = be.own_checks.last().map_or(0, |o| o.line);
        let all: Vec<String> = be
            .own_checks
            .iter()
            .map(|o| format!("{} (line {})", o.text, o.line))
            .collect();
        let kept = opt.map_or(String::new(), |o| o.text.clone());
        notes.add(
            f,
            last,
            &format!("{name}: several check options"),
            format!("{}: HAProxy keeps only the last one, `{kept}`; imported that: check.kind = \"{kind}\"", all.join(", ")),
        );
    }
    if let Some(r) = review {
        notes.add(
            f,
            opt.map_or(fe_line, |o| o.line),
            &format!("{name}: check"),
            r,
        );
    }
    if matches!(kind, "tcp" | "tls") && is_api {
        notes.add(f, fe_line, &format!("{name}: check kind {kind}"), "kept from HAProxy; k3s-ha's default for the API is an https check of /readyz, which also catches a hung apiserver: consider removing check.kind");
    }
    let p = &first.params;
    let differ = checked.iter().any(|s| {
        (
            s.params.inter,
            s.params.fastinter,
            s.params.rise,
            s.params.fall,
        ) != (p.inter, p.fastinter, p.rise, p.fall)
    });
    if differ {
        notes.add(
            f,
            first.line,
            &format!("{name}: per-server inter/rise/fall"),
            format!(
                "lbd has one check setting per service: used server {}'s",
                first.name
            ),
        );
    }
    // HAProxy's defaults, written out so the behaviour stays the same.
    let inter = p
        .inter
        .unwrap_or(Duration::from_secs(2))
        .max(Duration::from_millis(10));
    c.interval = Some(inter);
    let fast = p.fastinter.unwrap_or(inter).max(Duration::from_millis(10));
    if fast > inter {
        notes.add(
            f,
            first.line,
            &format!("{name}: fastinter"),
            "longer than inter: lbd's fast_interval is at most interval; wrote interval",
        );
    }
    c.fast_interval = Some(fast.min(inter));
    c.timeout = Some(be.t_check.unwrap_or(inter).max(Duration::from_millis(1)));
    c.rise = Some(p.rise.unwrap_or(2));
    c.fall = Some(p.fall.unwrap_or(3));
    c
}

pub(super) fn build_services(
    f: &str,
    fronts: &[HProxy],
    backs: &BTreeMap<String, HProxy>,
    draft: &mut Draft,
    notes: &mut Notes,
) -> Vec<ProtoService> {
    let mut out: Vec<ProtoService> = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut used_backs: BTreeSet<&str> = BTreeSet::new();
    for fe in fronts {
        let label = format!("{} {}", fe.kind, fe.name);
        let has_servers = !fe.px.servers.is_empty();
        if fe.px.stats && fe.px.default_backend.is_none() && !has_servers {
            match fe.px.binds.first() {
                Some((_, port, _)) => {
                    draft.stats.listen = Some(*port);
                    if let Some((u, p)) = &fe.px.stats_auth {
                        draft.stats.user = Some(u.clone());
                        draft.stats.password = Some(p.clone());
                    }
                    draft.stats.refresh = fe
                        .px
                        .stats_refresh
                        .map(|d| d.clamp(Duration::from_secs(1), Duration::from_secs(3600)));
                }
                None => notes.add(f, fe.line, &label, "stats without a bind: not imported"),
            }
            continue;
        }
        let be: &Px = if fe.kind == "listen" {
            &fe.px
        } else if let Some(b) = &fe.px.default_backend {
            match backs.get(b) {
                Some(hp) => {
                    used_backs.insert(hp.name.as_str());
                    &hp.px
                }
                None => {
                    notes.add(
                        f,
                        fe.line,
                        &format!("{label}: default_backend {b}"),
                        "no backend of that name: frontend not imported",
                    );
                    continue;
                }
            }
        } else if let [(b, line)] = fe.px.use_backends.as_slice() {
            match backs.get(b) {
                Some(hp) => {
                    notes.add(
                        f,
                        *line,
                        &format!("{label}: use_backend {b}"),
                        "conditions are not supported: every connection goes to this backend",
                    );
                    used_backs.insert(hp.name.as_str());
                    &hp.px
                }
                None => {
                    notes.add(
                        f,
                        *line,
                        &format!("use_backend {b}"),
                        "no backend of that name: frontend not imported",
                    );
                    continue;
                }
            }
        } else {
            notes.add(f, fe.line, &label, "no default_backend: frontend not imported (lbd sends every connection of a port to one pool)");
            continue;
        };
        if fe.px.default_backend.is_some() || fe.kind == "listen" {
            for (b, line) in &fe.px.use_backends {
                notes.add(f, *line, &format!("use_backend {b}"), "conditional routing is not supported: every connection goes to the default pool");
            }
        }
        let mode = fe
            .px
            .mode
            .as_deref()
            .or(be.mode.as_deref())
            .unwrap_or("tcp");
        if mode == "http" {
            notes.add(
                f,
                fe.line,
                &format!("{label}: mode http"),
                "proxied as plain TCP: no HTTP routing, header rewriting or HTTP logging",
            );
        }
        if be.servers.is_empty() {
            notes.add(f, fe.line, &label, "no usable server: not imported");
            continue;
        }
        let balance = match be.balance.as_ref() {
            None => None,
            Some((b, line)) => match b.as_str() {
                "roundrobin" => Some("roundrobin"),
                "static-rr" => {
                    notes.add(f, *line, "balance static-rr", "mapped to roundrobin (weights apply at once instead of at the next reload)");
                    Some("roundrobin")
                }
                "leastconn" => Some("leastconn"),
                "source" => Some("source"),
                other => {
                    notes.add(f, *line, &format!("balance {other}"), "not supported by lbd (roundrobin, leastconn, source): balance left at its default");
                    None
                }
            },
        };
        let multi = fe.px.binds.len() > 1;
        if fe.px.binds.is_empty() {
            notes.add(f, fe.line, &label, "no bind: not imported");
        }
        for (addr, port, line) in &fe.px.binds {
            if let Some(a) = addr {
                let is_vip = draft.vip4.map(|(v, _)| IpAddr::V4(v)) == Some(*a)
                    || draft.vip6.map(|(v, _)| IpAddr::V6(v)) == Some(*a);
                let why = if is_vip {
                    "lbd listens on the wildcard address on every server, ready the moment it holds the VIP"
                } else {
                    "one cluster.toml serves every node: lbd listens on the wildcard address"
                };
                notes.add(f, *line, &format!("bind {a}:{port}"), why);
            }
            let base = if multi {
                format!("{}-{port}", fe.name)
            } else {
                fe.name.clone()
            };
            let name = service_name(&base, &names);
            names.insert(name.clone());
            let servers: Vec<HServer> = be.servers.clone();
            let is_api = servers.iter().any(|s| s.port.unwrap_or(*port) == 6443);
            let check = check_of(f, fe.line, be, &servers, is_api, notes, &name);
            let proxy = proxy_of(f, fe.px.accept_proxy, &servers, notes, &name);
            if let Some(d) = be.t_connect.filter(|d| *d > Duration::from_secs(1)) {
                notes.add(
                    f,
                    fe.line,
                    &format!("{label}: timeout connect {}", format_duration(d)),
                    "kept as timeouts.connect; lbd's default, \"auto\", gives up on a server that does not answer after one VRRP advert interval (at most 1 s) and retries another at once, which ends a failover sooner",
                );
            }
            out.push(ProtoService {
                name,
                listen: *port,
                line: *line,
                servers,
                check,
                balance,
                connect: be.t_connect,
                idle: max_opt(fe.px.t_client, be.t_server),
                tunnel: be.t_tunnel.or(fe.px.t_tunnel),
                half_close: max_opt(fe.px.t_client_fin, be.t_server_fin),
                retries: be.retries,
                max_connections: fe.px.maxconn.filter(|&m| m > 0),
                proxy,
            });
        }
        if fe.px.t_tunnel.is_none()
            && be.t_tunnel.is_none()
            && (fe.px.t_client.is_some() || be.t_server.is_some())
        {
            notes.add(f, fe.line, &format!("{label}: no timeout tunnel"), "HAProxy cut long-lived connections (API watches, logs -f) after timeout client/server of silence; lbd keeps them up to timeouts.tunnel (default 1h)");
        }
    }
    for (name, hp) in backs {
        if !used_backs.contains(name.as_str()) {
            notes.add(
                f,
                hp.line,
                &format!("backend {name}"),
                "no frontend uses it: not imported",
            );
        }
    }
    out
}
