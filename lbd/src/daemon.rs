//! The lbd process: wires the engine to signals, systemd, the stats page, the control
//! socket and vrrpd.
//!
//! ```text
//!  SIGHUP / ctl reload --> Engine::reload --(ok)--> apply; (bad) --> last_reload_error
//!  shutdown (SIGTERM)  --> stop accepting --> drain (<= drain_timeout) --> stop servers
//!  stats task   : stats::serve(cfg.stats.listen, Arc<dyn SnapshotSource = Engine>)
//!  control task : common::ctl::serve(RUN_DIR/lbd.sock, control::handle)
//!  admin states : STATE_DIR/admin.json <-> admin::Book <-> peers (TCP lbd.peer_port)
//!  vrrp task    : every 2 s ask RUN_DIR/vrrpd.sock `status` -> Snapshot.vrrp
//!  watchdog task: WATCHDOG=1 at half of WATCHDOG_USEC when systemd asks for it
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::config::{ConfigError, IdentifyError};
use sd_notify::NotifyState;
use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::engine::{ApplyError, Engine};
use crate::snapshot::VrrpView;

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
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = common::notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Run lbd until `shutdown` completes, then drain and return.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()> + Send) -> Result<(), RunError> {
    let nofile = crate::engine::raise_nofile();
    let cluster = common::config::load(&opts.config)?;
    let (node, source) = common::config::identify(&cluster, opts.node.as_deref())?;
    let node = node.name.clone();
    info!(node = %node, found_by = source.as_str(), config = %opts.config.display(), nofile, "lbd starting");

    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;
    // Signals HAProxy's and keepalived's users send out of habit end a process by default;
    // here they dump the status (and say what to send instead), and SIGTTOU / SIGTTIN
    // (HAProxy: pause / resume the listeners) do not stop the process.
    let mut dumps = common::dump::DumpSignals::new(&[
        nix::libc::SIGUSR1,
        nix::libc::SIGUSR2,
        nix::libc::SIGQUIT,
    ])
    .map_err(RunError::Signal)?;
    let mut ignored = common::dump::DumpSignals::new(&[nix::libc::SIGTTOU, nix::libc::SIGTTIN])
        .map_err(RunError::Signal)?;
    let book = crate::admin::Book::load(&node, &opts.state_dir);
    let peers = crate::peers::Peers::of(&cluster, &node);
    let engine = Engine::with_book(node.clone(), opts.config.clone(), &cluster, book);
    engine.apply(cluster.clone())?;
    if let Some(p) = &peers {
        p.start(engine.clone(), cluster.lbd.peer_port).await;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Stats page.
    let stats_cfg = cluster.stats.clone();
    let stats_listener = crate::engine::bind_listener(stats_cfg.listen, false)
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|source| RunError::StatsBind {
            addr: stats_cfg.listen,
            source,
        })?;
    let source: Arc<dyn crate::stats::SnapshotSource> = Arc::new(engine.clone());
    let stats_task = tokio::spawn(crate::stats::serve(
        stats_listener,
        stats_cfg,
        source,
        stopped(),
    ));

    // Control socket.
    std::fs::create_dir_all(&opts.run_dir).map_err(|source| RunError::RunDir {
        path: opts.run_dir.clone(),
        source,
    })?;
    let ctl_path = common::ctl::socket_path(&opts.run_dir, "lbd");
    // Bind now so that a bad run directory fails the start, not a background task.
    let ctl_listener = common::ctl::bind(&ctl_path).map_err(|source| RunError::Control {
        path: ctl_path.clone(),
        source,
    })?;
    let ctl_engine = engine.clone();
    let ctl_peers = peers.clone();
    let handler = move |req: common::proto::lbd::Request| {
        let engine = ctl_engine.clone();
        let peers = ctl_peers.clone();
        async move {
            common::ctl::Response::from_result(
                crate::control::handle(&engine, peers.as_ref(), req).await,
            )
        }
    };
    let ctl_task = {
        let path = ctl_path.clone();
        let stop = stopped();
        tokio::spawn(async move { common::ctl::serve_on(ctl_listener, &path, handler, stop).await })
    };

    // vrrpd's view.
    let vrrp_task = tokio::spawn(poll_vrrp(
        engine.clone(),
        common::ctl::socket_path(&opts.run_dir, "vrrpd"),
    ));

    // systemd: READY, then a STATUS= line that follows the servers' states.
    notify(&[NotifyState::Ready]);
    let status_task = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                let line = engine.status_text();
                if line != last {
                    notify(&[NotifyState::Status(&line)]);
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
    let mut wd_usec = 0u64;
    let watchdog_task = if sd_notify::watchdog_enabled(false, &mut wd_usec) && wd_usec > 0 {
        let every = Duration::from_micros(wd_usec / 2);
        Some(tokio::spawn(async move {
            loop {
                notify(&[NotifyState::Watchdog]);
                tokio::time::sleep(every).await;
            }
        }))
    } else {
        None
    };
    info!("lbd ready");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                match NotifyState::monotonic_usec_now() {
                    Ok(m) => notify(&[NotifyState::Reloading, m]),
                    Err(_) => notify(&[NotifyState::Reloading]),
                }
                // A refused reload is logged and recorded by `reload` itself.
                let _ = engine.reload().await;
                notify(&[NotifyState::Ready]);
            }
            signo = dumps.recv() => dump(&engine, &opts.run_dir, signo),
            signo = ignored.recv() => warn!(
                signal = %common::dump::signal_name(signo),
                "ignored: lbd does not pause its listeners (HAProxy does on SIGTTOU / SIGTTIN)"
            ),
        }
    }

    notify(&[NotifyState::Stopping]);
    engine.stop_accepting();
    let drain = engine.cluster().lbd.drain_timeout;
    let open = engine.current_connections();
    info!(open, timeout = ?drain, "stopped accepting; draining");
    let left = engine.drain(drain).await;
    if left > 0 {
        warn!(left, "drain timeout: closing the remaining connections");
    } else {
        info!("drained");
    }
    stop_tx.send_replace(true);
    vrrp_task.abort();
    status_task.abort();
    if let Some(w) = watchdog_task {
        w.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ctl_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), stats_task).await;
    Ok(())
}

/// SIGUSR1 / SIGUSR2 / SIGQUIT: one journal line per frontend and the whole snapshot in
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
            info!(signal = %sig, file = %p.display(), "status written (SIGTERM stops lbd gracefully, SIGHUP reloads)")
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
