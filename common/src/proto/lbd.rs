//! lbd's control socket (`RUN_DIR/lbd.sock`), and the [`Snapshot`] of everything lbd
//! knows: what the stats page (`/`, `/stats.json`, `/stats.csv`, `/metrics`), the control
//! socket's `status` and `lbctl status` show.
//!
//! | cmd          | args                                                      | answer       |
//! |--------------|-----------------------------------------------------------|--------------|
//! | `status`     | none                                                      | [`Snapshot`] |
//! | `set-server` | [`SetServer`]: `{"service", "server", "state": "ready"/"drain"/"maint"}` | [`Shared`] |
//! | `set-weight` | [`SetWeight`]: `{"service", "server", "weight": 0..=256}` | [`Shared`]   |
//! | `reload`     | none                                                      | [`Reloaded`] |
//! | `suspect`    | [`Suspect`]: a node vrrpd lost (`{"node", "addresses", "why"}`) | [`Suspected`] |
//! | `sync`       | [`Sync`]: lbd to lbd over the peer port, the admin states one knows | [`Synced`] |
//! | `flows`      | [`Flows`]: `{"addresses": [...]}`, also on the peer port  | [`FlowCount`] |
//! | `upgrade`    | [`Upgrade`]: `{"timeout_ms": N}` (optional)                | [`Upgraded`] |
//!
//! An admin state (`set-server`, `set-weight`) is the cluster's, not the node's: lbd keeps
//! it in its state directory and shares it with every other server's lbd over TCP
//! (`lbd.peer_port`, 8405), so `lbctl drain` on any server holds on whichever server holds
//! the VIP, and across restarts. See [`AdminEntry`].
//!
//! `server` is the server's name as the snapshot shows it, or its `host:port`.
//!
//! The proxy engine produces a [`Snapshot`]; renderers only read it. Field names are the
//! JSON names (`/stats.json` is `serde_json::to_string(&Snapshot)`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::Done;
use crate::ctl::CtlError;

/// Every request lbd serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "args", rename_all = "kebab-case")]
pub enum Request {
    Status,
    SetServer(SetServer),
    SetWeight(SetWeight),
    Reload,
    Suspect(Suspect),
    Sync(Sync),
    Flows(Flows),
    Upgrade(Upgrade),
}

/// One server's admin state as the cluster knows it: a last-writer-wins register. `stamp`
/// is a hybrid logical clock (milliseconds since the epoch, moved past every stamp the
/// writer had seen), so a change made after seeing another wins over it whatever the
/// nodes' clocks say; `by` breaks ties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminEntry {
    pub service: String,
    /// The server's name (the same on every node: cluster.toml is).
    pub server: String,
    pub state: AdminState,
    /// A weight set at run time; `None`: the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    pub stamp: u64,
    /// The node whose operator made the change.
    pub by: String,
}

impl AdminEntry {
    /// Whether this entry wins over `other` (same service and server).
    pub fn newer_than(&self, other: &AdminEntry) -> bool {
        (self.stamp, &self.by) > (other.stamp, &other.by)
    }
}

/// lbd to lbd: everything the sender knows; the receiver merges it and answers with
/// everything it knows, so one exchange brings both up to date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sync {
    /// The sending node (must be the node whose address the connection comes from).
    pub from: String,
    pub entries: Vec<AdminEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    pub entries: Vec<AdminEntry>,
}

/// The answer to an admin change: applied here, and which other servers' lbd have it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Shared {
    /// Peers that confirmed the change.
    pub peers: Vec<String>,
    /// Peers that did not answer in time, with why; lbd keeps trying them.
    pub pending: Vec<Pending>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub peer: String,
    pub error: String,
}

/// vrrpd lost the master at these addresses (its adverts stopped, or it resigned): lbd
/// checks that node's servers now, with a short timeout, and one failure takes a server
/// out of rotation. A server seen again needs the normal `rise`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    /// The node's name, when vrrpd knows it (role backends are named after nodes).
    pub node: Option<String>,
    /// Its addresses: every server at one of them is checked.
    pub addresses: Vec<std::net::IpAddr>,
    /// `silent` or `resigned`, for the log.
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspected {
    /// Servers whose check was run at once.
    pub servers: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetServer {
    pub service: String,
    pub server: String,
    pub state: AdminState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetWeight {
    pub service: String,
    pub server: String,
    /// 0..=256, as HAProxy's `set weight`.
    pub weight: u32,
}

fn ready() -> AdminState {
    AdminState::Ready
}

/// The administrative state an operator sets (`lbctl drain/enable/disable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// In rotation (health permitting).
    Ready,
    /// No new connections; open ones keep going.
    Drain,
    /// No new connections, no checks counted.
    Maint,
}

/// lbd's answers, one per [`Request`] (serialized as the inner value).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<Snapshot>),
    Done(Done),
    Reloaded(Reloaded),
    Suspected(Suspected),
    Synced(Synced),
    Shared(Shared),
    Flows(FlowCount),
    Upgraded(Upgraded),
}

