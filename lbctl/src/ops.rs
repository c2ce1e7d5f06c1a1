//! Day-to-day operations through the daemons' control sockets: `status`, `drain`, `enable`,
//! `disable`, `reload`, `maintenance`, `upgrade lbd`; and `status --cluster` through every
//! server's stats page.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use common::config::{Cluster, TrackEffect};
use common::ctl::{self, CtlError};
use common::proto::block_on;
use common::proto::lbd::{self as lbd_proto, AdminState, ServerStatus, Shared, Snapshot};
use common::proto::vrrpd::{self as vrrpd_proto, State as VrrpState, Status as VrrpStatus};
use serde_json::{json, Value};

/// How long lbctl waits for a daemon.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// `RUN_DIR/DAEMON.sock`.
fn sock(run_dir: &Path, daemon: &str) -> std::path::PathBuf {
    ctl::socket_path(run_dir, daemon)
}

/// vrrpd's status on this node.
pub fn vrrpd_status(run_dir: &Path) -> Result<VrrpStatus, CtlError> {
    block_on(vrrpd_proto::status(&sock(run_dir, "vrrpd"), CALL_TIMEOUT))
}

/// lbd's snapshot on this node.
pub fn lbd_status(run_dir: &Path) -> Result<Snapshot, CtlError> {
    block_on(lbd_proto::status(&sock(run_dir, "lbd"), CALL_TIMEOUT))
}

/// Switch vrrpd's maintenance on this node (no waiting; see [`maintenance`]).
pub fn set_maintenance(run_dir: &Path, on: bool) -> Result<(), CtlError> {
    block_on(vrrpd_proto::maintenance(
        &sock(run_dir, "vrrpd"),
        on,
        CALL_TIMEOUT,
    ))
    .map(|_| ())
}

/// What `lbctl status` shows: both daemons' views, either of which may be missing.
#[derive(Debug)]
pub struct NodeStatus {
    pub vrrp: Result<VrrpStatus, String>,
    pub lbd: Result<Snapshot, String>,
}

pub fn node_status(run_dir: &Path) -> NodeStatus {
    NodeStatus {
        vrrp: vrrpd_status(run_dir).map_err(|e| e.to_string()),
        lbd: lbd_status(run_dir).map_err(|e| e.to_string()),
    }
}

pub fn node_status_json(s: &NodeStatus) -> Value {
    let or_error = |v: Result<Value, &String>| v.unwrap_or_else(|e| json!({ "error": e }));
    json!({
        "vrrp": or_error(s.vrrp.as_ref().map(|v| serde_json::to_value(v).unwrap_or(Value::Null))),
        "lbd": or_error(s.lbd.as_ref().map(|v| serde_json::to_value(v).unwrap_or(Value::Null))),
    })
}

/// One line per VRRP instance (address family): state, priority, where the VIP is.
fn vrrp_line(v: &VrrpStatus) -> String {
    let lines: Vec<String> = v
        .instances
        .iter()
        .map(|i| {
            let line = instance_line(i);
            if v.instances.len() > 1 {
                format!("{}: {line}", i.family)
            } else {
                line
            }
        })
        .collect();
    lines.join("; ")
}

fn instance_line(i: &vrrpd_proto::Instance) -> String {
    let c = &i.core;
    let state = c.state.as_str();
    let master = c
        .master
        .map_or_else(|| "unknown".to_owned(), |m| m.to_string());
    let vips: Vec<String> = c.vips.iter().map(ToString::to_string).collect();
    // What the kernel has on the interface (or the responder answers for), as vrrpd read
    // it for this answer: "held here" only when that is true.
    let here = !i.vips_on_interface.is_empty() || !i.vips_answered.is_empty();
    let holder = if here {
        "held here".to_owned()
    } else if c.state == VrrpState::Master {
        "NOT on this node's interface".to_owned()
    } else {
        match &i.master_node {
            Some(node) => format!("held by {node} ({master})"),
            None => format!("held by {master}"),
        }
    };
    let since = i
        .state_since_ms()
        .map_or_else(String::new, |ms| format!(" since {}", ago(ms / 1000)));
    let mut line = format!(
        "VRRP {state}{since} (priority {}, base {}); VIP {} {holder}",
        c.effective_priority,
        c.base_priority,
        vips.join(", ")
    );
    if c.maintenance {
        line.push_str("; MAINTENANCE on");
    }
    if c.fault {
        line.push_str("; FAULT");
    }
    if let Some(e) = &c.vip_error {
        let _ = write!(line, "; FAULT: {}", e.reason);
        if let Some(ms) = e.retry_in_ms {
            let _ = write!(line, " (tries again in {:.1} s)", ms as f64 / 1000.0);
        }
    }
    drain_text(i, &mut line);
    line
}

