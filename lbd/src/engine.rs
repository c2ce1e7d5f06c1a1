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

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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

/// Administrative state of a server (`lbctl server set`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Admin {
    Ready = 0,
    Drain = 1,
    Maint = 2,
}

impl From<AdminState> for Admin {
    fn from(s: AdminState) -> Admin {
        match s {
            AdminState::Ready => Admin::Ready,
            AdminState::Drain => Admin::Drain,
            AdminState::Maint => Admin::Maint,
        }
    }
}

impl From<Admin> for AdminState {
    fn from(a: Admin) -> AdminState {
        match a {
            Admin::Ready => AdminState::Ready,
            Admin::Drain => AdminState::Drain,
            Admin::Maint => AdminState::Maint,
        }
    }
}

impl Admin {
    fn from_u8(v: u8) -> Admin {
        match v {
            1 => Admin::Drain,
            2 => Admin::Maint,
            _ => Admin::Ready,
        }
    }
}

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

/// Health-check view of a server, written by its checker.
#[derive(Debug)]
struct CheckState {
    health: Health,
    rise: u32,
    fall: u32,
    status: &'static str,
    desc: String,
    latency: Option<Duration>,
    last_change: Instant,
    down_since: Option<Instant>,
    downtime: Duration,
}

/// One backend server of one frontend.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    key: u64,
    cfg_weight: AtomicU32,
    weight: AtomicU32,
    backup: AtomicBool,
    admin: AtomicU8,
    /// Health verdict (the hot path reads only this).
    up: AtomicBool,
    check: Mutex<CheckState>,
    sessions: Gauge,
    total: AtomicU64,
    rate: Rate,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connect_errors: AtomicU64,
    retries: AtomicU64,
    checks_failed: AtomicU64,
    down_transitions: AtomicU64,
    /// Woken when the server goes DOWN (close_on_down connections wait on it).
    kill: Notify,
    /// vrrpd lost this server's node: the next check runs now, with the suspect timeout,
    /// and one failure is enough to take it DOWN.
    suspect: AtomicBool,
    /// Cuts short a normal check in flight when the server becomes suspect (that check may
    /// be waiting out the full timeout on the dead node).
    suspect_now: Notify,
    /// Smoothed time a client connect to it took, in microseconds (0: none yet), for
    /// `timeouts.connect = "auto"`.
    srtt_us: AtomicU64,
    /// Wakes the checker early (admin state changed).
    wake: Notify,
    /// Shared by every server of the engine: some server went UP or DOWN or changed its
    /// admin state (the `STATUS=` line follows it).
    changed: Arc<Notify>,
}

impl Server {
    fn new(b: &common::config::Backend, changed: Arc<Notify>) -> Server {
        Server {
            name: b.name.clone(),
            addr: b.addr,
            key: server_key(b.addr),
            cfg_weight: AtomicU32::new(b.weight),
            weight: AtomicU32::new(b.weight),
            backup: AtomicBool::new(b.backup),
            admin: AtomicU8::new(Admin::Ready as u8),
            up: AtomicBool::new(true),
            check: Mutex::new(CheckState {
                health: Health::default(),
                rise: 1,
                fall: 1,
                status: "INI",
                desc: String::new(),
                latency: None,
                last_change: Instant::now(),
                down_since: None,
                downtime: Duration::ZERO,
            }),
            sessions: Gauge::default(),
            total: AtomicU64::new(0),
            rate: Rate::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            down_transitions: AtomicU64::new(0),
            kill: Notify::new(),
            wake: Notify::new(),
            suspect: AtomicBool::new(false),
            suspect_now: Notify::new(),
            srtt_us: AtomicU64::new(0),
            changed,
        }
    }

    /// Feed one health observation (a check, or a client connection's failed connect)
    /// into the rise/fall state; log and act on a change. Returns whether the server is
    /// between states (so the checker should use the fast interval).
    /// The weight set at run time, when it differs from the configured one.
    fn weight_override(&self) -> Option<u32> {
        let w = self.weight.load(Relaxed);
        (w != self.cfg_weight.load(Relaxed)).then_some(w)
    }