/// Replace this lbd by the binary it was started from (after a package upgrade, the new
/// one), without closing a listening socket or an open connection: the running process
/// starts that binary with its own arguments and hands it every listening socket; once
/// the new process has taken all of them (and read a valid cluster.toml), the old one
/// stops accepting, tells systemd the new main PID, answers, finishes its connections (at
/// most `lbd.drain_timeout`) and exits. If the new process fails, exits or does not take
/// over within `timeout_ms`, it is killed and the old one goes on serving as before: the
/// answer is then an error saying why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Upgrade {
    /// How long the new process may take to be ready; `None`: lbd's default (15 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgraded {
    /// The process that answers: it has stopped accepting and drains its connections.
    pub old_pid: u32,
    /// The process that accepts now (systemd's main PID).
    pub new_pid: u32,
    /// The binary the new process runs.
    pub binary: String,
    /// `lbd --version` of the new process.
    pub new_version: String,
    /// From the request to the new process accepting.
    pub took_ms: u64,
    /// Connections the old process still carries (it exits once they are done, or at
    /// `drain_timeout_ms`).
    pub draining: u64,
    pub drain_timeout_ms: u64,
}

/// How many TCP connections this node still carries whose local address is one of
/// `addresses` (a VIP it gave up in a planned handover and parks: [`vrrp_proto::core::Action::ParkVips`]).
/// Asked by the node's own vrrpd, and by the new holder's vrrpd over the peer port, to
/// know when forwarding those flows can stop. The answer is read from the kernel
/// (sock_diag), not from lbd's own books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flows {
    pub addresses: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FlowCount {
    /// Connections in a state that still needs packets (SYN_RECV up to LAST_ACK; not
    /// LISTEN, not TIME_WAIT) to an address that is local on this node now. A socket
    /// whose address was removed counts 0: no packet can reach it any more.
    pub flows: u64,
    /// Of `addresses`, how many are local addresses of this node now.
    pub local_addresses: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Reloads done since start.
    pub reloads: u64,
}

pub async fn status(path: &Path, timeout: Duration) -> Result<Snapshot, CtlError> {
    super::request(path, &Request::Status, timeout).await
}

pub async fn set_server(
    path: &Path,
    req: SetServer,
    timeout: Duration,
) -> Result<Shared, CtlError> {
    super::request(path, &Request::SetServer(req), timeout).await
}

pub async fn set_weight(
    path: &Path,
    req: SetWeight,
    timeout: Duration,
) -> Result<Shared, CtlError> {
    super::request(path, &Request::SetWeight(req), timeout).await
}

pub async fn reload(path: &Path, timeout: Duration) -> Result<Reloaded, CtlError> {
    super::request(path, &Request::Reload, timeout).await
}

pub async fn suspect(path: &Path, req: Suspect, timeout: Duration) -> Result<Suspected, CtlError> {
    super::request(path, &Request::Suspect(req), timeout).await
}

pub async fn upgrade(path: &Path, req: Upgrade, timeout: Duration) -> Result<Upgraded, CtlError> {
    super::request(path, &Request::Upgrade(req), timeout).await
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// This node's name (from cluster.toml).
    pub node: String,
    pub cluster: String,
    /// lbd version string.
    pub version: String,
    /// The process that answers (it changes with every upgrade, `lbctl upgrade lbd`).
    #[serde(default)]
    pub pid: u32,
    /// Seconds since lbd started (since this process took over, after an upgrade).
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

impl VrrpView {
    /// What the snapshot shows of vrrpd's `status` answer.
    pub fn of(v: &super::vrrpd::Status) -> VrrpView {
        let cur = &v.current;
        VrrpView {
            state: cur.core.state.as_str().to_owned(),
            priority: cur.core.effective_priority,
            master: cur.core.master.map(|m| m.to_string()),
            vips: cur.core.vips.iter().map(ToString::to_string).collect(),
            maintenance: cur.core.maintenance,
            vips_here: v.vips_here().iter().map(ToString::to_string).collect(),
            problem: cur.core.vip_error.as_ref().map(|e| e.reason.clone()),
            state_since_secs: cur.state_since_ms().map(|ms| ms / 1000),
        }
    }
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
    /// Clients refused by `accept_proxy` (their PROXY header), by cause.
    #[serde(default)]
    pub proxy_refused: ProxyRefused,
    pub servers: Vec<ServerStats>,
}

/// Connections `accept_proxy` closed, by cause. Every one is also logged (at most one line
/// per second per service, with how many were not logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyRefused {
    /// From an address outside `trusted_proxies`: closed without reading.
    pub untrusted: u64,
    /// Not a valid PROXY header (v1 or v2), or one cut short by the client's close.
    pub malformed: u64,
    /// No whole header within `timeouts.proxy_header`.
    pub timeout: u64,
}

