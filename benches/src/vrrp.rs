//! Helpers for the vrrpd vs keepalived benchmark (`benches/vrrpd_vs_keepalived.rs`), some
//! also used by `benches/failover_with_proxy.rs`: the probe record and its analysis around
//! one event, summaries, the RFC timers, the phase of each run, the keepalived config, and
//! per-process-tree memory and CPU from /proc. Pure functions are unit-tested below; the namespaces, daemons and
//! probing live in the bench itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One TCP probe of the VIP from the client: connect, read the one byte (the answering
/// node's number) that every node's listener writes, close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// When the connect was started.
    pub sent: Instant,
    /// When the byte arrived, or the probe gave up (timeout, refused, reset).
    pub done: Instant,
    /// The node that answered (1-based), `None` if the probe failed.
    pub answer: Option<u8>,
}

/// What the probes saw around one event (a cable cut or a SIGTERM on the master).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOutcome {
    /// Event to the answer of the first probe answered by a node other than the old master
    /// after which no probe failed in the window: "the VIP answers again, from the new
    /// master". `None` if that never happened in the window.
    pub failover: Option<Duration>,
    /// The node that answered then.
    pub new_node: Option<u8>,
    /// Event to the first successful probe after the last failed one in the window: "the
    /// VIP answers again" (zero when no probe failed; `None` when none succeeded after).
    pub answers_again: Option<Duration>,
    /// Failed probes among those sent in the window.
    pub failed: usize,
    /// Probes sent in the window.
    pub sent: usize,
    /// From the first failed probe's start to the start of the first successful probe
    /// after the last failed one (zero when nothing failed): how long the VIP did not
    /// answer, to within one probe interval.
    pub outage: Duration,
}

/// Analyse the probes around `event`. The window runs from `event - before` to
/// `tail` after the start of the first probe answered by a new node (or to the last probe
/// when that never happened).
pub fn analyse(
    probes: &[Probe],
    event: Instant,
    old: u8,
    before: Duration,
    tail: Duration,
) -> EventOutcome {
    let mut p: Vec<Probe> = probes
        .iter()
        .copied()
        .filter(|p| p.sent + before >= event)
        .collect();
    p.sort_by_key(|p| p.sent);
    let first_new = p
        .iter()
        .find(|x| x.sent >= event && x.answer.is_some_and(|a| a != old))
        .map(|x| x.sent);
    if let Some(f) = first_new {
        p.retain(|x| x.sent <= f + tail);
    }
    let failed: Vec<&Probe> = p.iter().filter(|x| x.answer.is_none()).collect();
    let last_fail = failed.last().map(|x| x.sent);
    // The first good answer by a new node with no failure after it.
    let recovered = p.iter().find(|x| {
        x.sent >= event
            && x.answer.is_some_and(|a| a != old)
            && last_fail.is_none_or(|lf| x.sent > lf)
    });
    let outage = match (failed.first(), last_fail) {
        (Some(first), Some(lf)) => p
            .iter()
            .find(|x| x.sent > lf && x.answer.is_some())
            .map_or(Duration::MAX, |ok| ok.sent.duration_since(first.sent)),
        _ => Duration::ZERO,
    };
    let answers_again = match last_fail {
        None => Some(Duration::ZERO),
        Some(lf) => p
            .iter()
            .find(|x| x.sent > lf && x.answer.is_some())
            .map(|x| x.done.saturating_duration_since(event)),
    };
    EventOutcome {
        failover: recovered.map(|r| r.done.saturating_duration_since(event)),
        answers_again,
        new_node: recovered.and_then(|r| r.answer),
        failed: failed.len(),
        sent: p.len(),
        outage,
    }
}

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
    pub n: usize,
}

/// The summary of `samples` (`None` if empty). An even count takes the mean of the two
/// middle samples.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2,
    };
    Some(Summary {
        median,
        min: s[0],
        max: s[n - 1],
        n,
    })
}

/// `ppid` of a `/proc/PID/stat` line (the field after the state; the command name may hold
/// spaces and parentheses, so fields are counted from the last ')').
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and every process descended from it, from a map pid -> ppid.
pub fn descendants(root: u32, parents: &BTreeMap<u32, u32>) -> Vec<u32> {
    let mut out = vec![root];
    // Bounded: each round adds only new pids, at most parents.len() rounds.
    for _ in 0..=parents.len() {
        let before = out.len();
        for (&pid, &ppid) in parents {
            if out.contains(&ppid) && !out.contains(&pid) {
                out.push(pid);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out
}

/// `root` and its descendants, as /proc shows them now.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .as_deref()
                .and_then(parse_ppid)
            {
                parents.insert(pid, ppid);
            }
        }
    }
    descendants(root, &parents)
}

