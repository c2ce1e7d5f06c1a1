//! Sans-IO VRRP state machine: RFC 5798 section 6 as revised by RFC 9568.
//!
//! The core owns no socket, no runtime and no clock. The shell feeds it received packets
//! ([`Instance::handle_packet`]) and the time ([`Instance::handle_timeout`]), drains
//! [`Instance::poll_action`] after every call and sleeps until [`Instance::poll_timeout`].
//! Every `now` is an [`std::time::Instant`] passed in, so a simulation can run many
//! routers on one virtual clock (`vrrpd/tests/sim.rs`).
//!
//! ```text
//!             raw socket            netlink / GARP / NA
//!                 |                        ^
//!   handle_packet v                        | AddVips / RemoveVips / Announce
//!   handle_timeout -> [ Instance ] -> poll_action -> Send { dst, payload }
//!   set_fault, set_maintenance,        poll_timeout -> next deadline
//!   set_priority_offset, shutdown, reconfigure
//! ```
//!
//! Beyond the RFC: a master that hears a lower priority sends an advert at once and
//! re-announces the VIPs (heals a split brain after a partition); [`Instance::shutdown`]
//! and maintenance hand over make-before-break (the VIP stays until another router's
//! advert is heard or `handover_timeout` passes).

mod instance;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

pub use instance::{Instance, VIP_RETRY_FIRST, VIP_RETRY_MAX};

use crate::packet::{ChecksumMode, DropReason, Version};

/// One VRRP instance's settings (one VRID, one address family).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vrid: u8,
    /// v3 (RFC 5798/9568) or v2 (RFC 3768).
    pub version: Version,
    /// Base priority 1..=255 (255 = address owner).
    pub priority: u8,
    /// Advertisement_Interval: whole centiseconds (v2: whole seconds).
    pub adver_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Informational for the shell; the core just reports it.
    pub accept_mode: bool,
    /// This router's address in the VIPs' family (IPv6: link-local). Adverts are sent
    /// from it; it breaks priority ties (RFC 5798 section 6.4.3).
    pub primary: IpAddr,
    /// Same family as `primary`.
    pub vips: Vec<IpAddr>,
    pub checksum: ChecksumMode,
    /// VRRPv2 simple password (auth type 1); v2 only.
    pub password: Option<[u8; 8]>,
    /// `Some`: drop adverts from any other source.
    pub allowed_sources: Option<Vec<IpAddr>>,
    /// Empty = multicast. Otherwise one Send per peer. (Sources are checked only against
    /// `allowed_sources`.)
    pub unicast_peers: Vec<IpAddr>,
    /// Announcements (GARP / unsolicited NA) sent on becoming master, the first at once.
    pub garp_repeat: u32,
    /// Between those announcements.
    pub garp_interval: Duration,
    /// Periodic re-announcement while master; ZERO = off.
    pub garp_refresh: Duration,
    /// Bound on make-before-break at shutdown and maintenance.
    pub handover_timeout: Duration,
    /// How long a master that lost to a better one (preempted, or its successor's advert
    /// heard during a handover) keeps the VIPs before releasing them.
    pub release_linger: Duration,
    /// Planned handovers keep established TCP flows: the old master parks the VIPs for
    /// at most this long ([`Action::ParkVips`]) and the new one forwards the flows it has
    /// no state for to it ([`Action::Steer`]). ZERO = off: the VIPs are removed.
    pub drain_established: Duration,
}

/// The shortest a parked VIP or a steering lasts, whatever the flow counts say: a
/// handshake whose SYN reached the old master just before the switch completes in this
/// window, and a count read before its SYN arrived must not end the drain under it.
pub const DRAIN_MIN: Duration = Duration::from_secs(2);

/// What vrrpd uses for [`Config::release_linger`]: long enough for clients' neighbour
/// entries to move after the successor's gratuitous ARP, short next to any interval.
pub const RELEASE_LINGER: Duration = Duration::from_millis(50);

