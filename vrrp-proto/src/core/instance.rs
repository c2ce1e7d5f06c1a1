//! The VRRP instance: one VRID's state machine (RFC 5798 section 6.4, RFC 9568).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{
    effective_priority, master_down_interval, skew_time, Action, Cause, Config, Counters, PeerLoss,
    Received, State, Status, TransitionRecord, DRAIN_MIN,
};
use crate::packet::{self, Advert, DropReason, Version, MCAST_V4, MCAST_V6, VRRP_TTL};

/// How many transitions [`Status::transitions`] keeps.
const TRANSITION_HISTORY: usize = 32;
/// After the first failure to install the VIPs, try again this much later...
pub const VIP_RETRY_FIRST: Duration = Duration::from_secs(1);
/// ...doubling up to this.
pub const VIP_RETRY_MAX: Duration = Duration::from_secs(60);

/// The VIPs could not be installed when this router became master.
#[derive(Debug, Clone)]
struct VipFault {
    /// What the shell reported (the netlink error, with the address and interface).
    reason: String,
    /// Consecutive failures.
    failures: u32,
    first: Instant,
    /// While in Fault: when to take part in the election again; `None` once retried.
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// Where the instance is in its life: running, handing over after [`Instance::shutdown`],
/// or done (HandoverDone emitted: inert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    ShuttingDown,
    Finished,
}

/// The protocol state and the data valid only in it.
#[derive(Debug, Clone)]
enum Phase {
    Initialize,
    Backup(Backup),
    Master(Master),
    Fault,
}

/// RFC 5798 section 6.4.2.
#[derive(Debug, Clone)]
struct Backup {
    /// Master_Down_Timer; `None` while in maintenance (never become master).
    master_down_timer: Option<Instant>,
    /// What a firing Master_Down_Timer means (for the transition's cause).
    down_cause: Cause,
    /// When we first heard the current lower-priority master (preempt delay).
    lower_master_since: Option<Instant>,
    /// The lower-priority master we are about to preempt (its adverts are discarded, so
    /// `master` may still name the one before it, or nobody after a start).
    preempting: Option<IpAddr>,
    /// The master that resigned (priority 0) and that we are about to take over from.
    resigned: Option<IpAddr>,
}

/// A drain after a planned handover: the VIPs parked here, or this master steering the
/// flows it has no state for to the previous master.
#[derive(Debug, Clone, Copy)]
struct Drain {
    since: Instant,
    until: Instant,
}

/// RFC 5798 section 6.4.3.
#[derive(Debug, Clone)]
struct Master {
    adver_timer: Option<Instant>,
    /// Next announcement (GARP / NA): the initial repeats, then the periodic refresh.
    garp_timer: Option<Instant>,
    garp_left: u32,
    /// When we last answered a lower-priority master at once (rate limit: two routers
    /// that both believed they win must not ping-pong at wire speed).
    last_answer: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Transition {
    at: Instant,
    from: State,
    to: State,
    cause: Cause,
}

/// One VRRP router for one VRID. See the [module docs](super).
#[derive(Debug)]
pub struct Instance {
    cfg: Config,
    phase: Phase,
    priority_offset: i32,
    /// Our priority after tracking offsets (what we advertise and compare).
    priority: u8,
    /// Master_Adver_Interval (RFC 5798 section 6.1): the master's advertised interval,
    /// adopted by a backup (section 6.4.2).
    master_adver_interval: Duration,
    master: Option<IpAddr>,
    /// The priority the current master last advertised (is a new master a preemption, or
    /// a lower router taking over from one that went silent?).
    master_priority: u8,
    /// When the current master's last advert arrived.
    master_heard: Option<Instant>,
    started: bool,
    fault: bool,
    maintenance: bool,
    life: Life,
    /// We emitted AddVips and not yet RemoveVips.
    vips_held: bool,
    /// Make-before-break: holding the VIPs while not master until another router's advert
    /// is heard or this deadline passes.
    release_deadline: Option<Instant>,
    /// The successor has announced itself (its advert was heard, or it preempted us):
    /// keep the VIPs `release_linger` longer, then release. It added the VIP, announced it
    /// and then advertised, back to back; traffic already on its way to us is served
    /// instead of dropped while clients' neighbour entries move.
    release_at: Option<Instant>,
    /// The last attempt to install the VIPs failed (cleared by [`Instance::vip_installed`]).
    vip_fault: Option<VipFault>,
    /// [`Action::ParkVips`] emitted and no [`Action::UnparkVips`] yet.
    parked: Option<Drain>,
    /// [`Action::Steer`] emitted (to the first of these addresses, then to each other)
    /// and no [`Action::Unsteer`] yet.
    steer: Option<(IpAddr, Drain)>,
    steer_also: Vec<IpAddr>,
    /// The last master heard resigning, and when: it parks the VIPs for its flows, so a
    /// takeover soon after forwards to it even if another backup took over in between
    /// (the two took over at once, and we preempted the other).
    resigned_recently: Option<(IpAddr, Instant)>,
    actions: VecDeque<Action>,
    counters: Counters,
    transitions: VecDeque<Transition>,
}

fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn due(timer: Option<Instant>, now: Instant) -> bool {
    timer.is_some_and(|t| t <= now)
}

impl Instance {
    /// A new instance in Initialize; no actions until [`Instance::start`].
    pub fn new(cfg: Config, _now: Instant) -> Instance {
        let cfg = sanitize(cfg);
        let priority = effective_priority(cfg.priority, 0);
        let master_adver_interval = cfg.adver_interval;
        Instance {
            cfg,
            phase: Phase::Initialize,
            priority_offset: 0,
            priority,
            master_adver_interval,
            master: None,
            master_priority: 0,
            master_heard: None,
            started: false,
            fault: false,
            maintenance: false,
            life: Life::Running,
            vips_held: false,
            release_deadline: None,
            release_at: None,
            vip_fault: None,
            parked: None,
            steer: None,
            steer_also: Vec::new(),
            resigned_recently: None,
            actions: VecDeque::new(),
            counters: Counters::default(),
            transitions: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::Initialize => State::Initialize,
            Phase::Backup(_) => State::Backup,
            Phase::Master(_) => State::Master,
            Phase::Fault => State::Fault,
        }
    }