    /// The smoothed connect time, once there is one.
    fn srtt(&self) -> Option<Duration> {
        match self.srtt_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// One more connect time into the average (TCP's 7/8 + 1/8; racing updates may lose a
    /// sample, which an average shrugs off).
    fn sample_connect(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.srtt_us.load(Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.srtt_us.store(new.max(1), Relaxed);
    }

    /// vrrpd lost this server's node, or a client's connect to it timed out: check it now,
    /// with the short timeout and fall 1, and keep it as a last resort meanwhile.
    fn make_suspect(&self) {
        self.suspect.store(true, Relaxed);
        self.wake.notify_one();
        self.suspect_now.notify_one();
    }

    fn record(&self, o: &health::Outcome, rise: u32, fall: u32, close_on_down: bool) -> bool {
        let (change, fast, first) = {
            let mut c = lock(&self.check);
            // The first result takes the server out of CHECKING (HAProxy's INI): a server
            // whose first check fails was never up, so that is not a DOWN transition (a
            // peer whose apiserver is still booting is not a failure of it).
            let first = c.status == "INI";
            let change = c.health.record(o.ok, rise, fall);
            c.status = o.status;
            c.desc.clone_from(&o.desc);
            c.latency = Some(o.latency);
            let now = Instant::now();
            if first {
                c.last_change = now;
            }
            match change {
                Change::WentDown => {
                    c.last_change = now;
                    c.down_since = Some(now);
                    if !first {
                        self.down_transitions.fetch_add(1, Relaxed);
                    }
                    self.up.store(false, Relaxed);
                }
                Change::WentUp => {
                    c.last_change = now;
                    if let Some(d) = c.down_since.take() {
                        c.downtime += now - d;
                    }
                    self.up.store(true, Relaxed);
                }
                Change::None => {}
            }
            (change, c.health.in_transition(), first)
        };
        if change != Change::None || first {
            self.changed.notify_one();
        }
        match change {
            Change::WentDown if first => {
                info!(status = o.status, desc = %o.desc, "server not up yet (first check)");
            }
            Change::None if first && o.ok => info!(status = o.status, "server UP (first check)"),
            Change::WentDown => {
                warn!(status = o.status, desc = %o.desc, "server DOWN");
                if close_on_down {
                    self.kill.notify_waiters();
                }
            }
            Change::WentUp => info!(status = o.status, "server UP"),
            Change::None => {}
        }
        fast
    }

    fn admin(&self) -> Admin {
        Admin::from_u8(self.admin.load(Relaxed))
    }

    fn candidate(&self) -> Candidate {
        Candidate {
            weight: self.weight.load(Relaxed),
            backup: self.backup.load(Relaxed),
            usable: self.up.load(Relaxed) && self.admin() == Admin::Ready,
            active: self.sessions.get(),
            key: self.key,
            suspect: self.suspect.load(Relaxed),
        }
    }

    fn stats(&self, now: Instant) -> ServerStats {
        let (status_str, desc, latency, transition, last_change, downtime) = {
            let c = lock(&self.check);
            let downtime = c.downtime + c.down_since.map_or(Duration::ZERO, |d| now - d);
            (
                c.status,
                c.desc.clone(),
                c.latency,
                c.health.transition(c.rise, c.fall),
                now.saturating_duration_since(c.last_change),
                downtime,
            )
        };
        let checked = status_str != "INI";
        let status = match (self.admin(), self.up.load(Relaxed)) {
            (Admin::Maint, _) => ServerStatus::Maint,
            (_, false) => ServerStatus::Down,
            (Admin::Ready, true) if !checked => ServerStatus::Checking,
            (Admin::Drain, true) => ServerStatus::Drain,
            (Admin::Ready, true) => ServerStatus::Up,
        };
        ServerStats {
            name: self.name.clone(),
            addr: self.addr,
            status,
            transition,
            weight: self.weight.load(Relaxed),
            backup: self.backup.load(Relaxed),
            check_status: status_str.to_owned(),
            check_desc: desc,
            check_latency_ms: latency.map(|l| l.as_secs_f64() * 1000.0),
            checks_failed: self.checks_failed.load(Relaxed),
            current_sessions: self.sessions.get(),
            max_sessions: self.sessions.max(),
            total_sessions: self.total.load(Relaxed),
            session_rate: self.rate.read(),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            connect_errors: self.connect_errors.load(Relaxed),
            retries: self.retries.load(Relaxed),
            last_change_secs: last_change.as_secs(),
            downtime_secs: downtime.as_secs(),
            down_transitions: self.down_transitions.load(Relaxed),
        }
    }
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
    stopped: AtomicBool,
}

impl Frontend {
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
    listeners: Mutex<HashMap<SocketAddr, watch::Sender<Option<Arc<Frontend>>>>>,
    checkers: Mutex<Vec<JoinHandle<()>>>,
    conns: Gauge,
    max_conns: AtomicU64,
    /// What the descriptor limit allows ([`fd_cap`]); at it, listeners stop accepting.
    fd_cap: AtomicU64,
    fd_cap_waits: AtomicU64,
    fd_cap_logged: AtomicBool,
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
    /// The cluster's admin states (drain, maintenance, run-time weights).
    book: Book,
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

/// A listening socket with SO_REUSEADDR (and IP_FREEBIND for a specific address that may
/// not be on this host yet, such as the VIP).
pub fn bind_listener(addr: SocketAddr, freebind: bool) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        sock.set_only_v6(false)?;
    }
    if freebind {
        if addr.is_ipv4() {
            sock.set_freebind_v4(true)?;
        } else {
            sock.set_freebind_v6(true)?;
        }
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
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
            checkers: Mutex::new(Vec::new()),
            conns: Gauge::default(),
            max_conns: AtomicU64::new(u64::from(cluster.lbd.max_connections)),
            fd_cap: AtomicU64::new(fd_cap(cluster)),
            fd_cap_waits: AtomicU64::new(0),
            fd_cap_logged: AtomicBool::new(false),
            slot_freed: Notify::new(),
            next_id: AtomicU64::new(1),
            reloads: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
            vrrp: Mutex::new(None),
            stopping: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            changed: Arc::new(Notify::new()),
            book,
        }))
    }

    pub fn book(&self) -> &Book {
        &self.0.book
    }

    pub fn node(&self) -> &str {
        &self.0.node
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
            probes.push(Probe::new(&s.check).map_err(|source| ApplyError::Check {
                service: s.name.clone(),
                source,
            })?);
        }
        // 2. New listening sockets (existing ones are kept as they are).
        let mut new_listeners = HashMap::new();
        {
            let held = lock(&self.0.listeners);
            for s in &cluster.services {
                let addr = self.listen_addr(s);
                if held.contains_key(&addr) || new_listeners.contains_key(&addr) {
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
        let mut tokio_listeners = HashMap::new();
        for (addr, l) in new_listeners {
            let l = TcpListener::from_std(l).map_err(|source| ApplyError::Bind {
                service: String::new(),
                addr,
                source,
            })?;
            tokio_listeners.insert(addr, l);
        }
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
                    None => Arc::new(Server::new(b, self.0.changed.clone())),
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
                None => Arc::new(Frontend {
                    name: s.name.clone(),
                    cfg: RwLock::new(cfg),
                    sessions: Gauge::default(),
                    total: AtomicU64::new(0),
                    rate: Rate::default(),
                    bytes_in: AtomicU64::new(0),
                    bytes_out: AtomicU64::new(0),
                    denied: AtomicU64::new(0),
                    no_server: AtomicU64::new(0),
                    local_errors: AtomicU64::new(0),
                    stopped: AtomicBool::new(false),
                }),
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
            held.retain(|addr, tx| match wanted.get(addr) {
                Some(f) => {
                    tx.send_replace(Some(f.clone()));
                    true
                }
                None => {
                    info!(%addr, "listener closed: no service uses it any more");
                    tx.send_replace(None);
                    false
                }
            });
            for (addr, listener) in tokio_listeners {
                let Some(fe) = wanted.get(&addr) else {
                    continue;
                };
                let (tx, rx) = watch::channel(Some(fe.clone()));
                info!(%addr, service = %fe.name, "listening");
                tokio::spawn(listen_loop(self.clone(), listener, rx));
                held.insert(addr, tx);
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
        let cap = fd_cap(&cluster);
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
            Ok(Ok(cluster)) => self.apply(cluster).map_err(|e| e.to_string()),
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

    /// Stop accepting on every listener (SIGTERM); open connections go on.
    pub fn stop_accepting(&self) {
        self.0.stopping.store(true, Relaxed);
        for (_, tx) in lock(&self.0.listeners).drain() {
            tx.send_replace(None);
        }
        for f in self.frontends() {
            f.stopped.store(true, Relaxed);
        }
        for h in lock(&self.0.checkers).drain(..) {
            h.abort();
        }
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

    /// Accept-path admission: caps, then a task for the connection.
    fn admit(&self, fe: &Arc<Frontend>, sock: TcpStream, peer: SocketAddr) {
        let inner = &self.0;
        // Over a cap the client is closed at once (dropping `sock`) and counted as denied.
        let max = inner.max_conns.load(Relaxed);
        if max > 0 && inner.conns.get() >= max {
            fe.denied.fetch_add(1, Relaxed);
            debug!(service = %fe.name, client = %peer, "denied: global connection cap");
            return;
        }
        let cfg = fe.cfg();
        let cap = u64::from(cfg.service.max_connections);
        if cap > 0 && fe.sessions.get() >= cap {
            fe.denied.fetch_add(1, Relaxed);
            debug!(service = %fe.name, client = %peer, "denied: frontend connection cap");
            return;
        }
        inner.conns.inc();
        fe.sessions.inc();
        fe.total.fetch_add(1, Relaxed);
        fe.rate.hit();
        let guard = ConnGuard {
            engine: self.clone(),
            fe: fe.clone(),
        };
        let id = inner.next_id.fetch_add(1, Relaxed);
        let conn = connection(guard, cfg, sock, client_hash(peer.ip()));
        if tracing::enabled!(tracing::Level::DEBUG) {
            let span = tracing::debug_span!("conn", id, service = %fe.name, client = %peer);
            tokio::spawn(conn.instrument(span));
        } else {
            // No span wrapper when nobody reads it: less memory per connection.
            tokio::spawn(conn);
        }
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
                    servers: cfg.servers.iter().map(|s| s.stats(now)).collect(),
                }
            })
            .collect();
        Snapshot {
            node: self.0.node.clone(),
            cluster: cluster.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
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

/// Releases a connection's slots when its task ends, however it ends.
struct ConnGuard {
    engine: Engine,
    fe: Arc<Frontend>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.fe.sessions.dec();
        self.engine.0.conns.dec();
        self.engine.0.slot_freed.notify_waiters();
    }
}

/// Descriptors kept back from proxied connections: the control socket and its clients,
/// the stats page's connections, the netlink / signal / epoll machinery, log files. With
/// a small limit, at most a quarter of it.
const FD_RESERVE: u64 = 32 + crate::stats::MAX_CONNECTIONS as u64;

/// The connections this process can proxy with its descriptor limit, as HAProxy derives
/// maxconn from `ulimit -n`: two descriptors each (client and server), after one per
/// listener and one per health check in flight.
pub fn fd_cap(cluster: &Cluster) -> u64 {
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    let listeners = cluster.services.len() as u64;
    let checks: u64 = cluster
        .services
        .iter()
        .map(|s| s.backends.len() as u64)
        .sum();
    let reserve = FD_RESERVE.min(nofile / 4) + listeners + checks;
    (nofile.saturating_sub(reserve) / 2).max(1)
}

/// Raise the soft descriptor limit to the hard one (systemd's default soft limit, 1024, is
/// far below what a proxy needs; the unit sets both). Returns the soft limit now.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Errors of this host rather than of the server (no descriptor, no buffer, no memory):
/// never a reason to take a server out of rotation.
pub fn is_local_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Counts a server session for as long as it is held.
struct ServerSlot(Arc<Server>);

impl Drop for ServerSlot {
    fn drop(&mut self) {
        self.0.sessions.dec();
    }
}

/// Accept errors that say nothing about the listener (the client went away first).
fn accept_error_is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EPERM | libc::EINTR)
    )
}

