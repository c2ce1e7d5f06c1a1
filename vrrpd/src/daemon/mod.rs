//! The daemon: wires the cluster file, the core, the I/O shell, trackers, the control
//! socket and signals together. Everything runs on one current-thread tokio runtime.
//!
//! ```text
//!  raw socket v4 ──┐                                   ┌─> VrrpSocket::send (adverts)
//!  raw socket v6 ──┤                                   ├─> Netlink add/del VIPs
//!  deadline timer ─┤                                   ├─> Announcer (GARP / NA)
//!  link events ────┤   select! loop ── core::Instance ─┼─> notify command, log line
//!  tracker tasks ──┤   (one per family)                └─> HandoverDone -> exit
//!   (lbd, scripts) │      ^
//!  ctl::serve task ┤      │ status / maintenance / reload (mpsc + oneshot answer)
//!  SIGHUP, shutdown┘
//! ```
//!
//! The loop owns all mutable state; other tasks talk to it through channels. After every
//! call into a core instance its actions are drained and executed in order.

mod drain;
pub mod map;
mod notifier;
pub mod sources;
pub mod track;

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use common::config::{Cluster, Node, TrackEffect};
use common::ctl::Response;
use common::proto::vrrpd::{self as proto, Answer, Request};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn, Instrument};

use crate::core::{Action, Instance, Received, State};
use crate::io::socket::Rx;
use crate::io::vmac::{self, BaseSysctls, Vmac};
use crate::io::{Announcer, Interface, LinkEvents, Netlink, Responder, VrrpSocket};
use map::InstancePlan;
use track::{TrackUpdate, Tracking};

/// How long the notify commands still queued at exit may run before vrrpd exits.
const NOTIFY_AT_EXIT: Duration = Duration::from_secs(5);
/// Link state is re-read this often while netlink notifications work (a safety net; a
/// dump every second was most of vrrpd's idle CPU)...
const LINK_POLL: Duration = Duration::from_secs(10);
/// ...and this often once they have stopped.
const LINK_POLL_FALLBACK: Duration = Duration::from_secs(1);

/// Where the daemon runs: flags that are not part of the cluster file.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--node NAME`; `None`: work it out ([`common::config::identify`]).
    pub node: Option<String>,
    /// Holds `vrrpd.sock`; read `lbd.sock` from the same directory.
    pub run_dir: PathBuf,
    /// Holds `maintenance` while `lbctl maintenance on` holds, across restarts.
    pub state_dir: PathBuf,
}

/// The file whose presence keeps maintenance on across restarts and reboots.
fn maintenance_file(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("maintenance")
}

/// Keep (or end) maintenance across restarts. A failure is said: maintenance holds now,
/// but a restart would end it.
fn persist_maintenance(state_dir: &std::path::Path, on: bool) {
    let path = maintenance_file(state_dir);
    let r = if on {
        std::fs::create_dir_all(state_dir).and_then(|()| {
            std::fs::write(
                &path,
                "lbctl maintenance on: this node stays backup until `lbctl maintenance off`\n",
            )
        })
    } else {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    };
    if let Err(e) = r {
        warn!(path = %path.display(), error = %e, on, "cannot record maintenance in the state directory: a restart of vrrpd would not keep it");
    }
}

/// One VRRP instance (one address family) and its socket.
struct Inst {
    plan: InstancePlan,
    core: Instance,
    /// VIPs this process added and has not removed yet.
    held: Vec<IpAddr>,
    /// `accept_mode = false`: the VIPs are answered by the [`Responder`] (not added).
    answering: bool,
    /// `virtual_mac = true`: the macvlan holding this instance's VIPs.
    vmac: Option<Vmac>,
    /// `HandoverDone` seen.
    done: bool,
    /// IPv6 with `only_cluster_nodes`: the servers' link-local sources, learned.
    learner: Option<sources::SourceLearner>,
    /// A planned handover's park or forwarding (docs/handover.md).
    drain: drain::DrainState,
    /// `family = ipv4|ipv6`, entered around every call into the core so that its own log
    /// lines (one per transition) say which instance they are about.
    span: tracing::Span,
}

impl Inst {
    /// Of the forwarding rules' counters (VIP, packets), the packets for this instance's
    /// VIPs.
    fn packets_in(&self, counters: &[(IpAddr, u64)]) -> u64 {
        counters
            .iter()
            .filter(|(vip, _)| self.plan.cfg.vips.contains(vip))
            .map(|(_, n)| n)
            .sum()
    }
}

impl Inst {
    fn with<R>(&mut self, f: impl FnOnce(&mut Instance) -> R) -> R {
        let _entered = self.span.enter();
        f(&mut self.core)
    }
}

type CtlMsg = (Request, oneshot::Sender<Response>);

struct Daemon {
    cluster: Cluster,
    node: Node,
    opts: Options,
    iface: Interface,
    nl: Netlink,
    announcer: Announcer,
    /// ARP / ND answers for the VIPs when `accept_mode = false`.
    responder: Option<Responder>,
    /// Base interface sysctls changed for the virtual MACs, restored at exit.
    base_sysctls: BaseSysctls,
    insts: Vec<Inst>,
    socks: Vec<VrrpSocket>,
    tracking: Tracking,
    trackers: Vec<JoinHandle<()>>,
    track_tx: mpsc::Sender<TrackUpdate>,
    shutdown_started: Option<Instant>,
    reloads: u64,
    last_reload_error: Option<String>,
    /// Results of IPv6 source learning, back to the loop.
    learn_tx: mpsc::Sender<(usize, Learned)>,
    /// The last `STATUS=` text sent to systemd.
    status_line: String,
    /// `lo`, where parked VIPs go.
    lo_index: u32,
    /// Drain probes' results, back to the loop.
    drain_tx: mpsc::Sender<drain::Report>,
    /// nft's last refusal of the handover rules, until they are written again.
    rules_error: Option<String>,
    /// Runs `vrrp.notify` for each transition, in order.
    notifier: notifier::Notifier,
}

/// What a source-learning task found out, for instance `usize`.
#[derive(Debug)]
enum Learned {
    /// One link-local, and the server it belongs to (`None`: nobody's).
    One(std::net::Ipv6Addr, Option<String>),
    /// Every server link-local found in the neighbour table.
    All(std::collections::BTreeMap<std::net::Ipv6Addr, String>),
}