impl ProxyRefused {
    pub fn total(&self) -> u64 {
        self.untrusted + self.malformed + self.timeout
    }
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
    /// The operator's state (the cluster's: see [`AdminEntry`]), shown even where `status`
    /// is the health's (a drained server that is DOWN is `DOWN` with `admin: drain`).
    #[serde(default = "ready")]
    pub admin: AdminState,
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

impl Snapshot {
    /// A snapshot of `node` with these frontends and nothing counted yet (stand-ins for
    /// lbd in tests, and the start of lbd's own).
    pub fn new(node: &str, cluster: &str, frontends: Vec<FrontendStats>) -> Snapshot {
        Snapshot {
            node: node.to_owned(),
            cluster: cluster.to_owned(),
            version: String::new(),
            pid: 0,
            uptime_secs: 0,
            now_unix_ms: 0,
            current_connections: 0,
            max_connections: 0,
            fd_cap: 0,
            fd_cap_waits: 0,
            reloads: 0,
            last_reload_error: None,
            vrrp: None,
            frontends,
        }
    }
}

impl FrontendStats {
    /// An open frontend with these servers and nothing counted yet.
    pub fn new(name: &str, listen: SocketAddr, servers: Vec<ServerStats>) -> FrontendStats {
        FrontendStats {
            name: name.to_owned(),
            listen,
            backend_port: servers.first().map_or(0, |s| s.addr.port()),
            balance: "roundrobin".to_owned(),
            status: "OPEN".to_owned(),
            current_sessions: 0,
            max_sessions: 0,
            session_limit: 0,
            total_sessions: 0,
            session_rate: 0,
            session_rate_max: 0,
            bytes_in: 0,
            bytes_out: 0,
            denied: 0,
            no_server: 0,
            local_errors: 0,
            proxy_refused: ProxyRefused::default(),
            servers,
        }
    }
}

impl ServerStats {
    /// A server in `status`, weight 1, nothing counted yet.
    pub fn new(name: &str, addr: SocketAddr, status: ServerStatus) -> ServerStats {
        ServerStats {
            name: name.to_owned(),
            addr,
            status,
            admin: AdminState::Ready,
            transition: None,
            weight: 1,
            backup: false,
            check_status: "INI".to_owned(),
            check_desc: String::new(),
            check_latency_ms: None,
            checks_failed: 0,
            current_sessions: 0,
            max_sessions: 0,
            total_sessions: 0,
            session_rate: 0,
            bytes_in: 0,
            bytes_out: 0,
            connect_errors: 0,
            retries: 0,
            last_change_secs: 0,
            downtime_secs: 0,
            down_transitions: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_wire_form_and_refuse_bad_arguments() {
        let r = Request::SetServer(SetServer {
            service: "kube-apiserver".into(),
            server: "s1".into(),
            state: AdminState::Drain,
        });
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"cmd":"set-server","args":{"service":"kube-apiserver","server":"s1","state":"drain"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        let e = serde_json::from_str::<Request>(
            r#"{"cmd":"set-server","args":{"service":"a","server":"b","state":"off"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("expected one of `ready`, `drain`, `maint`"),
            "{e}"
        );
        let e = serde_json::from_str::<Request>(
            r#"{"cmd":"set-weight","args":{"service":"a","server":"b","weight":-1}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid value"), "{e}");
    }

    #[test]
    fn a_snapshot_reads_back_as_it_was_sent() {
        let sv = ServerStats::new(
            "s1",
            "10.0.0.1:6443".parse().unwrap(),
            ServerStatus::Checking,
        );
        let fe = FrontendStats::new("kube-apiserver", "0.0.0.0:8443".parse().unwrap(), vec![sv]);
        let snap = Snapshot::new("s1", "lab", vec![fe]);
        let v = serde_json::to_value(&snap).unwrap();
        assert_eq!(v["frontends"][0]["servers"][0]["status"], "CHECKING");
        assert_eq!(serde_json::from_value::<Snapshot>(v).unwrap(), snap);
    }
}