/// A planned handover's kept connections: served here for the new holder, or forwarded
/// to the previous one, and until when.
fn drain_text(i: &vrrpd_proto::Instance, line: &mut String) {
    let c = &i.core;
    let d = i.drain.clone().unwrap_or_default();
    let count =
        |n: Option<u64>| n.map_or_else(|| "? (not counted yet)".to_owned(), |n| n.to_string());
    if !i.vips_parked.is_empty() {
        let vips: Vec<String> = i.vips_parked.iter().map(ToString::to_string).collect();
        let _ = write!(
            line,
            "; parked on lo: {} connection(s) on {} still served here",
            count(d.parked_flows),
            vips.join(", ")
        );
        if let Some(ms) = c.parked_ms_left {
            let _ = write!(line, " (at most {} more)", ago(ms / 1000));
        }
    }
    if let Some(to) = c.steering_to {
        let node = d
            .steering_to_node
            .as_deref()
            .map_or_else(|| to.to_string(), |n| format!("{n} ({to})"));
        let node = if d.steering_also_to.is_empty() {
            node
        } else {
            format!("{node} and {}", d.steering_also_to.join(", "))
        };
        let _ = write!(
            line,
            "; forwarding {} connection(s) of the previous holder to {node}, {} packet(s) so far",
            count(d.steered_flows),
            d.steered_packets.unwrap_or(0)
        );
        if let Some(ms) = c.steer_ms_left {
            let _ = write!(line, " (at most {} more)", ago(ms / 1000));
        }
    }
    if let Some(e) = &d.rules_error {
        let _ = write!(line, "; HANDOVER RULES FAILED: {e}");
    }
}

