//! haproxy.cfg: sections and lines, then proxies with their servers and checks.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use super::keepalived::*;
use super::lex::*;
use super::notes::Notes;
use super::Source;

#[derive(Debug, Clone)]
pub(super) struct HLine {
    pub(super) words: Vec<String>,
    pub(super) line: usize,
}

impl HLine {
    pub(super) fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    pub(super) fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    pub(super) fn text(&self) -> String {
        self.words.join(" ")
    }
}

#[derive(Debug, Clone)]
pub(super) struct HSection {
    pub(super) kind: String,
    pub(super) name: Option<String>,
    /// `defaults NAME` referenced with `from NAME`.
    pub(super) from: Option<String>,
    pub(super) line: usize,
    pub(super) body: Vec<HLine>,
}

pub(super) const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "program",
    "cache",
    "http-errors",
    "ring",
    "mailers",
    "crt-store",
    "traces",
    "log-forward",
    "fcgi-app",
];

pub(super) fn parse_haproxy(src: &Source, notes: &mut Notes) -> Vec<HSection> {
    let (text, cut) = capped(&src.text);
    if cut {
        notes.add(
            &src.label,
            0,
            "(file)",
            "longer than 4 MiB: the rest is ignored",
        );
    }
    let mut out: Vec<HSection> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let words: Vec<String> = tokenize(line, &['#'], true, false)
            .into_iter()
            .filter_map(|t| match t {
                Tok::Word(w) => Some(w),
                _ => None,
            })
            .collect();
        let Some(first) = words.first() else { continue };
        if SECTIONS.contains(&first.as_str()) {
            let name = words.get(1).cloned();
            let from = words
                .iter()
                .position(|w| w == "from")
                .and_then(|p| words.get(p + 1).cloned());
            out.push(HSection {
                kind: first.clone(),
                name,
                from,
                line: i + 1,
                body: Vec::new(),
            });
            continue;
        }
        match out.last_mut() {
            Some(s) => s.body.push(HLine { words, line: i + 1 }),
            None => notes.add(&src.label, i + 1, first, "outside any section: ignored"),
        }
    }
    out
}

/// HAProxy time: a number with an optional unit (us, ms, s, m, h, d); milliseconds if none.
pub(super) fn hap_time(s: &str) -> Option<Duration> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "" | "ms" => Some(n),
        "us" => Some(n / 1000),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }?;
    Some(Duration::from_millis(ms))
}
// ---------------------------------------------------------------------------------------
// haproxy.cfg -> draft

/// `server` / `default-server` parameters that matter here.
#[derive(Debug, Clone, Default)]
pub(super) struct SrvParams {
    pub(super) check: bool,
    pub(super) inter: Option<Duration>,
    pub(super) fastinter: Option<Duration>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    pub(super) weight: Option<u32>,
    pub(super) backup: bool,
    pub(super) check_ssl: bool,
    /// `ssl`: traffic to the server is TLS, and so are its checks (HAProxy checks over the
    /// server's own transport).
    pub(super) ssl: bool,
    pub(super) disabled: bool,
    /// `send-proxy` (1), `send-proxy-v2` and its `-ssl` variants (2).
    pub(super) send_proxy: Option<u8>,
    /// `check-send-proxy`: the checks send the header (even without `send-proxy`).
    pub(super) check_send_proxy: bool,
    /// `proxy-v2-options` lbd has: `crc32c`, `unique-id`.
    pub(super) pp_tlvs: Vec<&'static str>,
}

impl SrvParams {
    /// Checks open a TLS connection unless a rule says otherwise.
    pub(super) fn check_tls(&self) -> bool {
        self.check_ssl || self.ssl
    }
}

