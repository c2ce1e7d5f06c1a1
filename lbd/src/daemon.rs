//! The lbd process: wires the engine to signals, systemd, the stats page, the control
//! socket and vrrpd.
//!
//! ```text
//!  SIGHUP / ctl reload --> Engine::reload --(ok)--> apply; (bad) --> last_reload_error
//!  shutdown (SIGTERM)  --> stop accepting --> drain (<= drain_timeout) --> stop servers
//!  SIGUSR2 / ctl upgrade --> upgrade::hand_over (a new process takes every listener)
//!                        --(ok)--> drain (<= drain_timeout) --> exit; (failed) --> go on
//!  started by an upgrade (LBD_UPGRADE_FROM): take the listeners, Ready, wait for Commit
//!  stats task   : stats::serve(cfg.stats.listen, Arc<dyn SnapshotSource = Engine>)
//!  control task : common::ctl::serve(RUN_DIR/lbd.sock, control::handle)
//!  admin states : STATE_DIR/admin.json <-> admin::Book <-> peers (TCP lbd.peer_port)
//!  vrrp task    : every 2 s ask RUN_DIR/vrrpd.sock `status` -> Snapshot.vrrp
//!  watchdog task: WATCHDOG=1 at half of WATCHDOG_USEC when systemd asks for it
//! ```

use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::config::{Cluster, ConfigError, IdentifyError};
use common::proto::lbd::{AdminEntry, Answer, Request, Upgrade, Upgraded};
use sd_notify::NotifyState;
use serde_json::Value;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::engine::{ApplyError, Engine};
use crate::peers::Peers;
use crate::snapshot::VrrpView;
use crate::upgrade::{self, Exec, Kind, Takeover};

/// How often vrrpd is asked for its state.
const VRRP_POLL: Duration = Duration::from_secs(2);
/// The `STATUS=` line follows every server change at once; the connection count in it is
/// refreshed this often.
const STATUS_REFRESH: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub node: Option<String>,
    pub run_dir: PathBuf,
    /// Where the cluster's admin states are kept across restarts (`admin.json`).
    pub state_dir: PathBuf,
    /// What an upgrade runs: the binary this process was started from and its arguments
    /// ([`Exec::of_this_process`]).
    pub exec: Exec,
    /// The runtimes that accept and carry connections ([`Engine::set_accept_workers`]);
    /// empty: the runtime `run` is called on.
    pub workers: Vec<tokio::runtime::Handle>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Identify(#[from] IdentifyError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("stats page: cannot listen on {addr}: {source}")]
    StatsBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("run directory {path}: {source}")]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("taking over from the running lbd: {0}")]
    Takeover(String),
}

/// sd_notify for this process, until an upgrade makes another process systemd's main
/// one: from then on nothing is sent (`NotifyAccess=main` would refuse it, loudly).
#[derive(Debug, Default)]
struct Sd {
    quiet: AtomicBool,
}

impl Sd {
    fn notify(&self, states: &[NotifyState<'_>]) {
        if self.quiet.load(Relaxed) {
            return;
        }
        if let Err(e) = common::notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// systemd's watchdog interval, if it asks for one. As sd_watchdog_enabled(3): a
/// `WATCHDOG_PID` that is set must be this process (an upgrade's new process has none).
fn watchdog_usec() -> Option<u64> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?.parse::<u64>().ok()?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => (usec > 0).then_some(usec),
    }
}

/// An upgrade in progress.
type Running = std::pin::Pin<Box<dyn Future<Output = Result<upgrade::Done, String>> + Send>>;

/// An upgrade asked on the control socket, and where its answer goes.
struct Ask {
    req: Upgrade,
    reply: oneshot::Sender<Result<Upgraded, String>>,
}

/// Everything bound (or taken over) and built, nothing served yet.
struct Prepared {
    cluster: Cluster,
    engine: Engine,
    peers: Option<Arc<Peers>>,
    peer_listener: Option<std::net::TcpListener>,
    /// `None`: `stats.listen = "off"`.
    stats_listener: Option<tokio::net::TcpListener>,
    ctl_listener: tokio::net::UnixListener,
    ctl_path: PathBuf,
    hup: Signal,
    usr2: Signal,
    dumps: common::dump::DumpSignals,
    ignored: common::dump::DumpSignals,
}

/// Run lbd until `shutdown` completes, then drain and return; or until an upgrade handed
/// everything to a new process, then drain and return.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()> + Send) -> Result<(), RunError> {
    let (takeover, inherited) = match Takeover::from_env() {
        None => (None, upgrade::Inherited::default()),
        Some(Ok((t, i))) => (Some(t), i),
        Some(Err(e)) => return Err(RunError::Takeover(e)),
    };
    let prepared = match prepare(&opts, takeover.as_ref(), inherited).await {
        Ok(p) => p,
        Err(e) => {
            if let Some(t) = &takeover {
                t.fail(&format!("{e:#}"));
            }
            return Err(e);
        }
    };
    let mut last_admin = None;
    if let Some(t) = takeover {
        let from = t.from_pid;
        // Until the old process lets go, nothing here accepts; if it does not, this
        // process ends without having served anything or touched the control socket.
        let (admin, last) = t.ready().await.map_err(RunError::Takeover)?;
        merge_admin(&prepared.engine, admin);
        prepared.engine.resume_accepting();
        info!(from_pid = from, "took over: accepting on every listener");
        last_admin = Some(last);
    }
    serve(opts, prepared, shutdown, last_admin).await
}

