//! `lbctl import`: keepalived.conf and haproxy.cfg in, one cluster.toml out.
//!
//! ```text
//!  keepalived.conf (one per node) --tokens--> blocks --+
//!                                                      +--> Draft --render--> cluster.toml text
//!  haproxy.cfg -------------------tokens--> sections --+        |                  |
//!                                                        notes (file, line, why)   +--> common::config::parse
//! ```
//!
//! Both parsers are written by hand (both formats are line and block based) and never
//! fail: what they cannot read becomes a [`Note`]. Every setting that has no cluster.toml
//! equivalent, or whose meaning changes on the way, is listed as a note with its file and
//! line; nothing is dropped silently. The text is validated with
//! [`common::config::parse`] before it is returned, so `Ok` is always a file the daemons
//! accept.
//!
//! keepalived.conf is per node (its `priority`, its `unicast_src_ip`), so several files may
//! be given, one per node: each file's priority goes to the node it belongs to, and the
//! first file's VRRP instance supplies the shared settings (VRID, VIP, interval, version).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use common::config::format_duration;

/// One input file: a name for messages and its text.
#[derive(Debug, Clone)]
pub struct Source {
    pub label: String,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// keepalived.conf files, one per node (at least the first is used for shared settings).
    pub keepalived: Vec<Source>,
    pub haproxy: Option<Source>,
    /// `[cluster] name`; neither input has one.
    pub name: Option<String>,
    /// `[cluster] domain`; neither input has one.
    pub domain: Option<String>,
}

/// A setting that could not be mapped, or whose meaning changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    pub file: String,
    pub line: usize,
    pub setting: String,
    pub reason: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}: {}", self.file, self.setting, self.reason)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.setting, self.reason
            )
        }
    }
}

#[derive(Debug)]
pub struct Imported {
    /// The cluster.toml text (notes included at its end as comments).
    pub toml: String,
    pub notes: Vec<Note>,
    pub cluster: common::config::Cluster,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("nothing to import: give --keepalived FILE and/or --haproxy FILE")]
    NoInput,
    #[error("no virtual IP: no vrrp_instance with a virtual_ipaddress in {files}")]
    NoVip { files: String },
    #[error("no k3s server addresses: haproxy.cfg has no backend of IP:6443 servers and keepalived.conf no unicast_src_ip/unicast_peer; write [[nodes]] by hand")]
    NoServers,
    #[error(
        "the converted cluster.toml does not validate: {error}\n--- converted text ---\n{toml}"
    )]
    Invalid {
        error: String,
        toml: String,
        notes: Vec<Note>,
    },
}

/// Render notes as the plain list printed to the operator.
pub fn render_notes(notes: &[Note]) -> String {
    let mut out = String::new();
    if notes.is_empty() {
        out.push_str("every setting was mapped\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{} setting(s) not mapped or changed in meaning:",
        notes.len()
    );
    for n in notes {
        let _ = writeln!(out, "  {n}");
    }
    out
}

/// Deepest keepalived block nesting kept; deeper blocks are skipped (and noted).
const MAX_DEPTH: usize = 8;
/// Longest input considered (bytes); more is noted and ignored.
const MAX_INPUT: usize = 4 << 20;

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
}

/// Split one line into words: `"..."`/`'...'` quote, `\` escapes one character, a comment
/// character starts a comment (at the start of a word; anywhere for HAProxy), and with
/// `braces` an unquoted `{` or `}` is a token of its own.
fn tokenize(line: &str, comment: &[char], comment_anywhere: bool, braces: bool) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else if c == '\\' && q == '"' {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        if c.is_whitespace() {
            if in_word {
                out.push(Tok::Word(std::mem::take(&mut cur)));
                in_word = false;
            }
        } else if comment.contains(&c) && (comment_anywhere || !in_word) {
            break;
        } else if braces && (c == '{' || c == '}') {
            if in_word {
                out.push(Tok::Word(std::mem::take(&mut cur)));
                in_word = false;
            }
            out.push(if c == '{' { Tok::Open } else { Tok::Close });
        } else if c == '"' || c == '\'' {
            quote = Some(c);
            in_word = true;
        } else if c == '\\' {
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            in_word = true;
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word {
        out.push(Tok::Word(cur));
    }
    out
}

fn capped(text: &str) -> (&str, bool) {
    if text.len() <= MAX_INPUT {
        return (text, false);
    }
    let mut end = MAX_INPUT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

// ---------------------------------------------------------------------------------------
// keepalived.conf

/// One statement: the words on its line and, if it opened one, its `{ }` block.
#[derive(Debug, Clone, Default)]
struct KStmt {
    words: Vec<String>,
    line: usize,
    has_block: bool,
    block: Vec<KStmt>,
}

impl KStmt {
    fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    fn rest(&self) -> String {
        self.words.get(1..).unwrap_or_default().join(" ")
    }
}

/// keepalived.conf into statements; syntax problems become notes.
fn parse_keepalived(src: &Source, notes: &mut Notes) -> Vec<KStmt> {
    let (text, cut) = capped(&src.text);
    if cut {
        notes.add(
            &src.label,
            0,
            "(file)",
            "longer than 4 MiB: the rest is ignored",
        );
    }
    // stack[0] is the top level; each open block pushes its statements.
    let mut stack: Vec<(KStmt, Vec<KStmt>)> = Vec::new();
    let mut top: Vec<KStmt> = Vec::new();
    let mut skipped = 0usize;
    fn current<'a>(
        top: &'a mut Vec<KStmt>,
        stack: &'a mut [(KStmt, Vec<KStmt>)],
    ) -> &'a mut Vec<KStmt> {
        match stack.last_mut() {
            Some((_, v)) => v,
            None => top,
        }
    }
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let mut words: Vec<String> = Vec::new();
        for tok in tokenize(line, &['#', '!'], false, true) {
            match tok {
                Tok::Word(w) => words.push(w),
                Tok::Open => {
                    if skipped > 0 || stack.len() >= MAX_DEPTH {
                        if skipped == 0 {
                            notes.add(
                                &src.label,
                                lineno,
                                "{",
                                "blocks nested deeper than 8 levels are ignored",
                            );
                        }
                        skipped += 1;
                        words.clear();
                        continue;
                    }
                    let cur = current(&mut top, &mut stack);
                    let head = if !words.is_empty() {
                        KStmt {
                            words: std::mem::take(&mut words),
                            line: lineno,
                            has_block: true,
                            block: Vec::new(),
                        }
                    } else if cur.last().is_some_and(|s| !s.has_block) {
                        // `name` on one line, `{` on the next.
                        let mut s = cur.pop().unwrap_or_default();
                        s.has_block = true;
                        s
                    } else {
                        KStmt {
                            line: lineno,
                            has_block: true,
                            ..KStmt::default()
                        }
                    };
                    stack.push((head, Vec::new()));
                }
                Tok::Close => {
                    if skipped > 0 {
                        skipped -= 1;
                        words.clear();
                        continue;
                    }
                    if !words.is_empty() {
                        current(&mut top, &mut stack).push(KStmt {
                            words: std::mem::take(&mut words),
                            line: lineno,
                            ..KStmt::default()
                        });
                    }
                    match stack.pop() {
                        Some((mut head, block)) => {
                            head.block = block;
                            current(&mut top, &mut stack).push(head);
                        }
                        None => notes.add(&src.label, lineno, "}", "no block to close: ignored"),
                    }
                }
            }
        }
        if !words.is_empty() && skipped == 0 {
            current(&mut top, &mut stack).push(KStmt {
                words,
                line: lineno,
                ..KStmt::default()
            });
        }
    }
    while let Some((mut head, block)) = stack.pop() {
        notes.add(
            &src.label,
            head.line,
            head.key(),
            "block not closed before the end of the file: read up to the end",
        );
        head.block = block;
        current(&mut top, &mut stack).push(head);
    }
    top
}

// ---------------------------------------------------------------------------------------
// haproxy.cfg

#[derive(Debug, Clone)]
struct HLine {
    words: Vec<String>,
    line: usize,
}

impl HLine {
    fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    fn text(&self) -> String {
        self.words.join(" ")
    }
}

#[derive(Debug, Clone)]
struct HSection {
    kind: String,
    name: Option<String>,
    /// `defaults NAME` referenced with `from NAME`.
    from: Option<String>,
    line: usize,
    body: Vec<HLine>,
}