/// Parameters that take a value (so the value is not read as a keyword).
pub(super) const SRV_VALUED: &[&str] = &[
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "weight",
    "port",
    "addr",
    "maxconn",
    "maxqueue",
    "minconn",
    "verify",
    "sni",
    "ca-file",
    "crt",
    "crl-file",
    "cookie",
    "id",
    "slowstart",
    "on-error",
    "on-marked-down",
    "on-marked-up",
    "observe",
    "error-limit",
    "resolvers",
    "resolve-prefer",
    "init-addr",
    "check-sni",
    "alpn",
    "check-alpn",
    "agent-port",
    "agent-inter",
    "agent-send",
    "agent-addr",
    "proto",
    "pool-max-conn",
    "pool-purge-delay",
    "pool-low-conn",
    "source",
    "usesrc",
    "namespace",
    "track",
    "redir",
    "tcp-ut",
    "ciphers",
    "ciphersuites",
    "curves",
    "sigalgs",
    "ssl-min-ver",
    "ssl-max-ver",
    "shard",
    "max-reuse",
    "log-proto",
    "check-proto",
    "set-proxy-v2-tlv-fmt",
    "ws",
    "hash-key",
    "socks4",
    "guid",
    "init-state",
];

pub(super) fn next_str<'a>(it: &mut std::slice::Iter<'a, String>) -> Option<&'a str> {
    it.next().map(String::as_str)
}

pub(super) fn parse_srv_params(words: &[String], p: &mut SrvParams, ignored: &mut Vec<String>) {
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let w = w.as_str();
        let val = next_str;
        match w {
            "check" => p.check = true,
            "no-check" => p.check = false,
            "backup" => p.backup = true,
            "no-backup" => p.backup = false,
            "check-ssl" => p.check_ssl = true,
            "no-check-ssl" => p.check_ssl = false,
            "ssl" => {
                // lbd does not re-encrypt traffic (noted), but the check follows it.
                p.ssl = true;
                ignored.push("ssl".to_owned());
            }
            "no-ssl" => p.ssl = false,
            "send-proxy" => p.send_proxy = Some(1),
            "send-proxy-v2" => p.send_proxy = Some(2),
            "no-send-proxy" | "no-send-proxy-v2" => p.send_proxy = None,
            "send-proxy-v2-ssl" | "send-proxy-v2-ssl-cn" => {
                // The header is sent; the TLS TLVs describe a TLS session lbd never has.
                p.send_proxy = Some(2);
                ignored.push(w.to_owned());
            }
            "check-send-proxy" => p.check_send_proxy = true,
            "no-check-send-proxy" => p.check_send_proxy = false,
            "proxy-v2-options" => {
                for o in val(&mut it).unwrap_or("").split(',') {
                    match o {
                        "crc32c" => p.pp_tlvs.push("crc32c"),
                        "unique-id" => p.pp_tlvs.push("unique-id"),
                        "" => {}
                        other => ignored.push(format!("proxy-v2-options {other}")),
                    }
                }
                p.pp_tlvs.sort_unstable();
                p.pp_tlvs.dedup();
            }
            "disabled" => p.disabled = true,
            "enabled" => p.disabled = false,
            "inter" => p.inter = val(&mut it).and_then(hap_time),
            "fastinter" => p.fastinter = val(&mut it).and_then(hap_time),
            "rise" => p.rise = parse_num(val(&mut it), 1, 100).map(|n| n as u32),
            "fall" => p.fall = parse_num(val(&mut it), 1, 100).map(|n| n as u32),
            "weight" => p.weight = parse_num(val(&mut it), 0, 256).map(|n| n as u32),
            "verify" => {
                // `verify none` is what lbd's checks do (they prove liveness, not identity).
                let v = val(&mut it);
                if v != Some("none") {
                    ignored.push(format!("verify {}", v.unwrap_or("")));
                }
            }
            k if SRV_VALUED.contains(&k) => {
                let v = val(&mut it).unwrap_or("");
                ignored.push(format!("{k} {v}"));
            }
            k => ignored.push(k.to_owned()),
        }
    }
}

pub(super) fn merge_srv(base: &SrvParams, own: &[String], ignored: &mut Vec<String>) -> SrvParams {
    let mut p = base.clone();
    parse_srv_params(own, &mut p, ignored);
    p
}

#[derive(Debug, Clone)]
pub(super) struct HServer {
    pub(super) name: String,
    pub(super) addr: IpAddr,
    /// `None`: the port the client connected to.
    pub(super) port: Option<u16>,
    pub(super) params: SrvParams,
    pub(super) line: usize,
}