/// Run vrrpd until `shutdown` completes and the handover is done. `cluster.source` is the
/// file re-read on SIGHUP / `reload`. Must run inside a tokio runtime (current-thread is
/// what `main` uses).
pub async fn run(
    cluster: Cluster,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (node, source) = common::config::identify(&cluster, opts.node.as_deref())
        .context("identifying this node")?;
    let node = node.clone();
    // Before anything else: a SIGHUP during startup must not kill us (its default action),
    // nor the dump signals keepalived's users send (SIGUSR1 data, SIGUSR2 stats,
    // SIGRTMIN+2 JSON).
    let hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let dumps = common::dump::DumpSignals::new(&dump_signals())
        .context("installing the SIGUSR1 / SIGUSR2 handlers")?;
    // The control socket before anything touches the network: without it lbctl and lbd
    // cannot reach us, so failing to bind it (another vrrpd on this run dir, a directory
    // in its place, no permission) is a startup error.
    let sock_path = common::ctl::socket_path(&opts.run_dir, "vrrpd");
    let ctl_listener = common::ctl::bind(&sock_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow!(
                "another vrrpd answers on {}: refusing to run two on one run dir",
                sock_path.display()
            )
        } else {
            anyhow!("control socket {}: {e}", sock_path.display())
        }
    })?;
    let iface = find_interface(&cluster, &node)?;
    let span = tracing::info_span!("vrrp", node = %node.name, interface = %iface.name, vrid = cluster.vrrp.vrid);
    info!(parent: &span, node = %node.name, found_by = source.as_str(), interface = %iface.name, ifindex = iface.index, "starting");
    let early = Early {
        hup,
        dumps,
        ctl_listener,
    };
    run_inner(cluster, node, iface, opts, early, shutdown)
        .instrument(span)
        .await
}

/// What `run` takes before it touches the network: the signal handlers (so no signal's
/// default action can end us during startup) and the control socket.
struct Early {
    hup: tokio::signal::unix::Signal,
    dumps: common::dump::DumpSignals,
    ctl_listener: tokio::net::UnixListener,
}

fn find_interface(cluster: &Cluster, node: &Node) -> anyhow::Result<Interface> {
    match &cluster.vip.interface {
        Some(name) => Interface::by_name(name).with_context(|| format!("VIP interface {name}")),
        None => Interface::holding(node.address)
            .with_context(|| format!("finding the interface holding {}", node.address)),
    }
}

/// vrrpd from its sockets to its exit, in named steps: open what it needs, clean up what a
/// killed predecessor left, build one core per family, start them, run the event loop,
/// and leave no VIP behind.
async fn run_inner(
    cluster: Cluster,
    node: Node,
    iface: Interface,
    opts: Options,
    early: Early,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Early {
        hup,
        dumps,
        ctl_listener,
    } = early;
    let plans = map::plan(&cluster, &node, &iface.name, iface.link_local())
        .context("building the VRRP configuration")?;
    let nl = Netlink::new().context("opening netlink")?;
    let announcer = Announcer::new(&iface.name).context("opening the announce socket")?;
    let socks = open_sockets(&plans, &iface)?;
    let link_events = match LinkEvents::subscribe(iface.index) {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(error = %e, "no link notifications; polling link state every second");
            None
        }
    };
    remove_stale_vips(&nl, &iface, &node, &plans).await;
    let responder = open_responder(&cluster, &iface, &plans)?;
    let mut base_sysctls = BaseSysctls::default();
    let vmacs = create_vmacs(&nl, &iface, &cluster, &plans, &mut base_sysctls).await?;
    let insts = build_instances(&cluster, &iface, plans, vmacs);
    let lo_index = match nl.link_index("lo").await {
        Ok(Some(i)) => i,
        Ok(None) => bail!("this network namespace has no lo"),
        Err(e) => return Err(e).context("looking up lo"),
    };

    let (track_tx, track_rx) = mpsc::channel::<TrackUpdate>(64);
    let (learn_tx, learn_rx) = mpsc::channel::<(usize, Learned)>(16);
    let (ctl_tx, ctl_rx) = mpsc::channel::<CtlMsg>(16);
    let (drain_tx, drain_rx) = mpsc::channel::<drain::Report>(16);
    let mut d = Daemon {
        cluster,
        node,
        opts,
        iface,
        nl,
        announcer,
        responder,
        base_sysctls,
        insts,
        socks,
        tracking: Tracking::default(),
        trackers: Vec::new(),
        track_tx,
        shutdown_started: None,
        reloads: 0,
        last_reload_error: None,
        learn_tx,
        status_line: String::new(),
        lo_index,
        drain_tx,
        rules_error: None,
        notifier: notifier::Notifier::spawn(),
    };
    d.spawn_trackers();
    d.learn_all();
    let (ctl_stop_tx, ctl_task) = spawn_control(ctl_listener, &d.opts.run_dir, ctl_tx);

    d.start_drains().await;
    d.start_instances().await;
    let _ = common::notify::notify(&[sd_notify::NotifyState::Ready]);
    let inputs = Inputs {
        link_events,
        learn_rx,
        track_rx,
        ctl_rx,
        drain_rx,
        hup,
        dumps,
    };
    d.event_loop(inputs, shutdown).await;
    d.finish().await;
    // The last transitions (the handover's backup) are told before the process exits.
    d.notifier.finish(NOTIFY_AT_EXIT).await;
    let _ = ctl_stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(1), ctl_task).await;
    Ok(())
}

/// Everything the event loop waits on besides the sockets and the core's deadline.
struct Inputs {
    link_events: Option<LinkEvents>,
    learn_rx: mpsc::Receiver<(usize, Learned)>,
    track_rx: mpsc::Receiver<TrackUpdate>,
    ctl_rx: mpsc::Receiver<CtlMsg>,
    drain_rx: mpsc::Receiver<drain::Report>,
    hup: tokio::signal::unix::Signal,
    dumps: common::dump::DumpSignals,
}

/// One VRRP socket per family planned.
fn open_sockets(plans: &[InstancePlan], iface: &Interface) -> anyhow::Result<Vec<VrrpSocket>> {
    plans
        .iter()
        .map(|p| {
            if p.cfg.primary.is_ipv6() {
                VrrpSocket::open_v6(iface)
            } else {
                VrrpSocket::open_v4(iface)
            }
            .context("opening the VRRP socket")
        })
        .collect()
}

