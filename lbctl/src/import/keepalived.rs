//! keepalived.conf: statements and blocks, then what they say about the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::draft::*;
use super::lex::*;
use super::notes::Notes;
use super::Source;

/// Deepest keepalived block nesting kept; deeper blocks are skipped (and noted).
pub(super) const MAX_DEPTH: usize = 8;

/// One statement: the words on its line and, if it opened one, its `{ }` block.
#[derive(Debug, Clone, Default)]
pub(super) struct KStmt {
    pub(super) words: Vec<String>,
    pub(super) line: usize,
    pub(super) has_block: bool,
    pub(super) block: Vec<KStmt>,
}

impl KStmt {
    pub(super) fn key(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }
    pub(super) fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    pub(super) fn rest(&self) -> String {
        self.words.get(1..).unwrap_or_default().join(" ")
    }
}

/// keepalived.conf into statements; syntax problems become notes.
pub(super) fn parse_keepalived(src: &Source, notes: &mut Notes) -> Vec<KStmt> {
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

/// keepalived seconds: `1`, `0.5`.
pub(super) fn k_secs(s: &str) -> Option<Duration> {
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() || !(0.0..=1_000_000.0).contains(&v) {
        return None;
    }
    Some(Duration::from_millis((v * 1000.0).round() as u64))
}

// ---------------------------------------------------------------------------------------
// keepalived.conf -> draft

pub(super) const NO_EQUIVALENT: &str = "no cluster.toml equivalent: not imported";

/// What one keepalived.conf says about its own node.
#[derive(Debug, Default)]
pub(super) struct KFile {
    pub(super) label: String,
    pub(super) src_ip: Option<IpAddr>,
    pub(super) router_id: Option<String>,
    /// (priority after positive track weights, line)
    pub(super) priority: Option<(u8, usize)>,
    pub(super) state: Option<String>,
    pub(super) peers: Vec<IpAddr>,
    // Shared settings, to compare files against the first.
    pub(super) vrid: Option<u8>,
    pub(super) vip4: Option<Ipv4Addr>,
    pub(super) vip6: Option<Ipv6Addr>,
    pub(super) interval: Option<Duration>,
    pub(super) version: u8,
    pub(super) interface: Option<String>,
    /// Explicit prefix of the first IPv4 VIP, if written.
    pub(super) vip4_prefix: Option<u8>,
    pub(super) vip6_prefix: Option<u8>,
    pub(super) instance_line: usize,
}

pub(super) fn map_keepalived(
    src: &Source,
    draft: &mut Draft,
    first: bool,
    notes: &mut Notes,
) -> KFile {
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
                notes.add(f, line, &all, "mapped to vrrp.notify, but vrrpd passes only the new state, in lower case (master, backup, fault), as the last argument, where keepalived passes type, name, state (MASTER, BACKUP, FAULT) and priority");
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

pub(super) fn map_vip_entry(
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

pub(super) fn parse_num(s: Option<&str>, lo: i64, hi: i64) -> Option<i64> {
    s?.parse::<i64>().ok().filter(|n| (lo..=hi).contains(n))
}