/// A check option: `option httpchk`, `ssl-hello-chk`, `tcp-check`, or a protocol check.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum CheckKindOpt {
    /// `option httpchk [METH] [URI]` (`[URI]` alone is a URI).
    Http {
        meth: Option<String>,
        uri: Option<String>,
    },
    /// `option ssl-hello-chk`: an SSLv3 ClientHello, any handshake or alert record back.
    SslHello,
    /// `option tcp-check`: the `tcp-check` rules (a connect if there are none).
    Tcp,
    /// `option mysql-check` and the other protocol checks: the option's name.
    Proto(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct CheckOpt {
    pub(super) kind: CheckKindOpt,
    /// The option as written, and its line.
    pub(super) text: String,
    pub(super) line: usize,
}

/// The protocol checks HAProxy runs itself; lbd checks only the connection for these.
pub(super) const PROTO_CHECKS: &[(&str, &str)] = &[
    ("mysql-check", "the MySQL handshake"),
    ("pgsql-check", "the PostgreSQL start-up exchange"),
    ("redis-check", "the Redis PING"),
    ("smtpchk", "the SMTP greeting and HELO"),
    ("ldap-check", "the LDAP bind"),
    ("spop-check", "the SPOP hello"),
    ("external-check", "the external command"),
];

/// One proxy (defaults applied): everything needed for services.
#[derive(Debug, Clone, Default)]
pub(super) struct Px {
    pub(super) mode: Option<String>,
    pub(super) balance: Option<(String, usize)>,
    pub(super) t_connect: Option<Duration>,
    pub(super) t_client: Option<Duration>,
    pub(super) t_server: Option<Duration>,
    pub(super) t_tunnel: Option<Duration>,
    pub(super) t_client_fin: Option<Duration>,
    pub(super) t_server_fin: Option<Duration>,
    pub(super) t_check: Option<Duration>,
    pub(super) retries: Option<u32>,
    pub(super) maxconn: Option<u32>,
    pub(super) default_server: SrvParams,
    /// The check option in force: HAProxy keeps one per proxy, the last one written; a
    /// section's own replaces the one inherited from `defaults`.
    pub(super) check: Option<CheckOpt>,
    /// Check options written in this section (several: noted).
    pub(super) own_checks: Vec<CheckOpt>,
    /// `http-check` rules (connect, send, expect, ...) in force, and whether this section
    /// wrote them (its own rules replace inherited ones).
    pub(super) http_rules: Vec<HLine>,
    pub(super) http_rules_own: bool,
    /// `tcp-check` rules, likewise.
    pub(super) tcp_rules: Vec<HLine>,
    pub(super) tcp_rules_own: bool,
    // frontend / listen
    pub(super) binds: Vec<(Option<IpAddr>, u16, usize)>,
    /// The line of a `bind ... accept-proxy`.
    pub(super) accept_proxy: Option<usize>,
    pub(super) default_backend: Option<String>,
    pub(super) use_backends: Vec<(String, usize)>,
    pub(super) stats: bool,
    pub(super) stats_auth: Option<(String, String)>,
    pub(super) stats_refresh: Option<Duration>,
    // backend / listen
    pub(super) servers: Vec<HServer>,
}

impl Px {
    /// What a section starts with when it inherits from this one: everything, but no
    /// option or rule counts as the section's own.
    pub(super) fn inherited(&self) -> Px {
        let mut p = self.clone();
        p.own_checks.clear();
        p.http_rules_own = false;
        p.tcp_rules_own = false;
        p
    }
}

/// A check option written in a section, with HAProxy 2.6's rules: it replaces the option
/// in force (the last one wins, a section's own replaces the inherited one); it drops
/// `http-check` rules inherited from `defaults` (the section's own stay, for a later
/// `option httpchk`); `tcp-check` rules stay while the option in force is `tcp-check`
/// (a repeated `option tcp-check` keeps the inherited ones), else only the section's own.
pub(super) fn set_check(px: &mut Px, kind: CheckKindOpt, l: &HLine) {
    if !px.http_rules_own {
        px.http_rules.clear();
    }
    let tcp_in_force = matches!(
        px.check,
        Some(CheckOpt {
            kind: CheckKindOpt::Tcp,
            ..
        })
    );
    let keep_tcp = px.tcp_rules_own || (kind == CheckKindOpt::Tcp && tcp_in_force);
    if !keep_tcp {
        px.tcp_rules.clear();
    }
    let opt = CheckOpt {
        kind,
        text: l.text(),
        line: l.line,
    };
    px.own_checks.push(opt.clone());
    px.check = Some(opt);
}

/// Apply one line to a proxy; anything not understood is noted.
pub(super) fn apply_hline(f: &str, kind: &str, px: &mut Px, l: &HLine, notes: &mut Notes) {
    let all = l.text();
    let a1 = l.arg(1).unwrap_or("");
    let is_fe = matches!(kind, "frontend" | "listen");
    let is_be = matches!(kind, "backend" | "listen");
    match l.key() {
        "mode" => px.mode = Some(a1.to_owned()),
        "balance" => px.balance = Some((a1.to_owned(), l.line)),
        "timeout" => {
            let v = l.arg(2).and_then(hap_time);
            if v.is_none() {
                notes.add(f, l.line, &all, "not a time: ignored");
                return;
            }
            match a1 {
                "connect" => px.t_connect = v,
                "client" => px.t_client = v,
                "server" => px.t_server = v,
                "tunnel" => px.t_tunnel = v,
                "client-fin" => px.t_client_fin = v,
                "server-fin" => px.t_server_fin = v,
                "check" => px.t_check = v,
                "queue" | "http-request" | "http-keep-alive" | "tarpit" => {
                    notes.add(f, l.line, &all, "lbd is a TCP proxy without a queue or HTTP parsing: no equivalent")
                }
                _ => notes.add(f, l.line, &all, NO_EQUIVALENT),
            }
        }
        "retries" => match parse_num(l.arg(1), 0, 1000) {
            Some(n) => {
                if n > 10 {
                    notes.add(f, l.line, &all, "lbd retries at most 10 times: wrote 10");
                }
                px.retries = Some(n.min(10) as u32);
            }
            None => notes.add(f, l.line, &all, "not a number: ignored"),
        },
        "maxconn" => match parse_num(l.arg(1), 0, 10_000_000) {
            Some(n) => px.maxconn = Some(n as u32),
            None => notes.add(f, l.line, &all, "not a number from 0 to 10000000: ignored"),
        },
        "default-server" => {
            let mut ignored = Vec::new();
            parse_srv_params(l.words.get(1..).unwrap_or_default(), &mut px.default_server, &mut ignored);
            proxy_notes(f, l.line, "default-server", &mut ignored, notes);
            if !ignored.is_empty() {
                notes.add(f, l.line, &format!("default-server {}", ignored.join(" ")), "not supported by lbd: ignored");
            }
        }
        "option" => match a1 {
            "httpchk" => {
                let rest: Vec<&str> = l.words.iter().skip(2).map(String::as_str).collect();
                let (meth, uri) = match rest.as_slice() {
                    [] => (None, None),
                    [uri] => (None, Some((*uri).to_owned())),
                    [meth, uri, ..] => (Some((*meth).to_owned()), Some((*uri).to_owned())),
                };
                set_check(px, CheckKindOpt::Http { meth, uri }, l);
            }
            "ssl-hello-chk" => set_check(px, CheckKindOpt::SslHello, l),
            "tcp-check" => set_check(px, CheckKindOpt::Tcp, l),
            "redispatch" => {} // lbd retries a failed connect on another server.
            "tcplog" | "httplog" | "dontlognull" | "log-health-checks" | "dontlog-normal" | "logasap" => {
                notes.add(f, l.line, &all, "lbd logs to the journal and counts on its stats page: no log options")
            }
            p if PROTO_CHECKS.iter().any(|(n, _)| *n == p) => {
                set_check(px, CheckKindOpt::Proto(p.to_owned()), l)
            }
            "forwardfor" | "http-server-close" | "httpclose" | "http-keep-alive" | "http-buffer-request" | "http-use-htx" | "forceclose" | "originalto" => {
                notes.add(f, l.line, &all, "HTTP option: lbd proxies TCP and does not touch HTTP")
            }
            _ => notes.add(f, l.line, &all, NO_EQUIVALENT),
        },
        // Settings of the HTTP check, not rules of its sequence.
        "http-check" if matches!(a1, "disable-on-404" | "send-state") => {
            notes.add(f, l.line, &all, NO_EQUIVALENT)
        }
        // Rules (connect, send, expect, comment, set-var...): read once the section's check
        // option is known (see `check_of`).
        "http-check" => {
            if !px.http_rules_own {
                px.http_rules.clear();
                px.http_rules_own = true;
            }
            px.http_rules.push(l.clone());
        }
        "tcp-check" => {
            if !px.tcp_rules_own {
                px.tcp_rules.clear();
                px.tcp_rules_own = true;
            }
            px.tcp_rules.push(l.clone());
        }
        "log" | "log-format" | "log-tag" | "error-log-format" => {
            notes.add(f, l.line, &all, "lbd logs to the journal")
        }
        "bind" if is_fe => map_bind(f, l, px, notes),
        "default_backend" if is_fe => px.default_backend = Some(a1.to_owned()),
        "use_backend" if is_fe => px.use_backends.push((a1.to_owned(), l.line)),
        "stats" if is_fe || kind == "defaults" => match a1 {
            "enable" => px.stats = true,
            "uri" => {
                px.stats = true;
                notes.add(f, l.line, &all, "lbd serves the stats page at / (and /stats.json, /stats.csv, /metrics)");
            }
            "auth" => {
                px.stats = true;
                match l.arg(2).and_then(|a| a.split_once(':')) {
                    Some((u, p)) if px.stats_auth.is_none() => px.stats_auth = Some((u.to_owned(), p.to_owned())),
                    Some(_) => notes.add(f, l.line, "stats auth", "lbd has one stats user: only the first is imported"),
                    None => notes.add(f, l.line, "stats auth", "not user:password: ignored"),
                }
            }
            "refresh" => px.stats_refresh = l.arg(2).and_then(hap_time),
            _ => notes.add(f, l.line, &all, "lbd's stats page is read-only and always shows everything"),
        },
        "server" if is_be => map_server(f, l, px, notes),
        "acl" | "tcp-request" | "http-request" | "http-response" | "tcp-response" | "http-after-response" | "monitor-uri" | "monitor" | "capture" | "redirect" | "errorfile" | "compression" | "unique-id-format" | "unique-id-header" | "cookie" | "stick-table" | "stick" | "hash-type" | "fullconn" | "hash-balance-factor" => {
            notes.add(f, l.line, &all, "L7 or per-connection rules are not supported: lbd forwards every connection of a port to one backend pool")
        }
        _ => notes.add(f, l.line, &all, format!("{kind}: {NO_EQUIVALENT}")),
    }
}

/// `200`, `200,401`, `200-204`: at most 20 codes from 100 to 599.
pub(super) fn parse_status_list(s: &str) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?),
            None => {
                let n = part.parse::<u16>().ok()?;
                (n, n)
            }
        };
        if !(100..=599).contains(&lo)
            || !(lo..=599).contains(&hi)
            || usize::from(hi - lo) + out.len() >= 20
        {
            return None;
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    (!out.is_empty()).then_some(out)
}

