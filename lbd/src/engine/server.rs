//! One backend server: its admin state, health, counters, and the numbers the balancer
//! and the connect path read (weights, the smoothed connect time, suspicion).

#[allow(clippy::wildcard_imports)]
use super::*;

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
    pub(super) fn from_u8(v: u8) -> Admin {
        match v {
            1 => Admin::Drain,
            2 => Admin::Maint,
            _ => Admin::Ready,
        }
    }
}

/// Health-check view of a server, written by its checker.
#[derive(Debug)]
pub(super) struct CheckState {
    pub(super) health: Health,
    pub(super) rise: u32,
    pub(super) fall: u32,
    pub(super) status: &'static str,
    pub(super) desc: String,
    pub(super) latency: Option<Duration>,
    pub(super) last_change: Instant,
    pub(super) down_since: Option<Instant>,
    pub(super) downtime: Duration,
}

/// What one server's health looks like to this process, handed to a new lbd process on
/// an upgrade so that it routes as this one did from its first connection: a server known
/// DOWN stays out of rotation, one known UP takes clients at once, until the new process's
/// own checks say otherwise. Keyed by service name and server address (a server whose
/// address changed starts as at a normal start).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthView {
    pub service: String,
    pub addr: SocketAddr,
    pub up: bool,
    /// Consecutive results against `up` so far (toward `rise` or `fall`).
    pub count: u32,
    pub status: String,
    pub desc: String,
    pub latency_us: Option<u64>,
    pub since_change_ms: u64,
    pub down_for_ms: Option<u64>,
    pub downtime_ms: u64,
    pub checks_failed: u64,
    pub down_transitions: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One backend server of one frontend.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    pub(super) key: u64,
    pub(super) cfg_weight: AtomicU32,
    pub(super) weight: AtomicU32,
    pub(super) backup: AtomicBool,
    pub(super) admin: AtomicU8,
    /// Health verdict (the hot path reads only this).
    pub(super) up: AtomicBool,
    pub(super) check: Mutex<CheckState>,
    pub(super) sessions: Gauge,
    pub(super) total: AtomicU64,
    pub(super) rate: Rate,
    pub(super) bytes_in: AtomicU64,
    pub(super) bytes_out: AtomicU64,
    pub(super) connect_errors: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) checks_failed: AtomicU64,
    pub(super) down_transitions: AtomicU64,
    /// Woken when the server goes DOWN (close_on_down connections wait on it).
    pub(super) kill: Notify,
    /// vrrpd lost this server's node: the next check runs now, with the suspect timeout,
    /// and one failure is enough to take it DOWN.
    pub(super) suspect: AtomicBool,
    /// Cuts short a normal check in flight when the server becomes suspect (that check may
    /// be waiting out the full timeout on the dead node).
    pub(super) suspect_now: Notify,
    /// Smoothed time a client connect to it took, in microseconds (0: none yet), for
    /// `timeouts.connect = "auto"`.
    pub(super) srtt_us: AtomicU64,
    /// Wakes the checker early (admin state changed).
    pub(super) wake: Notify,
    /// Shared by every server of the engine: some server went UP or DOWN or changed its
    /// admin state (the `STATUS=` line follows it).
    pub(super) changed: Arc<Notify>,
}

impl Server {
    pub(super) fn new(b: &common::config::Backend, changed: Arc<Notify>) -> Server {
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
    pub(super) fn weight_override(&self) -> Option<u32> {
        let w = self.weight.load(Relaxed);
        (w != self.cfg_weight.load(Relaxed)).then_some(w)
    }

    /// The smoothed connect time, once there is one.
    pub(super) fn srtt(&self) -> Option<Duration> {
        match self.srtt_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// One more connect time into the average (TCP's 7/8 + 1/8; racing updates may lose a
    /// sample, which an average shrugs off).
    pub(super) fn sample_connect(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.srtt_us.load(Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.srtt_us.store(new.max(1), Relaxed);
    }

    /// vrrpd lost this server's node, or a client's connect to it timed out: check it now,
    /// with the short timeout and fall 1, and keep it as a last resort meanwhile.
    pub(super) fn make_suspect(&self) {
        self.suspect.store(true, Relaxed);
        self.wake.notify_one();
        self.suspect_now.notify_one();
    }

    pub(super) fn record(
        &self,
        o: &health::Outcome,
        rise: u32,
        fall: u32,
        close_on_down: bool,
    ) -> bool {
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

    /// This server's health for a new lbd process (see [`HealthView`]); `None` before its
    /// first check (the new process starts it as at a normal start).
    pub(super) fn health_view(&self, service: &str, now: Instant) -> Option<HealthView> {
        let c = lock(&self.check);
        if c.status == "INI" {
            return None;
        }
        Some(HealthView {
            service: service.to_owned(),
            addr: self.addr,
            up: self.up.load(Relaxed),
            count: c.health.count(),
            status: c.status.to_owned(),
            desc: c.desc.clone(),
            latency_us: c
                .latency
                .map(|l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX)),
            since_change_ms: ms(now.saturating_duration_since(c.last_change)),
            down_for_ms: c.down_since.map(|d| ms(now.saturating_duration_since(d))),
            downtime_ms: ms(c.downtime),
            checks_failed: self.checks_failed.load(Relaxed),
            down_transitions: self.down_transitions.load(Relaxed),
        })
    }

    /// Take the health another lbd process had for this server (an upgrade). A status
    /// this version does not know leaves the server as at a normal start.
    pub(super) fn resume(&self, h: &HealthView, now: Instant) -> bool {
        let Some(status) = health::check_status(&h.status) else {
            return false;
        };
        if status == "INI" {
            return false;
        }
        let ago = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
        let mut c = lock(&self.check);
        c.health = Health::resumed(h.up, h.count);
        c.status = status;
        c.desc.clone_from(&h.desc);
        c.latency = h.latency_us.map(Duration::from_micros);
        c.last_change = ago(h.since_change_ms);
        c.down_since = h.down_for_ms.map(ago);
        c.downtime = Duration::from_millis(h.downtime_ms);
        self.up.store(h.up, Relaxed);
        self.checks_failed.store(h.checks_failed, Relaxed);
        self.down_transitions.store(h.down_transitions, Relaxed);
        true
    }

    pub(super) fn admin(&self) -> Admin {
        Admin::from_u8(self.admin.load(Relaxed))
    }

    pub(super) fn candidate(&self) -> Candidate {
        Candidate {
            weight: self.weight.load(Relaxed),
            backup: self.backup.load(Relaxed),
            usable: self.up.load(Relaxed) && self.admin() == Admin::Ready,
            active: self.sessions.get(),
            key: self.key,
            suspect: self.suspect.load(Relaxed),
        }
    }

    pub(super) fn stats(&self, now: Instant) -> ServerStats {
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
            admin: self.admin().into(),
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