/// `2026-12-01 22:08:47 UTC` for Unix seconds.
pub fn utc_timestamp(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let d = crate::install::civil_from_days(days);
    let t = secs % 86_400;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        d.year,
        d.month,
        d.day,
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

/// `42s`, `3m05s`, `2h01m`, `3d04h`: how long ago, short.
pub fn ago(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// What vrrpd tracks and what it does to the priority: `tracking: lbd ok, link up; offset 0`.
fn tracking_line(v: &VrrpStatus) -> String {
    let t = &v.tracking;
    let mut parts = vec![format!("link {}", if t.link_down { "DOWN" } else { "up" })];
    for tr in &t.trackers {
        if tr.ok {
            parts.push(format!("{} ok", tr.name));
        } else {
            let effect = match tr.effect {
                TrackEffect::Off => "none".to_owned(),
                TrackEffect::Weight(w) => format!("{w:+}"),
                TrackEffect::Fault => "fault".to_owned(),
            };
            parts.push(format!(
                "{} FAILING ({}; effect {effect})",
                tr.name, tr.detail
            ));
        }
    }
    format!(
        "tracking: {}; priority offset {}{}",
        parts.join(", "),
        t.priority_offset,
        if t.fault { ", FAULT" } else { "" }
    )
}

/// A plain table: columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i].saturating_sub(c.chars().count());
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn fmt_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}

pub fn render_node_status(s: &NodeStatus) -> String {
    let mut o = String::new();
    let node = s
        .lbd
        .as_ref()
        .map(|l| l.node.clone())
        .ok()
        .or_else(|| s.vrrp.as_ref().ok().map(|v| v.node.clone()));
    let _ = writeln!(
        o,
        "node {}",
        node.as_deref()
            .unwrap_or("(unknown: neither daemon answers)")
    );
    match &s.vrrp {
        Ok(v) => {
            let _ = writeln!(o, "  {}", vrrp_line(v));
            let _ = writeln!(o, "  {}", tracking_line(v));
        }
        Err(e) => {
            let _ = writeln!(o, "  vrrpd: {e}");
        }
    }
    match &s.lbd {
        Err(e) => {
            let _ = writeln!(o, "  lbd: {e}");
        }
        Ok(snap) => {
            let _ = writeln!(
                o,
                "  lbd: {} connections open (cap {}), up {}s, {} reloads{}",
                snap.current_connections,
                snap.max_connections,
                snap.uptime_secs,
                snap.reloads,
                snap.last_reload_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(", last reload FAILED: {e}"))
            );
            let mut rows = Vec::new();
            for f in &snap.frontends {
                for sv in &f.servers {
                    rows.push(vec![
                        format!("{} :{}", f.name, f.listen.port()),
                        sv.name.clone(),
                        sv.addr.to_string(),
                        format!(
                            "{}{}{}",
                            sv.status.as_str(),
                            // A drained or disabled server that is DOWN still says so.
                            match (sv.status, sv.admin) {
                                (
                                    ServerStatus::Down | ServerStatus::Checking,
                                    AdminState::Drain,
                                ) => "/DRAIN",
                                (
                                    ServerStatus::Down | ServerStatus::Checking,
                                    AdminState::Maint,
                                ) => "/MAINT",
                                _ => "",
                            },
                            sv.transition
                                .as_ref()
                                .map_or(String::new(), |t| format!(" ({t})"))
                        ),
                        ago(sv.last_change_secs),
                        sv.check_status.clone(),
                        sv.check_latency_ms
                            .map_or("-".into(), |l| format!("{l:.1}ms")),
                        sv.current_sessions.to_string(),
                        sv.total_sessions.to_string(),
                        format!("{}/{}", fmt_bytes(sv.bytes_in), fmt_bytes(sv.bytes_out)),
                        sv.connect_errors.to_string(),
                    ]);
                }
            }
            o.push('\n');
            o.push_str(&table(
                &[
                    "SERVICE", "SERVER", "ADDRESS", "STATUS", "SINCE", "CHECK", "LATENCY", "CUR",
                    "TOTAL", "IN/OUT", "CONNERR",
                ],
                &rows,
            ));
        }
    }
    o
}

/// `SERVICE/SERVER` -> (service, server).
pub fn split_target(t: &str) -> Result<(&str, &str)> {
    t.split_once('/')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| {
            anyhow!("expected SERVICE/SERVER, e.g. kube-apiserver/lx-k3s-server-02, got {t:?}")
        })
}

/// Set a backend server's administrative state, through this node's lbd, for the whole
/// cluster (lbd shares it with the other servers' lbd and says who has it).
pub fn set_server(run_dir: &Path, target: &str, state: AdminState) -> Result<Shared> {
    let (service, server) = split_target(target)?;
    let req = lbd_proto::SetServer {
        service: service.to_owned(),
        server: server.to_owned(),
        state,
    };
    Ok(block_on(lbd_proto::set_server(
        &sock(run_dir, "lbd"),
        req,
        CALL_TIMEOUT,
    ))?)
}

/// The line under an admin change: which servers have it.
pub fn shared_line(s: &Shared) -> String {
    if s.peers.is_empty() && s.pending.is_empty() {
        return "  this server only (no other server's lbd to share with: a single server, or lbd.peer_port = 0)".into();
    }
    let mut line = String::from("  cluster-wide: here");
    for p in &s.peers {
        line.push_str(", ");
        line.push_str(p);
    }
    for p in &s.pending {
        let _ = write!(
            line,
            "\n  not yet on {} ({}): its lbd gets it when it answers",
            p.peer, p.error
        );
    }
    line
}

