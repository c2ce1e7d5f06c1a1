//! The proxy engine: frontends, servers, listeners, health checkers, reload, snapshot.
//!
//! ```text
//!                         apply(Cluster)  (start, SIGHUP, ctl `reload`)
//!                              |
//!        +---------------------+-----------------------+
//!        v                     v                       v
//!  listener task per     frontends: Vec<Arc<Frontend>>   checker task per server
//!  listen address  <---watch--- (cfg swapped in place)    (probe, rise/fall, kill)
//!        |  accept, caps                                  ^
//!        v                                                | Arc<Server>: atomics
//!  connection task: pick (balance) -> connect/retry -> copy::proxy (splice)
//! ```
//!
//! Identity across reloads: a frontend is its service name (its counters survive), a
//! server is (service name, address) (its health, admin state and counters survive), a
//! listener is its socket address (the socket itself survives, so there is no gap in
//! which connections are refused). Everything the hot path reads per connection is behind
//! one `RwLock<Arc<FrontendCfg>>` read; per chunk only relaxed atomics are touched.
//!
//! Here: the engine, frontends, `apply` (start and reload), admin changes, the snapshot.
//! - [`server`]: one backend server (admin state, health, counters, suspicion, connect RTT);
//! - [`listen`]: binding, the descriptor cap, the accept loop and admission;
//! - [`connect`]: one client connection (pick, connect and retry, copy);
//! - [`check`]: one server's health checker.
//!
//! An upgrade (`crate::upgrade`) hands the listening sockets and the servers' health to a
//! new process: [`Engine::listener_fds`] and [`Engine::health_views`] on the old side;
//! [`Engine::inherit`] before the first `apply`, and [`Engine::pause_accepting`] until the
//! old process lets go, on the new side.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::config::{Check, Cluster, ConnectTimeout, Service};
use common::proto::lbd::AdminState;

use crate::admin::Book;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::balance::{client_hash, server_key, Balancer, Candidate};
use crate::copy::{self, Meters, Mode};
use crate::counters::{Gauge, Rate};
use crate::health::{self, Change, CheckConfigError, Health, Probe};
use crate::snapshot::{FrontendStats, ServerStats, ServerStatus, Snapshot, VrrpView};

mod check;
mod connect;
mod listen;
mod server;

pub use check::*;
pub use connect::*;
pub use listen::*;
pub use server::*;

/// Why a configuration could not be applied (at start it is fatal; on reload it is refused
/// and the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("service {service}: cannot listen on {addr}: {source}")]
    Bind {
        service: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("service {service}: {source}")]
    Check {
        service: String,
        source: CheckConfigError,
    },
}

/// Errors of the control commands that change servers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("no service named {0:?}")]
    NoService(String),
    #[error("service {service:?} has no server named {server:?}")]
    NoServer { service: String, server: String },
}

/// What a frontend runs from; replaced as a whole on reload.
#[derive(Debug)]
pub struct FrontendCfg {
    pub service: Service,
    pub listen: SocketAddr,
    pub servers: Vec<Arc<Server>>,
    balancer: Mutex<Balancer>,
    probe: Probe,
    /// The cluster's VRRP advert interval, for `timeouts.connect = "auto"`.
    vrrp_interval: Duration,
}

/// A service: its counters live as long as the service name stays in the config.
#[derive(Debug)]
pub struct Frontend {
    pub name: String,
    cfg: RwLock<Arc<FrontendCfg>>,
    sessions: Gauge,
    total: AtomicU64,
    rate: Rate,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    denied: AtomicU64,
    no_server: AtomicU64,
    local_errors: AtomicU64,
    /// `accept_proxy` refusals by cause.
    proxy_refused: crate::proxy::Refusals,
    stopped: AtomicBool,
}

impl Frontend {
    /// A new service: nothing counted yet.
    fn new(name: String, cfg: Arc<FrontendCfg>) -> Frontend {
        Frontend {
            name,
            cfg: RwLock::new(cfg),
            sessions: Gauge::default(),
            total: AtomicU64::new(0),
            rate: Rate::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            no_server: AtomicU64::new(0),
            local_errors: AtomicU64::new(0),
            proxy_refused: crate::proxy::Refusals::default(),
            stopped: AtomicBool::new(false),
        }
    }