pub(super) fn map_bind(f: &str, l: &HLine, px: &mut Px, notes: &mut Notes) {
    let all = l.text();
    let Some(spec) = l.arg(1) else {
        notes.add(f, l.line, &all, "bind without an address: ignored");
        return;
    };
    for part in spec.split(',') {
        let part = part
            .strip_prefix("ipv4@")
            .or_else(|| part.strip_prefix("ipv6@"))
            .unwrap_or(part);
        let Some((host, port)) = part.rsplit_once(':') else {
            notes.add(
                f,
                l.line,
                part,
                "not ADDRESS:PORT (sockets and file descriptors are not supported): ignored",
            );
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            notes.add(
                f,
                l.line,
                part,
                "not one port (port ranges are not supported): ignored",
            );
            continue;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = match host {
            "" | "*" | "0.0.0.0" | "::" | ":" => None,
            h => match h.parse::<IpAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    notes.add(f, l.line, part, "not an IP address: ignored");
                    continue;
                }
            },
        };
        px.binds.push((addr, port, l.line));
    }
    let opts: Vec<&str> = l.words.iter().skip(2).map(String::as_str).collect();
    if opts.iter().any(|o| *o == "ssl" || *o == "crt") {
        notes.add(f, l.line, &all, "TLS termination is not supported (lbd is an L4 proxy): the port is imported as plain TCP pass-through");
    }
    if opts.contains(&"accept-proxy") {
        px.accept_proxy = Some(l.line);
    }
    if opts
        .iter()
        .any(|o| !matches!(*o, "v4v6" | "v6only" | "accept-proxy" | "ssl" | "crt"))
        && !opts.iter().any(|o| *o == "ssl" || *o == "crt")
    {
        notes.add(
            f,
            l.line,
            &all,
            "bind options are not supported: only the port is used",
        );
    }
}

