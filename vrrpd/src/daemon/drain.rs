//! The shell's side of a planned handover that keeps established connections
//! (docs/handover.md): the core says when ([`Action::ParkVips`], [`Action::Steer`] and
//! their ends), this module does it.
//!
//! - Park: the VIPs move from the interface to `lo` (added there first, so they never stop
//!   being local addresses), hidden from ARP by [`steer`]'s `arp` table. The kernel keeps
//!   delivering the flows lbd has on them; the new holder forwards their packets here.
//!   The park is written to `STATE_DIR/parked.json`, so a vrrpd that stops while parked
//!   (SIGTERM, a package upgrade) leaves the VIPs parked and the next start adopts them.
//! - Steer: the new holder forwards every TCP packet to a VIP whose flow did not begin
//!   here to the previous holder ([`steer`]).
//! - Every [`PROBE_EVERY`] while either lasts: the parked side counts its flows from the
//!   kernel ([`common::flows`]); the steering side asks the previous holder's lbd on the
//!   peer port (`flows`). No flow left, the VIP no longer there, or [`PROBE_FAILURES`]
//!   failed asks in a row (the previous holder is gone: its flows are gone with it, and
//!   forwarding would only turn their resets into silence) end it early.
//!
//! [`steer`]: crate::io::steer

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::proto::lbd::{FlowCount, Flows, Request as LbdRequest};
use common::proto::vrrpd as proto;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::{Daemon, Inst};
use crate::core::Action;
use crate::io::steer;

/// How often a drain is probed.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Failed asks in a row after which the previous holder counts as gone.
const PROBE_FAILURES: u32 = 3;
/// One ask of the previous holder's lbd.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the shell knows of one instance's drain, beside the core's deadlines.
#[derive(Debug, Default)]
pub(super) struct DrainState {
    /// The VIPs are on `lo` (this process put them there, or adopted them).
    pub parked: bool,
    /// Forwarding foreign flows to these nodes (the previous holder; and any other
    /// master heard since, which parked the VIPs too).
    pub steer: Vec<Target>,
    /// The last count of flows on the parked VIPs here.
    pub parked_flows: Option<u64>,
    probing_parked: bool,
    /// Packets forwarded by forwarding rules since replaced (a rewrite of the table starts
    /// the kernel's counters at 0): the total is this plus the rules' counters now.
    pub forwarded_before: u64,
}

/// One node this one forwards to.
#[derive(Debug)]
pub(super) struct Target {
    pub to: IpAddr,
    /// Its last answer: its flows on the VIPs (0 also when it no longer has them).
    pub flows: Option<u64>,
    failures: u32,
    probing: bool,
}

impl Target {
    /// Nothing left to forward to it: no flow there, or it does not answer.
    fn done(&self) -> bool {
        self.flows == Some(0) || self.failures >= PROBE_FAILURES
    }
}

impl DrainState {
    /// The previous holders' flows at their last answers.
    pub(super) fn steered_flows(&self) -> Option<u64> {
        self.steer.iter().map(|t| t.flows).sum()
    }
}

/// A probe's result, back to the event loop.
#[derive(Debug)]
pub(super) enum Report {
    Parked(usize, std::io::Result<FlowCount>),
    Steered(usize, IpAddr, Result<FlowCount, String>),
}

/// `STATE_DIR/parked.json`: which VIPs a stopped vrrpd left parked, and until when.
#[derive(Debug, Serialize, Deserialize)]
struct ParkedFile {
    vips: Vec<IpAddr>,
    until_unix_ms: u64,
}