fn merge_admin(engine: &Engine, admin: Vec<AdminEntry>) {
    let won = engine.book().merge(admin);
    engine.apply_admin(&won);
}

async fn prepare(
    opts: &Options,
    takeover: Option<&Takeover>,
    mut inherited: upgrade::Inherited,
) -> Result<Prepared, RunError> {
    let nofile = crate::engine::raise_nofile();
    let cluster = common::config::load(&opts.config)?;
    let (node, source) = common::config::identify(&cluster, opts.node.as_deref())?;
    let node = node.name.clone();
    info!(node = %node, found_by = source.as_str(), config = %opts.config.display(), nofile, pid = std::process::id(), threads = opts.workers.len().max(1), "lbd starting");

    let hup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;
    let usr2 = signal(SignalKind::user_defined2()).map_err(RunError::Signal)?;
    // Signals HAProxy's and keepalived's users send out of habit end a process by default;
    // here they dump the status (and say what to send instead), and SIGTTOU / SIGTTIN
    // (HAProxy: pause / resume the listeners) do not stop the process. SIGUSR2 upgrades,
    // as HAProxy's master reloads (re-executes) and nginx upgrades its binary on it.
    let dumps = common::dump::DumpSignals::new(&[nix::libc::SIGUSR1, nix::libc::SIGQUIT])
        .map_err(RunError::Signal)?;
    let ignored = common::dump::DumpSignals::new(&[nix::libc::SIGTTOU, nix::libc::SIGTTIN])
        .map_err(RunError::Signal)?;
    let book = crate::admin::Book::load(&node, &opts.state_dir);
    let peers = crate::peers::Peers::of(&cluster, &node);
    let engine = Engine::with_book(node.clone(), opts.config.clone(), &cluster, book);
    engine.set_accept_workers(opts.workers.clone());
    if let Some(t) = takeover {
        let _ = engine.book().merge(t.admin.clone());
        engine.pause_accepting();
        engine.inherit(std::mem::take(&mut inherited.services), t.health.clone());
    }
    engine.apply(cluster.clone())?;
    let peer_listener = peers
        .as_ref()
        .and_then(|p| p.listen(cluster.lbd.peer_port, inherited.peer.take()));

    // Stats page: the handed-over socket if it is on the same address (one handed over
    // while the page is now off closes here).
    let handed_stats = inherited.stats.take();
    let stats_listener = match cluster.stats.listen {
        None => None,
        Some(addr) => Some(
            match handed_stats {
                Some(l) if l.local_addr().ok() == Some(addr) => Ok(l),
                _ => crate::engine::bind_listener(addr, false),
            }
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .map_err(|source| RunError::StatsBind { addr, source })?,
        ),
    };

    // Control socket.
    std::fs::create_dir_all(&opts.run_dir).map_err(|source| RunError::RunDir {
        path: opts.run_dir.clone(),
        source,
    })?;
    let ctl_path = common::ctl::socket_path(&opts.run_dir, "lbd");
    // Bind now so that a bad run directory fails the start, not a background task. After
    // an upgrade the socket is the old process's, at the same path: no moment without it.
    let ctl = |source| RunError::Control {
        path: ctl_path.clone(),
        source,
    };
    let ctl_listener = match inherited.control.take() {
        Some(l)
            if l.local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(std::path::Path::to_path_buf))
                .as_deref()
                == Some(ctl_path.as_path()) =>
        {
            l.set_nonblocking(true)
                .and_then(|()| tokio::net::UnixListener::from_std(l))
                .map_err(ctl)?
        }
        _ => common::ctl::bind(&ctl_path).map_err(ctl)?,
    };
    Ok(Prepared {
        cluster,
        engine,
        peers,
        peer_listener,
        stats_listener,
        ctl_listener,
        ctl_path,
        hup,
        usr2,
        dumps,
        ignored,
    })
}