    /// Whether this router currently holds (has asked the shell to add) the VIPs.
    pub fn holds_vips(&self) -> bool {
        self.vips_held
    }

    /// After [`Instance::shutdown`]: HandoverDone has been emitted; the instance is inert.
    pub fn is_finished(&self) -> bool {
        self.life == Life::Finished
    }

    fn stopping(&self) -> bool {
        self.life != Life::Running
    }

    /// Whether maintenance is on (this router resigned and stays backup).
    pub fn maintenance(&self) -> bool {
        self.maintenance
    }

    /// Our effective priority (base plus tracking offset).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Skew_Time for our priority and the current Master_Adver_Interval.
    pub fn skew_time(&self) -> Duration {
        skew_time(self.priority, self.master_adver_interval)
    }

    /// Master_Down_Interval for our priority and the current Master_Adver_Interval.
    pub fn master_down_interval(&self) -> Duration {
        master_down_interval(self.priority, self.master_adver_interval)
    }

    /// RFC 5798 section 6.4.1: leave Initialize. The owner (priority 255) becomes master at
    /// once; everyone else becomes backup. Also asks the shell to remove VIPs left behind by
    /// an earlier run (kill -9). Calling it twice is harmless.
    pub fn start(&mut self, now: Instant) {
        if self.started || self.stopping() {
            return;
        }
        self.started = true;
        // A VIP left behind by a killed predecessor is not ours until we win the election.
        self.actions.push_back(Action::RemoveVips);
        if self.fault {
            self.transition(now, State::Fault, Cause::Startup);
        } else if self.priority == 255 && !self.maintenance {
            self.transition(now, State::Master, Cause::Startup);
        } else {
            self.master_adver_interval = self.cfg.adver_interval;
            self.transition(now, State::Backup, Cause::Startup);
        }
    }

