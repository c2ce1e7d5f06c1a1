//! `lbctl lab test`: the reference lab's validation procedures, run against the running
//! lab, each with measured figures: time to recover, and failed requests out of requests
//! sent by a client probing through the VIP every 20 ms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use common::proto::vrrpd::{CoreStatus, State};
use serde::Serialize;

use super::hold::{self, Holder};
use super::probe::{analyse, Outcome, Probe, Sample, Target};
use super::{fail, recover, start_node, FailHow, LabState};

/// Probe cadence (the lab's validation procedure: every 20 ms).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// A request with no answer after this is failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// A request slower than this counts as disrupted (it survived on a TCP retransmit).
pub const SLOW_MS: f64 = 250.0;

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub what: String,
    /// Headline measured time (ms): what "recover" means is in `what`.
    pub recovered_ms: Option<f64>,
    pub bound_ms: Option<f64>,
    pub outcome: Outcome,
    pub passed: bool,
    pub notes: Vec<String>,
    /// Every request of the scenario's probe (sent time from the probe's start, outcome,
    /// latency, the answering backend, the error), so a reader can check that each failure
    /// fell inside the allowed window. `event_ms` is when the scenario broke something.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Sample>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: String,
    pub vrrp_interval_ms: u64,
    pub scenarios: Vec<ScenarioReport>,
}

fn vrrp_core(st: &LabState, node: &str) -> Option<CoreStatus> {
    let n = st.node(node).ok()?;
    crate::ops::vrrpd_status(&n.run_dir)
        .ok()
        .map(|v| v.current.core)
}

fn vrrp_state(st: &LabState, node: &str) -> Option<State> {
    vrrp_core(st, node).map(|c| c.state)
}

/// The server whose vrrpd says it is master (exactly one), if any.
pub fn master(st: &LabState) -> Option<String> {
    let masters: Vec<String> = st
        .servers()
        .filter(|n| vrrp_state(st, &n.name) == Some(State::Master))
        .map(|n| n.name.clone())
        .collect();
    (masters.len() == 1).then(|| masters[0].clone())
}

/// Poll until `cond` holds, every 5 ms, up to `timeout`; the time it took.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return Some(start.elapsed());
        }
        super::reap();
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// The status of `service/server` as lbd on `on_node` sees it.
fn backend_status(st: &LabState, on_node: &str, service: &str, server: &str) -> Option<String> {
    let n = st.node(on_node).ok()?;
    let snap = crate::ops::lbd_status(&n.run_dir).ok()?;
    snap.frontends
        .iter()
        .find(|f| f.name == service)?
        .servers
        .iter()
        .find(|s| s.name == server)
        .map(|s| s.status.as_str().to_owned())
}

struct Ctx<'a> {
    st: &'a mut LabState,
    vip: std::net::IpAddr,
    /// The IPv6 VIP of a dual-stack lab: probed too.
    vip6: Option<std::net::IpAddr>,
    interval: Duration,
    client_ns: String,
    api_port: u16,
    http_port: u16,
}

impl Ctx<'_> {
    fn probe(&self, api: bool) -> Result<Probe> {
        self.probe_on(self.vip, api)
    }

    fn probe_on(&self, vip: std::net::IpAddr, api: bool) -> Result<Probe> {
        let target = if api {
            Target {
                addr: SocketAddr::new(vip, self.api_port),
                tls: true,
                path: "/version".into(),
                raw: false,
            }
        } else {
            Target {
                addr: SocketAddr::new(vip, self.http_port),
                tls: false,
                path: "/".into(),
                raw: false,
            }
        };
        Probe::start(&self.client_ns, target, PROBE_INTERVAL, PROBE_TIMEOUT)
    }

    /// Master_Down_Interval for a backup of priority `p`, plus the margin we allow.
    fn failover_bound_ms(&self, prio: u64) -> f64 {
        let i = self.interval.as_secs_f64() * 1000.0;
        let skew = (256.0 - prio as f64) * i / 256.0;
        3.0 * i + skew + 200.0
    }

    fn priority(&self, node: &str) -> u64 {
        vrrp_core(self.st, node).map_or(0, |c| u64::from(c.base_priority))
    }
}

/// Keep the probe running for `quiet` after the event settled, so late disruptions show.
fn settle(quiet: Duration) {
    std::thread::sleep(quiet);
}

fn finish(probe: Probe, event_ms: f64) -> Result<(Outcome, Vec<Sample>)> {
    let samples = probe.finish()?;
    Ok((analyse(&samples, event_ms, SLOW_MS), samples))
}