/// The PROXY protocol parts of a server line lbd cannot do, out of `ignored` into notes of
/// their own (the header itself is sent: see `services::proxy_of`).
fn proxy_notes(f: &str, line: usize, what: &str, ignored: &mut Vec<String>, notes: &mut Notes) {
    ignored.retain(|i| {
        let reason = if i.starts_with("send-proxy-v2-ssl") {
            "sent as send-proxy-v2 (proxy_protocol = \"v2\") without the TLS TLVs: lbd terminates no TLS, so it has no TLS session to describe"
        } else if i.starts_with("proxy-v2-options ") {
            "lbd adds only the crc32c and unique-id TLVs (proxy_protocol_tlvs): this one is not sent"
        } else {
            return true;
        };
        notes.add(f, line, &format!("{what} {i}"), reason);
        false
    });
}

pub(super) fn map_server(f: &str, l: &HLine, px: &mut Px, notes: &mut Notes) {
    let all = l.text();
    let (Some(name), Some(addr)) = (l.arg(1), l.arg(2)) else {
        notes.add(
            f,
            l.line,
            &all,
            "server without a name and address: ignored",
        );
        return;
    };
    let mut ignored = Vec::new();
    let params = merge_srv(
        &px.default_server,
        l.words.get(3..).unwrap_or_default(),
        &mut ignored,
    );
    proxy_notes(f, l.line, &format!("server {name}"), &mut ignored, notes);
    if !ignored.is_empty() {
        let reason = if ignored.iter().any(|i| i == "ssl") {
            "not supported by lbd (an L4 proxy: `ssl` re-encryption, per-server limits and check ports are not available): ignored, except that `ssl` makes the check TLS, as in HAProxy"
        } else {
            "not supported by lbd: ignored"
        };
        notes.add(
            f,
            l.line,
            &format!("server {name} {}", ignored.join(" ")),
            reason,
        );
    }
    if params.disabled {
        notes.add(
            f,
            l.line,
            &format!("server {name} disabled"),
            "a disabled server is not imported (use `lbctl disable` at run time)",
        );
        return;
    }
    let (host, port) = split_host_port(addr);
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                notes.add(
                    f,
                    l.line,
                    &format!("server {name} {addr}"),
                    "port offsets and ranges are not supported: server ignored",
                );
                return;
            }
        },
    };
    match host.parse::<IpAddr>() {
        Ok(a) => px.servers.push(HServer {
            name: name.to_owned(),
            addr: a,
            port,
            params,
            line: l.line,
        }),
        Err(_) => notes.add(f, l.line, &format!("server {name} {addr}"), "cluster.toml needs IP addresses (lbd does not resolve names): server ignored; write it as IP:PORT"),
    }
}