    /// Decode a received packet, apply every receive check (RFC 5798 section 7.1), count
    /// a drop by reason, and run the state's ADVERTISEMENT rule.
    pub fn handle_packet(&mut self, now: Instant, rx: Received<'_>) {
        if self.is_finished() {
            return;
        }
        let Some(adv) = self.check(rx) else { return };
        self.counters.rx_adverts += 1;
        if adv.priority == 0 {
            self.counters.rx_priority_zero += 1;
        }
        if !same_set(&adv.addrs, &self.cfg.vips) {
            self.counters.vip_mismatch += 1;
        }
        // Make-before-break: backups do not advertise, so any non-zero advert from another
        // router is a master that has announced itself.
        if adv.priority != 0 && self.release_deadline.is_some() {
            self.schedule_release(now);
        }
        let interval = self.advert_interval(&adv);
        match &mut self.phase {
            Phase::Initialize | Phase::Fault => {}
            Phase::Backup(b) => {
                // RFC 5798 section 6.4.2, ADVERTISEMENT received.
                if adv.priority == 0 {
                    // The master resigned (stopping, maintenance, fault): its backends
                    // may be going with it; the proxies should look now.
                    self.actions.push_back(Action::PeerLost {
                        peer: rx.src,
                        why: PeerLoss::Resigned,
                    });
                    // The master resigned: take over after Skew_Time.
                    let skew = skew_time(self.priority, self.master_adver_interval);
                    b.master_down_timer = if self.maintenance {
                        None
                    } else {
                        after(now, skew)
                    };
                    b.down_cause = Cause::PeerResigned;
                    b.resigned = Some(rx.src);
                    self.resigned_recently = Some((rx.src, now));
                    self.master = None;
                    return;
                }
                // Another router took over from a master that did not resign and was not
                // preempted (the new one advertises less than the old did): the old one
                // went silent. The backup that took over saw its timer fire; the others
                // learn it here.
                // (Two masters at once, briefly, at start-up or after a partition, both keep
                // advertising: the old one counts as silent only once it has missed an
                // advert.)
                let missed = self
                    .master_heard
                    .is_some_and(|t| now.saturating_duration_since(t) > interval + interval / 4);
                if let Some(old) = self.master {
                    if old != rx.src && adv.priority < self.master_priority && missed {
                        self.actions.push_back(Action::PeerLost {
                            peer: old,
                            why: PeerLoss::Silent,
                        });
                        // Said once: a backup about to preempt the new master keeps the
                        // old one as `master` until then.
                        self.master_priority = adv.priority;
                    }
                }
                // The owner always preempts (RFC 5798 section 6.1, Preempt_Mode). A router
                // whose last attempt to install the VIPs failed does not preempt a working
                // master (it would take the VIP away only to fail again); it takes over only
                // when nobody else is master.
                let preempt =
                    (self.cfg.preempt || self.priority == 255) && self.vip_fault.is_none();
                let lower = adv.priority < self.priority;
                // In maintenance we never take over, so a lower-priority master is simply
                // the master (and the status must say who it is).
                if lower && preempt && !self.maintenance {
                    let since = *b.lower_master_since.get_or_insert(now);
                    let delay_over = after(since, self.cfg.preempt_delay).is_none_or(|t| t <= now);
                    if delay_over {
                        // Discard: the Master_Down_Timer runs out and we preempt.
                        b.down_cause = Cause::Preempted;
                        b.preempting = Some(rx.src);
                        return;
                    }
                } else if !lower {
                    b.lower_master_since = None;
                }
                // Adopt the master's interval, recompute, reset the Master_Down_Timer.
                self.master_adver_interval = interval;
                let mdi = master_down_interval(self.priority, interval);
                b.master_down_timer = if self.maintenance {
                    None
                } else {
                    after(now, mdi)
                };
                b.down_cause = Cause::MasterDown;
                b.resigned = None;
                self.master = Some(rx.src);
                self.master_priority = adv.priority;
                self.master_heard = Some(now);
            }
            Phase::Master(m) => {
                // RFC 5798 section 6.4.3, ADVERTISEMENT received.
                if adv.priority == 0 {
                    m.adver_timer = after(now, self.cfg.adver_interval);
                    self.send_advert(self.priority);
                    // Another master resigned (we took over first, its resign reached us
                    // late): it parks the VIPs for its flows.
                    self.resigned_recently = Some((rx.src, now));
                    self.steer_to(now, rx.src);
                    return;
                }
                let higher = adv.priority > self.priority;
                let tie_lost = adv.priority == self.priority && rx.src > self.cfg.primary;
                if higher || tie_lost {
                    // One last advert with our priority before stepping down (keepalived's
                    // `higher_prio_send_advert`). After a partition heals, the better
                    // master's periodic advert may reach us before ours reaches it: then it
                    // never learns that clients on our side still resolve the VIP to us.
                    // This advert makes it answer and re-announce at once (the lower-
                    // priority branch below). After a preemption it costs one extra GARP.
                    self.send_advert(self.priority);
                    self.master_adver_interval = interval;
                    let cause = if higher {
                        Cause::HigherPriority
                    } else {
                        Cause::HigherAddress
                    };
                    let held = self.vips_held;
                    self.transition(now, State::Backup, cause);
                    self.master = Some(rx.src);
                    self.master_priority = adv.priority;
                    self.master_heard = Some(now);
                    // Clients that resolved the VIP to us meanwhile may bring flows that
                    // began on the better master (two took over at once): forward to it
                    // too, while we still hold (then park) the VIPs.
                    if held {
                        self.steer_to(now, rx.src);
                    }
                } else {
                    // A lower priority (or a lost tie) is also master: a partition has
                    // healed. Assert ourselves at once and re-announce the VIPs so the
                    // switches and neighbours follow us; at most once per half interval.
                    let quiet = self.cfg.adver_interval / 2;
                    if m.last_answer
                        .is_some_and(|t| after(t, quiet).is_some_and(|q| now < q))
                    {
                        return;
                    }
                    m.last_answer = Some(now);
                    m.adver_timer = after(now, self.cfg.adver_interval);
                    // It held the VIPs too, and parks them for the flows it took when it
                    // hears us.
                    self.steer_to(now, rx.src);
                    self.send_advert(self.priority);
                    self.actions.push_back(Action::Announce);
                }
            }
        }
    }