fn vip_failover_link(c: &mut Ctx<'_>) -> Result<Vec<ScenarioReport>> {
    let m = master(c.st).ok_or_else(|| anyhow!("no single master before the test"))?;
    let probe = c.probe(false)?;
    // Dual stack: the IPv6 VIP is probed over the same cut.
    let probe6 = match c.vip6 {
        Some(v6) => Some(c.probe_on(v6, false)?),
        None => None,
    };
    std::thread::sleep(Duration::from_secs(1) + off_grid(PROBE_INTERVAL));
    let event = probe.now_ms();
    let event6 = probe6.as_ref().map(Probe::now_ms);
    fail(c.st, &m, FailHow::Link)?;
    let st: &LabState = c.st;
    let others: Vec<String> = st
        .servers()
        .filter(|n| n.name != m)
        .map(|n| n.name.clone())
        .collect();
    let moved = wait_for(Duration::from_secs(20), || {
        others
            .iter()
            .any(|o| vrrp_state(st, o) == Some(State::Master))
    });
    let new_master = others
        .iter()
        .find(|o| vrrp_state(st, o) == Some(State::Master))
        .cloned();
    settle(Duration::from_secs(3));
    let (out, samples) = finish(probe, event)?;
    let prio = new_master.as_deref().map_or(0, |n| c.priority(n));
    let bound = c.failover_bound_ms(prio);
    let outside_of = |samples: &[Sample], event: f64| {
        samples
            .iter()
            .filter(|s| !s.ok && (s.sent_ms < event || s.sent_ms - event > bound))
            .count()
    };
    let outside = outside_of(&samples, event);
    let v6_report = match (probe6, event6) {
        (Some(p6), Some(e6)) => {
            let (out6, samples6) = finish(p6, e6)?;
            let outside6 = outside_of(&samples6, e6);
            Some(ScenarioReport {
                name: "vip-failover-link-ipv6".into(),
                what: "the same cut, probed through the IPv6 VIP".into(),
                recovered_ms: Some(out6.recovered_after_ms),
                bound_ms: Some(bound),
                passed: moved.is_some() && out6.recovered_after_ms <= bound && outside6 == 0,
                notes: vec![format!(
                    "IPv6 VIP {}; failed requests sent outside [cut, cut + bound]: {outside6}",
                    c.vip6.map(|v| v.to_string()).unwrap_or_default()
                )],
                outcome: out6,
                samples: samples6,
                event_ms: Some(e6),
            })
        }
        _ => None,
    };
    let mut notes = vec![format!(
        "cut the cable of the master {m}; {} took over after {}",
        new_master.as_deref().unwrap_or("nobody"),
        moved.map_or("(never)".into(), |d| format!(
            "{:.0} ms (vrrpd state)",
            d.as_secs_f64() * 1000.0
        ))
    )];
    notes.push(format!(
        "bound: 3 x interval + skew({prio}) + 200 ms = {bound:.0} ms; failed requests sent outside [cut, cut + bound]: {outside}"
    ));
    let link = ScenarioReport {
        name: "vip-failover-link".into(),
        what: "VIP failover after link loss of the VIP holder: time until requests through the VIP succeed again".into(),
        recovered_ms: Some(out.recovered_after_ms),
        bound_ms: Some(bound),
        passed: moved.is_some() && out.recovered_after_ms <= bound && outside == 0,
        outcome: out,
        notes,
        samples,
        event_ms: Some(event),
    };
    // Recovery with preemption: reconnect the old master; it must take the VIP back.
    let probe = c.probe(false)?;
    std::thread::sleep(Duration::from_millis(500));
    let event = probe.now_ms();
    recover(c.st, &m)?;
    let st: &LabState = c.st;
    let back = wait_for(Duration::from_secs(20), || {
        master(st).as_deref() == Some(m.as_str())
    });
    settle(Duration::from_secs(2));
    let (out, samples) = finish(probe, event)?;
    let preempt = ScenarioReport {
        name: "vip-recovery-preempt".into(),
        what: "recovery with preemption: the old master returns and takes the VIP back; requests failed meanwhile".into(),
        recovered_ms: back.map(|d| d.as_secs_f64() * 1000.0),
        bound_ms: None,
        passed: back.is_some() && out.failed == 0,
        notes: vec![format!(
            "reconnected {m}; master again after {}",
            back.map_or("(never)".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
        )],
        outcome: out,
        samples,
        event_ms: Some(event),
    };
    let mut all = vec![link];
    all.extend(v6_report);
    all.push(preempt);
    Ok(all)
}

fn vip_graceful_stop(c: &mut Ctx<'_>) -> Result<ScenarioReport> {
    let m = master(c.st).ok_or_else(|| anyhow!("no single master before the test"))?;
    let probe = c.probe(false)?;
    std::thread::sleep(Duration::from_secs(1) + off_grid(PROBE_INTERVAL));
    let event = probe.now_ms();
    let stopped = super::stop_gracefully(c.st, &m, Duration::from_secs(15))?;
    let st: &LabState = c.st;
    let new_master = master(st);
    settle(Duration::from_secs(2));
    let (out, samples) = finish(probe, event)?;
    recover(c.st, &m)?;
    let st: &LabState = c.st;
    let back = wait_for(Duration::from_secs(20), || {
        master(st).as_deref() == Some(m.as_str())
    });
    Ok(ScenarioReport {
        name: "vip-graceful-stop".into(),
        what:
            "graceful stop of the VIP holder (SIGTERM vrrpd, then lbd): make-before-break handover"
                .into(),
        recovered_ms: Some(stopped.as_secs_f64() * 1000.0),
        bound_ms: None,
        passed: out.failed == 0 && new_master.is_some(),
        notes: vec![
            format!(
                "stopped {m}: vrrpd handed over and exited after {:.0} ms; new master {}",
                stopped.as_secs_f64() * 1000.0,
                new_master.as_deref().unwrap_or("none")
            ),
            format!(
                "restarted {m}: master again after {}",
                back.map_or("(never)".into(), |d| format!(
                    "{:.0} ms",
                    d.as_secs_f64() * 1000.0
                ))
            ),
        ],
        outcome: out,
        samples,
        event_ms: Some(event),
    })
}

/// A non-master server fails (cable cut): lbd on the VIP holder must route around it.
fn node_failure(c: &mut Ctx<'_>, api: bool) -> Result<ScenarioReport> {
    let m = master(c.st).ok_or_else(|| anyhow!("no single master"))?;
    let victim =
        c.st.servers()
            .map(|n| n.name.clone())
            .find(|n| *n != m)
            .ok_or_else(|| anyhow!("need two servers"))?;
    let cluster = c.st.cluster()?;
    let svc = cluster
        .services
        .iter()
        .find(|s| s.listen == if api { c.api_port } else { c.http_port })
        .ok_or_else(|| anyhow!("service missing"))?;
    let (svc_name, check) = (svc.name.clone(), svc.check.clone());
    let probe = c.probe(api)?;
    std::thread::sleep(Duration::from_secs(1) + off_grid(PROBE_INTERVAL));
    let event = probe.now_ms();
    fail(c.st, &victim, FailHow::Link)?;
    // The bridge port is down once `ip` returned. A request sent before then may already
    // have been forwarded to the victim: its bytes are gone with the node, and a TCP proxy
    // cannot replay them (nor can HAProxy in TCP mode). Every request sent after it must
    // be answered: lbd retries a connect that times out on another server.
    let cut_done = probe.now_ms();
    let st: &LabState = c.st;
    let down = wait_for(Duration::from_secs(30), || {
        backend_status(st, &m, &svc_name, &victim).as_deref() == Some("DOWN")
    });
    std::thread::sleep(Duration::from_secs(1));
    let (out, cut_samples) = finish(probe, event)?;
    // Recovery: traffic must come back to the node.
    let probe = c.probe(api)?;
    let rec_event = probe.now_ms();
    recover(c.st, &victim)?;
    let st: &LabState = c.st;
    let up = wait_for(Duration::from_secs(30), || {
        backend_status(st, &m, &svc_name, &victim).as_deref() == Some("UP")
    });
    std::thread::sleep(Duration::from_secs(2));
    let (rec_out, samples) = finish(probe, rec_event)?;
    let back_on_node = samples
        .iter()
        .filter(|s| s.backend.as_deref().is_some_and(|b| b.contains(&victim)))
        .count();
    let in_flight = cut_samples
        .iter()
        .filter(|s| !s.ok && s.sent_ms <= cut_done && s.sent_ms + s.latency_ms >= event)
        .count();
    let failed_after_cut = out.failed - in_flight;
    let bound = check.interval.as_secs_f64() * 1000.0 * f64::from(check.fall)
        + check.timeout.as_secs_f64() * 1000.0;
    let name = if api {
        "api-node-failure"
    } else {
        "app-node-failure"
    };
    let via = if api {
        format!("https://VIP:{}/version", c.api_port)
    } else {
        format!("http://VIP:{}/", c.http_port)
    };
    Ok(ScenarioReport {
        name: name.into(),
        what: format!("{} availability through the VIP ({via}) while server {victim} is cut off; recover = backend marked DOWN", if api { "API" } else { "application" }),
        recovered_ms: down.map(|d| d.as_secs_f64() * 1000.0),
        bound_ms: Some(bound),
        passed: failed_after_cut == 0
            && down.is_some_and(|d| d.as_secs_f64() * 1000.0 <= bound)
            && up.is_some()
            && back_on_node > 0,
        notes: vec![
            format!("lbd on {m} marked {svc_name}/{victim} DOWN after {} (bound interval x fall + timeout = {bound:.0} ms)", down.map_or("(never)".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))),
            format!(
                "the cut took {:.0} ms; failed: {in_flight} sent before it was done (possibly in flight to {victim}, which no TCP proxy can replay), {failed_after_cut} sent after it (must be 0)",
                cut_done - event
            ),
            format!(
                "after reconnecting: UP after {}; {back_on_node} of {} requests then reached {victim}; {} failed during recovery",
                up.map_or("(never)".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)),
                rec_out.sent,
                rec_out.failed
            ),
        ],
        outcome: out,
        samples: cut_samples,
        event_ms: Some(event),
    })
}