async fn listen_loop(
    engine: Engine,
    listener: TcpListener,
    mut rx: watch::Receiver<Option<Arc<Frontend>>>,
) {
    let mut last_warn: Option<Instant> = None;
    let mut last_cap_warn: Option<Instant> = None;
    loop {
        let Some(fe) = rx.borrow_and_update().clone() else {
            return;
        };
        // At the descriptor cap, do not accept: the client waits in the listen queue
        // instead of being accepted and closed (or accepted and starved of a server
        // socket). A freed slot or a config change wakes us.
        let inner = &engine.0;
        if inner.conns.get() >= inner.fd_cap.load(Relaxed) {
            let freed = inner.slot_freed.notified();
            if inner.conns.get() >= inner.fd_cap.load(Relaxed) {
                inner.fd_cap_waits.fetch_add(1, Relaxed);
                if last_cap_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    warn!(
                        service = %fe.name,
                        open = inner.conns.get(),
                        cap = inner.fd_cap.load(Relaxed),
                        "at the connection cap RLIMIT_NOFILE allows: new connections wait in the listen queue"
                    );
                    last_cap_warn = Some(Instant::now());
                }
                tokio::select! {
                    () = freed => {}
                    changed = rx.changed() => if changed.is_err() { return },
                }
                continue;
            }
        }
        tokio::select! {
            biased;
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            r = listener.accept() => match r {
                Ok((sock, peer)) => engine.admit(&fe, sock, peer),
                Err(e) if accept_error_is_per_connection(&e) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM...: back off instead of spinning.
                    if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        warn!(service = %fe.name, error = %e, "accept failed; backing off");
                        last_warn = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn connection(guard: ConnGuard, cfg: Arc<FrontendCfg>, client: TcpStream, hash: u64) {
    // Two phases in two functions, so the connect phase's state (retries, connect timer)
    // shares its bytes with the copy phase's instead of adding to them; sockets are passed
    // by reference so they are stored once.
    let Some((slot, server)) = connect_backend(&guard.fe, &cfg, hash).await else {
        return;
    };
    copy_phase(&guard, &cfg, &client, &slot, &server).await;
}

/// Pick a server and connect, retrying on other servers. `None`: the client is closed.
async fn connect_backend(
    fe: &Frontend,
    cfg: &FrontendCfg,
    hash: u64,
) -> Option<(ServerSlot, TcpStream)> {
    let mut tried: Vec<usize> = Vec::new();
    for attempt in 0..=cfg.service.retries {
        let picked = {
            let cands: Vec<Candidate> = cfg.servers.iter().map(|s| s.candidate()).collect();
            lock(&cfg.balancer).pick(&cands, &tried, hash)
        };
        let Some(idx) = picked else {
            fe.no_server.fetch_add(1, Relaxed);
            debug!("no usable server: closing the client");
            return None;
        };
        let srv = cfg.servers[idx].clone();
        srv.sessions.inc();
        let slot = ServerSlot(srv.clone());
        let connect = TcpStream::connect(srv.addr);
        let started = Instant::now();
        let limit = cfg
            .service
            .timeouts
            .connect
            .for_server(cfg.vrrp_interval, srv.srtt());
        let failure = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(s)) => {
                srv.sample_connect(started.elapsed());
                return Some((slot, s));
            }
            Ok(Err(e)) if is_local_error(&e) => {
                // Our shortage, not the server's: no health verdict, no connect error on
                // the server, no retry elsewhere (it would fail the same way).
                fe.local_errors.fetch_add(1, Relaxed);
                warn!(server = %srv.addr, error = %e, "no socket for the server connection (local resources): closing the client");
                return None;
            }
            Ok(Err(e)) => {
                debug!(server = %srv.addr, error = %e, attempt, "connect failed");
                ("L4CON", format!("client connect: {e}"))
            }
            Err(_) if cfg.service.timeouts.connect == ConnectTimeout::Auto => {
                // A timeout fit to the cluster is short: a suspicion, not a verdict. The
                // checker looks now (short timeout, fall 1); the client goes on at once.
                debug!(server = %srv.addr, attempt, limit = ?limit, "connect timed out: checking the server now");
                srv.make_suspect();
                drop(slot);
                srv.connect_errors.fetch_add(1, Relaxed);
                if attempt < cfg.service.retries {
                    srv.retries.fetch_add(1, Relaxed);
                }
                tried.push(idx);
                continue;
            }
            Err(_) => {
                debug!(server = %srv.addr, attempt, "connect timed out");
                ("L4TOUT", "client connect timed out".to_owned())
            }
        };
        // Passive health (HAProxy's opt-in `observe layer4`, on here): a real connection's
        // failed connect counts like a failed check, and the checker looks again at once,
        // so a dead server leaves rotation after its first failures, not after `fall`
        // whole check intervals.
        let check = &cfg.service.check;
        let o = health::Outcome {
            ok: false,
            status: failure.0,
            desc: failure.1,
            latency: started.elapsed(),
            local: false,
        };
        srv.record(&o, check.rise, check.fall, cfg.service.close_on_down);
        srv.wake.notify_one();
        drop(slot);
        srv.connect_errors.fetch_add(1, Relaxed);
        if attempt < cfg.service.retries {
            srv.retries.fetch_add(1, Relaxed);
        }
        tried.push(idx);
    }
    debug!("every attempt failed: closing the client");
    None
}

async fn copy_phase(
    guard: &ConnGuard,
    cfg: &FrontendCfg,
    client: &TcpStream,
    slot: &ServerSlot,
    server: &TcpStream,
) {
    let fe = &guard.fe;
    let timeouts = &cfg.service.timeouts;
    let srv = &slot.0;
    srv.total.fetch_add(1, Relaxed);
    srv.rate.hit();
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let kill = KillSwitch(
        cfg.service
            .close_on_down
            .then(|| Box::pin(srv.kill.notified())),
    );
    let end = copy::proxy(
        client,
        server,
        Meters {
            counters: [&fe.bytes_in, &srv.bytes_in],
        },
        Meters {
            counters: [&fe.bytes_out, &srv.bytes_out],
        },
        timeouts,
        guard.engine.0.mode,
        kill,
    )
    .await;
    debug!(server = %srv.addr, ?end, "connection ended");
}

/// Completes when the server is marked DOWN (close_on_down services), never otherwise.
/// The waiter is boxed only when armed, so other connections do not carry one.
struct KillSwitch<'a>(Option<Pin<Box<tokio::sync::futures::Notified<'a>>>>);