/// The protocol state (RFC 5798 section 6.4) plus Fault (link down / tracked fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl State {
    /// Lower-case name, as in the control API and the notify command's argument.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A packet as the shell received it. The shell filters nothing: it only reads the TTL /
/// hop limit and the addresses. For IPv4, `payload` is the VRRP message after
/// [`crate::packet::split_ipv4`].
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub payload: &'a [u8],
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this VRRP message (encoded, checksummed) to dst (multicast group or a unicast
    /// peer: one Send per peer) with TTL/hop limit 255 from `primary`.
    Send { dst: IpAddr, payload: Vec<u8> },
    /// Add `cfg.vips` (idempotent).
    AddVips,
    /// Remove the VIPs (idempotent). After a reconfigure that changed the VIP set this is
    /// emitted for the OLD set: the shell should remove what it added.
    RemoveVips,
    /// Send one gratuitous ARP / unsolicited NA per VIP.
    Announce,
    StateChanged {
        from: State,
        to: State,
        cause: Cause,
    },
    /// After `shutdown()`: the VIP is released (or was never held); the shell may exit.
    HandoverDone,
    /// Instead of [`Action::RemoveVips`] after a planned handover: take the VIPs off the
    /// interface so this node no longer announces or answers for them, but keep them as
    /// local addresses (on `lo`, not answered by ARP / ND) so the TCP connections this node
    /// has on them go on. They stay until [`Action::UnparkVips`].
    ParkVips,
    /// Drop the parked VIPs (their flows ended, the drain deadline passed, or this node
    /// holds them again: then after its [`Action::AddVips`]).
    UnparkVips,
    /// Emitted before [`Action::AddVips`] when this router takes over in a planned
    /// handover from `to` (it resigned, or it was preempted): forward every packet of a
    /// TCP flow to the VIPs that did not start here (no SYN seen here) to `to`, which
    /// parked the VIPs and still serves those flows. New flows are served here.
    ///
    /// Emitted again, with another `to`, when this master hears a lower-priority master
    /// (two backups took over at once after a resign, or a partition healed): that one
    /// held the VIPs too and parks them for the flows it took. Forward to every `to`
    /// since the last [`Action::Unsteer`] (each ignores the flows that are not its own).
    Steer { to: IpAddr },
    /// Stop [`Action::Steer`]ing to every `to` (the flows there ended, they are gone,
    /// the drain deadline passed).
    Unsteer,
    /// The router at `peer` stopped being master without handing over to a better one:
    /// its adverts stopped (Master_Down) or it resigned. Whatever runs on that node (the
    /// proxies' backends) is suspect; the shell tells lbd so it checks them now.
    PeerLost { peer: IpAddr, why: PeerLoss },
}

/// How a master was lost ([`Action::PeerLost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerLoss {
    /// No advert for Master_Down_Interval (dead, or its link is gone).
    Silent,
    /// It sent priority 0 (stopping, maintenance, a fault).
    Resigned,
}