/// The stand-in application on one node stops; lbd takes it out and back in.
fn backend_out_and_back(c: &mut Ctx<'_>) -> Result<ScenarioReport> {
    let m = master(c.st).ok_or_else(|| anyhow!("no single master"))?;
    let victim =
        c.st.servers()
            .map(|n| n.name.clone())
            .last()
            .ok_or_else(|| anyhow!("no servers"))?;
    let cluster = c.st.cluster()?;
    let svc = cluster
        .services
        .iter()
        .find(|s| s.listen == c.http_port)
        .ok_or_else(|| anyhow!("no ingress-http"))?
        .clone();
    let probe = c.probe(false)?;
    std::thread::sleep(Duration::from_secs(1) + off_grid(PROBE_INTERVAL));
    let event = probe.now_ms();
    let pid =
        c.st.node(&victim)?
            .procs
            .iter()
            .find(|p| p.what == "backend")
            .map(|p| p.pid);
    // Timed from the signal, not from the process's exit: it closes its listener at
    // once and finishes what it serves for up to 2 s (as an application server does).
    let stopped_at = Instant::now();
    if let Some(pid) = pid {
        super::signal(pid, nix::sys::signal::Signal::SIGTERM);
    }
    let st: &LabState = c.st;
    let down = wait_for(Duration::from_secs(30), || {
        backend_status(st, &m, &svc.name, &victim).as_deref() == Some("DOWN")
    })
    .map(|_| stopped_at.elapsed());
    if let Some(pid) = pid {
        super::stop_pid(
            pid,
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(5),
        );
    }
    let event_up = probe.now_ms();
    start_node(c.st, &victim, &["backend"])?;
    let st: &LabState = c.st;
    let up = wait_for(Duration::from_secs(30), || {
        backend_status(st, &m, &svc.name, &victim).as_deref() == Some("UP")
    });
    std::thread::sleep(Duration::from_secs(1));
    let (out, samples) = finish(probe, event)?;
    let after_up = samples
        .iter()
        .filter(|s| {
            s.sent_ms > event_up && s.backend.as_deref().is_some_and(|b| b.contains(&victim))
        })
        .count();
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    let ch = &svc.check;
    let bound_down =
        ch.interval.as_secs_f64() * 1000.0 * f64::from(ch.fall) + ch.timeout.as_secs_f64() * 1000.0;
    let bound_up =
        ch.interval.as_secs_f64() * 1000.0 * f64::from(ch.rise) + ch.timeout.as_secs_f64() * 1000.0;
    Ok(ScenarioReport {
        name: "backend-out-and-back".into(),
        what: format!("the application on {victim} stops: removed from rotation (DOWN), then started again and readmitted (UP)"),
        recovered_ms: ms(down),
        bound_ms: Some(bound_down),
        passed: out.failed == 0 && down.is_some_and(|d| d.as_secs_f64() * 1000.0 <= bound_down) && up.is_some() && after_up > 0,
        notes: vec![
            format!("DOWN after {} (bound interval x fall + timeout = {bound_down:.0} ms)", ms(down).map_or("(never)".into(), |v| format!("{v:.0} ms"))),
            format!("UP after {} (bound interval x rise + timeout = {bound_up:.0} ms); {after_up} requests reached it after restart", ms(up).map_or("(never)".into(), |v| format!("{v:.0} ms"))),
        ],
        outcome: out,
        samples,
        event_ms: Some(event),
    })
}