    /// Run every timer that is due. Calling it early (or twice) is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        if due(self.release_deadline, now) || due(self.release_at, now) {
            self.release_vips(now);
        }
        if self.parked.is_some_and(|p| p.until <= now) {
            self.unpark();
        }
        if self.steer.is_some_and(|(_, d)| d.until <= now) {
            self.unsteer();
        }
        if self.state() == State::Fault
            && due(self.vip_fault.as_ref().and_then(|f| f.retry_at), now)
        {
            if let Some(f) = self.vip_fault.as_mut() {
                f.retry_at = None;
            }
            if !self.fault && !self.stopping() {
                // Take part in the election again; becoming master tries the VIPs again.
                self.master_adver_interval = self.cfg.adver_interval;
                self.transition(now, State::Backup, Cause::VipRetry);
            }
        }
        match &mut self.phase {
            Phase::Initialize | Phase::Fault => {}
            Phase::Backup(b) => {
                if due(b.master_down_timer, now) {
                    // RFC 5798 section 6.4.2: Master_Down_Timer fires.
                    let cause = b.down_cause;
                    b.master_down_timer = None;
                    // Silence for Master_Down_Interval: the master we knew is gone (or
                    // cut off). Said before taking over, whoever takes over.
                    let silent = (cause == Cause::MasterDown)
                        .then_some(self.master)
                        .flatten();
                    // Before the transition queues AddVips and the announcements: the
                    // proxies must distrust the lost node before the first client
                    // reaches this one.
                    if let Some(peer) = silent.filter(|p| *p != self.cfg.primary) {
                        self.actions.push_back(Action::PeerLost {
                            peer,
                            why: PeerLoss::Silent,
                        });
                    }
                    if !self.maintenance && !self.stopping() {
                        self.transition(now, State::Master, cause);
                    }
                }
            }
            Phase::Master(m) => {
                let mut send = false;
                let mut announce = false;
                if due(m.adver_timer, now) {
                    // RFC 5798 section 6.4.3: Adver_Timer fires.
                    m.adver_timer = after(now, self.cfg.adver_interval);
                    send = true;
                }
                if due(m.garp_timer, now) {
                    announce = true;
                    m.garp_left = m.garp_left.saturating_sub(1);
                    m.garp_timer = next_garp(&self.cfg, now, m.garp_left);
                }
                if send {
                    self.send_advert(self.priority);
                }
                if announce {
                    self.actions.push_back(Action::Announce);
                }
            }
        }
    }

    /// Count a drop the shell decided before the core saw the packet (e.g. a
    /// [`crate::packet::split_ipv4`] error's `reason()`), so every drop is in one map.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.drop_packet(reason);
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next deadline at which [`Instance::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_finished() {
            return None;
        }
        let phase = match &self.phase {
            Phase::Initialize => None,
            Phase::Fault => self.vip_fault.as_ref().and_then(|f| f.retry_at),
            Phase::Backup(b) => b.master_down_timer,
            Phase::Master(m) => earliest(m.adver_timer, m.garp_timer),
        };
        let drains = earliest(
            self.parked.map(|p| p.until),
            self.steer.map(|(_, d)| d.until),
        );
        earliest(
            earliest(earliest(phase, self.release_deadline), self.release_at),
            drains,
        )
    }

    /// The shell found no flow left on the parked VIPs: drop them (not before
    /// [`DRAIN_MIN`] has passed since they were parked).
    pub fn parked_flows_ended(&mut self, now: Instant) {
        if self
            .parked
            .is_some_and(|p| now.saturating_duration_since(p.since) >= DRAIN_MIN)
        {
            self.unpark();
        }
    }

    /// The previous master we steer to has no flow left on the VIPs, or is gone: stop
    /// steering (not before [`DRAIN_MIN`] has passed since it began).
    pub fn steered_flows_ended(&mut self, now: Instant) {
        if self
            .steer
            .is_some_and(|(_, d)| now.saturating_duration_since(d.since) >= DRAIN_MIN)
        {
            self.unsteer();
        }
    }

    /// The shell could not park the VIPs after [`Action::ParkVips`] and removed them
    /// instead: there is no park to keep or end.
    pub fn park_failed(&mut self) {
        self.parked = None;
    }

    /// A restarted shell found the VIPs parked by its predecessor (a stop during a
    /// handover, an upgrade): keep them parked until `until`, as if parked here.
    pub fn adopt_parked(&mut self, now: Instant, until: Instant) {
        if self.parked.is_none() && until > now && !self.cfg.drain_established.is_zero() {
            self.parked = Some(Drain { since: now, until });
        }
    }

    /// Link down or a tracked fault: leave master (priority-0 advert first, so the others
    /// take over after Skew_Time), remove the VIPs, ignore adverts. Cleared: back to backup.
    pub fn set_fault(&mut self, now: Instant, fault: bool) {
        if self.fault == fault {
            return;
        }
        self.fault = fault;
        if !self.started || self.stopping() {
            return;
        }
        if fault {
            if self.state() != State::Fault {
                self.transition(now, State::Fault, Cause::Fault);
            }
        } else if self.state() == State::Fault
            && self.vip_fault.as_ref().is_none_or(|f| f.retry_at.is_none())
        {
            self.master_adver_interval = self.cfg.adver_interval;
            self.transition(now, State::Backup, Cause::FaultCleared);
        }
    }

    /// The shell could not install the VIPs after [`Action::AddVips`] (e.g. netlink said
    /// EPERM: no CAP_NET_ADMIN). A master that cannot hold the VIP must not claim it: leave
    /// master at once with a priority-0 advert (the backups take over after Skew_Time),
    /// ask for the removal of whatever part was installed, and stay in Fault until a retry
    /// timer (1 s, doubling up to 60 s) lets this router take part in the election again.
    /// Until [`Instance::vip_installed`], the status carries the reason.
    pub fn vip_install_failed(&mut self, now: Instant, reason: String) {
        if self.stopping() {
            return;
        }
        self.counters.vip_install_failures += 1;
        let (failures, first, backoff) = match &self.vip_fault {
            Some(f) => (f.failures + 1, f.first, (f.backoff * 2).min(VIP_RETRY_MAX)),
            None => (1, now, VIP_RETRY_FIRST),
        };
        self.vip_fault = Some(VipFault {
            reason,
            failures,
            first,
            retry_at: after(now, backoff),
            backoff,
        });
        // What was queued for the master's entry (announcing, advertising the VIP we do
        // not have) must not go out any more.
        self.actions
            .retain(|a| !matches!(a, Action::Announce | Action::Send { .. }));
        if self.state() == State::Fault {
            return;
        }
        if self.state() == State::Master {
            self.transition(now, State::Fault, Cause::VipFailed);
        } else {
            // Not master any more (e.g. preempted while the shell worked): just clean up.
            self.remove_vips();
            self.transition(now, State::Fault, Cause::VipFailed);
        }
    }

    /// The shell installed the VIPs after [`Action::AddVips`]: forget earlier failures.
    pub fn vip_installed(&mut self, now: Instant) {
        if let Some(f) = self.vip_fault.take() {
            tracing::info!(
                vrid = self.cfg.vrid,
                failures = f.failures,
                after_ms = ms(now.saturating_duration_since(f.first)),
                "VIPs installed after earlier failures"
            );
        }
    }

    /// Replace the source allow-list (the shell learns IPv6 link-local sources of the
    /// cluster's servers while it runs). `None`: accept any source.
    pub fn set_allowed_sources(&mut self, allowed: Option<Vec<IpAddr>>) {
        self.cfg.allowed_sources = allowed;
    }

    /// Tracking weights: effective = clamp(base + offset, 1, 254); base 255 unaffected. A
    /// master advertises a changed priority at once so a better backup can preempt.
    pub fn set_priority_offset(&mut self, now: Instant, offset: i32) {
        self.priority_offset = offset;
        self.update_priority(now);
    }

    /// Maintenance on: resign (priority-0 advert and make-before-break if master) and stay
    /// backup until it is switched off.
    pub fn set_maintenance(&mut self, now: Instant, on: bool) {
        if self.maintenance == on {
            return;
        }
        self.maintenance = on;
        if !self.started || self.stopping() {
            return;
        }
        let mdi = self.master_down_interval();
        match &mut self.phase {
            Phase::Master(_) if on => self.transition(now, State::Backup, Cause::Maintenance),
            Phase::Backup(b) if on => b.master_down_timer = None,
            Phase::Backup(b) => {
                b.master_down_timer = after(now, mdi);
                b.down_cause = Cause::MaintenanceOff;
            }
            _ => {}
        }
    }

    /// Graceful stop. As master: send priority 0 but keep the VIPs until another router's
    /// non-zero advert is heard or `handover_timeout` passes, then RemoveVips and
    /// HandoverDone (make-before-break). Otherwise HandoverDone at once.
    pub fn shutdown(&mut self, now: Instant) {
        if self.stopping() {
            return;
        }
        self.life = Life::ShuttingDown;
        if self.state() != State::Initialize {
            // RFC 5798 section 6.4.2 / 6.4.3: Shutdown event.
            self.transition(now, State::Initialize, Cause::Shutdown);
        }
        if self.release_deadline.is_none() {
            if self.vips_held {
                self.actions.push_back(Action::RemoveVips);
                self.vips_held = false;
            }
            self.finish();
        }
    }

    /// Apply a new configuration. Same VRID, VIPs and family: keep the state and the VIPs;
    /// priority and interval changes take effect (a master advertises at once). Otherwise
    /// leave (resigning if master) and start again.
    pub fn reconfigure(&mut self, now: Instant, cfg: Config) {
        let cfg = sanitize(cfg);
        let compatible = cfg.vrid == self.cfg.vrid
            && cfg.vips == self.cfg.vips
            && cfg.primary.is_ipv6() == self.cfg.primary.is_ipv6();
        if compatible {
            let interval_changed = cfg.adver_interval != self.cfg.adver_interval;
            self.cfg = cfg;
            let old = self.priority;
            self.priority = effective_priority(self.cfg.priority, self.priority_offset);
            if let Phase::Master(m) = &mut self.phase {
                self.master_adver_interval = self.cfg.adver_interval;
                if interval_changed || old != self.priority {
                    m.adver_timer = after(now, self.cfg.adver_interval);
                    self.send_advert(self.priority);
                }
            }
            return;
        }
        let was_started = self.started;
        if was_started && !self.stopping() {
            if self.state() != State::Initialize {
                self.transition(now, State::Initialize, Cause::Reconfigured);
            }
            let pending = self.release_deadline.take().is_some() | self.release_at.take().is_some();
            if pending || self.vips_held {
                self.actions.push_back(Action::RemoveVips);
                self.vips_held = false;
            }
            // Parked for the old VIP set: let go (the shell removes what it parked).
            self.unpark();
        }
        self.cfg = cfg;
        self.priority = effective_priority(self.cfg.priority, self.priority_offset);
        self.master_adver_interval = self.cfg.adver_interval;
        self.master = None;
        if was_started && !self.stopping() {
            self.started = false;
            self.start(now);
        }
    }

    pub fn status(&self, now: Instant) -> Status {
        let transitions = self
            .transitions
            .iter()
            .map(|t| TransitionRecord {
                ago_ms: ms(now.saturating_duration_since(t.at)),
                from: t.from,
                to: t.to,
                cause: t.cause,
            })
            .collect();
        Status {
            state: self.state(),
            base_priority: self.cfg.priority,
            effective_priority: self.priority,
            master: self.master,
            vips: self.cfg.vips.clone(),
            master_adver_interval_ms: ms(self.master_adver_interval),
            maintenance: self.maintenance,
            fault: self.fault,
            holding_vips: self.vips_held,
            vip_error: self.vip_fault.as_ref().map(|f| super::VipError {
                reason: f.reason.clone(),
                failures: f.failures,
                since_ms: ms(now.saturating_duration_since(f.first)),
                retry_in_ms: f.retry_at.map(|t| ms(t.saturating_duration_since(now))),
            }),
            counters: self.counters.clone(),
            transitions,
            parked_ms_left: self
                .parked
                .map(|p| ms(p.until.saturating_duration_since(now))),
            steering_to: self.steer.map(|(to, _)| to),
            steer_ms_left: self
                .steer
                .map(|(_, d)| ms(d.until.saturating_duration_since(now))),
        }
    }

    // ----- internals -----

    /// THE transition function: the only place that changes state, logs it and emits
    /// StateChanged, with each state's exit and entry actions.
    fn transition(&mut self, now: Instant, to: State, cause: Cause) {
        let from = self.state();
        // Who held the VIPs before us, if we take them over in a planned handover: the
        // master that resigned, or the lower one we preempt.
        let previous = match (&self.phase, cause) {
            (Phase::Backup(b), Cause::PeerResigned) => b.resigned,
            (Phase::Backup(b), Cause::Preempted) => b.preempting.or(self.master),
            _ => None,
        }
        .filter(|p| *p != self.cfg.primary);
        if from == State::Master && to != State::Master {
            // Preempted by a better master (two backups took over at once after a
            // resign, their Skew_Times a few ms apart): clients that resolved the VIP to
            // us during those milliseconds still send here until the winner's
            // announcement reaches them, and while we keep the VIP for the linger.
            // Forwarding keeps the previous holder's flows alive meanwhile; it ends as
            // any forwarding does (no flow left there, or the deadline).
            let preempted_holding =
                matches!(cause, Cause::HigherPriority | Cause::HigherAddress) && self.vips_held;
            if !preempted_holding {
                self.unsteer();
            }
            // Leaving master on our own account: priority 0 tells the backups to take over
            // after Skew_Time instead of Master_Down_Interval (RFC 5798 section 6.4.3).
            let resign = matches!(
                cause,
                Cause::Shutdown
                    | Cause::Maintenance
                    | Cause::Fault
                    | Cause::VipFailed
                    | Cause::Reconfigured
            );
            if resign {
                self.send_advert(0);
            }
            let make_before_break = matches!(cause, Cause::Shutdown | Cause::Maintenance);
            // A better master has announced itself (it adds and announces the VIP before
            // the advert we heard): keep ours for the linger, then let go.
            let preempted = matches!(cause, Cause::HigherPriority | Cause::HigherAddress);
            if make_before_break && self.vips_held {
                self.release_deadline = after(now, self.cfg.handover_timeout).or(Some(now));
            } else if preempted && self.vips_held {
                self.schedule_release(now);
            } else {
                self.remove_vips();
            }
        }
        self.phase = match to {
            State::Initialize => {
                self.master = None;
                Phase::Initialize
            }
            State::Fault => {
                self.remove_vips();
                self.master = None;
                Phase::Fault
            }
            State::Backup => {
                if self.release_deadline.is_none() && self.release_at.is_none() {
                    self.remove_vips();
                }
                self.master = None;
                let master_down_timer = if self.maintenance || self.stopping() {
                    None
                } else {
                    after(now, self.master_down_interval())
                };
                Phase::Backup(Backup {
                    master_down_timer,
                    down_cause: Cause::MasterDown,
                    lower_master_since: None,
                    preempting: None,
                    resigned: None,
                })
            }
            State::Master => {
                // RFC 5798 section 6.4.1 / 6.4.2: send an ADVERTISEMENT, announce the
                // addresses, set the Adver_Timer.
                self.master_adver_interval = self.cfg.adver_interval;
                self.master = Some(self.cfg.primary);
                self.counters.became_master += 1;
                self.release_deadline = None;
                self.release_at = None;
                // Make-before-break, in the order the shell executes: hold the VIP and
                // announce it, then send the advert that makes the old master let go.
                // (If the VIP cannot be added, vip_install_failed drops what follows.)
                // The previous holder parks the VIPs for its flows: forward them there
                // before the first of them can reach us.
                if let Some(to) = previous {
                    self.steer_to(now, to);
                }
                // A master that resigned a moment ago parks the VIPs for its flows even
                // if another backup took over in between (two took over at once, and we
                // preempted the other, or its advert reached us before the resign).
                let recent = self.resigned_recently.filter(|(_, at)| {
                    now.saturating_duration_since(*at) < self.cfg.drain_established
                });
                if let Some((r, _)) = recent {
                    self.steer_to(now, r);
                }
                self.vips_held = true;
                self.actions.push_back(Action::AddVips);
                // Ours again: the flows we parked them for are served here as they are.
                self.unpark();
                let mut garp_left = self.cfg.garp_repeat;
                if garp_left > 0 {
                    self.actions.push_back(Action::Announce);
                    garp_left -= 1;
                }
                self.send_advert(self.priority);
                Phase::Master(Master {
                    adver_timer: after(now, self.cfg.adver_interval),
                    garp_timer: next_garp(&self.cfg, now, garp_left),
                    garp_left,
                    last_answer: None,
                })
            }
        };
        tracing::info!(
            vrid = self.cfg.vrid,
            from = from.as_str(),
            to = to.as_str(),
            cause = cause.as_str(),
            priority = self.priority,
            "vrrp state changed"
        );
        self.actions
            .push_back(Action::StateChanged { from, to, cause });
        if self.transitions.len() == TRANSITION_HISTORY {
            self.transitions.pop_front();
        }
        self.transitions.push_back(Transition {
            at: now,
            from,
            to,
            cause,
        });
    }

    /// The successor is known: release after `release_linger`.
    fn schedule_release(&mut self, now: Instant) {
        self.release_deadline = None;
        if self.release_at.is_none() {
            self.release_at = after(now, self.cfg.release_linger).or(Some(now));
        }
    }

    fn remove_vips(&mut self) {
        self.release_deadline = None;
        self.release_at = None;
        if self.vips_held {
            self.vips_held = false;
            self.actions.push_back(Action::RemoveVips);
        }
    }

    /// End of make-before-break: drop the VIPs, or park them for the flows on them; after
    /// shutdown, we are done.
    fn release_vips(&mut self, now: Instant) {
        if self.vips_held && !self.cfg.drain_established.is_zero() {
            self.release_deadline = None;
            self.release_at = None;
            self.vips_held = false;
            self.parked = Some(self.drain(now));
            self.actions.push_back(Action::ParkVips);
        } else {
            self.remove_vips();
        }
        if self.life == Life::ShuttingDown {
            self.finish();
        }
    }

    fn drain(&self, now: Instant) -> Drain {
        Drain {
            since: now,
            until: after(now, self.cfg.drain_established).unwrap_or(now),
        }
    }

    fn unpark(&mut self) {
        if self.parked.take().is_some() {
            self.actions.push_back(Action::UnparkVips);
        }
    }

    /// Forward foreign flows to `to` as well (drain on; not to ourselves; once per
    /// target until [`Action::Unsteer`]). The deadline is the first target's.
    fn steer_to(&mut self, now: Instant, to: IpAddr) {
        if self.cfg.drain_established.is_zero() || to == self.cfg.primary {
            return;
        }
        match self.steer {
            None => self.steer = Some((to, self.drain(now))),
            Some((first, _)) if first == to || self.steer_also.contains(&to) => return,
            Some(_) => self.steer_also.push(to),
        }
        self.actions.push_back(Action::Steer { to });
    }

    fn unsteer(&mut self) {
        self.steer_also.clear();
        if self.steer.take().is_some() {
            self.actions.push_back(Action::Unsteer);
        }
    }

    fn finish(&mut self) {
        if self.life != Life::Finished {
            self.life = Life::Finished;
            self.actions.push_back(Action::HandoverDone);
        }
    }

    fn update_priority(&mut self, now: Instant) {
        let new = effective_priority(self.cfg.priority, self.priority_offset);
        if new == self.priority {
            return;
        }
        self.priority = new;
        if let Phase::Master(m) = &mut self.phase {
            m.adver_timer = after(now, self.cfg.adver_interval);
            self.send_advert(new);
        }
    }

    /// The interval an advert carries, as a Duration.
    fn advert_interval(&self, adv: &Advert) -> Duration {
        if adv.version == Version::V2 {
            Duration::from_secs(u64::from(adv.interval_cs))
        } else {
            Duration::from_millis(u64::from(adv.interval_cs) * 10)
        }
    }

    /// Our Advertisement_Interval in the advert's unit.
    fn interval_field(&self) -> u16 {
        if self.cfg.version == Version::V2 {
            self.cfg.adver_interval.as_secs().clamp(1, 255) as u16
        } else {
            let cs = self.cfg.adver_interval.as_millis() / 10;
            cs.clamp(1, u128::from(packet::MAX_INTERVAL_CS)) as u16
        }
    }

    fn send_advert(&mut self, priority: u8) {
        let adv = Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: self.interval_field(),
            addrs: self.cfg.vips.clone(),
            auth: if self.cfg.version == Version::V2 {
                self.cfg.password
            } else {
                None
            },
        };
        let src = self.cfg.primary;
        let group = match src {
            IpAddr::V4(_) => IpAddr::V4(MCAST_V4),
            IpAddr::V6(_) => IpAddr::V6(MCAST_V6),
        };
        let dsts: Vec<IpAddr> = if self.cfg.unicast_peers.is_empty() {
            vec![group]
        } else {
            self.cfg.unicast_peers.clone()
        };
        if priority == 0 {
            self.counters.tx_priority_zero += 1;
        }
        for dst in dsts {
            let payload = packet::encode(&adv, src, dst, self.cfg.checksum);
            self.counters.tx_adverts += 1;
            self.actions.push_back(Action::Send { dst, payload });
        }
    }

    fn drop_packet(&mut self, reason: DropReason) {
        *self.counters.drops.entry(reason).or_insert(0) += 1;
    }

    /// Every receive check (RFC 5798 section 7.1 and the list); `None` = dropped
    /// and counted.
    fn check(&mut self, rx: Received<'_>) -> Option<Advert> {
        let cfg = &self.cfg;
        let reason = if self.priority == 255 && rx.payload.get(1) == Some(&cfg.vrid) {
            // RFC 5798 section 7.1 (RFC 9568 likewise): the receiver "MUST verify that the
            // VRID is configured on the receiving interface and the local router is not the
            // IPvX address owner (Priority = 255)", else discard. The owner is master for
            // good; nothing an advert says could change that. Counted like every drop.
            Some(DropReason::Owner)
        } else if rx.ttl != VRRP_TTL {
            Some(DropReason::Ttl)
        } else if rx.src.is_ipv6() != cfg.primary.is_ipv6() {
            Some(DropReason::Family)
        } else if rx.payload.len() >= 2 && rx.payload[1] != cfg.vrid {
            Some(DropReason::Vrid)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.drop_packet(reason);
            return None;
        }
        let adv = match packet::decode(rx.payload, rx.src, rx.dst, cfg.checksum) {
            Ok(adv) => adv,
            Err(e) => {
                self.drop_packet(e.reason());
                return None;
            }
        };
        let cfg = &self.cfg;
        let reason = if adv.version != cfg.version {
            Some(DropReason::Version)
        } else if rx.src == cfg.primary {
            // Our own advert, looped back by multicast.
            Some(DropReason::Own)
        } else if cfg
            .allowed_sources
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(&rx.src))
        {
            // Only the explicit allow-list: a unicast peer may send from another address
            // than the one we send to (IPv6: from its link-local address).
            Some(DropReason::Source)
        } else if adv.version == Version::V2 && adv.auth != cfg.password {
            // RFC 2338 section 7.1: authentication type and data must match.
            Some(DropReason::Auth)
        } else if adv.version == Version::V2 && adv.interval_cs != self.interval_field() {
            // RFC 3768 section 7.1: the Adver Interval must match ours.
            Some(DropReason::Interval)
        } else if adv.interval_cs == 0 {
            Some(DropReason::Interval)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.drop_packet(reason);
            return None;
        }
        Some(adv)
    }
}

/// Keep the timers sane whatever the caller passes (the config loader validates, but the
/// core must never spin): the advertisement interval within what the packet can carry
/// (v3: 10 ms ..= 40.95 s; v2: 1 ..= 255 s) and a non-zero GARP interval.
fn sanitize(mut cfg: Config) -> Config {
    let (lo, hi) = if cfg.version == Version::V2 {
        (Duration::from_secs(1), Duration::from_secs(255))
    } else {
        (Duration::from_millis(10), Duration::from_millis(40_950))
    };
    cfg.adver_interval = cfg.adver_interval.clamp(lo, hi);
    cfg.garp_interval = cfg.garp_interval.max(Duration::from_millis(1));
    cfg
}

/// Same addresses, in any order.
fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// When the next announcement is due: the initial repeats every garp_interval, then the
/// periodic refresh (off when zero).
fn next_garp(cfg: &Config, now: Instant, left: u32) -> Option<Instant> {
    if left > 0 {
        after(now, cfg.garp_interval)
    } else if cfg.garp_refresh.is_zero() {
        None
    } else {
        after(now, cfg.garp_refresh)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::packet::ChecksumMode;

    fn cfg(priority: u8) -> Config {
        Config {
            vrid: 9,
            version: Version::V3,
            priority,
            adver_interval: Duration::ZERO,
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept_mode: true,
            primary: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)),
            vips: vec![IpAddr::V4(Ipv4Addr::new(10, 9, 0, 100))],
            checksum: ChecksumMode::Keepalived,
            password: None,
            allowed_sources: None,
            unicast_peers: Vec::new(),
            garp_repeat: 5,
            garp_interval: Duration::ZERO,
            garp_refresh: Duration::ZERO,
            handover_timeout: Duration::ZERO,
            release_linger: Duration::ZERO,
            drain_established: Duration::ZERO,
        }
    }

    #[test]
    fn zero_intervals_never_spin() {
        let now = Instant::now();
        let mut inst = Instance::new(cfg(255), now);
        inst.start(now);
        assert_eq!(inst.state(), State::Master);
        assert_eq!(inst.config().adver_interval, Duration::from_millis(10));
        let mut t = now;
        for _ in 0..100 {
            inst.handle_timeout(t);
            let next = inst.poll_timeout().unwrap();
            assert!(next > t);
            t = next;
        }
        while inst.poll_action().is_some() {}
        // Zero handover timeout: the VIP goes at the next timeout, then HandoverDone.
        inst.shutdown(t);
        assert!(inst.holds_vips());
        inst.handle_timeout(t);
        let actions: Vec<Action> = std::iter::from_fn(|| inst.poll_action()).collect();
        assert!(actions.contains(&Action::RemoveVips));
        assert_eq!(actions.last(), Some(&Action::HandoverDone));
        assert!(inst.is_finished());
        assert_eq!(inst.poll_timeout(), None);
    }

    #[test]
    fn becoming_master_adds_then_announces_then_sends() {
        let now = Instant::now();
        let mut inst = Instance::new(cfg(255), now);
        inst.start(now);
        let actions: Vec<Action> = std::iter::from_fn(|| inst.poll_action()).collect();
        assert!(
            matches!(actions[0], Action::RemoveVips),
            "stale VIP cleanup first"
        );
        // Make-before-break, in execution order: hold, announce, then advertise.
        assert_eq!(actions[1], Action::AddVips);
        assert_eq!(actions[2], Action::Announce);
        assert!(matches!(actions[3], Action::Send { .. }));
        assert_eq!(
            actions[4],
            Action::StateChanged {
                from: State::Initialize,
                to: State::Master,
                cause: Cause::Startup
            }
        );
    }
}