impl Future for KillSwitch<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().0 {
            Some(n) => n.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
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

/// How long a check of a suspect server may take: vrrpd has already heard nothing from
/// its node for Master_Down_Interval (three adverts), and a live server on the same
/// segment answers in well under a millisecond, so two advert intervals (at least 200 ms,
/// at most the check's own timeout) separate a dead node from a busy one.
pub fn suspect_timeout(vrrp_interval: Duration, check: &Check) -> Duration {
    (vrrp_interval * 2)
        .max(Duration::from_millis(200))
        .min(check.timeout)
}

async fn run_checker(
    srv: Arc<Server>,
    probe: Probe,
    check: Check,
    close_on_down: bool,
    suspect_timeout: Duration,
) {
    let mut last_local: Option<Instant> = None;
    let mut fast_probe = probe.clone();
    fast_probe.timeout = suspect_timeout;
    loop {
        if srv.admin() == Admin::Maint {
            // No checks in maintenance; wake up when the admin state changes.
            tokio::select! {
                () = srv.wake.notified() => {}
                () = tokio::time::sleep(check.interval) => {}
            }
            continue;
        }
        // The flag stays set until this check's verdict is in: the balancer keeps the server
        // as a last resort meanwhile.
        let suspect = srv.suspect.load(Relaxed);
        let o = if suspect {
            health::probe(&fast_probe, srv.addr).await
        } else {
            tokio::select! {
                o = health::probe(&probe, srv.addr) => o,
                // Became suspect meanwhile: drop this check, run the fast one.
                () = srv.suspect_now.notified() => continue,
            }
        };
        if o.local {
            // Our descriptors ran out, not the server: keep its state, try again later.
            if last_local.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(10)) {
                warn!(error = %o.desc, "health check not run: no socket (local resources); the server keeps its state");
                last_local = Some(Instant::now());
            }
            tokio::select! {
                () = tokio::time::sleep(check.interval) => {}
                () = srv.wake.notified() => {}
            }
            continue;
        }
        if !o.ok {
            srv.checks_failed.fetch_add(1, Relaxed);
        }
        // A suspect server that fails once is out (fall 1); one that answers stays as it
        // was, and a DOWN one still needs `rise` successes.
        let fall = if suspect { 1 } else { check.fall };
        if suspect {
            info!(ok = o.ok, status = o.status, desc = %o.desc, "suspect server checked");
        }
        let fast = srv.record(&o, check.rise, fall, close_on_down);
        if suspect {
            srv.suspect.store(false, Relaxed);
        }
        let wait = if fast {
            check.fast_interval
        } else {
            check.interval
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = srv.wake.notified() => {}
        }
    }
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
        let fe = Arc::new(Frontend {
            name: s.name.clone(),
            cfg: RwLock::new(cfg.clone()),
            sessions: Gauge::default(),
            total: AtomicU64::new(0),
            rate: Rate::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            no_server: AtomicU64::new(0),
            local_errors: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sock = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let peer = sock.local_addr().unwrap();
        engine.0.conns.inc();
        fe.sessions.inc();
        let guard = ConnGuard { engine, fe };
        let f = connection(guard, cfg, sock, client_hash(peer.ip()));
        let size = std::mem::size_of_val(&f);
        eprintln!("connection future: {size} bytes");
        assert!(size <= 1024, "{size}");
    }
}