/// `lbctl maintenance on|off`, waiting (bounded) for the handover to be visible: with
/// `on`, until another node is master (and says so in its adverts), so the line can name
/// the new holder.
pub fn maintenance(run_dir: &Path, on: bool) -> Result<String> {
    set_maintenance(run_dir, on)?;
    // The handover itself is make-before-break inside vrrpd; this only reports it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = vrrpd_status(run_dir)?;
        let handed_over = v
            .instances
            .iter()
            .all(|i| i.core.state != VrrpState::Master && i.core.master.is_some());
        let timed_out = std::time::Instant::now() > deadline;
        if !on || handed_over || timed_out {
            let what = if on {
                if handed_over {
                    "on: this node resigned and stays backup until `lbctl maintenance off`"
                } else {
                    "on: this node resigned, but no other node has taken the VIP yet \
                     (is another server up?)"
                }
            } else {
                "off: this node is a candidate again (it preempts if it has the highest priority)"
            };
            return Ok(format!("maintenance {what}; now {}", vrrp_line(&v)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `lbctl reload`: both daemons re-read cluster.toml; a bad file keeps the old config.
pub fn reload(run_dir: &Path) -> Result<String> {
    let mut out = String::new();
    let mut failed = false;
    let answers = [
        (
            "vrrpd",
            block_on(vrrpd_proto::reload(&sock(run_dir, "vrrpd"), CALL_TIMEOUT)).map(|r| r.reloads),
        ),
        (
            "lbd",
            block_on(lbd_proto::reload(&sock(run_dir, "lbd"), CALL_TIMEOUT)).map(|r| r.reloads),
        ),
    ];
    for (d, answer) in answers {
        match answer {
            Ok(n) => {
                let _ = writeln!(out, "{d}: reloaded ({n} reloads since it started)");
            }
            Err(e) => {
                failed = true;
                let _ = writeln!(out, "{d}: {e}");
            }
        }
    }
    if failed {
        bail!("{}", out.trim_end());
    }
    Ok(out)
}

/// What `lbctl upgrade lbd` came to; each has its exit status (the package's postinst
/// tells them apart).
#[derive(Debug)]
pub enum UpgradeOutcome {
    /// A new lbd accepts on every listener; the old one drains and exits.
    Done(lbd_proto::Upgraded),
    /// The new lbd did not take over; the running one goes on serving (exit 1).
    Failed(String),
    /// The running lbd predates upgrades: only a restart replaces it (exit 3).
    Unsupported(String),
    /// No lbd answers on this node (exit 4).
    NotRunning(String),
}

impl UpgradeOutcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            UpgradeOutcome::Done(_) => 0,
            UpgradeOutcome::Failed(_) => 1,
            UpgradeOutcome::Unsupported(_) => 3,
            UpgradeOutcome::NotRunning(_) => 4,
        }
    }
}

/// `lbctl upgrade lbd`: the running lbd starts the installed binary and hands it every
/// listening socket (no connection refused or dropped, the VIP stays); waits for the
/// outcome. `timeout`: how long the new process may take to be ready (lbd's default:
/// 15 s).
pub fn upgrade_lbd(run_dir: &Path, timeout: Option<Duration>) -> UpgradeOutcome {
    let req = lbd_proto::Upgrade {
        timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
    };
    // lbd answers within its timeout plus the handover's few steps (each bounded).
    let wait = timeout.unwrap_or(Duration::from_secs(15)) + Duration::from_secs(15);
    match block_on(lbd_proto::upgrade(&sock(run_dir, "lbd"), req, wait)) {
        Ok(u) => UpgradeOutcome::Done(u),
        Err(e @ CtlError::NotRunning { .. }) => UpgradeOutcome::NotRunning(e.to_string()),
        Err(CtlError::Refused { message, .. }) if message.contains("unknown variant `upgrade`") => {
            UpgradeOutcome::Unsupported(format!(
                "the running lbd predates upgrades (it does not know the request: {message}); \
                 only a restart replaces it: systemctl restart lbd"
            ))
        }
        Err(e) => UpgradeOutcome::Failed(e.to_string()),
    }
}

/// The lines `lbctl upgrade lbd` prints for a done upgrade.
pub fn upgraded_text(u: &lbd_proto::Upgraded) -> String {
    format!(
        "lbd upgraded: PID {} ({} {}) accepts on every listener since {} ms after the request\n\
         PID {} no longer accepts; it finishes its {} open connection(s) (at most {} s) and exits\n",
        u.new_pid,
        u.binary,
        u.new_version,
        u.took_ms,
        u.old_pid,
        u.draining,
        u.drain_timeout_ms / 1000,
    )
}

/// Minimal HTTP/1.0 GET for the stats pages (no dependency on an HTTP client crate).
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    auth: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: lbctl\r\n");
    if let Some((u, p)) = auth {
        let _ = write!(
            req,
            "Authorization: Basic {}\r\n",
            crate::install::base64(format!("{u}:{p}").as_bytes())
        );
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut body = Vec::new();
    s.take(32 << 20)
        .read_to_end(&mut body)
        .with_context(|| format!("reading from {addr}"))?;
    let text = String::from_utf8_lossy(&body);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{addr}: not an HTTP answer"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("{addr}: bad status line"))?;
    Ok((code, rest.to_owned()))
}

/// One server's stats page, or why it could not be read.
pub fn fetch_snapshot(c: &Cluster, addr: std::net::IpAddr) -> Result<Snapshot> {
    let Some(listen) = c.stats.listen else {
        bail!("no stats page: stats.listen is \"off\" in the cluster file");
    };
    let target = SocketAddr::new(addr, listen.port());
    let auth = c.stats.user.as_deref().zip(c.stats.password.as_deref());
    let (code, body) = http_get(target, "/stats.json", auth, Duration::from_secs(2))?;
    if code != 200 {
        bail!("{target} answered HTTP {code}");
    }
    serde_json::from_str(&body)
        .with_context(|| format!("{target}: /stats.json is not an lbd snapshot"))
}

/// `lbctl status --cluster`: every server's view in one table.
/// Each server's name and its stats snapshot, or why it could not be read.
pub type ClusterViews = Vec<(String, Result<Snapshot, String>)>;

pub fn cluster_status(c: &Cluster) -> (ClusterViews, String) {
    let views: Vec<(String, Result<Snapshot, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = c
            .servers()
            .map(|n| {
                (
                    n.name.clone(),
                    s.spawn(move || fetch_snapshot(c, n.address).map_err(|e| format!("{e:#}"))),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                (
                    name,
                    h.join().unwrap_or_else(|_| Err("internal error".into())),
                )
            })
            .collect()
    });
    let mut o = String::new();
    let mut rows = Vec::new();
    for (name, v) in &views {
        match v {
            Ok(s) => {
                let (state, master) = s.vrrp.as_ref().map_or(
                    ("vrrpd not answering".to_owned(), "?".to_owned()),
                    |v| {
                        (
                            format!(
                                "{}{}",
                                v.state,
                                if v.maintenance { " (maintenance)" } else { "" }
                            ),
                            v.master.as_deref().map_or_else(
                                || "?".into(),
                                |m| {
                                    let name = c
                                        .nodes
                                        .iter()
                                        .find(|n| n.address.to_string() == m)
                                        .map(|n| n.name.as_str());
                                    match name {
                                        Some(n) => format!("{n} ({m})"),
                                        None => m.to_owned(),
                                    }
                                },
                            ),
                        )
                    },
                );
                rows.push(vec![
                    name.clone(),
                    state,
                    master,
                    s.current_connections.to_string(),
                ]);
            }
            Err(e) => rows.push(vec![
                name.clone(),
                format!("NOT ANSWERING: {e}"),
                "-".into(),
                "-".into(),
            ]),
        }
    }
    o.push_str(&table(
        &["NODE", "VRRP", "VIP HOLDER (its view)", "CONNS"],
        &rows,
    ));
    // Each node's view of each backend.
    let answering: Vec<&(String, Result<Snapshot, String>)> =
        views.iter().filter(|(_, v)| v.is_ok()).collect();
    let mut header = vec!["SERVICE".to_owned(), "SERVER".to_owned()];
    header.extend(answering.iter().map(|(n, _)| format!("seen by {n}")));
    let mut rows = Vec::new();
    for svc in &c.services {
        for b in &svc.backends {
            let mut row = vec![svc.name.clone(), b.name.clone()];
            for (_, v) in &answering {
                let cell = v
                    .as_ref()
                    .ok()
                    .and_then(|s| s.frontends.iter().find(|f| f.name == svc.name))
                    .and_then(|f| f.servers.iter().find(|sv| sv.addr == b.addr))
                    .map_or("-".into(), |sv| {
                        format!("{} {}", sv.status.as_str(), sv.check_status)
                    });
                row.push(cell);
            }
            rows.push(row);
        }
    }
    let h: Vec<&str> = header.iter().map(String::as_str).collect();
    o.push('\n');
    o.push_str(&table(&h, &rows));
    (views, o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_well() {
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(185), "3m05s");
        assert_eq!(ago(7260), "2h01m");
        assert_eq!(ago(3 * 86_400 + 4 * 3600), "3d04h");
        assert_eq!(utc_timestamp(1_796_162_927), "2026-12-01 22:08:47 UTC");
    }

    /// Regressions: the holder was an address only, with no "since" and no tracker line.
    #[test]
    fn vrrp_line_names_the_holder_and_says_since_when() {
        use common::proto::vrrpd::{
            Cause, CoreStatus as Core, Counters, Instance, Tracker, Tracking, TransitionRecord,
            Version,
        };
        let core = Core {
            state: VrrpState::Backup,
            base_priority: 190,
            effective_priority: 190,
            master: Some("192.168.168.111".parse().unwrap()),
            vips: vec!["192.168.168.100".parse().unwrap()],
            master_adver_interval_ms: 1000,
            maintenance: false,
            fault: false,
            holding_vips: false,
            vip_error: None,
            counters: Counters::default(),
            transitions: vec![TransitionRecord {
                ago_ms: 125_000,
                from: VrrpState::Initialize,
                to: VrrpState::Backup,
                cause: Cause::Startup,
            }],
            parked_ms_left: None,
            steering_to: None,
            steer_ms_left: None,
        };
        let inst = Instance {
            core,
            family: "ipv4".into(),
            master_node: Some("lx-k3s-server-01".into()),
            primary: "192.168.168.112".parse().unwrap(),
            learned_sources: None,
            vips_on_interface: vec![],
            vips_answered: vec![],
            virtual_mac: None,
            vips_parked: vec![],
            drain: None,
        };
        let v = VrrpStatus {
            current: inst.clone(),
            node: "lx-k3s-server-02".into(),
            interface: "eth0".into(),
            vrid: 51,
            version: Version::V3,
            accept_mode: true,
            config: None,
            reloads: 0,
            last_reload_error: None,
            stopping: false,
            tracking: Tracking {
                link_down: false,
                fault: false,
                priority_offset: -50,
                trackers: vec![Tracker {
                    name: "lbd".into(),
                    ok: false,
                    effect: TrackEffect::Weight(-50),
                    detail: "no server of kube-apiserver is UP".into(),
                }],
            },
            responder: None,
            instances: vec![inst],
        };
        // What vrrpd sends is what lbctl reads.
        let wire = serde_json::to_value(&v).unwrap();
        assert_eq!(wire["state"], "backup");
        assert_eq!(serde_json::from_value::<VrrpStatus>(wire).unwrap(), v);
        assert_eq!(
            vrrp_line(&v),
            "VRRP backup since 2m05s (priority 190, base 190); VIP 192.168.168.100 held by \
             lx-k3s-server-01 (192.168.168.111)"
        );
        assert_eq!(
            tracking_line(&v),
            "tracking: link up, lbd FAILING (no server of kube-apiserver is UP; effect -50); \
             priority offset -50"
        );
    }

    #[test]
    fn table_pads_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }

    #[test]
    fn targets_need_both_halves() {
        assert_eq!(split_target("api/s1").unwrap(), ("api", "s1"));
        assert!(split_target("api").is_err());
        assert!(split_target("/s1").is_err());
    }
}