fn parked_file(state_dir: &Path) -> PathBuf {
    state_dir.join("parked.json")
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Daemon {
    fn drain_on(&self) -> bool {
        self.insts
            .iter()
            .any(|i| !i.plan.cfg.drain_established.is_zero())
    }

    /// Any instance parked or steering (the probe tick runs).
    pub(super) fn draining(&self) -> bool {
        self.insts
            .iter()
            .any(|i| i.drain.parked || !i.drain.steer.is_empty())
    }

    /// At start, before the cores: adopt what a predecessor parked (its deadline still
    /// ahead), drop the rest from `lo`, and install the rules (before this node can hold
    /// a VIP).
    pub(super) async fn start_drains(&mut self) {
        let path = parked_file(&self.opts.state_dir);
        let kept: Option<ParkedFile> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| warn!(file = %path.display(), error = %e, "ignoring an unreadable park record"))
                .ok(),
            Err(_) => None,
        };
        let now = Instant::now();
        let left = kept.as_ref().and_then(|k| {
            Duration::from_millis(k.until_unix_ms)
                .checked_sub(Duration::from_millis(unix_ms(SystemTime::now())))
        });
        for i in 0..self.insts.len() {
            let vips = self.insts[i].plan.cfg.vips.clone();
            let adopt = match (&kept, left) {
                (Some(k), Some(left)) => vips.iter().all(|v| k.vips.contains(v)) && !left.is_zero(),
                _ => false,
            };
            if adopt {
                let until = now + left.unwrap_or_default();
                self.insts[i].with(|c| c.adopt_parked(now, until));
            }
            if self.insts[i].core.status(now).parked_ms_left.is_some() {
                info!(vips = ?vips, left_s = left.unwrap_or_default().as_secs(), "adopting the VIPs parked on lo before this start: their connections stay served here");
                self.insts[i].drain.parked = true;
            } else {
                self.unpark_addresses(i).await;
            }
        }
        if !self.drain_on() && kept.is_some() {
            // Off now, parked before: the old tables (an ARP rule hiding the VIP among
            // them) must not outlive the park.
            if let Err(e) = steer::apply(&steer::render_none()).await {
                warn!(error = %e, "could not remove the handover rules of the park before this start");
            }
        }
        self.apply_rules().await;
        self.write_parked();
    }

    /// At exit: the forwarding goes; a park stays (with its ARP rules, the rule that drops
    /// foreign packets forwarded here, which another node may still send to every
    /// previous holder, and its record), for the next start to adopt or end.
    pub(super) async fn finish_drains(&mut self) {
        for i in &mut self.insts {
            i.drain.steer.clear();
        }
        if !self.drain_on() && !self.insts.iter().any(|i| i.drain.parked) {
            return;
        }
        let mut r = self.rules();
        let parked: Vec<IpAddr> = (0..self.insts.len())
            .filter(|&n| self.insts[n].drain.parked)
            .flat_map(|n| self.parkable(n))
            .collect();
        r.vips.retain(|v| parked.contains(v));
        if let Err(e) = steer::apply(&steer::render(&r)).await {
            warn!(error = %e, "could not remove the forwarding rules at exit");
        }
        self.write_parked();
        for i in &self.insts {
            if i.drain.parked {
                info!(vips = ?i.plan.cfg.vips, "exiting with the VIPs parked on lo: their connections stay served until the next start ends the park");
            }
        }
    }

    /// ParkVips, UnparkVips, Steer, Unsteer.
    pub(super) async fn execute_drain(&mut self, i: usize, action: Action) {
        match action {
            Action::ParkVips => self.park(i).await,
            Action::UnparkVips => {
                self.insts[i].drain.parked = false;
                self.insts[i].drain.parked_flows = None;
                self.apply_rules().await;
                self.unpark_addresses(i).await;
                self.write_parked();
                info!(vips = ?self.insts[i].plan.cfg.vips, "park ended: the VIPs are off lo");
            }
            Action::Steer { to } => {
                let d = &mut self.insts[i].drain;
                if d.steer.iter().any(|t| t.to == to) {
                    return;
                }
                d.steer.push(Target {
                    to,
                    flows: None,
                    failures: 0,
                    probing: false,
                });
                let node = self.node_of(i, to);
                info!(to = %to, node = ?node, "forwarding the connections that did not begin here to the node that served them");
                self.apply_rules().await;
            }
            Action::Unsteer => {
                // The rules' counters go with the rules: read them first, for the record.
                let now = steer::steered_packets().await.ok();
                let inst = &mut self.insts[i];
                let packets = now.map(|c| inst.drain.forwarded_before + inst.packets_in(&c));
                inst.drain.forwarded_before = 0;
                let was: Vec<IpAddr> = inst.drain.steer.drain(..).map(|t| t.to).collect();
                self.apply_rules().await;
                info!(to = ?was, packets_forwarded = ?packets, "forwarding to the previous holders ended");
            }
            _ => {}
        }
    }

    /// The VIPs to `lo` (first) and off the interface. If the ARP rules or `lo` refuse,
    /// the VIPs are removed as without a drain: their connections are lost, nothing else.
    async fn park(&mut self, i: usize) {
        if self.insts[i].answering {
            // accept_mode = false: nothing here was serving the VIP.
            return self.remove_vips(i).await;
        }
        self.insts[i].drain.parked = true;
        let ok = self.apply_rules().await;
        let mut failed = !ok;
        if ok {
            for vip in self.parkable(i) {
                let prefix = if vip.is_ipv4() { 32 } else { 128 };
                if let Err(e) = self.nl.add_addr(self.lo_index, vip, prefix).await {
                    error!(vip = %vip, error = %e, "could not park the VIP on lo: its connections will be reset");
                    failed = true;
                    break;
                }
            }
        }
        self.remove_vips(i).await;
        if failed {
            self.insts[i].drain.parked = false;
            self.unpark_addresses(i).await;
            self.apply_rules().await;
            // The core still counts the park: nothing is parked.
            self.insts[i].with(|c| c.park_failed());
        } else {
            info!(vips = ?self.insts[i].plan.cfg.vips, "VIPs parked on lo: the connections on them stay served here");
        }
        self.write_parked();
    }

    /// The instance's VIPs that are not this node's own address.
    fn parkable(&self, i: usize) -> Vec<IpAddr> {
        self.parkable_of(&self.insts[i])
    }

    async fn unpark_addresses(&mut self, i: usize) {
        for vip in self.parkable(i) {
            match self.nl.del_addr(self.lo_index, vip).await {
                Ok(true) => info!(vip = %vip, "VIP removed from lo"),
                Ok(false) => {}
                Err(e) => error!(vip = %vip, error = %e, "could not remove the VIP from lo"),
            }
        }
    }

    fn rules(&self) -> steer::Rules {
        let mut r = steer::Rules {
            device: self.iface.name.clone(),
            node_v4: match self.node.address {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            },
            ..steer::Rules::default()
        };
        for inst in &self.insts {
            if inst.plan.cfg.drain_established.is_zero() && !inst.drain.parked {
                continue;
            }
            r.vips.extend(self.parkable_of(inst));
            for t in &inst.drain.steer {
                r.steer
                    .extend(self.parkable_of(inst).into_iter().map(|v| (v, t.to)));
            }
            if inst.drain.parked {
                r.parked_v4
                    .extend(self.parkable_of(inst).into_iter().filter_map(|v| match v {
                        IpAddr::V4(a) => Some(a),
                        IpAddr::V6(_) => None,
                    }));
            }
        }
        r
    }

    fn parkable_of(&self, inst: &Inst) -> Vec<IpAddr> {
        inst.plan
            .cfg
            .vips
            .iter()
            .copied()
            .filter(|v| *v != self.node.address && Some(*v) != self.node.address6.map(IpAddr::V6))
            .collect()
    }

    /// Make the kernel's tables say what the instances need. False (and said) if nft
    /// refused: forwarding and hiding a parked VIP are then not in place.
    async fn apply_rules(&mut self) -> bool {
        if !self.drain_on() && !self.insts.iter().any(|i| i.drain.parked) {
            return true;
        }
        // The rewrite starts the counters at 0: keep what the replaced rules forwarded
        // (once it is done: a refused rewrite leaves the old rules counting).
        let counted = if self.insts.iter().any(|i| !i.drain.steer.is_empty()) {
            steer::steered_packets().await.ok()
        } else {
            None
        };
        match steer::apply(&steer::render(&self.rules())).await {
            Ok(()) => {
                if let Some(c) = counted {
                    for inst in &mut self.insts {
                        if !inst.drain.steer.is_empty() {
                            inst.drain.forwarded_before += inst.packets_in(&c);
                        }
                    }
                }
                if self.rules_error.take().is_some() {
                    info!("nftables rules in place again");
                }
                true
            }
            Err(e) => {
                error!(error = %e, "could not write the handover rules (nftables): established connections are not kept across a handover");
                self.rules_error = Some(e);
                false
            }
        }
    }

    fn write_parked(&self) {
        let path = parked_file(&self.opts.state_dir);
        let now = Instant::now();
        let mut vips = Vec::new();
        let mut until = 0;
        for (n, i) in self.insts.iter().enumerate() {
            if !i.drain.parked {
                continue;
            }
            vips.extend(self.parkable(n));
            let left = i.core.status(now).parked_ms_left.unwrap_or(0);
            until = until.max(unix_ms(SystemTime::now()) + left);
        }
        let r = if vips.is_empty() {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        } else {
            let f = ParkedFile {
                vips,
                until_unix_ms: until,
            };
            std::fs::create_dir_all(&self.opts.state_dir)
                .and_then(|()| std::fs::write(&path, serde_json::to_vec(&f).unwrap_or_default()))
        };
        if let Err(e) = r {
            warn!(file = %path.display(), error = %e, "cannot record the park in the state directory: a restart of vrrpd would end it");
        }
    }

    /// The status's `drain` of instance `n`, while it parks or steers (or nft refused).
    pub(super) fn drain_status(&self, n: usize, kernel: &super::Kernel) -> Option<proto::Drain> {
        let i = &self.insts[n];
        let d = &i.drain;
        if !d.parked && d.steer.is_empty() && self.rules_error.is_none() {
            return None;
        }
        let packets = d.forwarded_before + i.packets_in(&kernel.steered_packets);
        let steering = !d.steer.is_empty();
        let mut nodes = d
            .steer
            .iter()
            .map(|t| self.node_of(n, t.to).unwrap_or_else(|| t.to.to_string()));
        Some(proto::Drain {
            parked_flows: d.parked.then_some(d.parked_flows).flatten(),
            steering_to_node: nodes.next(),
            steering_also_to: nodes.collect(),
            steered_flows: d.steered_flows(),
            steered_packets: steering.then_some(packets),
            rules_error: self.rules_error.clone(),
        })
    }

    /// The probe tick: ask, for every drain not already being asked about.
    pub(super) fn probe_drains(&mut self) {
        for i in 0..self.insts.len() {
            let vips = self.parkable(i);
            let d = &mut self.insts[i].drain;
            if d.parked && !d.probing_parked {
                d.probing_parked = true;
                let (tx, vips) = (self.drain_tx.clone(), vips.clone());
                tokio::spawn(async move {
                    let r = tokio::task::spawn_blocking(move || common::flows::count(&vips))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                    let _ = tx.send(Report::Parked(i, r)).await;
                });
            }
            let local = self.node.address;
            for k in 0..self.insts[i].drain.steer.len() {
                let t = &self.insts[i].drain.steer[k];
                // (Asked again after a 0 too: only a report ends the drain, and the first
                // 0 may come before DRAIN_MIN.)
                if t.probing {
                    continue;
                }
                let to = t.to;
                let target = self.peer_lbd(i, to);
                self.insts[i].drain.steer[k].probing = true;
                let (tx, vips) = (self.drain_tx.clone(), vips.clone());
                tokio::spawn(async move {
                    let r = match target {
                        Some(addr) => ask_flows(local, addr, vips).await,
                        None => Err(format!("{to} is no known server of the cluster")),
                    };
                    let _ = tx.send(Report::Steered(i, to, r)).await;
                });
            }
        }
    }

    /// The previous holder's lbd peer port, from the address it advertised from.
    fn peer_lbd(&self, i: usize, to: IpAddr) -> Option<SocketAddr> {
        let name = self.node_of(i, to).or_else(|| {
            // An IPv6 link-local no learner knows: the IPv4 instance steers to the same node.
            self.insts.iter().enumerate().find_map(|(n, x)| {
                x.drain
                    .steer
                    .iter()
                    .map(|t| t.to)
                    .filter(IpAddr::is_ipv4)
                    .find_map(|t| self.node_of(n, t))
            })
        })?;
        let node = self.cluster.nodes.iter().find(|n| n.name == name)?;
        (node.name != self.node.name)
            .then(|| SocketAddr::new(node.address, self.cluster.lbd.peer_port))
    }

    pub(super) async fn on_drain_report(&mut self, r: Report) {
        let now = Instant::now();
        match r {
            Report::Parked(i, r) => {
                let Some(inst) = self.insts.get_mut(i) else {
                    return;
                };
                inst.drain.probing_parked = false;
                match r {
                    Ok(c) => {
                        inst.drain.parked_flows = Some(c.flows);
                        if c.flows == 0 && inst.drain.parked {
                            inst.with(|c| c.parked_flows_ended(now));
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "could not count the connections on the parked VIPs")
                    }
                }
            }
            Report::Steered(i, to, r) => {
                let Some(inst) = self.insts.get_mut(i) else {
                    return;
                };
                let Some(t) = inst.drain.steer.iter_mut().find(|t| t.to == to) else {
                    return;
                };
                t.probing = false;
                match r {
                    Ok(c) => {
                        t.failures = 0;
                        // No address left there: the VIPs' flows went with them.
                        t.flows = Some(if c.local_addresses == 0 { 0 } else { c.flows });
                    }
                    Err(e) => {
                        t.failures += 1;
                        warn!(to = %to, error = %e, failures = t.failures, "could not ask a previous holder how many connections it still has");
                        if t.failures == PROBE_FAILURES {
                            warn!(to = %to, "the previous holder does not answer: it counts as gone (its connections went with it)");
                        }
                    }
                }
                // (Gated by DRAIN_MIN like any end; until then the asks go on.)
                if inst.drain.steer.iter().all(Target::done) {
                    inst.with(|c| c.steered_flows_ended(now));
                }
            }
        }
        for n in 0..self.insts.len() {
            self.drain(n).await;
        }
    }
}