fn traffic_spread(c: &mut Ctx<'_>) -> Result<ScenarioReport> {
    let probe = c.probe(false)?;
    std::thread::sleep(Duration::from_secs(4));
    let (out, samples) = finish(probe, 0.0)?;
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.ok) {
        *per.entry(s.backend.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let servers: Vec<String> = c.st.servers().map(|n| n.name.clone()).collect();
    let ok_total: usize = per.values().sum();
    let min_share = servers
        .iter()
        .map(|s| per.get(s).copied().unwrap_or(0))
        .min()
        .unwrap_or(0) as f64
        / ok_total.max(1) as f64;
    let spread: Vec<String> = servers
        .iter()
        .map(|s| format!("{s}: {}", per.get(s).copied().unwrap_or(0)))
        .collect();
    Ok(ScenarioReport {
        name: "traffic-spread".into(),
        what: "requests through the VIP are spread across every server's backend".into(),
        recovered_ms: None,
        bound_ms: None,
        passed: out.failed == 0 && min_share >= 0.8 / servers.len() as f64,
        notes: vec![format!(
            "{}; smallest share {:.0}%",
            spread.join(", "),
            min_share * 100.0
        )],
        outcome: out,
        samples,
        event_ms: None,
    })
}

/// A delay of 0..`max`, different every call: scenario steps land at a random point of
/// the probe's 20 ms grid, as real clients' requests would, instead of at the same phase
/// run after run (with vrrpd's timers exact, the planned-maintenance handover otherwise
/// lands at one fixed point of the grid, which is either always clear of a request or
/// always on one).
fn off_grid(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // The low bits of the clock are noise; scramble them a little (splitmix-style).
    let mut z = u64::from(nanos).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^= z >> 27;
    let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(z % max_us)
}

fn planned_maintenance(c: &mut Ctx<'_>) -> Result<ScenarioReport> {
    let m = master(c.st).ok_or_else(|| anyhow!("no single master"))?;
    let run_dir = c.st.node(&m)?.run_dir.clone();
    let probe = c.probe(false)?;
    std::thread::sleep(Duration::from_secs(1) + off_grid(PROBE_INTERVAL));
    let event = probe.now_ms();
    crate::ops::set_maintenance(&run_dir, true)?;
    let st: &LabState = c.st;
    let moved = wait_for(Duration::from_secs(20), || {
        master(st).is_some_and(|x| x != m)
    });
    let new_master = master(st);
    std::thread::sleep(Duration::from_secs(2) + off_grid(PROBE_INTERVAL));
    let still_backup = vrrp_state(st, &m) == Some(State::Backup);
    crate::ops::set_maintenance(&run_dir, false)?;
    let back = wait_for(Duration::from_secs(20), || {
        master(st).as_deref() == Some(m.as_str())
    });
    std::thread::sleep(Duration::from_secs(1));
    let (out, samples) = finish(probe, event)?;
    let ms = |d: Option<Duration>| {
        d.map_or("(never)".into(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        })
    };
    Ok(ScenarioReport {
        name: "planned-maintenance".into(),
        what: "`lbctl maintenance on` on the VIP holder, then `off`: no request may fail".into(),
        recovered_ms: moved.map(|d| d.as_secs_f64() * 1000.0),
        bound_ms: None,
        passed: out.failed == 0 && moved.is_some() && still_backup && back.is_some(),
        notes: vec![
            format!(
                "maintenance on {m}: {} master after {}; {m} stayed backup: {still_backup}",
                new_master.as_deref().unwrap_or("none"),
                ms(moved)
            ),
            format!("maintenance off: {m} master again after {}", ms(back)),
        ],
        outcome: out,
        samples,
        event_ms: Some(event),
    })
}

/// A drain is the cluster's: `lbctl drain` on the VIP holder, then the VIP moves (maintenance
/// on the holder), then every daemon of every server restarts; through all of it no new
/// request may reach the drained server, and the drain (and the maintenance) must still be
/// there at the end.
fn drain_follows_vip(c: &mut Ctx<'_>) -> Result<ScenarioReport> {
    let m = master(c.st).ok_or_else(|| anyhow!("no single master"))?;
    // The last server: with three or more it is neither the holder nor the next one, so the
    // next holder knows of the drain only from the cluster.
    let victim =
        c.st.servers()
            .map(|n| n.name.clone())
            .filter(|n| *n != m)
            .last()
            .ok_or_else(|| anyhow!("need two servers"))?;
    let cluster = c.st.cluster()?;
    let svc = cluster
        .services
        .iter()
        .find(|s| s.listen == c.http_port)
        .map(|s| s.name.clone())
        .ok_or_else(|| anyhow!("no HTTP ingress service"))?;
    let r = drain_follows_vip_on(c, &m, &svc, &victim);
    // Whatever happened: maintenance off, the server back in rotation (both are kept
    // across restarts now, so a failed run must not leave them behind).
    if let Ok(n) = c.st.node(&m) {
        let run = n.run_dir.clone();
        let _ = crate::ops::set_maintenance(&run, false);
        let _ = crate::ops::set_server(
            &run,
            &format!("{svc}/{victim}"),
            common::proto::lbd::AdminState::Ready,
        );
    }
    r
}

fn drain_follows_vip_on(
    c: &mut Ctx<'_>,
    m: &str,
    svc: &str,
    victim: &str,
) -> Result<ScenarioReport> {
    let (m, svc, victim) = (m.to_owned(), svc.to_owned(), victim.to_owned());
    let target = format!("{svc}/{victim}");
    let m_run = c.st.node(&m)?.run_dir.clone();
    let servers: Vec<String> = c.st.servers().map(|n| n.name.clone()).collect();
    let mut notes = Vec::new();

    let shared = crate::ops::set_server(&m_run, &target, common::proto::lbd::AdminState::Drain)?;
    notes.push(format!(
        "drained {target} on {m}; confirmed by {} of {} other servers{}",
        shared.peers.len(),
        servers.len() - 1,
        if shared.pending.is_empty() {
            String::new()
        } else {
            format!(" (pending: {:?})", shared.pending)
        }
    ));
    let everywhere = |st: &LabState| {
        servers
            .iter()
            .all(|n| backend_status(st, n, &svc, &victim).as_deref() == Some("DRAIN"))
    };
    let st: &LabState = c.st;
    let spread = wait_for(Duration::from_secs(5), || everywhere(st));

    // The VIP moves.
    let probe = c.probe(false)?;
    std::thread::sleep(Duration::from_millis(500));
    let event = probe.now_ms();
    crate::ops::set_maintenance(&m_run, true)?;
    let moved = wait_for(Duration::from_secs(20), || {
        master(st).is_some_and(|x| x != m)
    });
    let new_master = master(st);
    std::thread::sleep(Duration::from_secs(2));
    let (out, samples) = finish(probe, event)?;
    let reached = |samples: &[Sample]| {
        samples
            .iter()
            .filter(|s| s.backend.as_deref().is_some_and(|b| b.contains(&victim)))
            .count()
    };
    let after_move = reached(&samples);
    notes.push(format!(
        "maintenance on {m}: {} master; {after_move} of {} requests reached {victim}",
        new_master.as_deref().unwrap_or("nobody"),
        out.sent
    ));

    // Every daemon of every server restarts, one server at a time.
    for n in &servers {
        fail(c.st, n, FailHow::Stop)?;
        recover(c.st, n)?;
    }
    super::wait_ready(c.st, Duration::from_secs(20))?;
    let st: &LabState = c.st;
    let kept = wait_for(Duration::from_secs(5), || everywhere(st));
    let still_maint = vrrp_core(st, &m).is_some_and(|c| c.maintenance && c.state == State::Backup);
    let probe = c.probe(false)?;
    std::thread::sleep(Duration::from_secs(2));
    let (out2, samples2) = finish(probe, 0.0)?;
    let after_restart = reached(&samples2);
    notes.push(format!(
        "restarted vrrpd and lbd on every server: drain kept on all {}: {}; {m} still in maintenance: {still_maint}; {after_restart} of {} requests reached {victim}",
        servers.len(),
        kept.is_some(),
        out2.sent
    ));

    // Back as it was (the caller does it again whatever happened here).
    let m_run = c.st.node(&m)?.run_dir.clone();
    crate::ops::set_server(&m_run, &target, common::proto::lbd::AdminState::Ready)?;
    crate::ops::set_maintenance(&m_run, false)?;
    let st: &LabState = c.st;
    let readied = wait_for(Duration::from_secs(5), || {
        servers
            .iter()
            .all(|n| backend_status(st, n, &svc, &victim).as_deref() != Some("DRAIN"))
    });
    Ok(ScenarioReport {
        name: "drain-follows-vip".into(),
        what: format!("`lbctl drain {target}` on the VIP holder, then maintenance on it, then a restart of every daemon: no new request may reach {victim}, and the drain must hold everywhere"),
        recovered_ms: spread.map(|d| d.as_secs_f64() * 1000.0),
        bound_ms: None,
        passed: spread.is_some()
            && moved.is_some()
            && after_move == 0
            && kept.is_some()
            && still_maint
            && after_restart == 0
            && out.failed == 0
            && out2.failed == 0
            && readied.is_some(),
        notes,
        outcome: out,
        samples,
        event_ms: Some(event),
    })
}

/// Every service the other scenarios do not probe (a database on 5432, the HTTPS ingress,
/// ...), through the VIP (both families), against the stand-ins: each must answer, from
/// more than one server where it has several.
fn every_service(c: &mut Ctx<'_>) -> Result<Vec<ScenarioReport>> {
    let cluster = c.st.cluster()?;
    let mut out = Vec::new();
    for svc in &cluster.services {
        let probed_elsewhere = svc.listen == c.api_port || svc.listen == c.http_port;
        let kind = super::backend::StandIn::for_service(svc);
        let (tls, path, raw) = match kind {
            super::backend::StandIn::Api => (true, "/version", false),
            super::backend::StandIn::Https => (true, "/", false),
            super::backend::StandIn::Http => (false, "/", false),
            super::backend::StandIn::Tcp => (false, "", true),
        };
        for vip in std::iter::once(c.vip).chain(c.vip6) {
            // The other scenarios probe the API and HTTP ports over IPv4.
            if probed_elsewhere && vip.is_ipv4() {
                continue;
            }
            let target = Target {
                addr: SocketAddr::new(vip, svc.listen),
                tls,
                path: path.into(),
                raw,
            };
            let probe = Probe::start(&c.client_ns, target, PROBE_INTERVAL, PROBE_TIMEOUT)?;
            std::thread::sleep(Duration::from_secs(2));
            let (o, samples) = finish(probe, 0.0)?;
            let mut seen: Vec<String> = samples.iter().filter_map(|s| s.backend.clone()).collect();
            seen.sort();
            seen.dedup();
            let want = svc.backends.iter().filter(|b| !b.backup).count().min(2);
            out.push(ScenarioReport {
                name: format!(
                    "service-{}{}",
                    svc.name,
                    if vip.is_ipv6() { "-ipv6" } else { "" }
                ),
                what: format!(
                    "service {} on {vip}:{} -> port {} ({} stand-ins): every request answered",
                    svc.name,
                    svc.listen,
                    svc.backend_port,
                    kind.as_str()
                ),
                recovered_ms: None,
                bound_ms: None,
                passed: o.sent > 0 && o.failed == 0 && seen.len() >= want,
                notes: vec![format!("answered by {}", seen.join(", "))],
                outcome: o,
                samples,
                event_ms: None,
            });
        }
    }
    Ok(out)
}

/// The client's address as a stand-in saw it: `client ADDRESS` on an HTTP answer's second
/// line, `"client":"ADDRESS"` in the API's `/version`.
fn client_in(body: &str) -> Option<String> {
    if let Some(l) = body.lines().find_map(|l| l.strip_prefix("client ")) {
        return Some(l.trim().to_owned());
    }
    let (_, rest) = body.split_once("\"client\":\"")?;
    rest.split('"').next().map(str::to_owned)
}

/// Requests per family and service in `client-address`.
const CLIENT_ADDRESS_REQUESTS: usize = 10;

/// Every service with `proxy_protocol`: its stand-ins require the header and name the
/// client it carried, so an answer through the VIP (each family) must name the client
/// namespace's own address, which is neither lbd's nor a server's. A lab without
/// `proxy_protocol` has nothing to show here: no report.
fn client_address(c: &mut Ctx<'_>) -> Result<Vec<ScenarioReport>> {
    use super::backend::StandIn;
    let cluster = c.st.cluster()?;
    let client =
        c.st.client
            .clone()
            .ok_or_else(|| anyhow!("the lab has no client namespace"))?;
    let mut out = Vec::new();
    for svc in cluster
        .services
        .iter()
        .filter(|s| s.proxy_protocol.is_some())
    {
        let (tls, path) = match StandIn::for_service(svc) {
            StandIn::Api => (true, "/version"),
            StandIn::Https => (true, "/"),
            StandIn::Http => (false, "/"),
            // A raw TCP stand-in has no answer to name the client in.
            StandIn::Tcp => continue,
        };
        let families = std::iter::once((c.vip, Some(client.address)))
            .chain(c.vip6.map(|v| (v, client.address6)));
        for (vip, want) in families {
            let Some(want) = want else { continue };
            let target = Target {
                addr: SocketAddr::new(vip, svc.listen),
                tls,
                path: path.into(),
                raw: false,
            };
            let answers = super::probe::fetch(
                &c.client_ns,
                &target,
                CLIENT_ADDRESS_REQUESTS,
                PROBE_TIMEOUT,
            )?;
            let mut seen: Vec<String> = answers
                .iter()
                .map(|a| match a {
                    Ok(body) => client_in(body).unwrap_or_else(|| "no client in the answer".into()),
                    Err(e) => format!("failed: {e:#}"),
                })
                .collect();
            let right = seen.iter().filter(|s| **s == want.to_string()).count();
            seen.sort();
            seen.dedup();
            out.push(ScenarioReport {
                name: format!(
                    "client-address-{}{}",
                    svc.name,
                    if vip.is_ipv6() { "-ipv6" } else { "" }
                ),
                what: format!(
                    "service {} on {vip}:{} sends a PROXY {} header: the stand-ins name the client {want}",
                    svc.name,
                    svc.listen,
                    svc.proxy_protocol.map_or("", |v| v.as_str())
                ),
                recovered_ms: None,
                bound_ms: None,
                outcome: analyse(&[], 0.0, SLOW_MS),
                passed: right == CLIENT_ADDRESS_REQUESTS,
                notes: vec![format!(
                    "{right} of {CLIENT_ADDRESS_REQUESTS} answers named {want}; seen: {}",
                    seen.join(", ")
                )],
                samples: Vec::new(),
                event_ms: None,
            });
        }
    }
    Ok(out)
}

/// Keep-alive connections held through the IPv4 VIP (the IPv6 one of a dual-stack lab
/// gets half as many more), beside one echo stream per VIP.
pub const HELD_CONNECTIONS: usize = 20;

/// Established connections survive every planned move of the VIP (docs/handover.md):
/// keep-alive HTTP and echo streams through the VIP, opened before and checked byte for
/// byte after `maintenance on` on the holder, `off` (it preempts back), a SIGTERM of the
/// holder's vrrpd with its restart (it preempts back again) and an lbd upgrade on the
/// holder (the VIP stays); meanwhile a new connection every 20 ms, none of which may
/// fail.
fn connections_survive_handover(c: &mut Ctx<'_>) -> Result<ScenarioReport> {
    let m = master(c.st).ok_or_else(|| anyhow!("no single master"))?;
    let run_dir = c.st.node(&m)?.run_dir.clone();
    let mut specs: Vec<(SocketAddr, hold::Kind)> = Vec::new();
    for _ in 0..HELD_CONNECTIONS {
        specs.push((SocketAddr::new(c.vip, c.http_port), hold::Kind::KeepAlive));
    }
    specs.push((SocketAddr::new(c.vip, c.http_port), hold::Kind::Stream));
    if let Some(v6) = c.vip6 {
        for _ in 0..HELD_CONNECTIONS / 2 {
            specs.push((SocketAddr::new(v6, c.http_port), hold::Kind::KeepAlive));
        }
        specs.push((SocketAddr::new(v6, c.http_port), hold::Kind::Stream));
    }
    let held = Holder::start(&c.client_ns, specs)?;
    let probe = c.probe(false)?;
    let event = probe.now_ms();
    let mut notes = Vec::new();
    let mut moved_all = true;
    let mut first_move = None;
    let hold_for = || std::thread::sleep(Duration::from_secs(3) + off_grid(PROBE_INTERVAL));
    let mut step = |c: &mut Ctx<'_>, what: &str, away: bool| -> Result<()> {
        let st: &LabState = c.st;
        let took = wait_for(Duration::from_secs(20), || {
            master(st).is_some_and(|x| (x != m) == away)
        });
        moved_all &= took.is_some();
        if away && first_move.is_none() {
            first_move = took;
        }
        let now = master(st);
        notes.push(format!(
            "{what}: {} master after {}",
            now.as_deref().unwrap_or("none"),
            took.map_or("(never)".into(), |d| format!(
                "{:.0} ms",
                d.as_secs_f64() * 1000.0
            ))
        ));
        hold_for();
        // What the holder says it does for the held connections, in the middle of it.
        if let Some(h) = now {
            if let Ok(v) = crate::ops::vrrpd_status(&c.st.node(&h)?.run_dir) {
                for i in &v.instances {
                    if let Some(d) = &i.drain {
                        notes.push(format!(
                            "  {h} ({}): forwarding {} connection(s) to {}, {} packet(s)",
                            i.family,
                            d.steered_flows.map_or("?".into(), |n| n.to_string()),
                            d.steering_to_node.as_deref().unwrap_or("-"),
                            d.steered_packets.unwrap_or(0)
                        ));
                    }
                }
            }
        }
        Ok(())
    };
    std::thread::sleep(Duration::from_secs(1) + off_grid(PROBE_INTERVAL));
    crate::ops::set_maintenance(&run_dir, true)?;
    step(c, &format!("maintenance on {m}"), true)?;
    crate::ops::set_maintenance(&run_dir, false)?;
    step(c, &format!("maintenance off on {m}"), false)?;
    super::stop_vrrpd(c.st, &m, Duration::from_secs(30))?;
    step(c, &format!("SIGTERM of vrrpd on {m}"), true)?;
    start_node(c.st, &m, &["vrrpd"])?;
    step(c, &format!("vrrpd restarted on {m}"), false)?;
    // An lbd upgrade on the holder: the VIP stays, the new process takes the listeners,
    // the old one keeps the connections it has.
    let u = super::upgrade_lbd(c.st, &m)?;
    let st: &LabState = c.st;
    let vip_stayed = wait_for(Duration::from_secs(3), || {
        master(st).as_deref() != Some(m.as_str())
    })
    .is_none();
    moved_all &= vip_stayed;
    notes.push(format!(
        "lbd upgraded on {m}: PID {} -> {} in {} ms, {} connection(s) left with the old one; VIP stayed on {m}: {vip_stayed}",
        u.old_pid, u.new_pid, u.took_ms, u.draining
    ));
    let (out, samples) = finish(probe, event)?;
    let held = held.finish()?;
    let (ok, failures) = hold::summary(&held);
    let requests: u64 = held.iter().map(|h| h.requests).sum();
    let bytes: u64 = held.iter().map(|h| h.bytes_back).sum();
    notes.insert(
        0,
        format!(
            "{ok} of {} held connections survived ({requests} keep-alive requests answered, {bytes} stream bytes echoed intact)",
            held.len()
        ),
    );
    notes.extend(failures);
    Ok(ScenarioReport {
        name: "connections-survive-handover".into(),
        what: "connections open through the VIP survive maintenance on/off, a vrrpd restart and an lbd upgrade on the holder; no new request fails".into(),
        recovered_ms: first_move.map(|d| d.as_secs_f64() * 1000.0),
        bound_ms: None,
        passed: ok == held.len() && out.failed == 0 && moved_all,
        notes,
        outcome: out,
        samples,
        event_ms: Some(event),
    })
}