/// A `Key:   N kB` line of /proc/PID/status or smaps_rollup, in KiB.
pub fn parse_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// The first field of /proc/PID/task/TID/schedstat: nanoseconds spent on a CPU.
pub fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Memory and CPU of a process tree at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSample {
    pub processes: usize,
    /// Sum of VmRSS (shared pages counted once per process).
    pub rss_kib: u64,
    /// Sum of Pss from smaps_rollup (shared pages split between the sharers).
    pub pss_kib: u64,
    /// Sum of utime + stime, in USER_HZ ticks (10 ms).
    pub cpu_ticks: u64,
    /// Sum over every thread of schedstat run time, in nanoseconds.
    pub run_ns: u64,
}

/// Sample `root`'s process tree now. Processes that vanish while being read are skipped.
pub fn sample_tree(root: u32) -> TreeSample {
    let mut s = TreeSample::default();
    for pid in process_tree(root) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        s.processes += 1;
        s.rss_kib += parse_kib(&status, "VmRSS").unwrap_or(0);
        s.pss_kib += std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|t| parse_kib(&t, "Pss"))
            .unwrap_or(0);
        s.cpu_ticks += crate::cpu_time(pid)
            .map_or(0, |d| u64::try_from(d.as_millis() / 10).unwrap_or(u64::MAX));
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let p = t.path().join("schedstat");
                s.run_ns += std::fs::read_to_string(p)
                    .ok()
                    .as_deref()
                    .and_then(parse_schedstat_ns)
                    .unwrap_or(0);
            }
        }
    }
    s
}

/// Skew_Time (RFC 5798 6.1) for a priority at an advertisement interval.
pub fn skew(interval: Duration, priority: u8) -> Duration {
    interval * (256 - u32::from(priority)) / 256
}

/// Master_Down_Interval: 3 x interval + Skew_Time.
pub fn master_down(interval: Duration, priority: u8) -> Duration {
    interval * 3 + skew(interval, priority)
}

/// Offset into the advertisement interval for run `k` (golden-ratio sequence: every run
/// at a different phase, spread evenly over the interval, the same sequence for every
/// implementation).
pub fn phase(interval: Duration, k: usize) -> Duration {
    #[expect(clippy::cast_precision_loss, reason = "a run number")]
    let frac = (k as f64 * 0.618_033_988_75).fract();
    interval.mul_f64(frac)
}

/// The bench's subnet (10.88.0.0/24): nodes .11-.13, client .200, VIP .100.
pub const NET: &str = "10.88.0";
pub const VRID: u8 = 88;
/// n1, n2, n3 (as in the reference lab).
pub const PRIORITIES: [u8; 3] = [200, 190, 180];

/// vrrpd's cluster file for the bench: VRRPv3, lbd tracking off (no lbd runs).
pub fn vrrpd_config(interval: Duration) -> String {
    let mut t = format!(
        "[cluster]\nname = \"vrbench\"\ndomain = \"vrbench.test\"\n\n\
         [vip]\naddress = \"{NET}.100/24\"\n\n\
         [vrrp]\nvrid = {VRID}\nversion = 3\ninterval = \"{}ms\"\n\n\
         [vrrp.track]\nlbd = \"off\"\n",
        interval.as_millis()
    );
    for (i, p) in PRIORITIES.iter().enumerate() {
        let k = i + 1;
        let _ = write!(
            t,
            "\n[[nodes]]\nname = \"n{k}\"\naddress = \"{NET}.1{k}\"\nrole = \"server\"\npriority = {p}\n"
        );
    }
    t
}

/// keepalived's equivalent: VRRPv3, same VRID, interval and priorities, preempt on (the
/// default), every node starting as BACKUP, keepalived's own GARP defaults.
pub fn keepalived_config(interval: Duration, i: usize) -> String {
    keepalived_config_on(NET, VRID, interval, i)
}

/// [`keepalived_config`] on another bench's subnet (`net` = the first three octets; the
/// VIP is `.100/24`) and VRID: node `i` (0-based) gets `PRIORITIES[i]`.
pub fn keepalived_config_on(net: &str, vrid: u8, interval: Duration, i: usize) -> String {
    let secs = interval.as_secs_f64();
    format!(
        "global_defs {{\n    router_id n{k}\n    vrrp_version 3\n}}\n\
         vrrp_instance VI {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    \
         priority {p}\n    advert_int {secs}\n    virtual_ipaddress {{\n        {net}.100/24 dev eth0\n    }}\n}}\n",
        k = i + 1,
        p = PRIORITIES[i],
    )
}

