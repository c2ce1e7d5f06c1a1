//! The simulated network: N routers (each a real [`Instance`]) on one virtual clock, one
//! shared segment, a seeded PRNG, and knobs for loss, delay and partitions. Nothing here
//! reads the wall clock except to pick the `Instant` the virtual clock starts from.
#![allow(unreachable_pub)] // `pub` within the test crate

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use vrrp_proto::core::{
    master_down_interval, Action, Cause, Config, Instance, PeerLoss, Received, State,
};
use vrrp_proto::packet::{ChecksumMode, Version};

/// splitmix64: tiny, seedable, good enough to pick events.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_0f7a_11d5_u64)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability p.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    /// Uniform in 0..=max.
    pub fn duration(&mut self, max: Duration) -> Duration {
        let n = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.below(n.saturating_add(1)))
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Network impairments; change them at any time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Knobs {
    /// Probability each delivery (per receiver) is lost.
    pub loss: f64,
    /// Each delivery is delayed uniformly in 0..=max_delay (FIFO per sender and receiver).
    pub max_delay: Duration,
}

/// One router: its configuration survives restarts; the instance does not.
pub struct Router {
    pub cfg: Config,
    /// `None`: the process is not running (killed, or exited after a graceful stop).
    pub inst: Option<Instance>,
    /// What the shell would have on the interface: AddVips minus RemoveVips.
    pub holds_vip: bool,
    pub announces: u64,
    pub sent: u64,
    pub handover_done: bool,
    /// The shell cannot install the VIPs (as without CAP_NET_ADMIN).
    pub vip_fails: bool,
    /// Every `PeerLost` the core emitted: when, about whom, why.
    pub peers_lost: Vec<(Duration, IpAddr, PeerLoss)>,
    /// What the shell would have on `lo` for established flows: ParkVips minus UnparkVips
    /// (it outlives the process, as on a real node).
    pub parked: bool,
    /// Steer minus Unsteer: the previous master this router forwards unknown flows to.
    pub steering: Option<IpAddr>,
    /// Forwarded to as well, since (other masters heard while steering).
    pub steering_also: Vec<IpAddr>,
    /// Every Steer: when, to whom, and whether this router already held the VIP (it must
    /// not: the forwarding must be in place before the first client arrives).
    pub steers: Vec<(Duration, IpAddr, bool)>,
    /// `PeerLost` executed while this router already held the VIP: its proxy heard of the
    /// dead node after clients could reach it (the core must say it before `AddVips`).
    pub lost_after_vip: usize,
}

impl Router {
    pub fn state(&self) -> Option<State> {
        self.inst.as_ref().map(Instance::state)
    }

    pub fn addr(&self) -> IpAddr {
        self.cfg.primary
    }
}

/// A transition as the shell saw it.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    pub at: Duration,
    pub router: usize,
    pub from: State,
    pub to: State,
    pub cause: Cause,
}

struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    src: IpAddr,
    dst: IpAddr,
    payload: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Settings shared by a simulated cluster; per-router fields are filled by [`Net::new`].
#[derive(Debug, Clone)]
pub struct Template {
    pub version: Version,
    pub interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub ipv6: bool,
    pub unicast: bool,
    pub password: Option<[u8; 8]>,
    pub checksum: Vec<ChecksumMode>,
    pub garp_repeat: u32,
    pub garp_refresh: Duration,
    pub handover_timeout: Option<Duration>,
    pub drain_established: Duration,
}

impl Template {
    pub fn v3(interval: Duration) -> Template {
        Template {
            version: Version::V3,
            interval,
            preempt: true,
            preempt_delay: Duration::ZERO,
            ipv6: false,
            unicast: false,
            password: None,
            checksum: vec![ChecksumMode::Keepalived],
            garp_repeat: 3,
            garp_refresh: Duration::ZERO,
            handover_timeout: None,
            drain_established: Duration::ZERO,
        }
    }
}