const SECTIONS: &[&str] = &[
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

fn parse_haproxy(src: &Source, notes: &mut Notes) -> Vec<HSection> {
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
fn hap_time(s: &str) -> Option<Duration> {
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

/// keepalived seconds: `1`, `0.5`.
fn k_secs(s: &str) -> Option<Duration> {
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() || !(0.0..=1_000_000.0).contains(&v) {
        return None;
    }
    Some(Duration::from_millis((v * 1000.0).round() as u64))
}

// ---------------------------------------------------------------------------------------
// Notes

#[derive(Debug, Default)]
struct Notes(Vec<Note>);

impl Notes {
    fn add(&mut self, file: &str, line: usize, setting: &str, reason: impl Into<String>) {
        let mut setting: String = setting.chars().take(120).collect();
        if setting.is_empty() {
            setting = "(empty)".into();
        }
        self.0.push(Note {
            file: file.to_owned(),
            line,
            setting,
            reason: reason.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------
// The draft cluster

#[derive(Debug, Clone)]
struct DraftNode {
    name: String,
    address: IpAddr,
    priority: Option<u8>,
}

#[derive(Debug, Clone, Default)]
struct DraftScript {
    name: String,
    command: String,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
    /// `None`: fault.
    weight: Option<i16>,
}

#[derive(Debug, Clone, Default)]
struct DraftVrrp {
    vrid: Option<u8>,
    version: Option<u8>,
    interval: Option<Duration>,
    preempt: Option<bool>,
    preempt_delay: Option<Duration>,
    accept_mode: Option<bool>,
    password: Option<String>,
    unicast: bool,
    garp_repeat: Option<u32>,
    garp_interval: Option<Duration>,
    garp_refresh: Option<Duration>,
    virtual_mac: bool,
    notify: Option<String>,
    track_lbd: Option<Option<i16>>,
    track_link: Option<bool>,
    scripts: Vec<DraftScript>,
}

#[derive(Debug, Clone)]
enum DraftBackends {
    Servers(u16),
    List(Vec<(String, u32, bool)>),
}

#[derive(Debug, Clone, Default)]
struct DraftCheck {
    kind: Option<&'static str>,
    path: Option<String>,
    expect: Option<Vec<u16>>,
    interval: Option<Duration>,
    fast_interval: Option<Duration>,
    timeout: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
}

#[derive(Debug, Clone)]
struct DraftService {
    name: String,
    listen: u16,
    backends: DraftBackends,
    balance: Option<&'static str>,
    check: DraftCheck,
    connect: Option<Duration>,
    idle: Option<Duration>,
    tunnel: Option<Duration>,
    half_close: Option<Duration>,
    retries: Option<u32>,
    max_connections: Option<u32>,
}

#[derive(Debug, Default)]
struct DraftStats {
    listen: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    refresh: Option<Duration>,
}

#[derive(Debug, Default)]
struct Draft {
    vip4: Option<(Ipv4Addr, u8)>,
    vip6: Option<(Ipv6Addr, u8)>,
    interface: Option<String>,
    vrrp: DraftVrrp,
    nodes: Vec<DraftNode>,
    services: Vec<DraftService>,
    stats: DraftStats,
    max_connections: Option<u32>,
}

// ---------------------------------------------------------------------------------------
// keepalived.conf -> draft

const NO_EQUIVALENT: &str = "no cluster.toml equivalent: not imported";

/// What one keepalived.conf says about its own node.
#[derive(Debug, Default)]
struct KFile {
    label: String,
    src_ip: Option<IpAddr>,
    router_id: Option<String>,
    /// (priority after positive track weights, line)
    priority: Option<(u8, usize)>,
    state: Option<String>,
    peers: Vec<IpAddr>,
    // Shared settings, to compare files against the first.
    vrid: Option<u8>,
    vip4: Option<Ipv4Addr>,
    vip6: Option<Ipv6Addr>,
    interval: Option<Duration>,
    version: u8,
    interface: Option<String>,
    /// Explicit prefix of the first IPv4 VIP, if written.
    vip4_prefix: Option<u8>,
    vip6_prefix: Option<u8>,
    instance_line: usize,
}

fn map_keepalived(src: &Source, draft: &mut Draft, first: bool, notes: &mut Notes) -> KFile {
    let stmts = parse_keepalived(src, notes);
    let f = src.label.as_str();
    let mut out = KFile {
        label: f.to_owned(),
        version: 2,
        ..KFile::default()
    };
    let mut v = DraftVrrp::default();
    let mut global_version: Option<u8> = None;
    let mut scripts: BTreeMap<String, (DraftScript, usize)> = BTreeMap::new();
    let mut instance: Option<&KStmt> = None;
    let mut extra: Vec<&KStmt> = Vec::new();
    for s in &stmts {
        match s.key() {
            "global_defs" => {
                for g in &s.block {
                    match g.key() {
                        "router_id" => out.router_id = g.arg(1).map(str::to_owned),
                        "vrrp_version" => match g.arg(1) {
                            Some("2") => global_version = Some(2),
                            Some("3") => global_version = Some(3),
                            _ => notes.add(f, g.line, &g.words.join(" "), "not 2 or 3: ignored"),
                        },
                        "vrrp_garp_master_repeat" => {
                            v.garp_repeat = parse_num(g.arg(1), 0, 100).map(|n| n as u32)
                        }
                        "vrrp_garp_master_refresh" => v.garp_refresh = g.arg(1).and_then(k_secs),
                        "vrrp_garp_interval" => v.garp_interval = g.arg(1).and_then(k_secs),
                        "vrrp_check_unicast_src" => {} // = vrrp.only_cluster_nodes (the default)
                        "vrrp_strict" => notes.add(f, g.line, g.key(), "vrrpd always applies RFC 5798's receive checks; strict mode's other effects (no accept mode, no scripts, no authentication) are not copied"),
                        "enable_script_security" | "script_user" => notes.add(f, g.line, g.key(), "track and notify scripts run as the k3s-ha user inside vrrpd.service's sandbox"),
                        "notification_email" | "notification_email_from" | "smtp_server" | "smtp_connect_timeout" => notes.add(f, g.line, g.key(), "vrrpd sends no e-mail: use vrrp.notify, or alert on lbd_vrrp_master"),
                        "" => {}
                        k => notes.add(f, g.line, k, format!("global_defs: {NO_EQUIVALENT}")),
                    }
                }
            }
            "vrrp_script" => {
                let name = s.arg(1).unwrap_or("").to_owned();
                let mut d = DraftScript {
                    name: name.clone(),
                    ..DraftScript::default()
                };
                for k in &s.block {
                    match k.key() {
                        "script" => d.command = k.rest(),
                        "interval" => d.interval = k.arg(1).and_then(k_secs),
                        "timeout" => d.timeout = k.arg(1).and_then(k_secs),
                        "rise" => d.rise = parse_num(k.arg(1), 1, 100).map(|n| n as u32),
                        "fall" => d.fall = parse_num(k.arg(1), 1, 100).map(|n| n as u32),
                        "weight" => {
                            d.weight = parse_num(k.arg(1), -254, 254).map(|n| n as i16);
                            if k.arg(2) == Some("reverse") {
                                notes.add(f, k.line, &k.words.join(" "), "reverse weights are not supported: mapped as a plain weight");
                            }
                        }
                        "user" => notes.add(f, k.line, &k.words.join(" "), "scripts run as the k3s-ha user"),
                        "init_fail" => notes.add(f, k.line, k.key(), "vrrpd counts a script as failing until it has succeeded rise times"),
                        "" => {}
                        other => notes.add(f, k.line, other, format!("vrrp_script {name}: {NO_EQUIVALENT}")),
                    }
                }
                if d.weight == Some(0) {
                    d.weight = None;
                }
                scripts.insert(name, (d, s.line));
            }
            "vrrp_instance" => {
                if instance.is_none() {
                    instance = Some(s);
                } else {
                    extra.push(s);
                }
            }
            "include" => notes.add(f, s.line, &s.words.join(" "), "include is not followed: pass the included file's settings with another --keepalived"),
            "virtual_server" | "virtual_server_group" => notes.add(f, s.line, &s.words.join(" "), "LVS virtual servers are not imported: lbd proxies the services written in haproxy.cfg; add [[services]] for these by hand"),
            "vrrp_sync_group" => notes.add(f, s.line, &s.words.join(" "), "sync groups are not needed with one instance: not imported"),
            "" => {}
            k => notes.add(f, s.line, k, NO_EQUIVALENT),
        }
    }
    let Some(inst) = instance else {
        notes.add(f, 0, "vrrp_instance", "none in this file");
        return out;
    };
    out.instance_line = inst.line;
    let mut tracked: Vec<(String, Option<i16>, usize)> = Vec::new();
    let mut priority: Option<(i64, usize)> = None;
    let mut inst_version: Option<u8> = None;
    let mut auth: Option<(String, Option<String>, usize)> = None;
    for k in &inst.block {
        let line = k.line;
        let all = k.words.join(" ");
        match k.key() {
            "state" => {
                out.state = k.arg(1).map(str::to_owned);
                notes.add(f, line, &all, "not needed: vrrpd starts as backup and the highest priority wins (keepalived's state only shapes start-up)");
            }
            "interface" => out.interface = k.arg(1).map(str::to_owned),
            "virtual_router_id" => match parse_num(k.arg(1), 1, 255) {
                Some(n) => out.vrid = Some(n as u8),
                None => notes.add(f, line, &all, "not a VRID from 1 to 255: vrrp.vrid left at its default"),
            },
            "priority" => match parse_num(k.arg(1), 1, 255) {
                Some(n) => priority = Some((n, line)),
                None => notes.add(f, line, &all, "not a priority from 1 to 255: ignored"),
            },
            "advert_int" => match k.arg(1).and_then(k_secs) {
                Some(d) => out.interval = Some(d),
                None => notes.add(f, line, &all, "not a number of seconds: ignored"),
            },
            "nopreempt" => v.preempt = Some(false),
            "preempt" => v.preempt = Some(true),
            "preempt_delay" => match k.arg(1).and_then(k_secs) {
                Some(d) if d <= Duration::from_secs(1000) => v.preempt_delay = Some(d),
                _ => notes.add(f, line, &all, "not 0 to 1000 seconds: ignored"),
            },
            "virtual_ipaddress" => {
                for e in &k.block {
                    map_vip_entry(f, e, &mut out, draft, first, notes);
                }
            }
            "virtual_ipaddress_excluded" => notes.add(f, line, k.key(), "excluded addresses are not imported: vrrpd holds only vip.address and vip.address6"),
            "unicast_src_ip" => out.src_ip = k.arg(1).and_then(|a| a.parse().ok()),
            "mcast_src_ip" => {
                if out.src_ip.is_none() {
                    out.src_ip = k.arg(1).and_then(|a| a.parse().ok());
                }
                notes.add(f, line, &all, "vrrpd sends from the node's address (nodes[].address); used to tell which node this file is");
            }
            "unicast_peer" => {
                v.unicast = true;
                for e in &k.block {
                    match e.key().parse::<IpAddr>() {
                        Ok(a) => out.peers.push(a),
                        Err(_) => notes.add(f, e.line, &e.words.join(" "), "not an IP address: peer ignored"),
                    }
                    if e.words.len() > 1 {
                        notes.add(f, e.line, &e.words.join(" "), "per-peer options are not supported: only the address is used");
                    }
                }
            }
            "authentication" => {
                let mut ty = String::new();
                let mut pass = None;
                for a in &k.block {
                    match a.key() {
                        "auth_type" => ty = a.arg(1).unwrap_or("").to_ascii_uppercase(),
                        "auth_pass" => pass = a.arg(1).map(str::to_owned),
                        "" => {}
                        other => notes.add(f, a.line, other, NO_EQUIVALENT),
                    }
                }
                auth = Some((ty, pass, line));
            }
            "track_script" => {
                for e in &k.block {
                    let w = match (e.arg(1), e.arg(2)) {
                        (Some("weight"), Some(n)) => parse_num(Some(n), -254, 254).map(|n| n as i16),
                        _ => None,
                    };
                    if e.words.len() > 1 && w.is_none() {
                        notes.add(f, e.line, &e.words.join(" "), "only `weight N` is understood here: ignored");
                    }
                    tracked.push((e.key().to_owned(), w, e.line));
                }
            }
            "track_interface" => {
                for e in &k.block {
                    let is_vip_if = out.interface.as_deref() == Some(e.key());
                    if !is_vip_if || e.words.len() > 1 {
                        notes.add(f, e.line, &e.words.join(" "), "vrrpd tracks the link of the VIP interface only (vrrp.track.link, a fault when down): other interfaces and weights are not imported");
                    }
                }
                v.track_link = Some(true);
            }
            "dont_track_primary" => v.track_link = Some(false),
            "notify" => {
                v.notify = Some(k.rest());
                notes.add(f, line, &all, "mapped to vrrp.notify, but vrrpd passes only the new state (MASTER, BACKUP, FAULT) as the last argument, where keepalived passes type, name, state and priority");
            }
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify_deleted" | "notify_master_rx_lower_pri" => notes.add(f, line, &all, "vrrpd runs one vrrp.notify command with the new state as its last argument: merge these into one script and set vrrp.notify"),
            "garp_master_repeat" => v.garp_repeat = parse_num(k.arg(1), 0, 100).map(|n| n as u32),
            "garp_master_refresh" => v.garp_refresh = k.arg(1).and_then(k_secs),
            "garp_interval" => v.garp_interval = k.arg(1).and_then(k_secs),
            "garp_master_delay" | "garp_master_refresh_repeat" | "gna_interval" | "garp_lower_prio_delay" | "garp_lower_prio_repeat" => notes.add(f, line, &all, "vrrpd announces garp_repeat times, garp_interval apart, then every garp_refresh: no second burst"),
            "use_vmac" => {
                v.virtual_mac = true;
                if k.words.len() > 1 {
                    notes.add(f, line, &all, "the macvlan name is chosen by vrrpd");
                }
            }
            "vmac_xmit_base" => notes.add(f, line, k.key(), "vrrpd sends adverts from the virtual MAC interface"),
            "accept" => v.accept_mode = Some(true),
            "no_accept" => {
                v.accept_mode = Some(false);
                notes.add(f, line, k.key(), "vrrpd then answers ARP / ND for the VIP but does not add it: nothing on the node, lbd included, accepts traffic to the VIP; drop accept_mode = false if lbd serves on it");
            }
            "version" => match k.arg(1) {
                Some("2") => inst_version = Some(2),
                Some("3") => inst_version = Some(3),
                _ => notes.add(f, line, &all, "not 2 or 3: ignored"),
            },
            "native_ipv6" => notes.add(f, line, k.key(), "an IPv6 VIP goes in vip.address6; vrrpd runs VRRPv3 for it"),
            "debug" => notes.add(f, line, &all, "use RUST_LOG=debug in the unit's environment"),
            "smtp_alert" => notes.add(f, line, k.key(), "vrrpd sends no e-mail: use vrrp.notify"),
            "track_process" | "track_file" | "track_bfd" => notes.add(f, line, k.key(), "write a vrrp.track.script that checks the same thing"),
            "" => {}
            other => notes.add(f, line, other, format!("vrrp_instance: {NO_EQUIVALENT}")),
        }
    }
    out.version = match (inst_version, global_version) {
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => {
            if first {
                notes.add(f, inst.line, "vrrp_version", "not set, so keepalived speaks VRRPv2: wrote vrrp.version = 2 (vrrpd's own default is 3)");
            }
            2
        }
    };
    match auth {
        None => {}
        Some((_, _, line)) if out.version == 3 => notes.add(f, line, "authentication", "ignored: VRRPv3 has no authentication (keepalived ignores it too)"),
        Some((ty, Some(pass), line)) if ty == "PASS" => {
            if pass.is_empty() {
                notes.add(f, line, "auth_pass", "empty: ignored");
            } else {
                let mut end = pass.len().min(8);
                while !pass.is_char_boundary(end) {
                    end -= 1;
                }
                if end < pass.len() {
                    notes.add(f, line, "auth_pass", "longer than 8 bytes: keepalived sends only the first 8, and so does vrrpd (truncated)");
                }
                v.password = Some(pass[..end].to_owned());
            }
        }
        Some((ty, _, line)) if ty == "AH" => notes.add(f, line, "auth_type AH", "IPsec AH is not supported by vrrpd: vrrpd cannot join this cluster while keepalived uses AH; switch keepalived to PASS (or VRRPv3) first"),
        Some((ty, _, line)) => notes.add(f, line, &format!("auth_type {ty}"), "not PASS: ignored"),
    }
    // Track scripts: keepalived weights map onto vrrpd effects (negative: subtracted while
    // failing; positive: keepalived adds it while succeeding = a higher base priority and
    // the same drop while failing; none or 0: fault).
    let mut bump: i64 = 0;
    for (name, w_override, line) in tracked {
        let Some((mut d, _)) = scripts.get(&name).cloned() else {
            notes.add(
                f,
                line,
                &name,
                "track_script names no vrrp_script in this file: ignored",
            );
            continue;
        };
        if w_override.is_some() {
            d.weight = w_override.filter(|&w| w != 0);
        }
        let effect = match d.weight {
            Some(w) if w > 0 => {
                bump += i64::from(w);
                Some(-w)
            }
            other => other,
        };
        let effect = effect.map(|w| w.clamp(-253, 253));
        if d.command.contains("haproxy") {
            v.track_lbd = Some(effect);
            notes.add(f, line, &name, "checks HAProxy, which lbd replaces: mapped to vrrp.track.lbd (lbd answering, and a healthy backend for the API service) with the same effect");
            continue;
        }
        if d.command.trim().is_empty() {
            notes.add(f, line, &name, "vrrp_script without a script: ignored");
            continue;
        }
        d.weight = effect;
        // keepalived's defaults, written out so the behaviour stays the same.
        d.interval = d.interval.or(Some(Duration::from_secs(1)));
        d.rise = d.rise.or(Some(1));
        d.fall = d.fall.or(Some(1));
        v.scripts.push(d);
    }
    let used: BTreeSet<String> = v
        .scripts
        .iter()
        .map(|s| s.name.clone())
        .chain(
            inst.block
                .iter()
                .filter(|k| k.key() == "track_script")
                .flat_map(|k| k.block.iter().map(|e| e.key().to_owned())),
        )
        .collect();
    for (name, (_, line)) in &scripts {
        if !used.contains(name) {
            notes.add(
                f,
                *line,
                &format!("vrrp_script {name}"),
                "not tracked by the imported instance: not imported",
            );
        }
    }
    if let Some((p, line)) = priority {
        let mut p = p + bump;
        if bump > 0 {
            notes.add(f, line, "priority", format!("raised by {bump}, the positive track_script weights keepalived adds while the scripts succeed (vrrpd subtracts them while they fail)"));
        }
        if p > 254 {
            notes.add(
                f,
                line,
                "priority",
                format!("{p} is above 254 (255 is reserved for the address owner): wrote 254"),
            );
            p = 254;
        }
        out.priority = Some((p.clamp(1, 254) as u8, line));
    }
    // keepalived keeps IPv6 VIPs in an instance of their own (it cannot mix families);
    // vrrpd runs both families from one cluster.toml: such an instance becomes vip.address6.
    for s in extra {
        let name = format!("vrrp_instance {}", s.arg(1).unwrap_or(""));
        let entries: Vec<&KStmt> = s
            .block
            .iter()
            .filter(|k| k.key() == "virtual_ipaddress")
            .flat_map(|k| k.block.iter())
            .collect();
        let v6: Vec<(Ipv6Addr, Option<u8>)> = entries
            .iter()
            .filter_map(|e| {
                let (a, p) = match e.key().split_once('/') {
                    Some((a, p)) => (a, p.parse::<u8>().ok().filter(|&p| p <= 128)),
                    None => (e.key(), None),
                };
                a.parse::<Ipv6Addr>().ok().map(|a| (a, p))
            })
            .collect();
        match v6.first() {
            Some(&(a, p)) if v6.len() == entries.len() && out.vip6.is_none() => {
                out.vip6 = Some(a);
                if first {
                    draft.vip6 = Some((a, p.unwrap_or(255)));
                }
                notes.add(f, s.line, &name, "IPv6 VIPs only: merged as vip.address6; vrrpd runs the IPv6 VIP with the first instance's VRID, priority and settings");
                if v6.len() > 1 {
                    notes.add(
                        f,
                        s.line,
                        &name,
                        "k3s-ha holds one IPv6 VIP: only the first is imported",
                    );
                }
            }
            _ => notes.add(
                f,
                s.line,
                &name,
                "k3s-ha runs one VRRP instance per cluster (plus its IPv6 VIP): not imported",
            ),
        }
    }
    if first {
        v.vrid = out.vrid;
        v.version = Some(out.version);
        v.interval = out.interval;
        draft.vrrp = v;
        draft.interface = out.interface.clone();
    }
    out
}

fn map_vip_entry(
    f: &str,
    e: &KStmt,
    out: &mut KFile,
    draft: &mut Draft,
    first: bool,
    notes: &mut Notes,
) {
    let spec = e.key();
    let (addr, prefix) = match spec.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().ok()),
        None => (spec, None),
    };
    let all = e.words.join(" ");
    let mut rest = e.words.iter().skip(1);
    while let Some(w) = rest.next() {
        if w == "dev" {
            let dev = rest.next().map(String::as_str);
            if dev.is_some() && dev != out.interface.as_deref() {
                notes.add(f, e.line, &all, "VIP on another interface than the instance's: vrrpd holds the VIP on vip.interface");
            }
        } else {
            notes.add(
                f,
                e.line,
                &all,
                format!("`{w}` ignored: only the address and prefix are used"),
            );
            break;
        }
    }
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => {
            if out.vip4.is_none() {
                out.vip4 = Some(a);
                out.vip4_prefix = prefix.filter(|&p| p <= 32);
                if first {
                    draft.vip4 = Some((a, prefix.filter(|&p| p <= 32).unwrap_or(255)));
                }
            } else {
                notes.add(f, e.line, &all, "k3s-ha holds one IPv4 VIP: not imported");
            }
        }
        Ok(IpAddr::V6(a)) => {
            if out.vip6.is_none() {
                out.vip6 = Some(a);
            }
            if first && draft.vip6.is_none() {
                out.vip6_prefix = prefix.filter(|&p| p <= 128);
                draft.vip6 = Some((a, prefix.filter(|&p| p <= 128).unwrap_or(255)));
            } else if first {
                notes.add(f, e.line, &all, "k3s-ha holds one IPv6 VIP: not imported");
            }
        }
        Err(_) => notes.add(f, e.line, &all, "not an IP address: ignored"),
    }
}

fn parse_num(s: Option<&str>, lo: i64, hi: i64) -> Option<i64> {
    s?.parse::<i64>().ok().filter(|n| (lo..=hi).contains(n))
}

// ---------------------------------------------------------------------------------------
// haproxy.cfg -> draft

/// `server` / `default-server` parameters that matter here.
#[derive(Debug, Clone, Default)]
struct SrvParams {
    check: bool,
    inter: Option<Duration>,
    fastinter: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
    weight: Option<u32>,
    backup: bool,
    check_ssl: bool,
    /// `ssl`: traffic to the server is TLS, and so are its checks (HAProxy checks over the
    /// server's own transport).
    ssl: bool,
    disabled: bool,
}

impl SrvParams {
    /// Checks open a TLS connection unless a rule says otherwise.
    fn check_tls(&self) -> bool {
        self.check_ssl || self.ssl
    }
}

/// Parameters that take a value (so the value is not read as a keyword).
const SRV_VALUED: &[&str] = &[
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

fn next_str<'a>(it: &mut std::slice::Iter<'a, String>) -> Option<&'a str> {
    it.next().map(String::as_str)
}

fn parse_srv_params(words: &[String], p: &mut SrvParams, ignored: &mut Vec<String>) {
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

fn merge_srv(base: &SrvParams, own: &[String], ignored: &mut Vec<String>) -> SrvParams {
    let mut p = base.clone();
    parse_srv_params(own, &mut p, ignored);
    p
}

#[derive(Debug, Clone)]
struct HServer {
    name: String,
    addr: IpAddr,
    /// `None`: the port the client connected to.
    port: Option<u16>,
    params: SrvParams,
    line: usize,
}

/// A check option: `option httpchk`, `ssl-hello-chk`, `tcp-check`, or a protocol check.
#[derive(Debug, Clone, PartialEq)]
enum CheckKindOpt {
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
struct CheckOpt {
    kind: CheckKindOpt,
    /// The option as written, and its line.
    text: String,
    line: usize,
}

/// The protocol checks HAProxy runs itself; lbd checks only the connection for these.
const PROTO_CHECKS: &[(&str, &str)] = &[
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
struct Px {
    mode: Option<String>,
    balance: Option<(String, usize)>,
    t_connect: Option<Duration>,
    t_client: Option<Duration>,
    t_server: Option<Duration>,
    t_tunnel: Option<Duration>,
    t_client_fin: Option<Duration>,
    t_server_fin: Option<Duration>,
    t_check: Option<Duration>,
    retries: Option<u32>,
    maxconn: Option<u32>,
    default_server: SrvParams,
    /// The check option in force: HAProxy keeps one per proxy, the last one written; a
    /// section's own replaces the one inherited from `defaults`.
    check: Option<CheckOpt>,
    /// Check options written in this section (several: noted).
    own_checks: Vec<CheckOpt>,
    /// `http-check` rules (connect, send, expect, ...) in force, and whether this section
    /// wrote them (its own rules replace inherited ones).
    http_rules: Vec<HLine>,
    http_rules_own: bool,
    /// `tcp-check` rules, likewise.
    tcp_rules: Vec<HLine>,
    tcp_rules_own: bool,
    // frontend / listen
    binds: Vec<(Option<IpAddr>, u16, usize)>,
    default_backend: Option<String>,
    use_backends: Vec<(String, usize)>,
    stats: bool,
    stats_auth: Option<(String, String)>,
    stats_refresh: Option<Duration>,
    // backend / listen
    servers: Vec<HServer>,
}

impl Px {
    /// What a section starts with when it inherits from this one: everything, but no
    /// option or rule counts as the section's own.
    fn inherited(&self) -> Px {
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
fn set_check(px: &mut Px, kind: CheckKindOpt, l: &HLine) {
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
fn apply_hline(f: &str, kind: &str, px: &mut Px, l: &HLine, notes: &mut Notes) {
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
fn parse_status_list(s: &str) -> Option<Vec<u16>> {
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

fn map_bind(f: &str, l: &HLine, px: &mut Px, notes: &mut Notes) {
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
    } else if opts.iter().any(|o| !matches!(*o, "v4v6" | "v6only")) {
        notes.add(
            f,
            l.line,
            &all,
            "bind options are not supported: only the port is used",
        );
    }
}

fn map_server(f: &str, l: &HLine, px: &mut Px, notes: &mut Notes) {
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
    if !ignored.is_empty() {
        let reason = if ignored.iter().any(|i| i == "ssl") {
            "not supported by lbd (an L4 proxy: `ssl` re-encryption, PROXY protocol, per-server limits and check ports are not available): ignored, except that `ssl` makes the check TLS, as in HAProxy"
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
fn split_host_port(s: &str) -> (&str, Option<&str>) {
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
struct HProxy {
    kind: String,
    name: String,
    line: usize,
    px: Px,
}

fn map_haproxy(
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

// ---------------------------------------------------------------------------------------
// Putting it together

/// A service before the nodes are known.
struct ProtoService {
    name: String,
    listen: u16,
    /// The `bind` line.
    line: usize,
    servers: Vec<HServer>,
    check: DraftCheck,
    balance: Option<&'static str>,
    connect: Option<Duration>,
    idle: Option<Duration>,
    tunnel: Option<Duration>,
    half_close: Option<Duration>,
    retries: Option<u32>,
    max_connections: Option<u32>,
}

fn max_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn service_name(s: &str, taken: &BTreeSet<String>) -> String {
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

/// A host name usable as a node name (one DNS label), if `s` gives one.
fn host_label(s: &str) -> Option<String> {
    let first = s.split('.').next().unwrap_or("");
    let l: String = first
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let l = l.trim_matches('-').to_owned();
    (!l.is_empty()).then_some(l)
}

/// An `http-check` / `tcp-check` rule's words after the keyword.
fn rule_args(l: &HLine) -> &[String] {
    l.words.get(2..).unwrap_or_default()
}

/// The transport a `connect` rule opens: TLS with `ssl`; the server's own (`check-ssl`,
/// `ssl`) with `default`; otherwise plain, whatever the server line says.
fn connect_tls(l: &HLine, server_tls: bool) -> bool {
    let args = rule_args(l);
    args.iter().any(|w| w == "ssl") || (args.iter().any(|w| w == "default") && server_tls)
}

/// `connect` options other than `ssl` and `default` (and their values).
fn connect_extras(l: &HLine) -> Vec<String> {
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
fn check_of(
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

fn build_services(
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

/// One node's claim to a VRRP priority: keepalived's (or, for a node without a file, a
/// value below the known ones), its `state MASTER`, its address.
#[derive(Debug, Clone, Copy)]
struct Claim {
    prio: i32,
    master: bool,
    addr: IpAddr,
}

/// Unique priorities from 1 to 254 for vrrpd, from keepalived's, which may be equal:
/// - every strict order between two claims is kept;
/// - equal claims are ranked as keepalived elects among them: a `state MASTER` node first
///   (it starts as master and backups do not preempt at equal priority), then by the higher
///   address (VRRP's tie-break);
/// - as few values as possible change: in that ranking, the values kept form the longest
///   run that can stay (a non-increasing `prio + rank`, room above and below each), the
///   highest ranks preferred; the others take the value nearest their own that fits.
///
/// `None` only for more than 254 claims.
fn unique_priorities(claims: &[Claim]) -> Option<Vec<u8>> {
    let n = claims.len();
    if n > 254 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| {
        let (a, b) = (&claims[x], &claims[y]);
        b.prio
            .cmp(&a.prio)
            .then(b.master.cmp(&a.master))
            .then(b.addr.cmp(&a.addr))
            .then(x.cmp(&y))
    });
    let p: Vec<i32> = order.iter().map(|&i| claims[i].prio).collect();
    let n32 = n as i32;
    let rank = |k: usize| k as i32;
    // Can rank k keep its value: k values above it up to 254, n-1-k below it down to 1.
    let keepable = |k: usize| p[k] + rank(k) <= 254 && p[k] >= n32 - rank(k);
    let a = |k: usize| p[k] + rank(k);
    // longest[k]: the longest run of kept values starting at k.
    let mut longest = vec![0usize; n];
    for k in (0..n).rev() {
        if !keepable(k) {
            continue;
        }
        let tail = (k + 1..n)
            .filter(|&j| longest[j] > 0 && a(j) <= a(k))
            .map(|j| longest[j])
            .max()
            .unwrap_or(0);
        longest[k] = 1 + tail;
    }
    let mut kept = vec![false; n];
    let mut want = longest.iter().copied().max().unwrap_or(0);
    let mut prev: Option<usize> = None;
    for k in 0..n {
        if want == 0 {
            break;
        }
        if longest[k] == want && prev.is_none_or(|i| a(k) <= a(i)) {
            kept[k] = true;
            prev = Some(k);
            want -= 1;
        }
    }
    // The others, top down: below the previous value, above what the next kept value and
    // the floor of 1 need, as near their own value as that allows.
    let mut q = vec![0i32; n];
    for k in 0..n {
        if kept[k] {
            q[k] = p[k];
            continue;
        }
        let hi = if k == 0 { 254 } else { q[k - 1] - 1 };
        let lo = match (k + 1..n).find(|&j| kept[j]) {
            Some(j) => p[j] + (rank(j) - rank(k)),
            None => n32 - rank(k),
        };
        q[k] = p[k].min(hi).max(lo);
    }
    let mut out = vec![0u8; n];
    for (k, &i) in order.iter().enumerate() {
        out[i] = u8::try_from(q[k].clamp(1, 254)).unwrap_or(1);
    }
    Some(out)
}

/// Import the given files. `Ok` holds a cluster.toml that validates.
pub fn import(opts: &ImportOptions) -> Result<Imported, ImportError> {
    if opts.keepalived.is_empty() && opts.haproxy.is_none() {
        return Err(ImportError::NoInput);
    }
    let mut notes = Notes::default();
    let mut draft = Draft::default();

    // keepalived: the first file's instance is the cluster's; the others give priorities.
    let mut kfiles: Vec<KFile> = Vec::new();
    for (i, src) in opts.keepalived.iter().enumerate() {
        let mut own = Notes::default();
        let mut scratch = Draft::default();
        let target = if i == 0 { &mut draft } else { &mut scratch };
        let k = map_keepalived(src, target, i == 0, &mut own);
        if i == 0 {
            notes.0.extend(own.0);
        } else {
            let seen: BTreeSet<(String, String)> = notes
                .0
                .iter()
                .filter(|n| n.file == opts.keepalived[0].label)
                .map(|n| (n.setting.clone(), n.reason.clone()))
                .collect();
            notes.0.extend(
                own.0
                    .into_iter()
                    .filter(|n| !seen.contains(&(n.setting.clone(), n.reason.clone()))),
            );
            if let Some(k0) = kfiles.first() {
                let diff = |what: &str, a: String, b: String, notes: &mut Notes| {
                    if a != b {
                        notes.add(
                            &k.label,
                            k.instance_line,
                            what,
                            format!("{b} here, {a} in {}: the first file's is used", k0.label),
                        );
                    }
                };
                diff(
                    "virtual_router_id",
                    format!("{:?}", k0.vrid),
                    format!("{:?}", k.vrid),
                    &mut notes,
                );
                diff(
                    "virtual_ipaddress",
                    format!("{:?}", k0.vip4),
                    format!("{:?}", k.vip4),
                    &mut notes,
                );
                diff(
                    "advert_int",
                    format!("{:?}", k0.interval),
                    format!("{:?}", k.interval),
                    &mut notes,
                );
                diff(
                    "vrrp version",
                    k0.version.to_string(),
                    k.version.to_string(),
                    &mut notes,
                );
                if k0.interface != k.interface && draft.interface.is_some() {
                    notes.add(&k.label, k.instance_line, "interface", "differs between nodes: vip.interface omitted, so each vrrpd uses the interface holding its node's address");
                    draft.interface = None;
                }
            }
        }
        kfiles.push(k);
    }
    let kfiles = kfiles;
    if let Some(k0) = kfiles.first() {
        if draft.vrrp.track_lbd.is_none() {
            notes.add(
                &k0.label,
                k0.instance_line,
                "vrrp.track.lbd (not in keepalived.conf)",
                "k3s-ha's default applies: a node's priority drops by 50 while its lbd is down or has no healthy API backend; set vrrp.track.lbd = \"off\" for keepalived's behaviour",
            );
        }
    }

    // haproxy
    let mut protos: Vec<ProtoService> = Vec::new();
    let hlabel = opts
        .haproxy
        .as_ref()
        .map(|h| h.label.clone())
        .unwrap_or_default();
    if let Some(h) = &opts.haproxy {
        let (fronts, backs, maxconn) = map_haproxy(h, &mut notes);
        draft.max_connections = maxconn;
        protos = build_services(&h.label, &fronts, &backs, &mut draft, &mut notes);
    }

    // Nodes: the API backends are the k3s servers; else keepalived's addresses.
    let mut nodes: Vec<DraftNode> = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut add_node = |name: Option<String>, addr: IpAddr, nodes: &mut Vec<DraftNode>| {
        if nodes.iter().any(|n| n.address == addr) || addr.is_unspecified() || addr.is_multicast() {
            return;
        }
        let mut name = name.unwrap_or_else(|| format!("server-{}", nodes.len() + 1));
        let base = name.clone();
        let mut k = 2;
        while names.contains(&name) {
            name = format!("{base}-{k}");
            k += 1;
        }
        names.insert(name.clone());
        nodes.push(DraftNode {
            name,
            address: addr,
            priority: None,
        });
    };
    for p in &protos {
        for s in &p.servers {
            if s.port.unwrap_or(p.listen) == 6443 {
                add_node(host_label(&s.name), s.addr, &mut nodes);
            }
        }
    }
    let k_addrs: Vec<(IpAddr, Option<String>)> = kfiles
        .iter()
        .flat_map(|k| {
            k.src_ip
                .map(|a| (a, k.router_id.clone()))
                .into_iter()
                .chain(k.peers.iter().map(|a| (*a, None)))
        })
        .collect();
    if nodes.is_empty() {
        for (a, rid) in &k_addrs {
            add_node(rid.as_deref().and_then(host_label), *a, &mut nodes);
        }
    } else {
        let mut seen = BTreeSet::new();
        for (a, _) in &k_addrs {
            if !nodes.iter().any(|n| n.address == *a) && seen.insert(*a) {
                let file = kfiles.first().map(|k| k.label.clone()).unwrap_or_default();
                notes.add(&file, 0, &format!("VRRP peer {a}"), "not an API backend in haproxy.cfg: k3s-ha runs vrrpd and lbd on the k3s servers themselves, so this host is not a node");
            }
        }
    }
    if nodes.is_empty() {
        return Err(ImportError::NoServers);
    }

    // Priorities: each keepalived file's goes to its node.
    let mut known: BTreeMap<usize, (u8, String, usize, bool)> = BTreeMap::new();
    for k in &kfiles {
        let Some((p, line)) = k.priority else {
            continue;
        };
        let by_ip = k
            .src_ip
            .and_then(|a| nodes.iter().position(|n| n.address == a));
        let by_rid = || {
            k.router_id
                .as_deref()
                .and_then(host_label)
                .and_then(|r| nodes.iter().position(|n| n.name == r))
        };
        match by_ip.or_else(by_rid) {
            Some(i) => {
                if let Some((_, other, _, _)) = known.get(&i) {
                    notes.add(&k.label, line, "priority", format!("{} is the same node as {other}: ignored", nodes[i].name));
                } else {
                    let master = k.state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("MASTER"));
                    known.insert(i, (p, k.label.clone(), line, master));
                }
            }
            None => notes.add(&k.label, line, &format!("priority {p}"), "cannot tell which node this file belongs to (no unicast_src_ip or mcast_src_ip of a node, no router_id naming one): not imported"),
        }
    }
    // vrrpd needs unique priorities; keepalived allows equal ones. One assignment keeps
    // keepalived's order (see `unique_priorities`); nodes without a file go below.
    if !known.is_empty() {
        let lowest = known
            .values()
            .map(|(p, ..)| i32::from(*p))
            .min()
            .unwrap_or(100);
        let mut below = 0;
        let claims: Vec<Claim> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match known.get(&i) {
                Some((p, _, _, master)) => Claim {
                    prio: i32::from(*p),
                    master: *master,
                    addr: n.address,
                },
                None => {
                    below += 1;
                    Claim {
                        prio: lowest - below,
                        master: false,
                        addr: n.address,
                    }
                }
            })
            .collect();
        let file0 = kfiles.first().map(|k| k.label.clone()).unwrap_or_default();
        let Some(q) = unique_priorities(&claims) else {
            return Err(ImportError::Invalid {
                error: format!("{} servers: VRRP has only 254 priorities", nodes.len()),
                toml: String::new(),
                notes: notes.0,
            });
        };
        let node_names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let mut tied_file: Option<(String, usize)> = None;
        for (i, n) in nodes.iter_mut().enumerate() {
            n.priority = Some(q[i]);
            let Some((p, file, line, _)) = known.get(&i) else {
                notes.add(&file0, 0, &format!("priority of {}", n.name), format!("no keepalived.conf of this node given: wrote {}, below the known ones (pass every node's file with --keepalived to keep theirs)", q[i]));
                continue;
            };
            if q[i] == *p {
                continue;
            }
            let shared: Vec<&str> = known
                .iter()
                .filter(|(j, (pj, ..))| **j != i && pj == p)
                .map(|(j, _)| node_names[*j].as_str())
                .collect();
            let why = if shared.is_empty() {
                format!("moved to keep keepalived's order with unique priorities from 1 to 254: wrote {} for {}", q[i], n.name)
            } else {
                tied_file.get_or_insert((file.clone(), *line));
                format!("shared with {} (keepalived ranks equal priorities by `state MASTER`, then by the higher address); vrrpd needs unique priorities: wrote {} for {}, in keepalived's order", shared.join(", "), q[i], n.name)
            };
            notes.add(file, *line, &format!("priority {p}"), why);
        }
        if let Some((file, line)) = tied_file {
            let reason = if draft.vrrp.preempt == Some(false) {
                "the numbers changed, not the outcome: with preempt = false (nopreempt), as here, the VIP stays with its holder when a node ranked above it rejoins, as with keepalived"
            } else {
                "the numbers changed, and one outcome with them: with vrrpd (preempt on) a node ranked higher here takes the VIP back when it rejoins, from a node it shared a priority with; keepalived would leave the VIP with its current holder (a backup does not preempt at equal priority). Set vrrp.preempt = false to keep the VIP where it is"
            };
            notes.add(&file, line, "equal priorities", reason);
        }
    }
    draft.nodes = nodes;

    // VIP prefix: keepalived adds a VIP without prefix as /32, but cluster.toml's prefix
    // must cover every server (VRRP works within one subnet).
    let klabel = kfiles.first().map(|k| k.label.clone()).unwrap_or_default();
    if let Some((a, p)) = draft.vip4 {
        let servers: Vec<Ipv4Addr> = draft
            .nodes
            .iter()
            .filter_map(|n| match n.address {
                IpAddr::V4(v) => Some(v),
                IpAddr::V6(_) => None,
            })
            .collect();
        let common = servers
            .iter()
            .map(|s| (u32::from(*s) ^ u32::from(a)).leading_zeros() as u8)
            .min()
            .unwrap_or(24);
        if p > 32 || p > common {
            let q = common.min(24);
            let line = kfiles.first().map_or(0, |k| k.instance_line);
            let what = if p > 32 {
                format!("{a} (no prefix)")
            } else {
                format!("{a}/{p}")
            };
            notes.add(&klabel, line, &format!("virtual_ipaddress {what}"), format!("keepalived adds it as written (/32 without a prefix); cluster.toml's prefix must cover every server: wrote /{q}, check it is the servers' subnet"));
            draft.vip4 = Some((a, q));
        }
    }
    if let Some((a, p)) = draft.vip6 {
        if p > 128 {
            notes.add(
                &klabel,
                0,
                &format!("virtual_ipaddress {a} (no prefix)"),
                "wrote /64: check it is the servers' subnet",
            );
            draft.vip6 = Some((a, 64));
        }
    }
    if draft.vip4.is_none() && draft.vip6.is_none() {
        let files: Vec<String> = opts.keepalived.iter().map(|k| k.label.clone()).collect();
        return Err(ImportError::NoVip {
            files: if files.is_empty() {
                "(no --keepalived file)".into()
            } else {
                files.join(", ")
            },
        });
    }

    // Services: a role pool when the backends are exactly the servers.
    let server_addrs: BTreeSet<IpAddr> = draft.nodes.iter().map(|n| n.address).collect();
    let stats_port = draft.stats.listen.unwrap_or(8404);
    let mut ports: BTreeSet<u16> = BTreeSet::new();
    for p in &protos {
        ports.insert(p.listen);
    }
    let mut used_ports: BTreeSet<u16> = BTreeSet::new();
    for p in protos {
        let mut listen = p.listen;
        if common::config::K3S_PORTS
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&listen))
        {
            if (listen == 6443 || listen == 6444)
                && !ports.contains(&8443)
                && !used_ports.contains(&8443)
            {
                notes.add(&hlabel, p.line, &format!("{}: port {listen}", p.name), "k3s itself listens on 6443 on every server: lbd takes the API on 8443 instead; point kubeconfigs at https://VIP:8443");
                listen = 8443;
            } else {
                notes.add(
                    &hlabel,
                    p.line,
                    &format!("{}: port {listen}", p.name),
                    "k3s itself listens on this port on every server: service not imported",
                );
                continue;
            }
        }
        if used_ports.contains(&listen) || listen == stats_port {
            notes.add(
                &hlabel,
                p.line,
                &format!("{}: port {listen}", p.name),
                "port already taken by another service or the stats page: not imported",
            );
            continue;
        }
        used_ports.insert(listen);
        let mut list: Vec<(String, u32, bool)> = Vec::new();
        let mut addrs: BTreeSet<std::net::SocketAddr> = BTreeSet::new();
        for s in &p.servers {
            let port = s.port.unwrap_or(p.listen);
            let sa = std::net::SocketAddr::new(s.addr, port);
            if !addrs.insert(sa) {
                notes.add(
                    &hlabel,
                    s.line,
                    &format!("server {}", s.name),
                    "same address as another server of this backend: ignored",
                );
                continue;
            }
            let mut w = s.params.weight.unwrap_or(1);
            if w == 0 {
                notes.add(
                    &hlabel,
                    s.line,
                    &format!("server {} weight 0", s.name),
                    "lbd weights are 1 to 256; drain a server with `lbctl drain`: wrote 1",
                );
                w = 1;
            }
            list.push((sa.to_string(), w, s.params.backup));
        }
        if list.iter().all(|(_, _, b)| *b) {
            notes.add(
                &hlabel,
                p.line,
                &p.name,
                "every server is a backup: not imported",
            );
            continue;
        }
        let ports_of: BTreeSet<u16> = addrs.iter().map(|a| a.port()).collect();
        let ips: BTreeSet<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
        let plain = list.iter().all(|(_, w, b)| *w == 1 && !*b);
        let backends = match ports_of.iter().next() {
            Some(&port) if ports_of.len() == 1 && plain && ips == server_addrs => {
                DraftBackends::Servers(port)
            }
            _ => DraftBackends::List(list),
        };
        draft.services.push(DraftService {
            name: p.name,
            listen,
            backends,
            balance: p.balance,
            check: p.check,
            connect: p
                .connect
                .map(|d| d.clamp(Duration::from_millis(1), Duration::from_secs(300))),
            idle: p
                .idle
                .map(|d| d.clamp(Duration::from_millis(1), Duration::from_secs(7 * 86_400))),
            tunnel: p
                .tunnel
                .map(|d| d.clamp(Duration::from_millis(1), Duration::from_secs(7 * 86_400))),
            half_close: p
                .half_close
                .map(|d| d.clamp(Duration::from_millis(1), Duration::from_secs(7 * 86_400))),
            retries: p.retries,
            max_connections: p.max_connections,
        });
    }
    if opts.haproxy.is_some() && draft.services.is_empty() {
        notes.add(&hlabel, 0, "(services)", "no TCP service could be imported: cluster.toml gets k3s-ha's default services (API 8443, ingress 80 and 443)");
    }

    if opts.name.is_none() || opts.domain.is_none() {
        notes.add("(command line)", 0, "cluster name and domain", "in neither file: wrote the --name and --domain defaults (\"k3s\", \"k3s.local\"); set them");
    }
    let name = opts.name.clone().unwrap_or_else(|| "k3s".into());
    let domain = opts.domain.clone().unwrap_or_else(|| "k3s.local".into());
    let mut notes = notes.0;
    let sources: Vec<String> = opts
        .keepalived
        .iter()
        .map(|k| k.label.clone())
        .chain(opts.haproxy.iter().map(|h| h.label.clone()))
        .collect();
    normalize(&mut draft, &klabel, &mut notes);
    notes.sort_by(|a, b| (a.file.as_str(), a.line).cmp(&(b.file.as_str(), b.line)));
    // Identical notes (a rule inherited by several proxies, a backend behind two binds)
    // are listed once.
    let mut seen = BTreeSet::new();
    notes.retain(|n| seen.insert(n.clone()));
    let toml = render(&draft, &name, &domain, &sources, &notes);
    match common::config::parse(&toml, None) {
        Ok(cluster) => Ok(Imported {
            toml,
            notes,
            cluster,
        }),
        Err(e) => Err(ImportError::Invalid {
            error: e.to_string(),
            toml,
            notes,
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Rendering

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dur(d: Duration) -> String {
    q(&format_duration(d))
}

/// One line of a comment: control characters would end it early.
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Bring VRRP timings into what cluster.toml allows, noting every change.
fn normalize(d: &mut Draft, file: &str, notes: &mut Vec<Note>) {
    let mut note = |setting: &str, reason: String| {
        notes.push(Note {
            file: file.to_owned(),
            line: 0,
            setting: setting.to_owned(),
            reason,
        })
    };
    let v2 = d.vrrp.version == Some(2);
    if let Some(i) = d.vrrp.interval {
        let fixed = if v2 {
            let s = i.as_millis().div_ceil(1000).clamp(1, 255);
            Duration::from_secs(s as u64)
        } else {
            let cs = (i.as_millis() / 10).clamp(1, 4095);
            Duration::from_millis(cs as u64 * 10)
        };
        if fixed != i {
            note(
                "advert_int",
                format!(
                    "{} is not allowed for VRRPv{}: wrote {}",
                    format_duration(i),
                    if v2 { 2 } else { 3 },
                    format_duration(fixed)
                ),
            );
            d.vrrp.interval = Some(fixed);
        }
    }
    let clamp = |v: &mut Option<Duration>,
                 lo: Duration,
                 hi: Duration,
                 what: &str,
                 note: &mut dyn FnMut(&str, String)| {
        if let Some(x) = *v {
            let c = x.clamp(lo, hi);
            if c != x {
                note(
                    what,
                    format!(
                        "{} is outside {}..{}: wrote {}",
                        format_duration(x),
                        format_duration(lo),
                        format_duration(hi),
                        format_duration(c)
                    ),
                );
                *v = Some(c);
            }
        }
    };
    clamp(
        &mut d.vrrp.garp_interval,
        Duration::ZERO,
        Duration::from_secs(10),
        "garp_interval",
        &mut note,
    );
    clamp(
        &mut d.vrrp.garp_refresh,
        Duration::ZERO,
        Duration::from_secs(86_400),
        "garp_master_refresh",
        &mut note,
    );
    clamp(
        &mut d.vrrp.preempt_delay,
        Duration::ZERO,
        Duration::from_secs(1000),
        "preempt_delay",
        &mut note,
    );
    for s in &mut d.vrrp.scripts {
        let n = s.name.clone();
        clamp(
            &mut s.interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
            &format!("vrrp_script {n} interval"),
            &mut note,
        );
        clamp(
            &mut s.timeout,
            Duration::from_millis(10),
            Duration::from_secs(3600),
            &format!("vrrp_script {n} timeout"),
            &mut note,
        );
    }
    // Track script names must be unique.
    let mut seen = BTreeSet::new();
    d.vrrp.scripts.retain(|s| seen.insert(s.name.clone()));
    for s in &mut d.services {
        let c = &mut s.check;
        let n = s.name.clone();
        clamp(
            &mut c.interval,
            Duration::from_millis(10),
            Duration::from_secs(3600),
            &format!("{n}: check inter"),
            &mut note,
        );
        if let (Some(i), Some(f)) = (c.interval, c.fast_interval) {
            c.fast_interval = Some(f.clamp(Duration::from_millis(10), i));
        }
        clamp(
            &mut c.timeout,
            Duration::from_millis(1),
            Duration::from_secs(3600),
            &format!("{n}: timeout check"),
            &mut note,
        );
    }
}

fn render(d: &Draft, name: &str, domain: &str, sources: &[String], notes: &[Note]) -> String {
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
    let _ = writeln!(w, "# are listed at the end of this file.");
    let _ = writeln!(w, "\n[cluster]\nname = {}\ndomain = {}", q(name), q(domain));
    let _ = writeln!(w, "\n[vip]");
    if let Some((a, p)) = d.vip4 {
        let _ = writeln!(w, "address = {}", q(&format!("{a}/{p}")));
    }
    if let Some((a, p)) = d.vip6 {
        let _ = writeln!(w, "address6 = {}", q(&format!("{a}/{p}")));
    }
    if let Some(i) = &d.interface {
        let _ = writeln!(w, "interface = {}", q(i));
    }
    let v = &d.vrrp;
    let _ = writeln!(w, "\n[vrrp]");
    if let Some(x) = v.vrid {
        let _ = writeln!(w, "vrid = {x}");
    }
    if v.version == Some(2) {
        let _ = writeln!(w, "version = 2");
    }
    if let Some(x) = v.interval {
        let _ = writeln!(w, "interval = {}", dur(x));
    }
    if let Some(x) = v.preempt {
        let _ = writeln!(w, "preempt = {x}");
    }
    if let Some(x) = v.preempt_delay {
        let _ = writeln!(w, "preempt_delay = {}", dur(x));
    }
    if let Some(x) = v.accept_mode {
        let _ = writeln!(w, "accept_mode = {x}");
    }
    if let Some(x) = &v.password {
        let _ = writeln!(w, "password = {}", q(x));
    }
    if v.unicast {
        let _ = writeln!(w, "unicast = true");
    }
    if let Some(x) = v.garp_repeat {
        let _ = writeln!(w, "garp_repeat = {x}");
    }
    if let Some(x) = v.garp_interval {
        let _ = writeln!(w, "garp_interval = {}", dur(x));
    }
    if let Some(x) = v.garp_refresh {
        let _ = writeln!(w, "garp_refresh = {}", dur(x));
    }
    if v.virtual_mac {
        let _ = writeln!(w, "virtual_mac = true");
    }
    if let Some(x) = &v.notify {
        let _ = writeln!(w, "notify = {}", q(x));
    }
    let effect = |e: Option<i16>| e.map_or_else(|| q("fault"), |n| n.to_string());
    if v.track_lbd.is_some() || v.track_link.is_some() {
        let _ = writeln!(w, "\n[vrrp.track]");
        if let Some(e) = v.track_lbd {
            let _ = writeln!(w, "lbd = {}", effect(e));
        }
        if let Some(l) = v.track_link {
            let _ = writeln!(w, "link = {l}");
        }
    }
    for s in &v.scripts {
        let _ = writeln!(
            w,
            "\n[[vrrp.track.script]]\nname = {}\ncommand = {}",
            q(&s.name),
            q(&s.command)
        );
        if let Some(x) = s.interval {
            let _ = writeln!(w, "interval = {}", dur(x));
        }
        if let Some(x) = s.timeout {
            let _ = writeln!(w, "timeout = {}", dur(x));
        }
        if let Some(x) = s.rise {
            let _ = writeln!(w, "rise = {x}");
        }
        if let Some(x) = s.fall {
            let _ = writeln!(w, "fall = {x}");
        }
        let _ = writeln!(w, "effect = {}", effect(s.weight));
    }
    for n in &d.nodes {
        let _ = writeln!(
            w,
            "\n[[nodes]]\nname = {}\naddress = {}\nrole = \"server\"",
            q(&n.name),
            q(&n.address.to_string())
        );
        if let Some(p) = n.priority {
            let _ = writeln!(w, "priority = {p}");
        }
    }
    for s in &d.services {
        let _ = writeln!(
            w,
            "\n[[services]]\nname = {}\nlisten = {}",
            q(&s.name),
            s.listen
        );
        match &s.backends {
            DraftBackends::Servers(port) => {
                let _ = writeln!(w, "backends = \"servers\"\nbackend_port = {port}");
            }
            DraftBackends::List(list) => {
                let _ = writeln!(w, "backends = [");
                for (a, wt, b) in list {
                    if *wt == 1 && !*b {
                        let _ = writeln!(w, "  {},", q(a));
                    } else {
                        let _ = writeln!(
                            w,
                            "  {{ address = {}, weight = {wt}, backup = {b} }},",
                            q(a)
                        );
                    }
                }
                let _ = writeln!(w, "]");
            }
        }
        if let Some(b) = s.balance {
            let _ = writeln!(w, "balance = {}", q(b));
        }
        if let Some(r) = s.retries {
            let _ = writeln!(w, "retries = {r}");
        }
        if let Some(m) = s.max_connections {
            let _ = writeln!(w, "max_connections = {m}");
        }
        let c = &s.check;
        let mut check = String::new();
        if let Some(k) = c.kind {
            let _ = writeln!(check, "kind = {}", q(k));
        }
        if let Some(p) = &c.path {
            let _ = writeln!(check, "path = {}", q(p));
        }
        if let Some(e) = &c.expect {
            let codes: Vec<String> = e.iter().map(u16::to_string).collect();
            let _ = writeln!(check, "expect = [{}]", codes.join(", "));
        }
        for (k, x) in [
            ("interval", c.interval),
            ("fast_interval", c.fast_interval),
            ("timeout", c.timeout),
        ] {
            if let Some(x) = x {
                let _ = writeln!(check, "{k} = {}", dur(x));
            }
        }
        if let Some(x) = c.rise {
            let _ = writeln!(check, "rise = {x}");
        }
        if let Some(x) = c.fall {
            let _ = writeln!(check, "fall = {x}");
        }
        if !check.is_empty() {
            let _ = write!(w, "\n[services.check]\n{check}");
        }
        let mut t = String::new();
        for (k, x) in [
            ("connect", s.connect),
            ("idle", s.idle),
            ("tunnel", s.tunnel),
            ("half_close", s.half_close),
        ] {
            if let Some(x) = x {
                let _ = writeln!(t, "{k} = {}", dur(x));
            }
        }
        if !t.is_empty() {
            let _ = write!(w, "\n[services.timeouts]\n{t}");
        }
    }
    let st = &d.stats;
    if st.listen.is_some() || st.user.is_some() || st.refresh.is_some() {
        let _ = writeln!(w, "\n[stats]");
        if let Some(p) = st.listen {
            let _ = writeln!(w, "listen = {}", q(&format!(":{p}")));
        }
        if let (Some(u), Some(p)) = (&st.user, &st.password) {
            let _ = writeln!(w, "user = {}\npassword = {}", q(u), q(p));
        }
        if let Some(r) = st.refresh {
            let _ = writeln!(w, "refresh = {}", dur(r));
        }
    }
    if let Some(m) = d.max_connections {
        let _ = writeln!(w, "\n[lbd]\nmax_connections = {m}");
    }
    let _ = writeln!(w);
    if notes.is_empty() {
        let _ = writeln!(w, "# Every setting was mapped.");
    } else {
        let _ = writeln!(w, "# Not mapped, or changed in meaning ({}):", notes.len());
        for n in notes {
            let _ = writeln!(w, "#   {}", comment_text(&n.to_string()));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    fn claims(spec: &[(i32, bool, &str)]) -> Vec<Claim> {
        spec.iter()
            .map(|&(prio, master, addr)| Claim {
                prio,
                master,
                addr: addr.parse().unwrap(),
            })
            .collect()
    }

    /// Unique, 1 to 254, and every strict order of the input kept.
    fn assert_sound(c: &[Claim], q: &[u8]) {
        let set: BTreeSet<u8> = q.iter().copied().collect();
        assert_eq!(set.len(), q.len(), "not unique: {q:?}");
        assert!(q.iter().all(|&p| (1..=254).contains(&p)), "{q:?}");
        for i in 0..c.len() {
            for j in 0..c.len() {
                if c[i].prio > c[j].prio {
                    assert!(q[i] > q[j], "order {i} > {j} lost: {q:?}");
                }
            }
        }
    }

    fn run(spec: &[(i32, bool, &str)]) -> Vec<u8> {
        let c = claims(spec);
        let q = unique_priorities(&c).unwrap();
        assert_sound(&c, &q);
        q
    }

    #[test]
    fn kubeadm_101_100_100_lowers_the_lower_address() {
        let q = run(&[
            (101, true, "10.0.0.11"),
            (100, false, "10.0.0.12"),
            (100, false, "10.0.0.13"),
        ]);
        assert_eq!(q, [101, 99, 100]);
    }

    #[test]
    fn ties_at_the_floor_move_up_instead_of_sharing_1() {
        // The old bug: 1 and 1, or 2, 2, 1, wrote two nodes at priority 1.
        assert_eq!(
            run(&[(1, false, "10.0.0.1"), (1, false, "10.0.0.2")]),
            [1, 2]
        );
        assert_eq!(
            run(&[
                (2, false, "10.0.0.1"),
                (2, false, "10.0.0.2"),
                (1, false, "10.0.0.3")
            ]),
            [2, 3, 1]
        );
        let q = run(&[(1, false, "10.0.0.1"); 1]);
        assert_eq!(q, [1]);
        let q = run(&[
            (1, false, "10.0.0.1"),
            (1, false, "10.0.0.2"),
            (1, false, "10.0.0.3"),
            (1, false, "10.0.0.4"),
        ]);
        assert_eq!(q, [1, 2, 3, 4]);
    }

    #[test]
    fn state_master_ranks_first_among_equals() {
        // Lower address, but state MASTER: keepalived keeps it master.
        let q = run(&[(100, true, "10.0.0.1"), (100, false, "10.0.0.2")]);
        assert!(q[0] > q[1], "{q:?}");
        assert_eq!(q, [100, 99]);
    }

    #[test]
    fn equal_priorities_follow_the_higher_address() {
        let q = run(&[
            (100, false, "10.0.0.2"),
            (100, false, "10.0.0.10"),
            (100, false, "10.0.0.3"),
        ]);
        assert_eq!(q, [98, 100, 99]);
        let q = run(&[(50, false, "fd00::1"), (50, false, "fd00::2")]);
        assert_eq!(q, [49, 50]);
    }

    #[test]
    fn as_few_values_as_possible_change() {
        // Raising the top one keeps two values; lowering the tie would change two.
        assert_eq!(
            run(&[
                (5, false, "10.0.0.2"),
                (5, false, "10.0.0.1"),
                (4, false, "10.0.0.3")
            ]),
            [6, 5, 4]
        );
        // Nothing to change.
        assert_eq!(
            run(&[
                (150, false, "10.0.0.1"),
                (120, false, "10.0.0.2"),
                (254, false, "10.0.0.3")
            ]),
            [150, 120, 254]
        );
        // A tie at the ceiling moves down.
        assert_eq!(
            run(&[(254, false, "10.0.0.1"), (254, false, "10.0.0.2")]),
            [253, 254]
        );
    }

    #[test]
    fn any_claims_give_unique_priorities_of_1_or_more() {
        // Every combination of 1 to 5 claims from a few values (ties, floor, ceiling,
        // below 1 for nodes without a file), every master flag pattern.
        let values = [-2, 1, 2, 3, 100, 253, 254];
        let mut count = 0;
        for len in 1..=5u32 {
            let total = (values.len() as u32).pow(len);
            for code in 0..total {
                let mut c = code;
                let spec: Vec<(i32, bool, String)> = (0..len)
                    .map(|i| {
                        let v = values[(c % values.len() as u32) as usize];
                        c /= values.len() as u32;
                        (v, (code + i) % 3 == 0, format!("10.0.0.{}", i + 1))
                    })
                    .collect();
                let cl: Vec<Claim> = spec
                    .iter()
                    .map(|(p, m, a)| Claim {
                        prio: *p,
                        master: *m,
                        addr: a.parse().unwrap(),
                    })
                    .collect();
                let q = unique_priorities(&cl).unwrap();
                assert_sound(&cl, &q);
                count += 1;
            }
        }
        assert!(count > 10_000);
    }
}