/// `1732428000.123456 IP 10.88.0.11 > 224.0.0.18: VRRPv3, Advertisement, vrid 88, prio
/// 200, intvl 100cs, length 12`.
pub fn parse_tcpdump_advert(line: &str) -> Option<(f64, IpAddr, u8)> {
    let mut w = line.split_whitespace();
    let at: f64 = w.next()?.parse().ok()?;
    if w.next()? != "IP" {
        return None;
    }
    let src: IpAddr = w.next()?.parse().ok()?;
    let prio: u8 = line
        .split("prio ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((at, src, prio))
}

/// Maps `Instant`s to Unix time (tcpdump's clock), from one reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub inst: Instant,
    pub unix: f64,
}

impl Clock {
    pub fn now() -> Clock {
        let inst = Instant::now();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Clock { inst, unix }
    }

    /// The `Instant` of Unix time `t` (the inverse of [`Clock::unix`]).
    pub fn instant(&self, t: f64) -> Instant {
        let d = Duration::from_secs_f64((t - self.unix).abs());
        if t >= self.unix {
            self.inst + d
        } else {
            self.inst.checked_sub(d).unwrap_or(self.inst)
        }
    }

    pub fn unix(&self, i: Instant) -> f64 {
        if i >= self.inst {
            self.unix + i.duration_since(self.inst).as_secs_f64()
        } else {
            self.unix - self.inst.duration_since(i).as_secs_f64()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Probes every 10 ms from t0 - 100 ms, answered per `who(i)`, 1 ms round trip.
    fn probes(t0: Instant, n: usize, who: impl Fn(usize) -> Option<u8>) -> Vec<Probe> {
        (0..n)
            .map(|i| {
                let sent = t0 - ms(100) + ms(10 * i as u64);
                let answer = who(i);
                let done = if answer.is_some() {
                    sent + ms(1)
                } else {
                    sent + ms(300)
                };
                Probe { sent, done, answer }
            })
            .collect()
    }

    #[test]
    fn link_loss_outage_is_measured_to_the_new_masters_first_answer() {
        let t0 = Instant::now() + ms(1000);
        // Index 10 is sent at the event; 10..=39 fail; 40.. answered by node 2.
        let p = probes(t0, 100, |i| match i {
            0..=9 => Some(1),
            10..=39 => None,
            _ => Some(2),
        });
        let o = analyse(&p, t0, 1, ms(50), ms(200));
        assert_eq!(o.failover, Some(ms(301)));
        assert_eq!(o.answers_again, Some(ms(301)));
        assert_eq!(o.new_node, Some(2));
        assert_eq!(o.failed, 30);
        assert_eq!(o.outage, ms(300));
        // Window: 5 before the event (t0-50..t0), the rest up to 200 ms after index 40.
        assert_eq!(o.sent, 5 + 30 + 21);
    }

    #[test]
    fn seamless_handover_has_no_failure_and_counts_the_handover_time() {
        let t0 = Instant::now() + ms(1000);
        let p = probes(t0, 60, |i| if i < 13 { Some(1) } else { Some(3) });
        let o = analyse(&p, t0, 1, ms(50), ms(100));
        assert_eq!(o.failover, Some(ms(31)));
        assert_eq!(o.answers_again, Some(Duration::ZERO));
        assert_eq!(o.new_node, Some(3));
        assert_eq!(o.failed, 0);
        assert_eq!(o.outage, Duration::ZERO);
    }

    #[test]
    fn a_failure_after_the_new_master_answered_moves_the_recovery() {
        let t0 = Instant::now() + ms(1000);
        let p = probes(t0, 60, |i| match i {
            12 => Some(2),
            13 => None,
            _ if i < 12 => Some(1),
            _ => Some(2),
        });
        let o = analyse(&p, t0, 1, ms(50), ms(100));
        assert_eq!(o.failover, Some(ms(41)));
        assert_eq!(o.answers_again, Some(ms(41)));
        assert_eq!(o.failed, 1);
        assert_eq!(o.outage, ms(10));
    }

    #[test]
    fn no_new_master_means_no_failover() {
        let t0 = Instant::now() + ms(1000);
        let p = probes(t0, 40, |i| if i < 10 { Some(1) } else { None });
        let o = analyse(&p, t0, 1, ms(50), ms(100));
        assert_eq!(o.failover, None);
        assert_eq!(o.answers_again, None);
        assert_eq!(o.new_node, None);
        assert_eq!(o.failed, 30);
        assert_eq!(o.outage, Duration::MAX);
    }

    #[test]
    fn summary_median_min_max() {
        let s = summarize(&[ms(5), ms(1), ms(3)]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (ms(3), ms(1), ms(5), 3));
        let s = summarize(&[ms(4), ms(1), ms(2), ms(3)]).unwrap();
        assert_eq!(s.median, Duration::from_micros(2500));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn proc_parsers() {
        assert_eq!(
            parse_ppid("77 (keep alived (x)) S 42 77 77 0 -1 4194560"),
            Some(42)
        );
        let status = "Name:\tkeepalived\nVmHWM:\t  9000 kB\nVmRSS:\t    8816 kB\n";
        assert_eq!(parse_kib(status, "VmRSS"), Some(8816));
        assert_eq!(parse_kib(status, "VmHWM"), Some(9000));
        assert_eq!(parse_kib(status, "Pss"), None);
        assert_eq!(parse_schedstat_ns("123456 789 10\n"), Some(123_456));
        let parents: BTreeMap<u32, u32> = [(10, 1), (11, 10), (12, 11), (20, 1), (13, 10)].into();
        let mut d = descendants(10, &parents);
        d.sort_unstable();
        assert_eq!(d, vec![10, 11, 12, 13]);
    }

    #[test]
    fn our_own_tree_is_sampled() {
        let s = sample_tree(std::process::id());
        assert!(s.processes >= 1);
        assert!(s.rss_kib > 0);
    }

    #[test]
    fn rfc_timers() {
        assert_eq!(skew(ms(1000), 190), Duration::from_nanos(257_812_500));
        assert_eq!(master_down(ms(100), 190), Duration::from_nanos(325_781_250));
    }

    #[test]
    fn tcpdump_vrrp_lines() {
        let l = "1732428000.123456 IP 10.88.0.11 > 224.0.0.18: VRRPv3, Advertisement, vrid 88, prio 200, intvl 100cs, length 12";
        let (at, src, prio) = parse_tcpdump_advert(l).unwrap();
        assert!((at - 1_732_428_000.123_456).abs() < 1e-6);
        assert_eq!(src, IpAddr::from([10, 88, 0, 11]));
        assert_eq!(prio, 200);
        assert!(parse_tcpdump_advert("tcpdump: listening on eth0").is_none());
    }

    #[test]
    fn phases_are_spread_over_the_interval() {
        let i = ms(100);
        assert_eq!(phase(i, 0), Duration::ZERO);
        let mut p: Vec<Duration> = (0..10).map(|k| phase(i, k)).collect();
        assert!(p.iter().all(|x| *x < i));
        p.sort();
        // Ten runs: no two phases within 3 ms, none of the gaps over 20 ms.
        assert!(p
            .windows(2)
            .all(|w| w[1] - w[0] > ms(3) && w[1] - w[0] < ms(20)));
    }

    #[test]
    fn clock_maps_instants_both_ways() {
        let c = Clock::now();
        let later = c.inst + Duration::from_millis(1500);
        assert!((c.unix(later) - c.unix - 1.5).abs() < 1e-6);
        if let Some(earlier) = c.inst.checked_sub(Duration::from_millis(500)) {
            assert!((c.unix - c.unix(earlier) - 0.5).abs() < 1e-6);
        }
        let back = c.instant(c.unix + 0.25);
        let d = back.duration_since(c.inst).as_secs_f64();
        assert!((d - 0.25).abs() < 1e-6, "{d}");
    }

    #[test]
    fn configs_carry_the_same_settings() {
        let v = vrrpd_config(Duration::from_millis(100));
        assert!(v.contains("vrid = 88") && v.contains("interval = \"100ms\""));
        assert!(v.contains("priority = 190"));
        let k = keepalived_config(Duration::from_millis(100), 1);
        assert!(k.contains("vrrp_version 3") && k.contains("advert_int 0.1"));
        assert!(k.contains("virtual_router_id 88") && k.contains("priority 190"));
        assert!(!k.contains("nopreempt"));
        assert!(keepalived_config(Duration::from_secs(1), 0).contains("advert_int 1\n"));
        let o = keepalived_config_on("10.91.0", 91, Duration::from_millis(200), 2);
        assert!(o.contains("virtual_router_id 91") && o.contains("10.91.0.100/24 dev eth0"));
        assert!(o.contains("priority 180") && o.contains("advert_int 0.2"));
    }
}
