//! vrrpd's control socket (`RUN_DIR/vrrpd.sock`).
//!
//! | cmd           | args           | answer                  |
//! |---------------|----------------|-------------------------|
//! | `status`      | none           | [`Status`]              |
//! | `maintenance` | `{"on": bool}` | [`MaintenanceSet`]      |
//! | `reload`      | none           | [`Reloaded`]            |

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
/// The core's part of the answer, as vrrp-proto defines it.
pub use vrrp_proto::core::{
    Cause, Counters, State, Status as CoreStatus, TransitionRecord, VipError,
};
pub use vrrp_proto::packet::{DropReason, Version};

use crate::config::TrackEffect;
use crate::ctl::CtlError;

/// Every request vrrpd serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "args", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Maintenance(SetMaintenance),
    Reload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMaintenance {
    pub on: bool,
}

/// vrrpd's answers, one per [`Request`] (serialized as the inner value).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<Status>),
    Maintenance(MaintenanceSet),
    Reloaded(Reloaded),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceSet {
    pub maintenance: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    pub reloaded: bool,
    /// Reloads done since start.
    pub reloads: u64,
}

/// What vrrpd knows and what the kernel has, as of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The first instance's fields at the top level, for readers (and `jq` lines) that
    /// know one family; [`Status::instances`] has every instance.
    #[serde(flatten)]
    pub current: Instance,
    /// This node's name (from cluster.toml).
    pub node: String,
    pub interface: String,
    pub vrid: u8,
    pub version: Version,
    pub accept_mode: bool,
    /// The cluster file in use.
    pub config: Option<String>,
    pub reloads: u64,
    pub last_reload_error: Option<String>,
    /// Stopping: handing the VIP over before exiting.
    pub stopping: bool,
    #[serde(default)]
    pub tracking: Tracking,
    /// The ARP / ND responder (`accept_mode = false` without the address in the kernel).
    #[serde(default)]
    pub responder: Option<ResponderCounters>,
    /// One per address family.
    pub instances: Vec<Instance>,
}

impl Status {
    /// The VIPs that are on this node right now: on the interface in the kernel, or
    /// answered for by the responder. "Held here" means this, not the VRRP state.
    pub fn vips_here(&self) -> Vec<IpAddr> {
        self.instances
            .iter()
            .flat_map(|i| i.vips_on_interface.iter().chain(&i.vips_answered))
            .copied()
            .collect()
    }
}

/// One VRRP instance (one address family): the core's view plus what the shell knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    #[serde(flatten)]
    pub core: CoreStatus,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The node that holds the VIP, by name, when its address is a cluster node's.
    pub master_node: Option<String>,
    /// This node's address in the adverts.
    pub primary: IpAddr,
    /// IPv6 with `only_cluster_nodes`: the servers' link-local sources learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_sources: Option<LearnedSources>,
    /// The VIPs the kernel has on the interface, read for this answer.
    pub vips_on_interface: Vec<IpAddr>,
    /// The VIPs the ARP / ND responder answers for.
    pub vips_answered: Vec<IpAddr>,
    /// The VRRP virtual MAC interface, when `use_vmac` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_mac: Option<VirtualMac>,
    /// The VIPs the kernel has on `lo` (parked after a planned handover, hidden from ARP /
    /// ND), read for this answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips_parked: Vec<IpAddr>,
    /// A planned handover's drain while one runs (docs/handover.md). The deadlines are
    /// the core's `parked_ms_left` / `steer_ms_left`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
}

/// Connections kept across a planned handover: served here for the new holder
/// (`parked_flows`), or forwarded from here to the previous holder (`steering_to_node`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Drain {
    /// Connections on the parked VIPs here, at the last count (once a second).
    pub parked_flows: Option<u64>,
    /// The previous holder this node forwards to, by name.
    pub steering_to_node: Option<String>,
    /// Other nodes forwarded to as well: masters heard since, which held the VIPs too
    /// (two backups that took over at once, a healed partition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steering_also_to: Vec<String>,
    /// The previous holders' connections on the VIPs, at their last answers.
    pub steered_flows: Option<u64>,
    /// Packets forwarded so far (the kernel's counter).
    pub steered_packets: Option<u64>,
    /// nft refused the rules: what it said.
    pub rules_error: Option<String>,
}

impl Instance {
    /// Seconds in the current state, when it has changed since start.
    pub fn state_since_ms(&self) -> Option<u64> {
        self.core.transitions.last().map(|t| t.ago_ms)
    }

    pub fn state(&self) -> State {
        self.core.state
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedSources {
    /// Link-local address -> the server it belongs to.
    pub sources: BTreeMap<Ipv6Addr, String>,
    pub counters: LearnCounters,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnCounters {
    pub learned: u64,
    pub rejected: u64,
    /// Adverts handed to the core unresolved (too many held, or a resolution running).
    pub not_held: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualMac {
    pub interface: String,
    pub mac: String,
}

/// Everything tracked, and what it does to the priority.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracking {
    pub link_down: bool,
    /// Link down, or a failing tracker whose effect is `fault`.
    pub fault: bool,
    /// Sum of the weights of failing trackers.
    pub priority_offset: i32,
    pub trackers: Vec<Tracker>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracker {
    pub name: String,
    pub ok: bool,
    pub effect: TrackEffect,
    /// Why (the last verdict).
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponderCounters {
    pub arp_replies: u64,
    pub na_replies: u64,
    /// Frames not answered, by reason.
    pub drops: BTreeMap<String, u64>,
}

pub async fn status(path: &Path, timeout: Duration) -> Result<Status, CtlError> {
    super::request(path, &Request::Status, timeout).await
}

pub async fn maintenance(
    path: &Path,
    on: bool,
    timeout: Duration,
) -> Result<MaintenanceSet, CtlError> {
    super::request(path, &Request::Maintenance(SetMaintenance { on }), timeout).await
}

pub async fn reload(path: &Path, timeout: Duration) -> Result<Reloaded, CtlError> {
    super::request(path, &Request::Reload, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_wire_form() {
        let line = |r: &Request| serde_json::to_string(r).unwrap();
        assert_eq!(line(&Request::Status), r#"{"cmd":"status"}"#);
        assert_eq!(
            line(&Request::Maintenance(SetMaintenance { on: true })),
            r#"{"cmd":"maintenance","args":{"on":true}}"#
        );
        // What older lbctl and scripts send: args null or an empty object.
        for l in [
            r#"{"cmd":"status"}"#,
            r#"{"cmd":"status","args":null}"#,
            r#"{"cmd":"reload","args":null}"#,
        ] {
            serde_json::from_str::<Request>(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        }
        let e = serde_json::from_str::<Request>(r#"{"cmd":"maintenance","args":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `on`"), "{e}");
        let e = serde_json::from_str::<Request>(r#"{"cmd":"stauts"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected one of `status`, `maintenance`, `reload`"),
            "{e}"
        );
    }
}