impl PeerLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerLoss::Silent => "silent",
            PeerLoss::Resigned => "resigned",
        }
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Initialize -> Backup / Master (owner) at start.
    Startup,
    /// Master_Down_Timer fired: no advert for Master_Down_Interval.
    MasterDown,
    /// A master heard a higher priority.
    HigherPriority,
    /// A master heard an equal priority from a higher primary address.
    HigherAddress,
    /// A backup ignored a lower-priority master (preemption) until its timer fired.
    Preempted,
    /// The master sent priority 0; our Skew_Time timer fired.
    PeerResigned,
    /// Informational: a master heard a lower priority (split brain healed).
    LowerPriorityHeard,
    Fault,
    FaultCleared,
    /// Maintenance switched on (resign) .
    Maintenance,
    /// Maintenance switched off.
    MaintenanceOff,
    Shutdown,
    /// A reconfigure changed the VRID, the VIPs or the family: restarted.
    Reconfigured,
    /// The shell could not install the VIPs on becoming master.
    VipFailed,
    /// After a failure to install the VIPs, the retry timer let this router back into
    /// the election.
    VipRetry,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Startup => "startup",
            Cause::MasterDown => "master-down",
            Cause::HigherPriority => "higher-priority",
            Cause::HigherAddress => "higher-address",
            Cause::Preempted => "preempted",
            Cause::PeerResigned => "peer-resigned",
            Cause::LowerPriorityHeard => "lower-priority-heard",
            Cause::Fault => "fault",
            Cause::FaultCleared => "fault-cleared",
            Cause::Maintenance => "maintenance",
            Cause::MaintenanceOff => "maintenance-off",
            Cause::Shutdown => "shutdown",
            Cause::Reconfigured => "reconfigured",
            Cause::VipFailed => "vip-not-installed",
            Cause::VipRetry => "vip-retry",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Snapshot for the control API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub state: State,
    pub base_priority: u8,
    pub effective_priority: u8,
    /// The current master: ourselves when master, else the source of the last accepted
    /// advert (None when unknown, e.g. after the master resigned).
    pub master: Option<IpAddr>,
    pub vips: Vec<IpAddr>,
    pub master_adver_interval_ms: u64,
    pub maintenance: bool,
    pub fault: bool,
    /// Whether this router currently holds the VIPs (also true while a stopping or
    /// resigning master waits for its successor).
    pub holding_vips: bool,
    /// The VIPs could not be installed (until they are, on a later attempt).
    pub vip_error: Option<VipError>,
    #[serde(default)]
    pub counters: Counters,
    /// Last 32 transitions, oldest first.
    #[serde(default)]
    pub transitions: Vec<TransitionRecord>,
    /// The VIPs are parked here for the flows this node still serves after a planned
    /// handover: at most this much longer.
    #[serde(default)]
    pub parked_ms_left: Option<u64>,
    /// Flows that did not start here are forwarded to the previous master at this
    /// address, at most `steer_ms_left` longer.
    #[serde(default)]
    pub steering_to: Option<IpAddr>,
    #[serde(default)]
    pub steer_ms_left: Option<u64>,
}

/// Why this router could not hold the VIPs, as the shell reported it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VipError {
    /// The error: address, interface and the kernel's answer.
    pub reason: String,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// Since the first of them.
    pub since_ms: u64,
    /// While in Fault: when this router takes part in the election again.
    pub retry_in_ms: Option<u64>,
}

/// Counters an operator asks about at 3 a.m.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Adverts that passed every receive check.
    pub rx_adverts: u64,
    /// Advert messages sent (one per destination).
    pub tx_adverts: u64,
    pub became_master: u64,
    /// Accepted adverts with priority 0 (a master resigning).
    pub rx_priority_zero: u64,
    /// Priority-0 adverts sent (resigning: shutdown, maintenance, fault).
    pub tx_priority_zero: u64,
    /// Attempts to install the VIPs that failed.
    pub vip_install_failures: u64,
    /// Accepted adverts whose address list differs from our VIPs (RFC 5798 section 7.1
    /// says to log it, not drop it: keepalived does the same).
    pub vip_mismatch: u64,
    /// Keyed by [`crate::packet::DecodeError::reason`] and the core's reasons: "ttl",
    /// "vrid", "version", "source", "own", "auth", "interval", "family", "owner" (we are
    /// the address owner: RFC 5798 discards every advert of the VRID).
    pub drops: BTreeMap<DropReason, u64>,
}

impl Counters {
    /// Total packets dropped, all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransitionRecord {
    pub ago_ms: u64,
    pub from: State,
    pub to: State,
    pub cause: Cause,
}

/// Skew_Time (RFC 5798 section 6.1 as revised by RFC 9568):
/// `((256 - priority) * Master_Adver_Interval) / 256`.
pub fn skew_time(priority: u8, master_adver_interval: Duration) -> Duration {
    master_adver_interval * (256 - u32::from(priority)) / 256
}

