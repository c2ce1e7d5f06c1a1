//! A point-in-time view of everything lbd knows: what the stats page (`/`, `/stats.json`,
//! `/stats.csv`, `/metrics`), the control socket's `status` and `lbctl status` show.
//!
//! The proxy engine produces a [`Snapshot`]; renderers only read it. Field names are the
//! JSON names (`/stats.json` is `serde_json::to_string(&Snapshot)`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// This node's name (from cluster.toml).
    pub node: String,
    pub cluster: String,
    /// lbd version string.
    pub version: String,
    /// Seconds since lbd started.
    pub uptime_secs: u64,
    /// Wall-clock time of the snapshot, Unix milliseconds.
    pub now_unix_ms: u64,
    /// Connections open over all frontends, and the global cap (0 = none).
    pub current_connections: u64,
    pub max_connections: u64,
    /// The cap this process's descriptor limit allows (RLIMIT_NOFILE: two per proxied
    /// connection, minus a reserve for listeners, checks and the stats page). At it, lbd
    /// stops accepting; new connections wait in the kernel's listen queue.
    #[serde(default)]
    pub fd_cap: u64,
    /// Times lbd stopped accepting because it reached [`Snapshot::fd_cap`].
    #[serde(default)]
    pub fd_cap_waits: u64,
    /// Config reloads done since start, and the last reload's outcome.
    pub reloads: u64,
    pub last_reload_error: Option<String>,
    /// From vrrpd's control socket, when it answers.
    pub vrrp: Option<VrrpView>,
    pub frontends: Vec<FrontendStats>,
}

/// What lbd learned from vrrpd (absent when vrrpd does not answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VrrpView {
    /// `initialize`, `backup`, `master`, `fault`.
    pub state: String,
    pub priority: u8,
    /// Address of the current VIP holder as this node sees it.
    pub master: Option<String>,
    pub vips: Vec<String>,
    /// True while `lbctl maintenance on` is in force.
    pub maintenance: bool,
    /// The VIPs the kernel has on this node's interface (or vrrpd answers ARP / ND for),
    /// as vrrpd read them: "held here" means this, not the VRRP state.
    #[serde(default)]
    pub vips_here: Vec<String>,
    /// Why this node cannot hold the VIP (e.g. the VIP could not be added), if it cannot.
    #[serde(default)]
    pub problem: Option<String>,
    /// Seconds in the current VRRP state (as of vrrpd's answer).
    #[serde(default)]
    pub state_since_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontendStats {
    /// Service name from cluster.toml, e.g. `kube-apiserver`.
    pub name: String,
    pub listen: SocketAddr,
    pub backend_port: u16,
    /// `roundrobin`, `leastconn`, `source`.
    pub balance: String,
    /// `OPEN` while accepting, `FULL` at its cap, `STOP` while draining.
    pub status: String,
    pub current_sessions: u64,
    pub max_sessions: u64,
    pub session_limit: u64,
    pub total_sessions: u64,
    /// New sessions in the last second, and the highest such rate seen.
    pub session_rate: u64,
    pub session_rate_max: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections refused by a cap.
    pub denied: u64,
    /// Clients closed because no healthy server was available.
    pub no_server: u64,
    /// Clients closed because of this host, not a server (EMFILE, ENFILE, ENOBUFS, ENOMEM
    /// creating the server socket); never counted against a server's health.
    #[serde(default)]
    pub local_errors: u64,
    pub servers: Vec<ServerStats>,
}

/// Operational status of one backend server, as HAProxy names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ServerStatus {
    /// Not checked yet (lbd just started, or the server was just added): neither UP nor
    /// DOWN, as HAProxy's INI. Clients are still sent to it, as before its first check.
    Checking,
    Up,
    Down,
    /// Administratively draining: no new connections, open ones keep going.
    Drain,
    /// Administratively in maintenance: no new connections, no checks counted.
    Maint,
}

impl ServerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Checking => "CHECKING",
            ServerStatus::Up => "UP",
            ServerStatus::Down => "DOWN",
            ServerStatus::Drain => "DRAIN",
            ServerStatus::Maint => "MAINT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Node name (role backends) or `host:port`.
    pub name: String,
    pub addr: SocketAddr,
    pub status: ServerStatus,
    /// Health going the other way: e.g. `Some("2/3 down")` while failing checks of an UP
    /// server; `None` when stable.
    pub transition: Option<String>,
    pub weight: u32,
    pub backup: bool,
    /// `L4OK`, `L4TOUT`, `L4CON`, `L6OK`, `L6TOUT`, `L6RSP`, `L7OK`, `L7STS`, `L7TOUT`,
    /// `L7RSP` (HAProxy's check_status names), or `INI` before the first check.
    pub check_status: String,
    /// Human detail of the last check, e.g. `HTTP 503` or `connection refused`.
    pub check_desc: String,
    pub check_latency_ms: Option<f64>,
    pub checks_failed: u64,
    pub current_sessions: u64,
    pub max_sessions: u64,
    pub total_sessions: u64,
    pub session_rate: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_errors: u64,
    pub retries: u64,
    /// Seconds since the last UP/DOWN change.
    pub last_change_secs: u64,
    /// Total seconds spent DOWN since start.
    pub downtime_secs: u64,
    /// Times the server went from UP to DOWN.
    pub down_transitions: u64,
}