    pub fn cfg(&self) -> Arc<FrontendCfg> {
        read(&self.cfg).clone()
    }
}

struct Inner {
    node: String,
    config_path: PathBuf,
    started: Instant,
    mode: Mode,
    wildcard: IpAddr,
    cluster: RwLock<Arc<Cluster>>,
    frontends: RwLock<Vec<Arc<Frontend>>>,
    listeners: Mutex<HashMap<SocketAddr, Held>>,
    /// What a previous lbd process handed over (an upgrade), for the first `apply`.
    inherited: Mutex<Inherited>,
    /// Whether the listeners accept (false in a new process until the old one lets go).
    accepting: watch::Sender<bool>,
    checkers: Mutex<Vec<JoinHandle<()>>>,
    conns: Gauge,
    max_conns: AtomicU64,
    /// What the descriptor limit allows ([`fd_cap`]); at it, listeners stop accepting.
    fd_cap: AtomicU64,
    fd_cap_waits: AtomicU64,
    fd_cap_logged: AtomicBool,
    /// Descriptor-cap slots in use: the connections, and the accepts in progress that
    /// hold one ([`listen::FdSlot`]); never above `fd_cap`, whichever threads accept.
    fd_slots: AtomicU64,
    /// A connection ended (a listener waiting at the descriptor cap may go on).
    slot_freed: Notify,
    next_id: AtomicU64,
    reloads: AtomicU64,
    last_reload_error: Mutex<Option<String>>,
    vrrp: Mutex<Option<VrrpView>>,
    stopping: AtomicBool,
    /// Serialises reloads (SIGHUP and control socket).
    reload_lock: tokio::sync::Mutex<()>,
    /// Some server changed state (see [`Server::changed`]).
    changed: Arc<Notify>,
    /// The runtimes that accept and carry the connections ([`Engine::set_accept_workers`]);
    /// empty: the runtime `apply` runs on.
    workers: Mutex<Vec<tokio::runtime::Handle>>,
    /// The cluster's admin states (drain, maintenance, run-time weights).
    book: Book,
}

/// A listening socket: its accept loops (one per accept worker) follow `tx`, each on its
/// own copy of the descriptor registered with its worker's reactor. The socket is kept here
/// too, unregistered, so that an upgrade can hand it to the new process.
struct Held {
    tx: watch::Sender<Option<Arc<Frontend>>>,
    sock: std::net::TcpListener,
}

/// What an upgrade brought from the previous lbd process.
#[derive(Default)]
struct Inherited {
    listeners: HashMap<SocketAddr, std::net::TcpListener>,
    health: HashMap<(String, SocketAddr), HealthView>,
}