/// What an upgrade needs from this process at its steps.
struct Handing {
    engine: Engine,
    peers: Option<Arc<Peers>>,
    sd: Arc<Sd>,
    /// Tells the stats page and the control socket to stop accepting.
    quit: watch::Sender<bool>,
    handed: Arc<AtomicBool>,
}

impl upgrade::Old for Handing {
    fn admin(&self) -> Vec<AdminEntry> {
        self.engine.book().all()
    }

    fn quiet(&self, quiet: bool) {
        self.sd.quiet.store(quiet, Relaxed);
    }

    fn let_go(&self) {
        self.handed.store(true, Relaxed);
        self.engine.stop_listeners();
        self.quit.send_replace(true);
        if let Some(p) = &self.peers {
            p.stop();
        }
    }
}

/// Copies of every listening socket, for an upgrade.
fn sockets(engine: &Engine, others: &[(Kind, OwnedFd)]) -> std::io::Result<Vec<(Kind, OwnedFd)>> {
    let mut out: Vec<(Kind, OwnedFd)> = engine
        .listener_fds()?
        .into_iter()
        .map(|fd| (Kind::Service, fd))
        .collect();
    for (k, fd) in others {
        out.push((*k, fd.try_clone()?));
    }
    Ok(out)
}

async fn serve(
    opts: Options,
    p: Prepared,
    shutdown: impl Future<Output = ()> + Send,
    last_admin: Option<upgrade::FinalAdmin>,
) -> Result<(), RunError> {
    let Prepared {
        cluster,
        engine,
        peers,
        peer_listener,
        stats_listener,
        ctl_listener,
        ctl_path,
        mut hup,
        mut usr2,
        mut dumps,
        mut ignored,
    } = p;
    let sd = Arc::new(Sd::default());
    let handed = Arc::new(AtomicBool::new(false));
    // This process's own copies of the stats, peer and control sockets, for an upgrade
    // (the service listeners' are the engine's).
    let mut others = Vec::new();
    let mut keep = |kind: Kind, fd: std::io::Result<OwnedFd>| match fd {
        Ok(fd) => others.push((kind, fd)),
        Err(e) => warn!(?kind, error = %e, "no copy of a listener for upgrades"),
    };
    if let Some(l) = &stats_listener {
        keep(Kind::Stats, l.as_fd().try_clone_to_owned());
    }
    keep(Kind::Control, ctl_listener.as_fd().try_clone_to_owned());
    if let Some(l) = &peer_listener {
        keep(Kind::Peer, l.as_fd().try_clone_to_owned());
    }
    if let Some(p) = &peers {
        p.start(engine.clone(), peer_listener);
    }

    // `stop`: the end (the stats page and the control socket close); `quit`: stop
    // accepting on them (the end, or an upgrade's new process has them).
    let (stop_tx, stop_rx) = watch::channel(false);
    let (quit_tx, quit_rx) = watch::channel(false);
    let until = |rx: &watch::Receiver<bool>| {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Stats page.
    let source: Arc<dyn crate::stats::SnapshotSource> = Arc::new(engine.clone());
    let stats_task = stats_listener.map(|l| {
        tokio::spawn(crate::stats::serve(
            l,
            cluster.stats.clone(),
            source,
            until(&quit_rx),
        ))
    });
    if stats_task.is_none() {
        info!("no stats page (stats.listen = \"off\")");
    }

    // Control socket.
    let (ask_tx, mut ask_rx) = mpsc::channel::<Ask>(8);
    let ctl_engine = engine.clone();
    let ctl_peers = peers.clone();
    let handler = move |req: Request| {
        let engine = ctl_engine.clone();
        let peers = ctl_peers.clone();
        let ask_tx = ask_tx.clone();
        async move {
            if let Request::Upgrade(req) = req {
                return common::ctl::Response::from_result(
                    ask_upgrade(&ask_tx, req).await.map(Answer::Upgraded),
                );
            }
            common::ctl::Response::from_result(
                crate::control::handle(&engine, peers.as_ref(), req).await,
            )
        }
    };
    let ctl_task = {
        let path = ctl_path.clone();
        let handed = handed.clone();
        // During a SIGTERM drain the control socket still answers (`lbctl status`).
        let stop = until(&stop_rx);
        let quit = until(&quit_rx);
        tokio::spawn(async move {
            let handover = async {
                quit.await;
                if !handed.load(Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            common::ctl::serve_listener(&ctl_listener, handler, async {
                tokio::select! {
                    () = stop => {}
                    () = handover => {}
                }
            })
            .await;
            // The new process of an upgrade serves this path now: leave it.
            if !handed.load(Relaxed) {
                let _ = std::fs::remove_file(&path);
            }
        })
    };

    // vrrpd's view.
    let vrrp_task = tokio::spawn(poll_vrrp(
        engine.clone(),
        common::ctl::socket_path(&opts.run_dir, "vrrpd"),
    ));

    // The admin states the old process had when it stopped accepting (an upgrade).
    if let Some(last) = last_admin {
        let engine = engine.clone();
        tokio::spawn(async move { merge_admin(&engine, last.get().await) });
    }

    // systemd: READY, then a STATUS= line that follows the servers' states.
    sd.notify(&[NotifyState::Ready]);
    let status_task = {
        let engine = engine.clone();
        let sd = sd.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                let line = engine.status_text();
                if line != last {
                    sd.notify(&[NotifyState::Status(&line)]);
                    last = line;
                }
                // Connection counts change without an event: refresh them now and then.
                tokio::select! {
                    () = engine.changed() => {}
                    () = tokio::time::sleep(STATUS_REFRESH) => {}
                }
            }
        })
    };
    let watchdog_task = watchdog_usec().map(|usec| {
        let every = Duration::from_micros(usec / 2);
        let sd = sd.clone();
        tokio::spawn(async move {
            loop {
                sd.notify(&[NotifyState::Watchdog]);
                tokio::time::sleep(every).await;
            }
        })
    });
    info!("lbd ready");

    let handing: Arc<dyn upgrade::Old> = Arc::new(Handing {
        engine: engine.clone(),
        peers: peers.clone(),
        sd: sd.clone(),
        quit: quit_tx.clone(),
        handed: handed.clone(),
    });
    let mut running: Option<Running> = None;
    let mut waiting: Vec<oneshot::Sender<Result<Upgraded, String>>> = Vec::new();
    let mut asked_at = Instant::now();
    let mut done = None;
    tokio::pin!(shutdown);
    loop {
        // An upgrade asked, by the control socket (with its timeout) or SIGUSR2.
        let mut start: Option<Upgrade> = None;
        tokio::select! {
            () = &mut shutdown => {
                if running.take().is_some() {
                    warn!("stopping: the upgrade in progress is abandoned (its new lbd is stopped)");
                }
                for w in waiting.drain(..) {
                    let _ = w.send(Err("lbd is stopping: upgrade abandoned".into()));
                }
                break;
            }
            _ = hup.recv(), if running.is_none() => {
                info!("SIGHUP: reloading");
                match NotifyState::monotonic_usec_now() {
                    Ok(m) => sd.notify(&[NotifyState::Reloading, m]),
                    Err(_) => sd.notify(&[NotifyState::Reloading]),
                }
                // A refused reload is logged and recorded by `reload` itself.
                let _ = engine.reload().await;
                sd.notify(&[NotifyState::Ready]);
            }
            _ = usr2.recv() => {
                info!(binary = %opts.exec.binary.display(), "SIGUSR2: upgrading (handing every listener to a new lbd process)");
                start = Some(Upgrade::default());
            }
            Some(ask) = ask_rx.recv() => {
                waiting.push(ask.reply);
                start = Some(ask.req);
            }
            r = async {
                match running.as_mut() {
                    Some(f) => f.as_mut().await,
                    None => std::future::pending().await,
                }
            }, if running.is_some() => {
                running = None;
                match r {
                    Ok(d) => {
                        let answer = Upgraded {
                            old_pid: std::process::id(),
                            new_pid: d.new_pid,
                            binary: d.binary.display().to_string(),
                            new_version: d.new_version.clone(),
                            took_ms: millis(asked_at.elapsed()),
                            draining: engine.current_connections(),
                            drain_timeout_ms: millis(engine.cluster().lbd.drain_timeout),
                        };
                        info!(new_pid = d.new_pid, new_version = %d.new_version, binary = %answer.binary, took_ms = answer.took_ms, "upgrade done: the new lbd accepts; this one drains and exits");
                        for w in waiting.drain(..) {
                            let _ = w.send(Ok(answer.clone()));
                        }
                        done = Some(d);
                        break;
                    }
                    Err(e) => {
                        error!(error = %e, "upgrade failed: this lbd goes on serving");
                        for w in waiting.drain(..) {
                            let _ = w.send(Err(format!("upgrade failed, the running lbd goes on serving: {e}")));
                        }
                    }
                }
            }
            signo = dumps.recv() => dump(&engine, &opts.run_dir, signo),
            signo = ignored.recv() => warn!(
                signal = %common::dump::signal_name(signo),
                "ignored: lbd does not pause its listeners (HAProxy does on SIGTTOU / SIGTTIN)"
            ),
        }
        if let Some(req) = start {
            if running.is_some() {
                info!("an upgrade is already in progress: its outcome answers this request too");
                continue;
            }
            asked_at = Instant::now();
            let timeout = req
                .timeout_ms
                .map_or(upgrade::DEFAULT_TIMEOUT, Duration::from_millis);
            match sockets(&engine, &others) {
                Ok(socks) => {
                    let out = upgrade::Outgoing {
                        exec: opts.exec.clone(),
                        timeout,
                        sockets: socks,
                        health: engine.health_views(),
                    };
                    running = Some(Box::pin(upgrade::hand_over(out, handing.clone())));
                }
                Err(e) => {
                    let e = format!("cannot copy the listening sockets: {e}");
                    error!(error = %e, "upgrade failed: this lbd goes on serving");
                    for w in waiting.drain(..) {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    // A request that comes now is answered "no longer takes upgrades".
    drop(ask_rx);
    let drain = engine.cluster().lbd.drain_timeout;
    let open = engine.current_connections();
    if let Some(d) = &done {
        // The new process is systemd's main one: nothing more to tell systemd.
        info!(open, timeout = ?drain, new_pid = d.new_pid, "handed over; draining");
    } else {
        sd.notify(&[NotifyState::Stopping]);
        engine.stop_accepting();
        info!(open, timeout = ?drain, "stopped accepting; draining");
    }
    let left = engine.drain(drain).await;
    if left > 0 {
        warn!(left, "drain timeout: closing the remaining connections");
    } else {
        info!("drained");
    }
    engine.stop_accepting();
    stop_tx.send_replace(true);
    quit_tx.send_replace(true);
    vrrp_task.abort();
    status_task.abort();
    if let Some(w) = watchdog_task {
        w.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ctl_task).await;
    if let Some(t) = stats_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `upgrade` on the control socket: the main loop runs it; the answer comes when it is done.
async fn ask_upgrade(tx: &mpsc::Sender<Ask>, req: Upgrade) -> Result<Upgraded, String> {
    let (reply, answer) = oneshot::channel();
    tx.send(Ask { req, reply }).await.map_err(|_| {
        "this lbd no longer takes upgrades (it has handed over or is stopping)".to_owned()
    })?;
    answer
        .await
        .map_err(|_| "this lbd stopped before the upgrade was done".to_owned())?
}

/// SIGUSR1 / SIGQUIT: one journal line per frontend and the whole snapshot in
/// `RUN_DIR/lbd.status.json`.
fn dump(engine: &Engine, run_dir: &std::path::Path, signo: i32) {
    let sig = common::dump::signal_name(signo);
    let snap = engine.snapshot();
    for f in &snap.frontends {
        let up = f
            .servers
            .iter()
            .filter(|s| s.status == crate::snapshot::ServerStatus::Up)
            .count();
        info!(
            signal = %sig,
            service = %f.name,
            status = %f.status,
            servers_up = up,
            servers = f.servers.len(),
            current_sessions = f.current_sessions,
            total_sessions = f.total_sessions,
            denied = f.denied,
            no_server = f.no_server,
            "status dump"
        );
    }
    let value = serde_json::to_value(&snap).unwrap_or(Value::Null);
    match common::dump::write_status(run_dir, "lbd", &value) {
        Ok(p) => {
            info!(signal = %sig, file = %p.display(), "status written (SIGTERM stops lbd gracefully, SIGHUP reloads, SIGUSR2 upgrades)")
        }
        Err(e) => warn!(signal = %sig, error = %e, "could not write the status file"),
    }
}

async fn poll_vrrp(engine: Engine, path: PathBuf) {
    let mut was_up = None;
    loop {
        let view = common::proto::vrrpd::status(&path, Duration::from_secs(1))
            .await
            .ok()
            .map(|v| VrrpView::of(&v));
        let up = view.is_some();
        if was_up != Some(up) {
            info!(
                vrrpd = up,
                "vrrpd {}",
                if up { "answers" } else { "does not answer" }
            );
            was_up = Some(up);
        }
        engine.set_vrrp(view);
        tokio::time::sleep(VRRP_POLL).await;
    }
}