/// How long, at most, the new holder forwards to a previous holder that is gone: three
/// unanswered asks a second apart, each up to 1 s, after DRAIN_MIN (vrrpd's drain.rs).
const STEER_GONE_MS: f64 = 2000.0 + 3.0 * (1000.0 + 1000.0) + 1000.0;

/// An unplanned failure in the middle of a drain: `maintenance on` on the holder (the
/// new holder forwards its connections to it), then its cable is cut. The connections it
/// served are lost with it; what must hold: new connections never fail, the forwarding
/// to the gone node ends (no black hole: its flows get a reset instead of silence) within
/// [`STEER_GONE_MS`], and the held connections end with an error, not a hang.
fn handover_then_cable_cut(c: &mut Ctx<'_>) -> Result<ScenarioReport> {
    let m = master(c.st).ok_or_else(|| anyhow!("no single master"))?;
    let run_dir = c.st.node(&m)?.run_dir.clone();
    let specs = (0..4)
        .map(|_| (SocketAddr::new(c.vip, c.http_port), hold::Kind::KeepAlive))
        .collect();
    let held = Holder::start(&c.client_ns, specs)?;
    let probe = c.probe(false)?;
    std::thread::sleep(Duration::from_secs(1) + off_grid(PROBE_INTERVAL));
    crate::ops::set_maintenance(&run_dir, true)?;
    let st: &LabState = c.st;
    // The one master seen (right after a resign two backups may both be master for a
    // few ms: then `master` is None, which must not read as "nobody took over").
    let mut new = None;
    let moved = wait_for(Duration::from_secs(20), || match master(st) {
        Some(x) if x != m => {
            new = Some(x);
            true
        }
        _ => false,
    });
    let new = new.ok_or_else(|| anyhow!("nobody took over from {m}"))?;
    let new_run = c.st.node(&new)?.run_dir.clone();
    // Forwarding to the node that is about to go (any instance, any position).
    let steering = |run: &std::path::Path| {
        crate::ops::vrrpd_status(run).is_ok_and(|v| {
            v.instances.iter().any(|i| {
                i.drain.as_ref().is_some_and(|d| {
                    d.steering_to_node.as_deref() == Some(m.as_str())
                        || d.steering_also_to.contains(&m)
                })
            })
        })
    };
    let was_steering = steering(&new_run);
    let event = probe.now_ms();
    fail(c.st, &m, FailHow::Link)?;
    let ended = wait_for(Duration::from_millis(STEER_GONE_MS as u64 + 5000), || {
        !steering(&new_run)
    });
    // The held connections' next requests get their reset (or time out) meanwhile.
    std::thread::sleep(Duration::from_secs(6));
    let (out, samples) = finish(probe, event)?;
    let held = held.finish()?;
    let ended_ms = ended.map(|d| d.as_secs_f64() * 1000.0);
    let all_ended = held.iter().all(|h| h.error.is_some());
    // The maintenance stays on across the cut: restore() ends it.
    Ok(ScenarioReport {
        name: "handover-then-cable-cut".into(),
        what: format!(
            "maintenance on {m}, then its cable cut: the new holder stops forwarding to it, no new request fails"
        ),
        recovered_ms: ended_ms,
        bound_ms: Some(STEER_GONE_MS),
        passed: moved.is_some()
            && was_steering
            && ended_ms.is_some_and(|e| e <= STEER_GONE_MS)
            && out.failed == 0
            && all_ended,
        notes: vec![
            format!(
                "{new} took over after {}, forwarding to {m}: {was_steering}",
                moved.map_or("(never)".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0))
            ),
            format!(
                "cable cut: {new} stopped forwarding after {}",
                ended_ms.map_or("(never)".into(), |e| format!("{e:.0} ms"))
            ),
            format!(
                "{} of {} connections held through {m} ended with an error (they cannot survive its loss): {}",
                held.iter().filter(|h| h.error.is_some()).count(),
                held.len(),
                held.iter()
                    .filter_map(|h| h.error.clone())
                    .next()
                    .unwrap_or_default()
            ),
        ],
        outcome: out,
        samples,
        event_ms: Some(event),
    })
}