/// After kill -9 the VIP may still be on the interface: we do not own it yet.
async fn remove_stale_vips(nl: &Netlink, iface: &Interface, node: &Node, plans: &[InstancePlan]) {
    for p in plans {
        for vip in &p.cfg.vips {
            if *vip == node.address || Some(*vip) == node.address6.map(IpAddr::V6) {
                continue; // address owner: the VIP is this node's own address
            }
            match nl.del_addr(iface.index, *vip).await {
                Ok(true) => {
                    warn!(vip = %vip, "removed a VIP left on the interface by an earlier run")
                }
                Ok(false) => {}
                Err(e) => warn!(vip = %vip, error = %e, "could not remove a stale VIP"),
            }
        }
    }
}

/// `accept_mode = false`: the ARP / ND responder that answers for the VIPs instead of
/// adding them.
fn open_responder(
    cluster: &Cluster,
    iface: &Interface,
    plans: &[InstancePlan],
) -> anyhow::Result<Option<Responder>> {
    if cluster.vrrp.accept_mode {
        return Ok(None);
    }
    let v4 = plans.iter().any(|p| p.cfg.primary.is_ipv4());
    let v6 = plans.iter().any(|p| p.cfg.primary.is_ipv6());
    // With a virtual MAC too, answer with it (the VIP is still not added anywhere).
    let vmac_macs = [false, true].map(|v6| {
        cluster
            .vrrp
            .virtual_mac
            .then(|| vmac::virtual_mac(cluster.vrrp.vrid, v6))
    });
    info!(
        "accept_mode = false: as master, vrrpd answers ARP / ND for the VIPs and does not add them"
    );
    if !cluster.services.is_empty() {
        warn!(
                services = cluster.services.len(),
                "accept_mode = false: traffic to the VIP reaches nothing on this node, lbd's services included"
            );
    }
    Ok(Some(
        Responder::spawn(&iface.name, iface.index, v4, v6, vmac_macs)
            .context("opening the ARP / ND responder")?,
    ))
}

/// `virtual_mac = true`: one macvlan per family (all undone if one fails).
async fn create_vmacs(
    nl: &Netlink,
    iface: &Interface,
    cluster: &Cluster,
    plans: &[InstancePlan],
    base_sysctls: &mut BaseSysctls,
) -> anyhow::Result<Vec<Option<Vmac>>> {
    let mut vmacs = Vec::new();
    for p in plans {
        if cluster.vrrp.virtual_mac {
            let v6 = p.cfg.primary.is_ipv6();
            match Vmac::create(nl, iface, cluster.vrrp.vrid, v6, base_sysctls).await {
                Ok(v) => vmacs.push(Some(v)),
                Err(e) => {
                    for v in vmacs.into_iter().flatten() {
                        v.destroy(nl).await;
                    }
                    vmac::restore_base(nl, base_sysctls).await;
                    return Err(e).context("creating the virtual MAC interface");
                }
            }
        } else {
            vmacs.push(None);
        }
    }
    Ok(vmacs)
}

/// One core per planned family, each with its socket's learner and virtual MAC.
fn build_instances(
    cluster: &Cluster,
    iface: &Interface,
    plans: Vec<InstancePlan>,
    vmacs: Vec<Option<Vmac>>,
) -> Vec<Inst> {
    let now = Instant::now();
    plans
        .into_iter()
        .zip(vmacs)
        .map(|(plan, vmac)| {
            let learner = (!plan.learn_sources_from.is_empty()).then(|| {
                sources::SourceLearner::new(
                    iface.index,
                    plan.learn_sources_from.clone(),
                    plan.cfg.allowed_sources.clone().unwrap_or_default(),
                    if cluster.vrrp.virtual_mac {
                        vec![vmac::virtual_mac(cluster.vrrp.vrid, true)]
                    } else {
                        Vec::new()
                    },
                )
            });
            Inst {
                core: Instance::new(plan.cfg.clone(), now),
                span: tracing::info_span!("instance", family = plan.family()),
                plan,
                held: Vec::new(),
                answering: false,
                learner,
                drain: drain::DrainState::default(),
                vmac,
                done: false,
            }
        })
        .collect()
}

/// The control socket's task: requests go to the event loop, which answers them in turn.
fn spawn_control(
    ctl_listener: tokio::net::UnixListener,
    run_dir: &std::path::Path,
    ctl_tx: mpsc::Sender<CtlMsg>,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let path = common::ctl::socket_path(run_dir, "vrrpd");
    let (ctl_stop_tx, ctl_stop_rx) = oneshot::channel::<()>();
    let handler = move |req: Request| {
        let tx = ctl_tx.clone();
        async move {
            let (atx, arx) = oneshot::channel();
            if tx.send((req, atx)).await.is_err() {
                return Response::err("vrrpd is stopping");
            }
            arx.await
                .unwrap_or_else(|_| Response::err("vrrpd is stopping"))
        }
    };
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = ctl_stop_rx.await;
        };
        common::ctl::serve_on(ctl_listener, &path, handler, stop).await;
    });
    (ctl_stop_tx, task)
}

impl Daemon {
    /// The link's state, maintenance kept from before a restart, then every core starts.
    async fn start_instances(&mut self) {
        let now = Instant::now();
        let up = self
            .nl
            .link_up(self.iface.index)
            .await
            .unwrap_or(self.iface.up);
        self.set_link(now, up).await;
        // Maintenance set before a restart or a reboot still holds: the node starts as
        // backup and does not preempt until `lbctl maintenance off`.
        let kept = maintenance_file(&self.opts.state_dir);
        if kept.exists() {
            warn!(file = %kept.display(), "maintenance is on (set before this start): staying backup until `lbctl maintenance off`");
            for i in 0..self.insts.len() {
                self.insts[i].with(|c| c.set_maintenance(now, true));
            }
        }
        for i in 0..self.insts.len() {
            self.insts[i].with(|c| c.start(now));
            self.drain(i).await;
        }
    }