/// Master_Down_Interval (RFC 5798 section 6.1): `3 * Master_Adver_Interval + Skew_Time`.
pub fn master_down_interval(priority: u8, master_adver_interval: Duration) -> Duration {
    master_adver_interval * 3 + skew_time(priority, master_adver_interval)
}

/// Effective priority: the owner's 255 is never changed; otherwise base + offset clamped
/// to 1..=254 (0 is reserved for resigning, 255 for the owner).
pub fn effective_priority(base: u8, offset: i32) -> u8 {
    if base == 255 {
        return 255;
    }
    let p = i64::from(base) + i64::from(offset);
    p.clamp(1, 254) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_timer_formulas() {
        // RFC 5798 section 6.1 with RFC 9568's Skew_Time: priority 100, 1 s.
        let i = Duration::from_secs(1);
        assert_eq!(skew_time(100, i), Duration::from_micros(609_375));
        assert_eq!(
            master_down_interval(100, i),
            Duration::from_micros(3_609_375)
        );
        // The owner's skew is 1/256 of the interval; priority 1's is 255/256.
        assert_eq!(skew_time(255, i), Duration::from_micros(3_906_250) / 1000);
        assert_eq!(
            skew_time(1, i),
            Duration::from_micros(996_093) + Duration::from_nanos(750)
        );
        // 100 ms (10 cs) at priority 200: (56 * 100 ms) / 256 = 21.875 ms.
        assert_eq!(
            skew_time(200, Duration::from_millis(100)),
            Duration::from_micros(21_875)
        );
    }

    #[test]
    fn status_json_uses_the_control_api_names() {
        let st = Status {
            state: State::Master,
            base_priority: 150,
            effective_priority: 140,
            master: Some("10.0.0.1".parse().unwrap()),
            vips: vec!["10.0.0.100".parse().unwrap()],
            master_adver_interval_ms: 1000,
            maintenance: false,
            fault: false,
            holding_vips: true,
            vip_error: None,
            counters: Counters {
                drops: BTreeMap::from([(DropReason::Checksum, 2)]),
                ..Counters::default()
            },
            transitions: vec![TransitionRecord {
                ago_ms: 5,
                from: State::Backup,
                to: State::Master,
                cause: Cause::PeerResigned,
            }],
            parked_ms_left: None,
            steering_to: None,
            steer_ms_left: None,
        };
        let v = serde_json::to_value(&st).unwrap();
        assert_eq!(v["state"], "master");
        assert_eq!(v["master"], "10.0.0.1");
        assert_eq!(v["counters"]["drops"]["checksum"], 2);
        assert_eq!(v["transitions"][0]["cause"], "peer-resigned");
        assert_eq!(v["transitions"][0]["from"], "backup");
        for c in [
            Cause::MasterDown,
            Cause::HigherAddress,
            Cause::MaintenanceOff,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        // What vrrpd sends, lbctl and lbd read back: the same value.
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back, st);
        use crate::packet::DropReason as D;
        for d in [D::Truncated, D::IpHeader, D::NotVrrp, D::Owner, D::Ttl] {
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
            assert_eq!(serde_json::from_value::<D>(d.as_str().into()).unwrap(), d);
        }
        use crate::packet::Version;
        assert_eq!(serde_json::to_value(Version::V2).unwrap(), 2);
        assert_eq!(
            serde_json::from_value::<Version>(3.into()).unwrap(),
            Version::V3
        );
        assert!(serde_json::from_value::<Version>(4.into()).is_err());
    }

    #[test]
    fn effective_priority_clamps_and_spares_the_owner() {
        assert_eq!(effective_priority(100, 0), 100);
        assert_eq!(effective_priority(100, -200), 1);
        assert_eq!(effective_priority(100, 200), 254);
        assert_eq!(effective_priority(255, -50), 255);
        assert_eq!(effective_priority(254, i32::MAX), 254);
        assert_eq!(effective_priority(1, i32::MIN), 1);
    }
}