/// `1.2.3.4:80`, `1.2.3.4`, `[fd00::1]:80`, `fd00::1`, `host:80`.
pub(super) fn split_host_port(s: &str) -> (&str, Option<&str>) {
    let s = s
        .strip_prefix("ipv4@")
        .or_else(|| s.strip_prefix("ipv6@"))
        .unwrap_or(s);
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (rest, None),
        };
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    }
}

/// A proxy with its check, ready to become services.
pub(super) struct HProxy {
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) line: usize,
    pub(super) px: Px,
}

pub(super) fn map_haproxy(
    src: &Source,
    notes: &mut Notes,
) -> (Vec<HProxy>, BTreeMap<String, HProxy>, Option<u32>) {
    let f = src.label.as_str();
    let sections = parse_haproxy(src, notes);
    let mut defaults = Px::default();
    let mut named: BTreeMap<String, Px> = BTreeMap::new();
    let mut fronts: Vec<HProxy> = Vec::new();
    let mut backs: BTreeMap<String, HProxy> = BTreeMap::new();
    let mut global_maxconn = None;
    for s in sections {
        match s.kind.as_str() {
            "global" => {
                for l in &s.body {
                    match l.key() {
                        "maxconn" => match parse_num(l.arg(1), 1, 10_000_000) {
                            Some(n) => global_maxconn = Some(n as u32),
                            None => notes.add(f, l.line, &l.text(), "not a number from 1 to 10000000: ignored"),
                        },
                        "daemon" | "user" | "group" | "uid" | "gid" | "chroot" | "pidfile" | "master-worker" | "nbproc" | "nbthread" | "cpu-map" | "ulimit-n" | "node" => {
                            notes.add(f, l.line, &l.text(), "not needed: systemd runs lbd (user k3s-ha, sandboxed); lbd uses every core")
                        }
                        "log" | "log-send-hostname" | "log-tag" => notes.add(f, l.line, &l.text(), "lbd logs to the journal"),
                        "stats" => notes.add(f, l.line, &l.text(), "lbd's runtime control is /run/k3s-ha/lbd.sock, used by lbctl"),
                        k if k.starts_with("ssl-") || k.starts_with("tune.") || k == "ca-base" || k == "crt-base" => {
                            notes.add(f, l.line, &l.text(), "lbd does not terminate TLS and has no tunables here")
                        }
                        _ => notes.add(f, l.line, &l.text(), format!("global: {NO_EQUIVALENT}")),
                    }
                }
            }
            "defaults" => {
                let mut px = match s.from.as_ref().and_then(|n| named.get(n)) {
                    Some(p) => p.inherited(),
                    None => Px::default(),
                };
                for l in &s.body {
                    apply_hline(f, "defaults", &mut px, l, notes);
                }
                if px.own_checks.len() > 1 {
                    let all: Vec<String> = px
                        .own_checks
                        .iter()
                        .map(|o| format!("{} (line {})", o.text, o.line))
                        .collect();
                    let last = px.own_checks.last().map_or(s.line, |o| o.line);
                    let kept = px.check.as_ref().map_or(String::new(), |o| o.text.clone());
                    notes.add(f, last, "defaults: several check options", format!("{}: HAProxy keeps only the last one, `{kept}`, for the proxies below that set none; the import does the same", all.join(", ")));
                }
                if let Some(n) = &s.name {
                    if n != "from" {
                        named.insert(n.clone(), px.clone());
                    }
                }
                defaults = px;
            }
            "frontend" | "backend" | "listen" => {
                let mut px = match s.from.as_ref().and_then(|n| named.get(n)) {
                    Some(p) => p.inherited(),
                    None => defaults.inherited(),
                };
                // Server lines take default-server from above them only; collect in order.
                for l in &s.body {
                    apply_hline(f, &s.kind, &mut px, l, notes);
                }
                let name = s.name.clone().unwrap_or_default();
                let hp = HProxy {
                    kind: s.kind.clone(),
                    name: name.clone(),
                    line: s.line,
                    px,
                };
                if s.kind == "backend" {
                    if backs.insert(name.clone(), hp).is_some() {
                        notes.add(
                            f,
                            s.line,
                            &format!("backend {name}"),
                            "a second backend of this name replaces the first",
                        );
                    }
                } else {
                    fronts.push(hp);
                }
            }
            other => notes.add(
                f,
                s.line,
                &format!("{other} {}", s.name.clone().unwrap_or_default()),
                "section not supported: not imported",
            ),
        }
    }
    (fronts, backs, global_maxconn)
}