/// A cheap handle to the engine.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node", &self.0.node)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `[::]` when the host has IPv6 (one dual-stack socket takes both families), else
/// `0.0.0.0`.
fn wildcard() -> IpAddr {
    let v6 = Socket::new(Domain::IPV6, Type::STREAM, None).and_then(|s| {
        s.set_only_v6(false)?;
        s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).into())
    });
    match v6 {
        Ok(()) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

impl Engine {
    /// An engine whose admin states live in memory only.
    pub fn new(node: String, config_path: PathBuf, cluster: &Cluster) -> Engine {
        let book = Book::in_memory(&node);
        Engine::with_book(node, config_path, cluster, book)
    }

    /// An engine with the cluster's admin states from `book` (lbd's state directory).
    pub fn with_book(node: String, config_path: PathBuf, cluster: &Cluster, book: Book) -> Engine {
        Engine(Arc::new(Inner {
            node,
            config_path,
            started: Instant::now(),
            mode: Mode::from_env(),
            wildcard: wildcard(),
            cluster: RwLock::new(Arc::new(cluster.clone())),
            frontends: RwLock::new(Vec::new()),
            listeners: Mutex::new(HashMap::new()),
            inherited: Mutex::new(Inherited::default()),
            accepting: watch::Sender::new(true),
            checkers: Mutex::new(Vec::new()),
            conns: Gauge::default(),
            max_conns: AtomicU64::new(u64::from(cluster.lbd.max_connections)),
            fd_cap: AtomicU64::new(fd_cap(cluster, 0)),
            fd_cap_waits: AtomicU64::new(0),
            fd_cap_logged: AtomicBool::new(false),
            fd_slots: AtomicU64::new(0),
            slot_freed: Notify::new(),
            next_id: AtomicU64::new(1),
            reloads: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
            vrrp: Mutex::new(None),
            stopping: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            changed: Arc::new(Notify::new()),
            workers: Mutex::new(Vec::new()),
            book,
        }))
    }

    /// Accept and carry the connections on these runtimes, one accept loop per listener on
    /// each (nginx's workers, HAProxy's threads): a connection's task, its wake-ups and
    /// timers then stay on the thread that accepted it, where a multi-threaded scheduler
    /// would move them between threads. The runtimes share each listening socket (one open
    /// file, a copy of the descriptor registered with each), so an upgrade still hands over
    /// one socket per address and nothing queued in it is lost. Set before the first
    /// `apply`; health checks, the stats page and the control socket stay on the caller's
    /// runtime.
    pub fn set_accept_workers(&self, workers: Vec<tokio::runtime::Handle>) {
        let cap = fd_cap(&read(&self.0.cluster), workers.len());
        self.0.fd_cap.store(cap, Relaxed);
        *lock(&self.0.workers) = workers;
    }

    pub fn book(&self) -> &Book {
        &self.0.book
    }

    pub fn cluster(&self) -> Arc<Cluster> {
        read(&self.0.cluster).clone()
    }

    pub fn frontends(&self) -> Vec<Arc<Frontend>> {
        read(&self.0.frontends).clone()
    }

    /// Connections open over all frontends.
    pub fn current_connections(&self) -> u64 {
        self.0.conns.get()
    }

    fn listen_addr(&self, s: &Service) -> SocketAddr {
        SocketAddr::new(s.bind.unwrap_or(self.0.wildcard), s.listen)
    }

    /// Make `cluster` the running configuration. Must run inside the tokio runtime.
    ///
    /// Everything that can fail (check TLS files, binding new ports) happens before
    /// anything changes, so an error leaves the running configuration untouched.
    pub fn apply(&self, cluster: Cluster) -> Result<(), ApplyError> {
        // 1. Probes.
        let mut probes = Vec::with_capacity(cluster.services.len());
        for s in &cluster.services {
            probes.push(
                Probe::new(&s.check)
                    .map(|p| p.with_proxy(s.proxy_protocol))
                    .map_err(|source| ApplyError::Check {
                        service: s.name.clone(),
                        source,
                    })?,
            );
        }
        // 2. New listening sockets (existing ones are kept as they are; after an upgrade,
        // the ones the previous process handed over are taken, not bound again).
        let mut new_listeners = HashMap::new();
        {
            let held = lock(&self.0.listeners);
            let mut inherited = lock(&self.0.inherited);
            for s in &cluster.services {
                let addr = self.listen_addr(s);
                if held.contains_key(&addr) || new_listeners.contains_key(&addr) {
                    continue;
                }
                if let Some(l) = inherited.listeners.remove(&addr) {
                    new_listeners.insert(addr, l);
                    continue;
                }
                let l =
                    bind_listener(addr, s.bind.is_some()).map_err(|source| ApplyError::Bind {
                        service: s.name.clone(),
                        addr,
                        source,
                    })?;
                new_listeners.insert(addr, l);
            }
        }
        // Each registered with every accept worker's reactor now, so that an error still
        // leaves everything as it was.
        let workers = lock(&self.0.workers).clone();
        let mut registered = Vec::with_capacity(new_listeners.len());
        for (addr, l) in new_listeners {
            let loops = register(&l, &workers).map_err(|source| ApplyError::Bind {
                service: String::new(),
                addr,
                source,
            })?;
            registered.push((addr, l, loops));
        }
        let mut inherited_health = std::mem::take(&mut lock(&self.0.inherited).health);
        let now = Instant::now();
        // 3. Frontends and servers, keeping what survives.
        let old_frontends = self.frontends();
        let old_servers: HashMap<(String, SocketAddr), Arc<Server>> = old_frontends
            .iter()
            .flat_map(|f| {
                let cfg = f.cfg();
                cfg.servers
                    .iter()
                    .map(|s| ((f.name.clone(), s.addr), s.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut frontends = Vec::with_capacity(cluster.services.len());
        for (s, probe) in cluster.services.iter().zip(probes) {
            let servers: Vec<Arc<Server>> = s
                .backends
                .iter()
                .map(|b| match old_servers.get(&(s.name.clone(), b.addr)) {
                    Some(old) => {
                        if old.cfg_weight.swap(b.weight, Relaxed) != b.weight {
                            old.weight.store(b.weight, Relaxed);
                        }
                        old.backup.store(b.backup, Relaxed);
                        old.clone()
                    }
                    None => {
                        let srv = Arc::new(Server::new(b, self.0.changed.clone()));
                        if let Some(h) = inherited_health.remove(&(s.name.clone(), b.addr)) {
                            if srv.resume(&h, now) {
                                debug!(service = %s.name, server = %srv.name, up = h.up, status = %h.status, "health taken over from the previous lbd process");
                            }
                        }
                        srv
                    }
                })
                .collect();
            for srv in &servers {
                let mut c = lock(&srv.check);
                c.rise = s.check.rise;
                c.fall = s.check.fall;
            }
            let cfg = Arc::new(FrontendCfg {
                service: s.clone(),
                listen: self.listen_addr(s),
                servers,
                balancer: Mutex::new(Balancer::new(s.balance)),
                probe,
                vrrp_interval: cluster.vrrp.interval,
            });
            let fe = match old_frontends.iter().find(|f| f.name == s.name) {
                Some(f) => {
                    // Keep the balancer's state when the algorithm and servers are unchanged.
                    let old = f.cfg();
                    if old.service.balance == s.balance && same_servers(&old, &cfg) {
                        let b = lock(&old.balancer).clone();
                        *lock(&cfg.balancer) = b;
                    }
                    *write(&f.cfg) = cfg;
                    f.clone()
                }
                None => Arc::new(Frontend::new(s.name.clone(), cfg)),
            };
            frontends.push(fe);
        }
        for f in &old_frontends {
            if !frontends.iter().any(|n| Arc::ptr_eq(n, f)) {
                f.stopped.store(true, Relaxed);
            }
        }
        // The cluster's admin states, before any listener sees the new servers.
        self.apply_admin_in(&frontends, &self.0.book.all());
        // 4. Point every listener at its frontend; stop the ones no service uses.
        {
            let mut held = lock(&self.0.listeners);
            let wanted: HashMap<SocketAddr, Arc<Frontend>> = frontends
                .iter()
                .map(|f| (f.cfg().listen, f.clone()))
                .collect();
            held.retain(|addr, h| match wanted.get(addr) {
                Some(f) => {
                    h.tx.send_replace(Some(f.clone()));
                    true
                }
                None => {
                    info!(%addr, "listener closed: no service uses it any more");
                    h.tx.send_replace(None);
                    false
                }
            });
            for (addr, sock, loops) in registered {
                let Some(fe) = wanted.get(&addr) else {
                    continue;
                };
                let (tx, rx) = watch::channel(Some(fe.clone()));
                info!(%addr, service = %fe.name, accept_loops = loops.len(), "listening");
                for (rt, listener) in loops {
                    let task = listen_loop(self.clone(), listener, rx.clone());
                    match rt {
                        Some(rt) => drop(rt.spawn(task)),
                        None => drop(tokio::spawn(task)),
                    }
                }
                held.insert(addr, Held { tx, sock });
            }
            // Handed over by the previous process for a service this configuration no
            // longer has: closed here (the old process closes its copy when it exits).
            for (addr, _) in lock(&self.0.inherited).listeners.drain() {
                info!(%addr, "listener closed: handed over, but no service uses it any more");
            }
        }
        // 5. Health checkers, restarted with the new check settings (state is kept).
        {
            let mut checkers = lock(&self.0.checkers);
            for h in checkers.drain(..) {
                h.abort();
            }
            for f in &frontends {
                let cfg = f.cfg();
                for srv in &cfg.servers {
                    let span = tracing::info_span!("check", service = %f.name, server = %srv.name, addr = %srv.addr);
                    checkers.push(tokio::spawn(
                        run_checker(
                            srv.clone(),
                            cfg.probe.clone(),
                            cfg.service.check.clone(),
                            cfg.service.close_on_down,
                            suspect_timeout(cluster.vrrp.interval, &cfg.service.check),
                        )
                        .instrument(span),
                    ));
                }
            }
        }
        self.0
            .max_conns
            .store(u64::from(cluster.lbd.max_connections), Relaxed);
        let cap = fd_cap(&cluster, lock(&self.0.workers).len());
        if self.0.fd_cap.swap(cap, Relaxed) != cap || !self.0.fd_cap_logged.swap(true, Relaxed) {
            let configured = cluster.lbd.max_connections;
            info!(cap, "connection cap from RLIMIT_NOFILE (two descriptors per connection, {FD_RESERVE} reserved)");
            if configured == 0 || u64::from(configured) > cap {
                info!(
                    configured,
                    cap, "beyond the descriptor cap, new connections wait in the listen queue"
                );
            }
        }
        self.0.slot_freed.notify_waiters();
        *write(&self.0.frontends) = frontends;
        *write(&self.0.cluster) = Arc::new(cluster);
        self.0.changed.notify_one();
        Ok(())
    }

    /// Re-read the config file and apply it; a bad file is refused and recorded.
    pub async fn reload(&self) -> Result<(), String> {
        let _g = self.0.reload_lock.lock().await;
        let path = self.0.config_path.clone();
        let load = move || common::config::load(&path).map_err(|e| e.to_string());
        let result = match tokio::task::spawn_blocking(load).await {
            Err(e) => Err(format!("reload task failed: {e}")),
            Ok(Err(e)) => Err(e),
            Ok(Ok(cluster)) => {
                self.warn_start_only(&cluster);
                self.apply(cluster).map_err(|e| e.to_string())
            }
        };
        match &result {
            Ok(()) => {
                self.0.reloads.fetch_add(1, Relaxed);
                *lock(&self.0.last_reload_error) = None;
                info!(path = %self.0.config_path.display(), "configuration reloaded");
            }
            Err(e) => {
                *lock(&self.0.last_reload_error) = Some(e.clone());
                warn!(error = %e, "reload refused, the running configuration stays");
            }
        }
        result
    }

    /// Settings read once at start: a reload that changes them says so, and that they take
    /// effect at the next upgrade (`lbctl upgrade lbd`, nothing dropped) or restart.
    fn warn_start_only(&self, new: &Cluster) {
        let old = self.cluster();
        let mut keys = Vec::new();
        if old.stats != new.stats {
            keys.push("stats");
        }
        if old.lbd.threads != new.lbd.threads {
            keys.push("lbd.threads");
        }
        if old.lbd.peer_port != new.lbd.peer_port {
            keys.push("lbd.peer_port");
        }
        if !keys.is_empty() {
            warn!(keys = ?keys, "reload: these settings are read at start; they apply at the next `lbctl upgrade lbd` (nothing dropped) or restart");
        }
    }

    /// Stop accepting on every listener (SIGTERM); open connections go on.
    pub fn stop_accepting(&self) {
        self.stop_listeners();
        for h in lock(&self.0.checkers).drain(..) {
            h.abort();
        }
    }

    /// Stop accepting on every listener and close this process's copy of each (after an
    /// upgrade the new process holds them: they stay open); open connections go on, and so
    /// do the health checks (`close_on_down` still closes the connections of a server
    /// that fails while they drain).
    pub fn stop_listeners(&self) {
        self.0.stopping.store(true, Relaxed);
        for (_, h) in lock(&self.0.listeners).drain() {
            h.tx.send_replace(None);
        }
        for f in self.frontends() {
            f.stopped.store(true, Relaxed);
        }
    }

    /// A copy of every service listener's descriptor, for the new process of an upgrade.
    pub fn listener_fds(&self) -> io::Result<Vec<OwnedFd>> {
        lock(&self.0.listeners)
            .values()
            .map(|h| h.sock.as_fd().try_clone_to_owned())
            .collect()
    }

    /// Every checked server's health, for the new process of an upgrade.
    pub fn health_views(&self) -> Vec<HealthView> {
        let now = Instant::now();
        self.frontends()
            .iter()
            .flat_map(|f| {
                let cfg = f.cfg();
                cfg.servers
                    .iter()
                    .filter_map(|s| s.health_view(&f.name, now))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Before the first `apply` of a new process: the listening sockets and the servers'
    /// health the previous process handed over. `apply` takes a socket instead of binding
    /// its address, and starts a server with its health instead of as unchecked.
    pub fn inherit(&self, listeners: Vec<std::net::TcpListener>, health: Vec<HealthView>) {
        let mut i = lock(&self.0.inherited);
        for l in listeners {
            // The accepted sockets inherit it (an older lbd may not have set it).
            let _ = socket2::SockRef::from(&l).set_tcp_nodelay(true);
            match l.local_addr() {
                Ok(addr) => {
                    i.listeners.insert(addr, l);
                }
                Err(e) => warn!(error = %e, "a handed-over listener has no address: closed"),
            }
        }
        for h in health {
            i.health.insert((h.service.clone(), h.addr), h);
        }
    }

    /// Listeners bound or taken from now on accept nothing until [`Engine::resume_accepting`]
    /// (a new process while the old one still accepts: connections wait in the kernel's
    /// queue, which both processes share).
    pub fn pause_accepting(&self) {
        self.0.accepting.send_replace(false);
    }

    pub fn resume_accepting(&self) {
        self.0.accepting.send_replace(true);
    }

    /// Wait until no connection is open, or `deadline` passes. Returns what is left open.
    pub async fn drain(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.0.conns.get();
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Completes when some server changed state (UP, DOWN, admin) or the configuration
    /// was applied.
    pub async fn changed(&self) {
        self.0.changed.notified().await;
    }

    /// `systemctl status lbd`: servers UP per service, and the connections open.
    pub fn status_text(&self) -> String {
        let snap = self.snapshot();
        let services: Vec<String> = snap
            .frontends
            .iter()
            .map(|f| {
                let up = f
                    .servers
                    .iter()
                    .filter(|s| s.status == ServerStatus::Up)
                    .count();
                format!("{} {up}/{} up", f.name, f.servers.len())
            })
            .collect();
        format!(
            "{}; {} connections",
            services.join(", "),
            snap.current_connections
        )
    }

    pub fn set_vrrp(&self, v: Option<VrrpView>) {
        *lock(&self.0.vrrp) = v;
    }

    fn find_server(&self, service: &str, server: &str) -> Result<Arc<Server>, AdminError> {
        find_server_in(&self.frontends(), service, server)
    }

    /// An operator's change (`lbctl drain/disable/enable`): applied here and written into
    /// the cluster's book (which the peers then get).
    pub fn set_admin(&self, service: &str, server: &str, admin: Admin) -> Result<(), AdminError> {
        let srv = self.find_server(service, server)?;
        self.apply_admin_to(service, &srv, admin);
        self.0
            .book
            .set(service, &srv.name, admin.into(), srv.weight_override());
        Ok(())
    }

    /// Entries the book took from a peer (or loaded at start): applied to the servers
    /// they name, if this configuration has them.
    pub fn apply_admin(&self, entries: &[common::proto::lbd::AdminEntry]) {
        self.apply_admin_in(&self.frontends(), entries);
    }

    fn apply_admin_in(
        &self,
        frontends: &[Arc<Frontend>],
        entries: &[common::proto::lbd::AdminEntry],
    ) {
        for e in entries {
            let Ok(srv) = find_server_in(frontends, &e.service, &e.server) else {
                continue;
            };
            self.apply_admin_to(&e.service, &srv, e.state.into());
            let w = e.weight.unwrap_or_else(|| srv.cfg_weight.load(Relaxed));
            if srv.weight.swap(w, Relaxed) != w {
                info!(service = %e.service, server = %srv.name, weight = w, by = %e.by, "weight changed");
            }
        }
    }

    fn apply_admin_to(&self, service: &str, srv: &Server, admin: Admin) {
        let old = Admin::from_u8(srv.admin.swap(admin as u8, Relaxed));
        if old != admin {
            // DRAIN / MAINT / back: a change of the server's state like UP and DOWN.
            lock(&srv.check).last_change = Instant::now();
            info!(service, server = %srv.name, from = ?old, to = ?admin, "admin state changed");
            srv.wake.notify_one();
            self.0.changed.notify_one();
        }
    }

    /// vrrpd lost a node: check every server on it now (see [`Server::suspect`]). The
    /// servers are matched by address, or by name for role backends named after the node.
    /// Returns how many checks were started.
    pub fn suspect(&self, node: Option<&str>, addrs: &[std::net::IpAddr], why: &str) -> usize {
        let mut n = 0;
        for f in self.frontends() {
            for srv in &f.cfg().servers {
                let on_node =
                    addrs.contains(&srv.addr.ip()) || node.is_some_and(|name| name == srv.name);
                if on_node && srv.admin() != Admin::Maint {
                    srv.make_suspect();
                    n += 1;
                }
            }
        }
        info!(
            node = node.unwrap_or("?"),
            addresses = ?addrs,
            why,
            servers = n,
            "vrrpd lost a node: checking its servers now"
        );
        n
    }

    pub fn set_weight(&self, service: &str, server: &str, weight: u32) -> Result<(), AdminError> {
        let srv = self.find_server(service, server)?;
        srv.weight.store(weight, Relaxed);
        info!(service, server = %srv.name, weight, "weight changed");
        self.0.book.set(
            service,
            &srv.name,
            srv.admin().into(),
            srv.weight_override(),
        );
        Ok(())
    }

    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let cluster = self.cluster();
        let global_max = self.0.max_conns.load(Relaxed);
        let global_full = global_max > 0 && self.0.conns.get() >= global_max;
        let frontends = self
            .frontends()
            .iter()
            .map(|f| {
                let cfg = f.cfg();
                let cap = u64::from(cfg.service.max_connections);
                let cur = f.sessions.get();
                let status = if f.stopped.load(Relaxed) {
                    "STOP"
                } else if (cap > 0 && cur >= cap) || global_full {
                    "FULL"
                } else {
                    "OPEN"
                };
                FrontendStats {
                    name: f.name.clone(),
                    listen: cfg.listen,
                    backend_port: cfg.service.backend_port,
                    balance: cfg.service.balance.as_str().to_owned(),
                    status: status.to_owned(),
                    current_sessions: cur,
                    max_sessions: f.sessions.max(),
                    session_limit: cap,
                    total_sessions: f.total.load(Relaxed),
                    session_rate: f.rate.read(),
                    session_rate_max: f.rate.max(),
                    bytes_in: f.bytes_in.load(Relaxed),
                    bytes_out: f.bytes_out.load(Relaxed),
                    denied: f.denied.load(Relaxed),
                    no_server: f.no_server.load(Relaxed),
                    local_errors: f.local_errors.load(Relaxed),
                    proxy_refused: f.proxy_refused.snapshot(),
                    servers: cfg.servers.iter().map(|s| s.stats(now)).collect(),
                }
            })
            .collect();
        Snapshot {
            node: self.0.node.clone(),
            cluster: cluster.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_secs: self.0.started.elapsed().as_secs(),
            now_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            current_connections: self.0.conns.get(),
            max_connections: global_max,
            fd_cap: self.0.fd_cap.load(Relaxed),
            fd_cap_waits: self.0.fd_cap_waits.load(Relaxed),
            reloads: self.0.reloads.load(Relaxed),
            last_reload_error: lock(&self.0.last_reload_error).clone(),
            vrrp: lock(&self.0.vrrp).clone(),
            frontends,
        }
    }
}

impl crate::stats::SnapshotSource for Engine {
    fn snapshot(&self) -> Snapshot {
        Engine::snapshot(self)
    }
}

fn same_servers(a: &FrontendCfg, b: &FrontendCfg) -> bool {
    a.servers.len() == b.servers.len()
        && a.servers
            .iter()
            .zip(&b.servers)
            .all(|(x, y)| Arc::ptr_eq(x, y))
}

fn find_server_in(
    frontends: &[Arc<Frontend>],
    service: &str,
    server: &str,
) -> Result<Arc<Server>, AdminError> {
    let fe = frontends
        .iter()
        .find(|f| f.name == service)
        .ok_or_else(|| AdminError::NoService(service.to_owned()))?;
    let cfg = fe.cfg();
    cfg.servers
        .iter()
        .find(|s| s.name == server || s.addr.to_string() == server)
        .cloned()
        .ok_or_else(|| AdminError::NoServer {
            service: service.to_owned(),
            server: server.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"
[cluster]
name = "t"
domain = "t.test.local"
[vip]
address = "127.0.0.100/8"
[[nodes]]
name = "n1"
address = "127.0.0.1"
role = "server"
[stats]
listen = "127.0.0.1:29404"
[[services]]
name = "m"
listen = 29443
backends = ["127.0.0.1:29500"]
"#;

    /// Memory per idle connection is mostly the connection task: keep its future small.
    #[tokio::test]
    async fn connection_task_stays_small() {
        let cluster = common::config::parse(CLUSTER, None).unwrap();
        let engine = Engine::new("n1".into(), PathBuf::from("/nonexistent"), &cluster);
        let s = &cluster.services[0];
        let cfg = Arc::new(FrontendCfg {
            service: s.clone(),
            listen: s.backends[0].addr,
            servers: s
                .backends
                .iter()
                .map(|b| Arc::new(Server::new(b, Arc::new(Notify::new()))))
                .collect(),
            balancer: Mutex::new(Balancer::new(s.balance)),
            probe: Probe::new(&s.check).unwrap(),
            vrrp_interval: cluster.vrrp.interval,
        });
        let fe = Arc::new(Frontend::new(s.name.clone(), cfg.clone()));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let peer = sock.local_addr().unwrap();
        let guard = ConnGuard::for_test(engine, fe);
        let f = connection(guard, cfg.clone(), sock, client_hash(peer.ip()));
        let size = std::mem::size_of_val(&f);
        drop(f);
        eprintln!("connection future: {size} bytes");
        assert!(size <= 1024, "{size}");
        // A service with the PROXY protocol has a task of its own type.
        let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = TcpStream::connect(l2.local_addr().unwrap()).await.unwrap();
        let engine = Engine::new("n1".into(), PathBuf::from("/nonexistent"), &cluster);
        let fe = Arc::new(Frontend::new(s.name.clone(), cfg.clone()));
        let guard = ConnGuard::for_test(engine, fe);
        let f = proxied_connection(guard, cfg, sock, peer, 1);
        let size = std::mem::size_of_val(&f);
        eprintln!("proxied connection future: {size} bytes");
        assert!(size <= 1024, "{size}");
    }

    /// With accept workers, the workers alone carry the connections (the runtime `apply`
    /// ran on is not driven at all while they are proxied), and a
    /// listener no service uses any more is closed on all of them.
    #[test]
    fn accept_workers_carry_the_connections_and_close_with_the_service() {
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let backend_addr = backend.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in backend.incoming().take(64) {
                let Ok(mut c) = c else { return };
                std::thread::spawn(move || {
                    let mut r = c.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut c);
                });
            }
        });
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stop_rx = Arc::new(Mutex::new(stop_rx));
        let workers: Vec<tokio::runtime::Handle> = (0..2)
            .map(|_| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let h = rt.handle().clone();
                let stop = stop_rx.clone();
                std::thread::spawn(move || {
                    rt.block_on(async {
                        while lock(&stop).try_recv().is_err() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    });
                });
                h
            })
            .collect();
        let port = k3sha_support::ports::free_port();
        let text = format!(
            "[cluster]\nname = \"t\"\ndomain = \"t.test.local\"\n\
             [vip]\naddress = \"127.0.0.100/8\"\n\
             [[nodes]]\nname = \"n1\"\naddress = \"127.0.0.1\"\nrole = \"server\"\n\
             [stats]\nlisten = \"off\"\n\
             [[services]]\nname = \"w\"\nbind = \"127.0.0.1\"\nlisten = {port}\n\
             backends = [\"{backend_addr}\"]\n"
        );
        let cluster = common::config::parse(&text, None).unwrap();
        let main = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let engine = Engine::new("n1".into(), PathBuf::from("/nonexistent"), &cluster);
        engine.set_accept_workers(workers);
        main.block_on(async { engine.apply(cluster.clone()) })
            .unwrap();
        // Plain threads as clients; `main` is not driven meanwhile.
        let clients: Vec<_> = (0..16)
            .map(|i| {
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let msg = format!("hello {i}");
                    c.write_all(msg.as_bytes()).unwrap();
                    let mut buf = vec![0u8; msg.len()];
                    c.read_exact(&mut buf).unwrap();
                    assert_eq!(buf, msg.as_bytes());
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(engine.frontends()[0].total.load(Relaxed), 16);
        // The service goes: no worker's copy of the socket keeps the port open.
        let mut without = cluster.clone();
        without.services.clear();
        main.block_on(async { engine.apply(without) }).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "port {port} still accepts");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = stop_tx.send(());
        let _ = stop_tx.send(());
    }
}