/// `flows` on the previous holder's lbd peer port, from this node's address (the peer
/// port answers the cluster's servers only).
async fn ask_flows(local: IpAddr, to: SocketAddr, vips: Vec<IpAddr>) -> Result<FlowCount, String> {
    let r = async {
        let sock = match to {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|e| e.to_string())?;
        sock.bind(SocketAddr::new(local, 0))
            .map_err(|e| format!("binding {local}: {e}"))?;
        let mut stream = sock.connect(to).await.map_err(|e| format!("{to}: {e}"))?;
        let req = LbdRequest::Flows(Flows { addresses: vips });
        let line = serde_json::to_value(&req).map_err(|e| e.to_string())?;
        let resp = common::ctl::exchange(&mut stream, &line)
            .await
            .map_err(|e| format!("{to}: {e}"))?;
        if !resp.ok {
            return Err(resp.error.unwrap_or_else(|| "refused".into()));
        }
        serde_json::from_value::<FlowCount>(resp.result.unwrap_or_default())
            .map_err(|e| format!("{to}: not a flows answer: {e}"))
    };
    tokio::time::timeout(PROBE_TIMEOUT, r)
        .await
        .unwrap_or_else(|_| Err(format!("{to}: no answer within {PROBE_TIMEOUT:?}")))
}