/// Every scenario, in the order `run_all` runs them.
pub const SCENARIOS: [&str; 12] = [
    "traffic-spread",
    "every-service",
    "client-address",
    "vip-failover-link",
    "vip-graceful-stop",
    "api-node-failure",
    "app-node-failure",
    "backend-out-and-back",
    "planned-maintenance",
    "drain-follows-vip",
    "connections-survive-handover",
    "handover-then-cable-cut",
];

/// Run one scenario by name, then make the lab whole again (all nodes up, the
/// highest-priority server master).
pub fn run_one(st: &mut LabState, name: &str) -> Result<Vec<ScenarioReport>> {
    let cluster = st.cluster()?;
    let vip = cluster
        .vip
        .v4
        .map(|v| std::net::IpAddr::V4(v.addr))
        .ok_or_else(|| anyhow!("no IPv4 VIP"))?;
    let client_ns = st
        .client
        .as_ref()
        .map(|c| c.ns.clone())
        .ok_or_else(|| anyhow!("the lab has no client namespace"))?;
    let api_port = cluster
        .services
        .iter()
        .find(|s| s.backend_port == 6443)
        .map_or(8443, |s| s.listen);
    let http_port = cluster
        .services
        .iter()
        .find(|s| s.backend_port == 30080)
        .map_or(80, |s| s.listen);
    let interval = cluster.vrrp.interval;
    super::wait_ready(st, Duration::from_secs(20))?;
    let vip6 = cluster.vip.v6.map(|v| std::net::IpAddr::V6(v.addr));
    let mut c = Ctx {
        st,
        vip,
        vip6,
        interval,
        client_ns,
        api_port,
        http_port,
    };
    let r = match name {
        "traffic-spread" => traffic_spread(&mut c).map(|r| vec![r]),
        "every-service" => every_service(&mut c),
        "client-address" => client_address(&mut c),
        "vip-failover-link" => vip_failover_link(&mut c),
        "vip-graceful-stop" => vip_graceful_stop(&mut c).map(|r| vec![r]),
        "api-node-failure" => node_failure(&mut c, true).map(|r| vec![r]),
        "app-node-failure" => node_failure(&mut c, false).map(|r| vec![r]),
        "backend-out-and-back" => backend_out_and_back(&mut c).map(|r| vec![r]),
        "planned-maintenance" => planned_maintenance(&mut c).map(|r| vec![r]),
        "drain-follows-vip" => drain_follows_vip(&mut c).map(|r| vec![r]),
        "connections-survive-handover" => connections_survive_handover(&mut c).map(|r| vec![r]),
        "handover-then-cable-cut" => handover_then_cable_cut(&mut c).map(|r| vec![r]),
        other => Err(anyhow!(
            "unknown scenario {other:?}; scenarios are: {}",
            SCENARIOS.join(", ")
        )),
    };
    restore(c.st);
    r
}

