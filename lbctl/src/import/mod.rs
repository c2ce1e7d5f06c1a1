//! `lbctl import`: keepalived.conf and haproxy.cfg in, one cluster.toml out.
//!
//! ```text
//!  keepalived.conf (one per node) --lex--> blocks ---+
//!                                                    +--> Draft --render--> raw::Raw --toml--> text
//!  haproxy.cfg -------------------lex--> sections ---+        |                                 |
//!                                                      notes (file, line, why)  common::config::parse
//! ```
//!
//! Modules, in pipeline order: `lex` (words of a line), `keepalived` and `haproxy`
//! (each file into statements, then into the draft), `services` (proxies into services
//! and their checks), `nodes` (node names, unique priorities), `draft` (the draft
//! cluster and its normalisation), `notes`, `render` (the draft as the reader's own
//! schema, `common::config::raw`, written with the `toml` crate: a key renamed there is
//! renamed for the reader and the importer alike).
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
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

mod draft;
mod haproxy;
mod keepalived;
mod lex;
mod nodes;
mod notes;
mod render;
mod services;

use draft::*;
use haproxy::*;
use keepalived::*;
use nodes::*;
use notes::Notes;
use render::*;
use services::*;

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
    /// The cluster.toml text (notes included at its top as comments).
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

/// Import the given files. `Ok` holds a cluster.toml that validates.
pub fn import(opts: &ImportOptions) -> Result<Imported, ImportError> {
    if opts.keepalived.is_empty() && opts.haproxy.is_none() {
        return Err(ImportError::NoInput);
    }
    let mut notes = Notes::default();
    let mut draft = Draft::default();
    let kfiles = read_keepalived(opts, &mut draft, &mut notes);
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

    let mut nodes = find_nodes(&protos, &kfiles, &mut notes)?;
    assign_priorities(&mut nodes, &kfiles, &draft, &mut notes)?;
    draft.nodes = nodes;
    fit_vip_prefix(opts, &kfiles, &mut draft, &mut notes)?;
    place_services(opts, protos, &hlabel, &mut draft, &mut notes);
    let klabel = kfiles.first().map(|k| k.label.clone()).unwrap_or_default();

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
    let toml = match render(&draft, &name, &domain, &sources, &notes) {
        Ok(t) => t,
        Err(e) => {
            return Err(ImportError::Invalid {
                error: format!("cannot write cluster.toml: {e}"),
                toml: String::new(),
                notes,
            })
        }
    };
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

/// keepalived: the first file's instance is the cluster's; the others give priorities (and
/// are compared with the first).
fn read_keepalived(opts: &ImportOptions, draft: &mut Draft, notes: &mut Notes) -> Vec<KFile> {
    let mut kfiles: Vec<KFile> = Vec::new();
    for (i, src) in opts.keepalived.iter().enumerate() {
        let mut own = Notes::default();
        let mut scratch = Draft::default();
        let target = if i == 0 { &mut *draft } else { &mut scratch };
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
                    &mut *notes,
                );
                diff(
                    "virtual_ipaddress",
                    format!("{:?}", k0.vip4),
                    format!("{:?}", k.vip4),
                    &mut *notes,
                );
                diff(
                    "advert_int",
                    format!("{:?}", k0.interval),
                    format!("{:?}", k.interval),
                    &mut *notes,
                );
                diff(
                    "vrrp version",
                    k0.version.to_string(),
                    k.version.to_string(),
                    &mut *notes,
                );
                if k0.interface != k.interface && draft.interface.is_some() {
                    notes.add(&k.label, k.instance_line, "interface", "differs between nodes: vip.interface omitted, so each vrrpd uses the interface holding its node's address");
                    draft.interface = None;
                }
            }
        }
        kfiles.push(k);
    }
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
    kfiles
}

/// The nodes: the API backends are the k3s servers; else keepalived's addresses.
fn find_nodes(
    protos: &[ProtoService],
    kfiles: &[KFile],
    notes: &mut Notes,
) -> Result<Vec<DraftNode>, ImportError> {
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
    for p in protos {
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
    Ok(nodes)
}

/// Priorities: each keepalived file's goes to its node, made unique in keepalived's order.
fn assign_priorities(
    nodes: &mut [DraftNode],
    kfiles: &[KFile],
    draft: &Draft,
    notes: &mut Notes,
) -> Result<(), ImportError> {
    let mut known: BTreeMap<usize, (u8, String, usize, bool)> = BTreeMap::new();
    for k in kfiles {
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
                notes: std::mem::take(&mut notes.0),
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
    Ok(())
}

/// The VIP's prefix: keepalived adds a VIP without prefix as /32, but cluster.toml's
/// prefix must cover every server (VRRP works within one subnet).
fn fit_vip_prefix(
    opts: &ImportOptions,
    kfiles: &[KFile],
    draft: &mut Draft,
    notes: &mut Notes,
) -> Result<(), ImportError> {
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
    Ok(())
}

/// Services on their ports: a role pool when the backends are exactly the servers.
fn place_services(
    opts: &ImportOptions,
    protos: Vec<ProtoService>,
    hlabel: &str,
    draft: &mut Draft,
    notes: &mut Notes,
) {
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
                notes.add(hlabel, p.line, &format!("{}: port {listen}", p.name), "k3s itself listens on 6443 on every server: lbd takes the API on 8443 instead; point kubeconfigs at https://VIP:8443");
                listen = 8443;
            } else {
                notes.add(
                    hlabel,
                    p.line,
                    &format!("{}: port {listen}", p.name),
                    "k3s itself listens on this port on every server: service not imported",
                );
                continue;
            }
        }
        if used_ports.contains(&listen) || listen == stats_port {
            notes.add(
                hlabel,
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
                    hlabel,
                    s.line,
                    &format!("server {}", s.name),
                    "same address as another server of this backend: ignored",
                );
                continue;
            }
            let mut w = s.params.weight.unwrap_or(1);
            if w == 0 {
                notes.add(
                    hlabel,
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
                hlabel,
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
            proxy_protocol: p.proxy.version,
            proxy_tlvs: p.proxy.tlvs,
            accept_proxy: p.proxy.accept,
        });
    }
    if opts.haproxy.is_some() && draft.services.is_empty() {
        notes.add(hlabel, 0, "(services)", "no TCP service could be imported: cluster.toml gets k3s-ha's default services (API 8443, ingress 80 and 443)");
    }
}
