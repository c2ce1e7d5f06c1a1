//! The draft cluster both inputs fill in, and its normalisation to what cluster.toml allows.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use common::config::format_duration;

use super::Note;

#[derive(Debug, Clone)]
pub(super) struct DraftNode {
    pub(super) name: String,
    pub(super) address: IpAddr,
    pub(super) priority: Option<u8>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct DraftScript {
    pub(super) name: String,
    pub(super) command: String,
    pub(super) interval: Option<Duration>,
    pub(super) timeout: Option<Duration>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    /// `None`: fault.
    pub(super) weight: Option<i16>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct DraftVrrp {
    pub(super) vrid: Option<u8>,
    pub(super) version: Option<u8>,
    pub(super) interval: Option<Duration>,
    pub(super) preempt: Option<bool>,
    pub(super) preempt_delay: Option<Duration>,
    pub(super) accept_mode: Option<bool>,
    pub(super) password: Option<String>,
    pub(super) unicast: bool,
    pub(super) garp_repeat: Option<u32>,
    pub(super) garp_interval: Option<Duration>,
    pub(super) garp_refresh: Option<Duration>,
    pub(super) virtual_mac: bool,
    pub(super) notify: Option<String>,
    pub(super) track_lbd: Option<Option<i16>>,
    pub(super) track_link: Option<bool>,
    pub(super) scripts: Vec<DraftScript>,
}

#[derive(Debug, Clone)]
pub(super) enum DraftBackends {
    Servers(u16),
    List(Vec<(String, u32, bool)>),
}

#[derive(Debug, Clone, Default)]
pub(super) struct DraftCheck {
    pub(super) kind: Option<&'static str>,
    pub(super) path: Option<String>,
    pub(super) expect: Option<Vec<u16>>,
    pub(super) interval: Option<Duration>,
    pub(super) fast_interval: Option<Duration>,
    pub(super) timeout: Option<Duration>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
}

#[derive(Debug, Clone)]
pub(super) struct DraftService {
    pub(super) name: String,
    pub(super) listen: u16,
    pub(super) backends: DraftBackends,
    pub(super) balance: Option<&'static str>,
    pub(super) check: DraftCheck,
    pub(super) connect: Option<Duration>,
    pub(super) idle: Option<Duration>,
    pub(super) tunnel: Option<Duration>,
    pub(super) half_close: Option<Duration>,
    pub(super) retries: Option<u32>,
    pub(super) max_connections: Option<u32>,
    /// `proxy_protocol`: `"v1"` or `"v2"`.
    pub(super) proxy_protocol: Option<&'static str>,
    pub(super) proxy_tlvs: Vec<&'static str>,
    /// `accept_proxy`, trusting every source (as HAProxy did).
    pub(super) accept_proxy: bool,
}

#[derive(Debug, Default)]
pub(super) struct DraftStats {
    pub(super) listen: Option<u16>,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) refresh: Option<Duration>,
}

#[derive(Debug, Default)]
pub(super) struct Draft {
    pub(super) vip4: Option<(Ipv4Addr, u8)>,
    pub(super) vip6: Option<(Ipv6Addr, u8)>,
    pub(super) interface: Option<String>,
    pub(super) vrrp: DraftVrrp,
    pub(super) nodes: Vec<DraftNode>,
    pub(super) services: Vec<DraftService>,
    pub(super) stats: DraftStats,
    pub(super) max_connections: Option<u32>,
}

/// Bring VRRP timings into what cluster.toml allows, noting every change.
pub(super) fn normalize(d: &mut Draft, file: &str, notes: &mut Vec<Note>) {
    let mut note = |setting: &str, reason: String| {
        notes.push(Note {
            file: file.to_owned(),
            line: 0,
            setting: setting.to_owned(),
            reason,
        })
    };
    let v2 = d.vrrp.version == Some(2);
    if let Some(i) = d.vrrp.interval {
        let fixed = if v2 {
            let s = i.as_millis().div_ceil(1000).clamp(1, 255);
            Duration::from_secs(s as u64)
        } else {
            let cs = (i.as_millis() / 10).clamp(1, 4095);
            Duration::from_millis(cs as u64 * 10)
        };
        if fixed != i {
            note(
                "advert_int",
                format!(
                    "{} is not allowed for VRRPv{}: wrote {}",
                    format_duration(i),
                    if v2 { 2 } else { 3 },
                    format_duration(fixed)
                ),
            );
            d.vrrp.interval = Some(fixed);
        }
    }
    let clamp = |v: &mut Option<Duration>,
                 lo: Duration,
                 hi: Duration,
                 what: &str,
                 note: &mut dyn FnMut(&str, String)| {
        if let Some(x) = *v {
            let c = x.clamp(lo, hi);
            if c != x {
                note(
                    what,
                    format!(
                        "{} is outside {}..{}: wrote {}",
                        format_duration(x),
                        format_duration(lo),
                        format_duration(hi),
                        format_duration(c)
                    ),
                );
                *v = Some(c);
            }
        }
    };
    clamp(
        &mut d.vrrp.garp_interval,
        Duration::ZERO,
        Duration::from_secs(10),
        "garp_interval",
        &mut note,
    );
    clamp(
        &mut d.vrrp.garp_refresh,
        Duration::ZERO,
        Duration::from_secs(86_400),
        "garp_master_refresh",
        &mut note,
    );
    clamp(
        &mut d.vrrp.preempt_delay,
        Duration::ZERO,
        Duration::from_secs(1000),
        "preempt_delay",
        &mut note,
    );
    for s in &mut d.vrrp.scripts {
        let n = s.name.clone();
        clamp(
            &mut s.interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
            &format!("vrrp_script {n} interval"),
            &mut note,
        );
        clamp(
            &mut s.timeout,
            Duration::from_millis(10),
            Duration::from_secs(3600),
            &format!("vrrp_script {n} timeout"),
            &mut note,
        );
    }
    // Track script names must be unique.
    let mut seen = BTreeSet::new();
    d.vrrp.scripts.retain(|s| seen.insert(s.name.clone()));
    for s in &mut d.services {
        let c = &mut s.check;
        let n = s.name.clone();
        clamp(
            &mut c.interval,
            Duration::from_millis(10),
            Duration::from_secs(3600),
            &format!("{n}: check inter"),
            &mut note,
        );
        if let (Some(i), Some(f)) = (c.interval, c.fast_interval) {
            c.fast_interval = Some(f.clamp(Duration::from_millis(10), i));
        }
        clamp(
            &mut c.timeout,
            Duration::from_millis(1),
            Duration::from_secs(3600),
            &format!("{n}: timeout check"),
            &mut note,
        );
    }
}