/// Reconnect every node, restart what is not running, end any maintenance a scenario left
/// behind (it survives restarts now), wait for the preferred master.
fn restore(st: &mut LabState) {
    let names: Vec<String> = st.nodes.iter().map(|n| n.name.clone()).collect();
    for n in names {
        let _ = super::recover(st, &n);
    }
    let runs: Vec<std::path::PathBuf> = st.servers().map(|n| n.run_dir.clone()).collect();
    for run in runs {
        let in_maintenance =
            crate::ops::vrrpd_status(&run).is_ok_and(|v| v.current.core.maintenance);
        if in_maintenance {
            let _ = crate::ops::set_maintenance(&run, false);
        }
    }
    let _ = super::wait_ready(st, Duration::from_secs(20));
    let st: &LabState = st;
    let first = st
        .servers()
        .max_by_key(|n| vrrp_core(st, &n.name).map_or(0, |c| c.base_priority))
        .map(|n| n.name.clone());
    if let Some(f) = first {
        let _ = wait_for(Duration::from_secs(15), || {
            master(st).as_deref() == Some(f.as_str())
        });
    }
}

/// Run every scenario in order; the lab is left as it was found (all nodes up).
pub fn run_all(st: &mut LabState, only: &[String]) -> Result<Report> {
    if let Some(bad) = only.iter().find(|o| !SCENARIOS.contains(&o.as_str())) {
        return Err(anyhow!(
            "unknown scenario {bad:?}; scenarios are: {}",
            SCENARIOS.join(", ")
        ));
    }
    let mut scenarios = Vec::new();
    for name in SCENARIOS
        .into_iter()
        .filter(|n| only.is_empty() || only.iter().any(|o| o == n))
    {
        eprintln!("lab test: {name} ...");
        match run_one(st, name) {
            Ok(r) => scenarios.extend(r),
            Err(e) => scenarios.push(ScenarioReport {
                name: name.into(),
                what: "could not run".into(),
                recovered_ms: None,
                bound_ms: None,
                outcome: analyse(&[], 0.0, SLOW_MS),
                passed: false,
                notes: vec![format!("error: {e:#}")],
                samples: Vec::new(),
                event_ms: None,
            }),
        }
    }
    let interval = st.cluster()?.vrrp.interval;
    Ok(Report {
        config: st.config_origin.clone(),
        vrrp_interval_ms: u64::try_from(interval.as_millis()).unwrap_or(0),
        scenarios,
    })
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v.is_finite() {
            format!("{v:.0} ms")
        } else {
            "never".into()
        }
    })
}