pub fn router_addr(i: usize, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i as u16 + 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 31, 0, i as u8 + 1))
    }
}

pub fn vip(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x31, 0, 0, 0, 0, 0, 0x100))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 31, 0, 100))
    }
}

pub struct Net {
    pub base: Instant,
    pub now: Instant,
    pub rng: Rng,
    pub knobs: Knobs,
    pub routers: Vec<Router>,
    /// Partition group per router: only routers in the same group hear each other.
    pub group: Vec<u8>,
    pub changes: Vec<Change>,
    queue: BinaryHeap<Reverse<InFlight>>,
    /// Per (from, to) link: the latest scheduled arrival. One segment does not reorder
    /// one sender's packets, so delays never let a later packet overtake an earlier one.
    last_arrival: Vec<Vec<Instant>>,
    seq: u64,
    steps: u64,
    /// Hard bound on events per run (catches busy loops).
    pub max_steps: u64,
}

impl Net {
    /// Routers with these base priorities, configured from `t`; not started.
    pub fn new(seed: u64, t: &Template, priorities: &[u8]) -> Net {
        let n = priorities.len();
        let addrs: Vec<IpAddr> = (0..n).map(|i| router_addr(i, t.ipv6)).collect();
        let mdi = master_down_interval(1, t.interval);
        let routers = priorities
            .iter()
            .enumerate()
            .map(|(i, &priority)| {
                let cfg = Config {
                    vrid: 31,
                    version: t.version,
                    priority,
                    adver_interval: t.interval,
                    preempt: t.preempt,
                    preempt_delay: t.preempt_delay,
                    accept_mode: true,
                    primary: addrs[i],
                    vips: vec![vip(t.ipv6)],
                    checksum: t.checksum[i % t.checksum.len()],
                    password: t.password,
                    allowed_sources: Some(addrs.clone()),
                    unicast_peers: if t.unicast {
                        addrs.iter().copied().filter(|a| *a != addrs[i]).collect()
                    } else {
                        Vec::new()
                    },
                    garp_repeat: t.garp_repeat,
                    garp_interval: t.interval / 4,
                    garp_refresh: t.garp_refresh,
                    handover_timeout: t.handover_timeout.unwrap_or(mdi + t.interval * 2),
                    release_linger: vrrp_proto::core::RELEASE_LINGER,
                    drain_established: t.drain_established,
                };
                Router {
                    cfg,
                    inst: None,
                    holds_vip: false,
                    announces: 0,
                    sent: 0,
                    handover_done: false,
                    vip_fails: false,
                    peers_lost: Vec::new(),
                    parked: false,
                    steering: None,
                    steering_also: Vec::new(),
                    steers: Vec::new(),
                    lost_after_vip: 0,
                }
            })
            .collect();
        let base = Instant::now();
        Net {
            base,
            now: base,
            rng: Rng::new(seed),
            knobs: Knobs::default(),
            routers,
            group: vec![0; n],
            changes: Vec::new(),
            queue: BinaryHeap::new(),
            last_arrival: vec![vec![base; n]; n],
            seq: 0,
            steps: 0,
            max_steps: 2_000_000,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// Start (or restart, as a fresh process) router i.
    pub fn start(&mut self, i: usize) {
        let mut inst = Instance::new(self.routers[i].cfg.clone(), self.now);
        inst.start(self.now);
        let r = &mut self.routers[i];
        r.inst = Some(inst);
        r.handover_done = false;
        self.drain(i);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.routers.len() {
            self.start(i);
        }
    }

    /// kill -9 of the whole host: the process and its addresses vanish.
    pub fn kill(&mut self, i: usize) {
        let r = &mut self.routers[i];
        r.inst = None;
        r.holds_vip = false;
    }

    /// Apply `f` to router i's instance (if running) and process what it emits.
    pub fn with<F: FnOnce(&mut Instance, Instant)>(&mut self, i: usize, f: F) {
        let now = self.now;
        if let Some(inst) = self.routers[i].inst.as_mut() {
            f(inst, now);
            self.drain(i);
        }
    }

    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b]
    }

    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
    }

    pub fn live(&self, i: usize) -> bool {
        self.routers[i].inst.is_some()
    }

    pub fn masters(&self) -> Vec<usize> {
        (0..self.routers.len())
            .filter(|&i| self.routers[i].state() == Some(State::Master))
            .collect()
    }

    pub fn vip_holders(&self) -> Vec<usize> {
        (0..self.routers.len())
            .filter(|&i| self.routers[i].holds_vip)
            .collect()
    }

    /// Routers that may be master: running, started, not faulted, not in maintenance,
    /// not shutting down.
    pub fn candidates(&self) -> Vec<usize> {
        (0..self.routers.len())
            .filter(|&i| {
                self.routers[i].inst.as_ref().is_some_and(|inst| {
                    let st = inst.status(self.now);
                    !st.fault && !st.maintenance && inst.state() != State::Initialize
                })
            })
            .collect()
    }

    pub fn priority(&self, i: usize) -> u8 {
        self.routers[i]
            .inst
            .as_ref()
            .map_or(0, |inst| inst.priority())
    }

    fn drain(&mut self, i: usize) {
        let at = self.elapsed();
        while let Some(action) = self.routers[i]
            .inst
            .as_mut()
            .and_then(Instance::poll_action)
        {
            match action {
                Action::Send { dst, payload } => {
                    self.routers[i].sent += 1;
                    self.transmit(i, dst, payload);
                }
                Action::AddVips => {
                    let now = self.now;
                    let r = &mut self.routers[i];
                    if let Some(inst) = r.inst.as_mut() {
                        if r.vip_fails {
                            inst.vip_install_failed(
                                now,
                                "simulated: Operation not permitted".into(),
                            );
                        } else {
                            r.holds_vip = true;
                            inst.vip_installed(now);
                        }
                    }
                }
                Action::RemoveVips => self.routers[i].holds_vip = false,
                Action::Announce => self.routers[i].announces += 1,
                Action::StateChanged { from, to, cause } => self.changes.push(Change {
                    at,
                    router: i,
                    from,
                    to,
                    cause,
                }),
                Action::PeerLost { peer, why } => {
                    let r = &mut self.routers[i];
                    r.lost_after_vip += usize::from(r.holds_vip);
                    r.peers_lost.push((at, peer, why));
                }
                Action::ParkVips => {
                    let r = &mut self.routers[i];
                    r.holds_vip = false;
                    r.parked = true;
                }
                Action::UnparkVips => self.routers[i].parked = false,
                Action::Steer { to } => {
                    let r = &mut self.routers[i];
                    r.steers.push((at, to, r.holds_vip));
                    match r.steering {
                        None => r.steering = Some(to),
                        Some(first) if first != to && !r.steering_also.contains(&to) => {
                            r.steering_also.push(to);
                        }
                        Some(_) => {}
                    }
                }
                Action::Unsteer => {
                    self.routers[i].steering = None;
                    self.routers[i].steering_also.clear();
                }
                Action::HandoverDone => {
                    // The process exits.
                    let r = &mut self.routers[i];
                    assert!(!r.holds_vip, "HandoverDone while still holding the VIP");
                    r.handover_done = true;
                    r.inst = None;
                }
            }
        }
    }

    fn transmit(&mut self, from: usize, dst: IpAddr, payload: Vec<u8>) {
        let src = self.routers[from].addr();
        let multicast = dst.is_multicast();
        for to in 0..self.routers.len() {
            let to_me = to == from;
            let addressed = if multicast {
                true // the segment, including our own loopback
            } else {
                self.routers[to].addr() == dst
            };
            if !addressed || !self.connected(from, to) {
                continue;
            }
            let (delay, lost) = if to_me {
                (Duration::ZERO, false)
            } else {
                let lost = self.rng.chance(self.knobs.loss);
                (self.rng.duration(self.knobs.max_delay), lost)
            };
            if lost {
                continue;
            }
            let at = (self.now + delay).max(self.last_arrival[from][to]);
            self.last_arrival[from][to] = at;
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at,
                seq: self.seq,
                to,
                src,
                dst,
                payload: payload.clone(),
            }));
        }
    }

    /// The next event: (time, Some(router) for a timer / None for a packet).
    fn next_event(&self) -> Option<(Instant, Option<usize>)> {
        let mut best: Option<(Instant, Option<usize>)> = self.queue.peek().map(|p| (p.0.at, None));
        for (i, r) in self.routers.iter().enumerate() {
            if let Some(t) = r.inst.as_ref().and_then(Instance::poll_timeout) {
                if best.is_none_or(|(b, _)| t < b) {
                    best = Some((t, Some(i)));
                }
            }
        }
        best
    }

    /// Process events up to `until` (inclusive), calling `check` after each one.
    pub fn run_until_checked(&mut self, until: Instant, mut check: impl FnMut(&Net)) {
        while let Some((t, who)) = self.next_event() {
            if t > until {
                break;
            }
            self.steps += 1;
            assert!(
                self.steps < self.max_steps,
                "more than {} events: busy loop?",
                self.max_steps
            );
            assert!(t >= self.now, "time went backwards");
            self.now = t;
            match who {
                Some(i) => {
                    let now = self.now;
                    if let Some(inst) = self.routers[i].inst.as_mut() {
                        inst.handle_timeout(now);
                        if let Some(next) = inst.poll_timeout() {
                            assert!(next > now, "router {i}: deadline not after handle_timeout");
                        }
                    }
                    self.drain(i);
                }
                None => {
                    let Some(Reverse(p)) = self.queue.pop() else {
                        break;
                    };
                    let now = self.now;
                    if let Some(inst) = self.routers[p.to].inst.as_mut() {
                        inst.handle_packet(
                            now,
                            Received {
                                src: p.src,
                                dst: p.dst,
                                ttl: 255,
                                payload: &p.payload,
                            },
                        );
                    }
                    self.drain(p.to);
                }
            }
            for (i, r) in self.routers.iter().enumerate() {
                if let Some(inst) = &r.inst {
                    assert_eq!(r.holds_vip, inst.holds_vips(), "router {i} VIP bookkeeping");
                }
            }
            check(self);
        }
        if until > self.now {
            self.now = until;
        }
    }

    /// Events processed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until_checked(until, |_| {});
    }

    pub fn run_for_checked(&mut self, d: Duration, check: impl FnMut(&Net)) {
        let until = self.now + d;
        self.run_until_checked(until, check);
    }

    /// A one-line picture of the cluster, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!("t={:?} ", self.elapsed());
        for (i, r) in self.routers.iter().enumerate() {
            let st = match &r.inst {
                None => "down".to_string(),
                Some(inst) => {
                    let status = inst.status(self.now);
                    format!(
                        "{}{}{}",
                        inst.state(),
                        if status.fault { "/fault" } else { "" },
                        if status.maintenance { "/maint" } else { "" },
                    )
                }
            };
            s.push_str(&format!(
                "[{i} p{} g{} {st}{}] ",
                self.priority(i),
                self.group[i],
                if r.holds_vip { " VIP" } else { "" }
            ));
        }
        s
    }

    /// The last `n` transitions, for failure messages.
    pub fn recent_changes(&self, n: usize) -> String {
        self.changes
            .iter()
            .rev()
            .take(n)
            .rev()
            .map(|c| {
                format!(
                    "{:?} r{} {}->{} ({})\n",
                    c.at, c.router, c.from, c.to, c.cause
                )
            })
            .collect()
    }
}