    /// Until the handover after `shutdown` is done (or its bound passed): the cores'
    /// deadlines, packets, link changes, trackers, the control socket and signals.
    async fn event_loop(&mut self, inputs: Inputs, shutdown: impl Future<Output = ()>) {
        let Inputs {
            mut link_events,
            mut learn_rx,
            mut track_rx,
            mut ctl_rx,
            mut drain_rx,
            mut hup,
            mut dumps,
        } = inputs;
        let d = self;
        let watchdog = watchdog_interval();
        let mut wd_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut link_poll = tokio::time::interval(if link_events.is_some() {
            LINK_POLL
        } else {
            LINK_POLL_FALLBACK
        });
        let mut drain_tick = tokio::time::interval(drain::PROBE_EVERY);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        let mut buf0 = vec![0u8; 65536];
        let mut buf1 = vec![0u8; 65536];
        let mut vbuf0 = vec![0u8; 65536];
        let mut vbuf1 = vec![0u8; 65536];
        let timer = crate::io::DeadlineTimer::new();
        loop {
            if d.shutdown_started.is_some() && d.insts.iter().all(|i| i.done) {
                info!("handover done, exiting");
                break;
            }
            let deadline = d.next_deadline();
            let sleep = async {
                match deadline {
                    Some(t) => timer.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let (s0, s1) = (d.socks.first(), d.socks.get(1));
            let rx0 = async {
                match s0 {
                    Some(s) => s.recv(&mut buf0).await,
                    None => std::future::pending().await,
                }
            };
            let rx1 = async {
                match s1 {
                    Some(s) => s.recv(&mut buf1).await,
                    None => std::future::pending().await,
                }
            };
            // Virtual MAC sockets: adverts from other nodes' identical virtual MAC.
            let vsock = |i: usize| {
                d.insts
                    .get(i)
                    .and_then(|x| x.vmac.as_ref())
                    .map(|v| &v.sock)
            };
            let (v0, v1) = (vsock(0), vsock(1));
            let vrx0 = async {
                match v0 {
                    Some(s) => s.recv(&mut vbuf0).await,
                    None => std::future::pending().await,
                }
            };
            let vrx1 = async {
                match v1 {
                    Some(s) => s.recv(&mut vbuf1).await,
                    None => std::future::pending().await,
                }
            };
            let link_ev = async {
                match link_events.as_mut() {
                    Some(l) => l.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {
                    let now = Instant::now();
                    for i in 0..d.insts.len() {
                        d.insts[i].with(|c| c.handle_timeout(now));
                        d.drain(i).await;
                    }
                }
                r = rx0 => d.on_rx(0, r).await,
                r = rx1 => d.on_rx(1, r).await,
                r = vrx0 => d.on_rx(0, r).await,
                r = vrx1 => d.on_rx(1, r).await,
                ev = link_ev => match ev {
                    Some(up) => d.set_link(Instant::now(), up).await,
                    None => {
                        warn!("link notifications ended; polling link state every second");
                        link_events = None;
                        link_poll = tokio::time::interval(LINK_POLL_FALLBACK);
                    }
                },
                Some((i, l)) = learn_rx.recv() => d.on_learned(i, l).await,
                _ = link_poll.tick() => {
                    d.learn_all();
                    match d.nl.link_up(d.iface.index).await {
                        Ok(up) => d.set_link(Instant::now(), up).await,
                        Err(e) => debug!(error = %e, "link poll failed"),
                    }
                }
                Some(u) = track_rx.recv() => d.on_track(u).await,
                _ = drain_tick.tick(), if d.draining() => d.probe_drains(),
                Some(r) = drain_rx.recv() => d.on_drain_report(r).await,
                Some((req, answer)) = ctl_rx.recv() => {
                    let resp = d.on_ctl(req).await;
                    let _ = answer.send(resp);
                }
                _ = hup.recv() => {
                    if let Err(e) = d.reload().await {
                        error!(error = %e, "reload refused; the old configuration keeps running");
                    }
                }
                signo = dumps.recv() => d.dump(signo).await,
                () = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    d.begin_shutdown().await;
                }
                _ = wd_tick.tick(), if watchdog.is_some() => {
                    let _ = common::notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            if let Some(t0) = d.shutdown_started {
                let bound = d.cluster.vrrp.handover_timeout + Duration::from_secs(2);
                if t0.elapsed() > bound {
                    warn!(
                        waited_ms = t0.elapsed().as_millis() as u64,
                        "handover did not finish in time; exiting anyway"
                    );
                    break;
                }
            }
        }
    }

    /// Whatever happened, leave no VIP, virtual MAC or tracker behind.
    async fn finish(&mut self) {
        let d = self;
        let _ = common::notify::notify(&[sd_notify::NotifyState::Stopping]);
        // Whatever happened, leave no VIP behind.
        for i in 0..d.insts.len() {
            d.remove_vips(i).await;
        }
        // A park stays for the next start (docs/handover.md); the forwarding goes.
        d.finish_drains().await;
        for i in 0..d.insts.len() {
            if let Some(v) = d.insts[i].vmac.take() {
                v.destroy(&d.nl).await;
            }
        }
        vmac::restore_base(&d.nl, &mut d.base_sysctls).await;
        for t in d.trackers.drain(..) {
            t.abort();
        }
    }
}

/// The signals that dump the status instead of ending the process (keepalived's DATA,
/// STATS and JSON signals).
pub fn dump_signals() -> [i32; 3] {
    [
        nix::libc::SIGUSR1,
        nix::libc::SIGUSR2,
        nix::libc::SIGRTMIN() + 2,
    ]
}

/// What the kernel has, read for one status answer.
#[derive(Debug, Default)]
struct Kernel {
    /// Per instance, its VIPs on the interface (or its virtual MAC).
    on_iface: Vec<Vec<IpAddr>>,
    /// Per instance, its VIPs on `lo` (parked).
    on_lo: Vec<Vec<IpAddr>>,
    /// Per VIP, the packets the forwarding rules sent on.
    steered_packets: Vec<(IpAddr, u64)>,
}

/// What an operator needs to read about a VIP that could not be added: which address, on
/// which interface, the kernel's answer and, for a refusal, the missing capability.
fn vip_add_error(vip: IpAddr, prefix: u8, iface: &str, e: &crate::io::IoError) -> String {
    let text = e.to_string();
    let hint = if matches!(e.errno(), Some(nix::libc::EPERM | nix::libc::EACCES)) {
        " (vrrpd lacks CAP_NET_ADMIN: check the unit's CapabilityBoundingSet / AmbientCapabilities)"
    } else {
        ""
    };
    format!("could not add the VIP {vip}/{prefix} to {iface}: {text}{hint}")
}

/// Half of systemd's watchdog period, as `sd_watchdog_enabled(3)` defines it: `WATCHDOG_USEC`
/// set, and `WATCHDOG_PID` either unset or ours.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

impl Daemon {
    fn next_deadline(&self) -> Option<Instant> {
        self.insts
            .iter()
            .filter_map(|i| i.core.poll_timeout())
            .min()
    }

    /// Look for every server's IPv6 link-local (startup, then every link poll while some
    /// server's is not known yet).
    fn learn_all(&self) {
        for (i, inst) in self.insts.iter().enumerate() {
            let Some(l) = &inst.learner else { continue };
            let known: Vec<&String> = l.learned().values().collect();
            if inst
                .plan
                .learn_sources_from
                .iter()
                .all(|p| known.contains(&&p.name))
            {
                continue;
            }
            let (nl, lookup, tx) = (self.nl.clone(), l.lookup(), self.learn_tx.clone());
            tokio::spawn(async move {
                let found = sources::learn_all(nl, lookup).await;
                let _ = tx.send((i, Learned::All(found))).await;
            });
        }
    }

    async fn on_learned(&mut self, i: usize, l: Learned) {
        let now = Instant::now();
        let Some(learner) = self.insts.get_mut(i).and_then(|x| x.learner.as_mut()) else {
            return;
        };
        let held = match l {
            Learned::All(found) => {
                if !learner.merge(found) {
                    return;
                }
                Vec::new()
            }
            Learned::One(ll, owner) => learner.resolved(ll, owner, now),
        };
        let allowed = learner.allowed();
        let inst = &mut self.insts[i];
        inst.with(|c| c.set_allowed_sources(Some(allowed)));
        for h in held {
            let rx = Received {
                src: h.src,
                dst: h.dst,
                ttl: h.ttl,
                payload: &h.payload,
            };
            self.insts[i].with(|c| c.handle_packet(now, rx));
        }
        self.drain(i).await;
    }

    async fn on_rx(&mut self, i: usize, r: Result<Rx<'_>, crate::io::IoError>) {
        match r {
            Ok(Rx::Packet(meta, payload)) => {
                let now = Instant::now();
                // IPv6 from a link-local not known to be a server's: hold it while we find
                // out whose it is (the core would drop it as "source").
                if let Some(learner) = self.insts.get_mut(i).and_then(|x| x.learner.as_mut()) {
                    if let sources::Verdict::Hold { start } = learner.verdict(meta.src, now) {
                        let held = learner.hold(sources::Held {
                            src: meta.src,
                            dst: meta.dst,
                            ttl: meta.ttl,
                            payload: payload.to_vec(),
                        });
                        if start {
                            if let IpAddr::V6(ll) = meta.src {
                                let (nl, lookup, tx) =
                                    (self.nl.clone(), learner.lookup(), self.learn_tx.clone());
                                tokio::spawn(async move {
                                    let owner = sources::resolve(nl, lookup, ll).await;
                                    let _ = tx.send((i, Learned::One(ll, owner))).await;
                                });
                            }
                        }
                        if held {
                            return;
                        }
                    }
                }
                if let Some(inst) = self.insts.get_mut(i) {
                    let rx = Received {
                        src: meta.src,
                        dst: meta.dst,
                        ttl: meta.ttl,
                        payload,
                    };
                    inst.with(|c| c.handle_packet(now, rx));
                }
                self.drain(i).await;
            }
            Ok(Rx::BadIpHeader(reason)) => {
                // Counted in the core's drop map, beside every other reason.
                if let Some(inst) = self.insts.get_mut(i) {
                    inst.with(|c| c.count_drop(reason));
                }
                debug!(
                    reason = reason.as_str(),
                    "dropped a packet with a bad IPv4 header"
                );
            }
            Err(e) => {
                warn!(error = %e, "receive failed");
                // Do not spin on a persistent error.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Execute the pending actions of instance `i` one at a time, in the core's order:
    /// the core decides the order (make-before-break, the release linger), and an action
    /// that fails (the VIP cannot be added) is reported before the next one is taken, so
    /// the core can withdraw what should no longer go out.
    async fn drain(&mut self, i: usize) {
        while let Some(a) = self.insts.get_mut(i).and_then(|x| x.core.poll_action()) {
            self.execute(i, a).await;
        }
        self.update_status_line();
    }

    async fn execute(&mut self, i: usize, action: Action) {
        match action {
            Action::Send { dst, payload } => {
                let src = self.insts[i].plan.cfg.primary;
                let sock = match &self.insts[i].vmac {
                    Some(v) => Some(&v.sock),
                    None => self.socks.get(i),
                };
                if let Some(sock) = sock {
                    if let Err(e) = sock.send(src, dst, &payload).await {
                        // Link down or no route: the core's timers carry on regardless.
                        debug!(error = %e, "advert not sent");
                    }
                }
            }
            Action::AddVips => {
                let inst = &mut self.insts[i];
                // The address owner (priority 255) accepts whatever accept_mode says.
                if self.responder.is_some() && inst.plan.cfg.priority != 255 {
                    if !inst.answering {
                        inst.answering = true;
                        info!(vips = ?inst.plan.cfg.vips, "VIP answered by ARP / ND (accept_mode = false)");
                    }
                    self.update_responder();
                    return;
                }
                // On a virtual MAC interface as a host address: the subnet route stays
                // on the base interface.
                let (index, prefix) = match &inst.vmac {
                    Some(v) => (
                        v.index,
                        if inst.plan.cfg.primary.is_ipv6() {
                            128
                        } else {
                            32
                        },
                    ),
                    None => (self.iface.index, inst.plan.prefix),
                };
                let mut failure = None;
                for vip in inst.plan.cfg.vips.clone() {
                    match self.nl.add_addr(index, vip, prefix).await {
                        Ok(_) => {
                            if !inst.held.contains(&vip) {
                                inst.held.push(vip);
                            }
                            info!(vip = %vip, prefix, "VIP added");
                        }
                        Err(e) => {
                            let iface = inst
                                .vmac
                                .as_ref()
                                .map_or(self.iface.name.as_str(), |v| v.name.as_str());
                            let reason = vip_add_error(vip, prefix, iface, &e);
                            error!(vip = %vip, error = %e, "{reason}");
                            failure = Some(reason);
                            break;
                        }
                    }
                }
                let now = Instant::now();
                match failure {
                    // Not master without the VIP: the core resigns and retries later.
                    Some(reason) => {
                        // The core resigns and withdraws the announcement and the advert
                        // queued after this AddVips.
                        self.insts[i].with(|c| c.vip_install_failed(now, reason));
                    }
                    None => self.insts[i].with(|c| c.vip_installed(now)),
                }
            }
            // The core has waited out any handover linger already.
            Action::RemoveVips => self.remove_vips(i).await,
            Action::Announce => {
                let announcer = match &self.insts[i].vmac {
                    Some(v) => &v.announcer,
                    None => &self.announcer,
                };
                for vip in self.insts[i].plan.cfg.vips.clone() {
                    if let Err(e) = announcer.announce(vip) {
                        debug!(vip = %vip, error = %e, "announcement not sent");
                    }
                }
            }
            Action::StateChanged { from, to, cause } => {
                let inst = &self.insts[i];
                let st = inst.core.status(Instant::now());
                // The core logs the transition itself (inside the instance span); this
                // adds what only the shell knows, at debug level.
                debug!(
                    event = "transition",
                    family = inst.plan.family(),
                    from = from.as_str(),
                    to = to.as_str(),
                    cause = cause.as_str(),
                    priority = st.effective_priority,
                    master = ?st.master,
                    "state change"
                );
                self.notify(to);
            }
            Action::PeerLost { peer, why } => self.tell_lbd_peer_lost(i, peer, why),
            Action::ParkVips | Action::UnparkVips | Action::Steer { .. } | Action::Unsteer => {
                self.execute_drain(i, action).await;
            }
            Action::HandoverDone => {
                self.insts[i].done = true;
                info!(family = self.insts[i].plan.family(), "handover done");
            }
        }
    }

    /// Tell the responder the VIPs of every instance that answers for them now.
    fn update_responder(&self) {
        if let Some(r) = &self.responder {
            let vips = self
                .insts
                .iter()
                .filter(|i| i.answering)
                .flat_map(|i| i.plan.cfg.vips.iter().copied())
                .collect();
            r.set(vips);
        }
    }

    async fn remove_vips(&mut self, i: usize) {
        if std::mem::take(&mut self.insts[i].answering) {
            info!(vips = ?self.insts[i].plan.cfg.vips, "VIP no longer answered");
            self.update_responder();
        }
        let inst = &mut self.insts[i];
        let mut vips = std::mem::take(&mut inst.held);
        for v in &inst.plan.cfg.vips {
            if !vips.contains(v) {
                vips.push(*v);
            }
        }
        for vip in vips {
            if vip == self.node.address || Some(vip) == self.node.address6.map(IpAddr::V6) {
                continue; // never remove the node's own address (priority-255 owner)
            }
            let index = inst.vmac.as_ref().map_or(self.iface.index, |v| v.index);
            match self.nl.del_addr(index, vip).await {
                Ok(true) => info!(vip = %vip, "VIP removed"),
                Ok(false) => {}
                Err(e) => {
                    error!(vip = %vip, error = %e, "could not remove the VIP");
                    inst.held.push(vip);
                }
            }
        }
    }

    fn notify(&self, state: State) {
        if let Some(cmd) = &self.cluster.vrrp.notify {
            self.notifier.send(cmd, state.as_str());
        }
    }

    async fn set_link(&mut self, now: Instant, up: bool) {
        if !self.cluster.vrrp.track.link {
            return;
        }
        if self.tracking.link_down() != up {
            return;
        }
        info!(
            link = if up { "up" } else { "down" },
            "interface link changed"
        );
        self.tracking.set_link_down(!up);
        self.apply_tracking(now).await;
    }

    async fn on_track(&mut self, u: TrackUpdate) {
        info!(tracker = %u.name, ok = u.ok, detail = %u.detail, "tracker changed");
        self.tracking.update(u);
        self.apply_tracking(Instant::now()).await;
    }

    async fn apply_tracking(&mut self, now: Instant) {
        let (fault, offset) = (self.tracking.fault(), self.tracking.offset());
        for i in 0..self.insts.len() {
            self.insts[i].with(|c| {
                c.set_fault(now, fault);
                c.set_priority_offset(now, offset);
            });
            self.drain(i).await;
        }
    }

    fn spawn_trackers(&mut self) {
        for t in self.trackers.drain(..) {
            t.abort();
        }
        let track = &self.cluster.vrrp.track;
        let mut names = Vec::new();
        if track.lbd != TrackEffect::Off {
            if let Some(svc) = self.cluster.tracked_service() {
                names.push(track::LBD_TRACKER.to_owned());
                self.trackers.push(track::spawn_lbd(
                    self.opts.run_dir.clone(),
                    svc.name.clone(),
                    track.lbd_interval,
                    track.lbd,
                    self.track_tx.clone(),
                ));
            }
        }
        for s in &track.scripts {
            if s.effect == TrackEffect::Off {
                continue;
            }
            names.push(format!("script:{}", s.name));
            self.trackers
                .push(track::spawn_script(s.clone(), self.track_tx.clone()));
        }
        self.tracking.remove_all_but(&names);
    }

    async fn begin_shutdown(&mut self) {
        if self.shutdown_started.is_some() {
            return;
        }
        info!("stopping: handing over");
        self.shutdown_started = Some(Instant::now());
        let _ = common::notify::notify(&[sd_notify::NotifyState::Stopping]);
        let now = Instant::now();
        for i in 0..self.insts.len() {
            self.insts[i].with(|c| c.shutdown(now));
            self.drain(i).await;
        }
    }

    /// Re-read the cluster file; apply it only if it is valid and compatible.
    async fn reload(&mut self) -> anyhow::Result<()> {
        let r = self.try_reload().await;
        match &r {
            Ok(()) => {
                self.reloads += 1;
                self.last_reload_error = None;
                info!("configuration reloaded");
            }
            Err(e) => self.last_reload_error = Some(format!("{e:#}")),
        }
        r
    }

    async fn try_reload(&mut self) -> anyhow::Result<()> {
        let path = self
            .cluster
            .source
            .clone()
            .ok_or_else(|| anyhow!("the configuration was not read from a file"))?;
        let new = common::config::load(&path).map_err(|e| anyhow!("{e}"))?;
        let node = common::config::identify(&new, self.opts.node.as_deref())
            .context("identifying this node")?
            .0
            .clone();
        let iface_name = match &new.vip.interface {
            Some(n) => n.clone(),
            None => {
                Interface::holding(node.address)
                    .context("finding the interface")?
                    .name
            }
        };
        if iface_name != self.iface.name {
            bail!(
                "the VIP interface would change from {} to {iface_name}: restart vrrpd for that",
                self.iface.name
            );
        }
        let fresh = self.iface.refresh().unwrap_or_else(|_| self.iface.clone());
        let plans = map::plan(&new, &node, &iface_name, fresh.link_local())?;
        let families = |ps: &mut dyn Iterator<Item = &InstancePlan>| {
            ps.map(InstancePlan::family).collect::<Vec<_>>()
        };
        if families(&mut plans.iter()) != families(&mut self.insts.iter().map(|i| &i.plan)) {
            bail!("the VIP address families changed: restart vrrpd for that");
        }
        if new.vrrp.accept_mode != self.cluster.vrrp.accept_mode {
            bail!("vrrp.accept_mode changed: restart vrrpd for that");
        }
        if new.vrrp.virtual_mac != self.cluster.vrrp.virtual_mac
            || (new.vrrp.virtual_mac && new.vrrp.vrid != self.cluster.vrrp.vrid)
        {
            bail!("vrrp.virtual_mac (or the VRID of its MAC) changed: restart vrrpd for that");
        }
        let now = Instant::now();
        self.cluster = new;
        self.node = node;
        for (i, plan) in plans.into_iter().enumerate() {
            let cfg = plan.cfg.clone();
            self.insts[i].with(|c| c.reconfigure(now, cfg));
            // The link-locals learned so far stay allowed (for servers still listed).
            if plan.learn_sources_from.is_empty() {
                self.insts[i].learner = None;
            } else if self.insts[i].learner.is_none() {
                let extra = if self.cluster.vrrp.virtual_mac {
                    vec![vmac::virtual_mac(self.cluster.vrrp.vrid, true)]
                } else {
                    Vec::new()
                };
                self.insts[i].learner = Some(sources::SourceLearner::new(
                    self.iface.index,
                    Vec::new(),
                    Vec::new(),
                    extra,
                ));
            }
            if let Some(l) = self.insts[i].learner.as_mut() {
                l.replan(
                    plan.learn_sources_from.clone(),
                    plan.cfg.allowed_sources.clone().unwrap_or_default(),
                );
                let allowed = l.allowed();
                self.insts[i].with(|c| c.set_allowed_sources(Some(allowed)));
            }
            self.drain(i).await;
            // Keep removing VIPs of the old plan that are still held (RemoveVips above).
            self.insts[i].plan = plan;
        }
        self.spawn_trackers();
        self.learn_all();
        self.apply_tracking(now).await;
        Ok(())
    }

    async fn on_ctl(&mut self, req: Request) -> Response {
        Response::from_result(self.answer(req).await)
    }

    async fn answer(&mut self, req: Request) -> Result<Answer, String> {
        match req {
            Request::Status => {
                let kernel = self.vips_in_kernel().await;
                Ok(Answer::Status(Box::new(self.status(&kernel))))
            }
            Request::Maintenance(proto::SetMaintenance { on }) => {
                let now = Instant::now();
                info!(on, "maintenance switched");
                persist_maintenance(&self.opts.state_dir, on);
                for i in 0..self.insts.len() {
                    self.insts[i].with(|c| c.set_maintenance(now, on));
                    self.drain(i).await;
                }
                Ok(Answer::Maintenance(proto::MaintenanceSet {
                    maintenance: on,
                }))
            }
            Request::Reload => match self.reload().await {
                Ok(()) => Ok(Answer::Reloaded(proto::Reloaded {
                    reloaded: true,
                    reloads: self.reloads,
                })),
                Err(e) => {
                    error!(error = %format!("{e:#}"), "reload refused; the old configuration keeps running");
                    Err(format!(
                        "reload refused, the old configuration keeps running: {e:#}"
                    ))
                }
            },
        }
    }

    /// The core lost a master that did not hand over: tell this node's lbd at once, so it
    /// checks that node's servers now instead of waiting for a client's connect to time
    /// out. Fire and forget (lbd may be down; the VRRP loop never waits on it).
    fn tell_lbd_peer_lost(&self, i: usize, peer: IpAddr, why: vrrp_proto::core::PeerLoss) {
        let node = self.node_of(i, peer);
        let mut addresses = vec![peer];
        if let Some(n) = node
            .as_deref()
            .and_then(|name| self.cluster.nodes.iter().find(|n| n.name == name))
        {
            addresses.push(n.address);
            addresses.extend(n.address6.map(IpAddr::V6));
        }
        addresses.sort_unstable();
        addresses.dedup();
        info!(
            peer = %peer,
            node = node.as_deref().unwrap_or("?"),
            why = why.as_str(),
            "lost the master; telling lbd to check its servers now"
        );
        let path = common::ctl::socket_path(&self.opts.run_dir, "lbd");
        let req = common::proto::lbd::Suspect {
            node,
            addresses,
            why: why.as_str().to_owned(),
        };
        tokio::spawn(async move {
            match common::proto::lbd::suspect(&path, req, Duration::from_secs(1)).await {
                Ok(r) => debug!(servers = r.servers, "lbd checks the lost node's servers"),
                Err(e) => debug!(error = %e, "could not tell lbd about the lost node"),
            }
        });
    }

    /// The node a VRRP source address belongs to, for people: a server's listed address or
    /// its learned link-local.
    fn node_of(&self, i: usize, addr: IpAddr) -> Option<String> {
        if addr == self.insts[i].plan.cfg.primary {
            return Some(self.node.name.clone());
        }
        let listed = self
            .cluster
            .nodes
            .iter()
            .find(|n| n.address == addr || n.address6.map(IpAddr::V6) == Some(addr))
            .map(|n| n.name.clone());
        listed.or_else(|| match (addr, &self.insts[i].learner) {
            (IpAddr::V6(ll), Some(l)) => l.learned().get(&ll).cloned(),
            _ => None,
        })
    }

    /// One line for `systemctl status vrrpd`: per instance the state and who holds the VIP,
    /// as far as this process added it ("held here" only after netlink said yes).
    fn status_text(&self) -> String {
        let now = Instant::now();
        let parts: Vec<String> = self
            .insts
            .iter()
            .enumerate()
            .map(|(n, i)| {
                let st = i.core.status(now);
                let vips = i
                    .plan
                    .cfg
                    .vips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let here = !i.held.is_empty() || i.answering;
                let mut t = if let Some(e) = &st.vip_error {
                    if st.state == State::Fault {
                        format!("{}: VIP {vips} not held: {}", st.state, e.reason)
                    } else {
                        format!(
                            "{}, VIP {vips} held elsewhere; last attempt here failed: {}",
                            st.state, e.reason
                        )
                    }
                } else if here {
                    format!("{}, VIP {vips} held here", st.state)
                } else {
                    let holder = match st.master {
                        Some(m) => match self.node_of(n, m) {
                            Some(name) => format!("{name} ({m})"),
                            None => m.to_string(),
                        },
                        None => "nobody known".to_owned(),
                    };
                    format!("{}, VIP {vips} held by {holder}", st.state)
                };
                if st.maintenance {
                    t.push_str(", maintenance on");
                }
                if self.insts.len() > 1 {
                    t = format!("{}: {t}", i.plan.family());
                }
                t
            })
            .collect();
        let mut line = parts.join("; ");
        if self.shutdown_started.is_some() {
            line = format!("stopping (handing over): {line}");
        }
        line
    }

    fn update_status_line(&mut self) {
        let line = self.status_text();
        if line != self.status_line {
            let _ = common::notify::notify(&[sd_notify::NotifyState::Status(&line)]);
            self.status_line = line;
        }
    }

    /// SIGUSR1 / SIGUSR2 / SIGRTMIN+2: the status to the journal and to
    /// `RUN_DIR/vrrpd.status.json` (keepalived writes /tmp/keepalived.data and .stats).
    async fn dump(&self, signo: i32) {
        let kernel = self.vips_in_kernel().await;
        let st = self.status(&kernel);
        let sig = common::dump::signal_name(signo);
        let written = match serde_json::to_value(&st) {
            Ok(v) => common::dump::write_status(&self.opts.run_dir, "vrrpd", &v),
            Err(e) => Err(std::io::Error::other(e)),
        };
        for inst in &st.instances {
            let vips: Vec<String> = inst
                .vips_on_interface
                .iter()
                .map(ToString::to_string)
                .collect();
            info!(
                signal = %sig,
                family = %inst.family,
                state = %inst.core.state.as_str(),
                priority = inst.core.effective_priority,
                master = ?inst.core.master,
                vips_on_interface = %vips.join(","),
                vip_error = ?inst.core.vip_error.as_ref().map(|e| &e.reason),
                counters = ?inst.core.counters,
                "status dump"
            );
        }
        match written {
            Ok(p) => info!(signal = %sig, file = %p.display(), "status written"),
            Err(e) => warn!(signal = %sig, error = %e, "could not write the status file"),
        }
    }

    /// Per instance, which of its VIPs the kernel has on the interface and on `lo` right
    /// now, and what the forwarding rules counted (not what this process believes it did:
    /// no surface may claim what the kernel does not have).
    async fn vips_in_kernel(&self) -> Kernel {
        let mut k = Kernel::default();
        let lo = match self.nl.addresses(self.lo_index).await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "status: could not list lo's addresses");
                Vec::new()
            }
        };
        for i in &self.insts {
            let index = i.vmac.as_ref().map_or(self.iface.index, |v| v.index);
            let have = match self.nl.addresses(index).await {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "status: could not list the interface's addresses");
                    Vec::new()
                }
            };
            let of = |have: &[(IpAddr, u8)]| -> Vec<IpAddr> {
                i.plan
                    .cfg
                    .vips
                    .iter()
                    .copied()
                    .filter(|v| have.iter().any(|(a, _)| a == v))
                    .collect()
            };
            k.on_iface.push(of(&have));
            k.on_lo.push(of(&lo));
        }
        if self.insts.iter().any(|i| !i.drain.steer.is_empty()) {
            match crate::io::steer::steered_packets().await {
                Ok(p) => k.steered_packets = p,
                Err(e) => warn!(error = %e, "status: could not read the forwarding counters"),
            }
        }
        k
    }

    fn status(&self, kernel: &Kernel) -> proto::Status {
        let now = Instant::now();
        let instances: Vec<proto::Instance> = self
            .insts
            .iter()
            .enumerate()
            .map(|(n, i)| {
                let core = i.core.status(now);
                let master_node = core.master.and_then(|a| self.node_of(n, a));
                proto::Instance {
                    core,
                    family: i.plan.family().to_owned(),
                    master_node,
                    primary: i.plan.cfg.primary,
                    learned_sources: i.learner.as_ref().map(|l| proto::LearnedSources {
                        sources: l.learned().clone(),
                        counters: l.counters,
                    }),
                    vips_on_interface: kernel.on_iface.get(n).cloned().unwrap_or_default(),
                    vips_parked: kernel.on_lo.get(n).cloned().unwrap_or_default(),
                    drain: self.drain_status(n, kernel),
                    vips_answered: if i.answering {
                        i.plan.cfg.vips.clone()
                    } else {
                        Vec::new()
                    },
                    virtual_mac: i.vmac.as_ref().map(|v| proto::VirtualMac {
                        interface: v.name.clone(),
                        mac: vmac::fmt_mac(v.mac),
                    }),
                }
            })
            .collect();
        proto::Status {
            // Every daemon has at least one instance (the config requires a VIP).
            current: instances[0].clone(),
            node: self.node.name.clone(),
            interface: self.iface.name.clone(),
            vrid: self.cluster.vrrp.vrid,
            version: self.insts[0].plan.cfg.version,
            accept_mode: self.cluster.vrrp.accept_mode,
            config: self
                .cluster
                .source
                .as_deref()
                .map(|p| p.display().to_string()),
            reloads: self.reloads,
            last_reload_error: self.last_reload_error.clone(),
            stopping: self.shutdown_started.is_some(),
            tracking: self.tracking.status(),
            responder: self.responder.as_ref().map(|r| r.counters()),
            instances,
        }
    }
}