pub fn render_markdown(r: &Report, command: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Produced by `{command}` against `{}` (VRRP interval {} ms); client probing every {} ms, timeout {} ms, requests slower than {SLOW_MS:.0} ms count as disrupted.\n", r.config, r.vrrp_interval_ms, PROBE_INTERVAL.as_millis(), PROBE_TIMEOUT.as_millis());
    let _ = writeln!(
        o,
        "| scenario | result | recovered | bound | failed / sent | slow | max latency |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for s in &r.scenarios {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} / {} | {} | {:.0} ms |",
            s.name,
            if s.passed { "pass" } else { "FAIL" },
            ms(s.recovered_ms),
            ms(s.bound_ms),
            s.outcome.failed,
            s.outcome.sent,
            s.outcome.slow,
            s.outcome.max_latency_ms
        );
    }
    o.push('\n');
    for s in &r.scenarios {
        let _ = writeln!(o, "**{}**: {}.", s.name, s.what);
        for n in &s.notes {
            let _ = writeln!(o, "- {n}");
        }
        for f in &s.outcome.first_failures {
            let _ = writeln!(o, "- failed request at {f}");
        }
        o.push('\n');
    }
    o
}

pub fn render_text(r: &Report) -> String {
    let rows: Vec<Vec<String>> = r
        .scenarios
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                if s.passed {
                    "pass".into()
                } else {
                    "FAIL".into()
                },
                ms(s.recovered_ms),
                ms(s.bound_ms),
                format!("{}/{}", s.outcome.failed, s.outcome.sent),
                s.outcome.slow.to_string(),
                s.notes.join("; "),
            ]
        })
        .collect();
    crate::ops::table(
        &[
            "SCENARIO",
            "RESULT",
            "RECOVERED",
            "BOUND",
            "FAILED/SENT",
            "SLOW",
            "NOTES",
        ],
        &rows,
    )
}
