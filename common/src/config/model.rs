//! The validated cluster model: what every daemon runs from.
//!
//! These types are produced only by [`super::load`] / [`super::parse`], after every check in
//! `validate.rs` has passed, so code that holds a [`Cluster`] may rely on its invariants:
//! node names and addresses are unique, priorities are unique and in 1..=254 (255 only for
//! an explicit address owner), service ports are unique and clear of k3s's own ports, every
//! service has at least one backend, and the advertisement interval is a whole number of
//! centiseconds within VRRPv3's 10 ms ..= 40.95 s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole cluster, as described by one `cluster.toml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    /// Where the file was read from (for messages); `None` for embedded text.
    pub source: Option<PathBuf>,
    pub name: String,
    /// DNS domain, e.g. `k3s.test.local`.
    pub domain: String,
    pub vip: Vip,
    pub vrrp: Vrrp,
    /// Every node in file order, servers and agents.
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub stats: Stats,
    pub lbd: LbdSettings,
    pub k3s: K3s,
}

/// The k3s release `lbctl install k3s` installs, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct K3s {
    /// `INSTALL_K3S_VERSION`, e.g. `v1.33.2+k3s1`.
    pub version: String,
    /// Extra flags for every server (`k3s server ...`), e.g. `--flannel-backend=wireguard-native`.
    pub server_args: Vec<String>,
    /// Extra flags for every agent.
    pub agent_args: Vec<String>,
    /// Air-gapped install: a directory with `k3s` (the binary), `install.sh` and optionally
    /// the `k3s-airgap-images-*.tar*` bundle; nothing is downloaded.
    pub airgap: Option<PathBuf>,
}

/// The k3s release installed when cluster.toml does not name one.
pub const DEFAULT_K3S_VERSION: &str = "v1.33.2+k3s1";

/// The virtual address(es) the servers share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vip {
    pub v4: Option<IpNet4>,
    pub v6: Option<IpNet6>,
    /// Interface to hold the VIP on; `None`: the interface holding the node's own address.
    pub interface: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IpNet4 {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IpNet6 {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

/// VRRP protocol settings shared by every server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vrrp {
    /// Virtual router ID, 1..=255.
    pub vrid: u8,
    /// 3 (RFC 5798/9568, default) or 2 (RFC 3768, for keepalived clusters running v2).
    pub version: u8,
    /// Advertisement interval; whole centiseconds, 10 ms ..= 40.95 s (v2: whole seconds).
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    pub preempt: bool,
    #[serde(with = "duration_ms")]
    pub preempt_delay: Duration,
    /// Accept mode (RFC 5798 6.1): the master answers packets sent to the VIP. When false,
    /// vrrpd answers ARP / ND for the VIP without adding it.
    pub accept_mode: bool,
    /// Drop adverts whose source is not a cluster node's address.
    pub only_cluster_nodes: bool,
    /// VRRPv2 simple-text password (at most 8 bytes), for keepalived `auth_type PASS`.
    pub password: Option<String>,
    pub checksum: ChecksumMode,
    /// Send adverts by unicast to the other servers instead of multicast.
    pub unicast: bool,
    /// Gratuitous ARP / unsolicited NA sent on becoming master.
    pub garp_repeat: u32,
    #[serde(with = "duration_ms")]
    pub garp_interval: Duration,
    /// Periodic re-announcement while master; zero disables.
    #[serde(with = "duration_ms")]
    pub garp_refresh: Duration,
    /// Use the RFC virtual MAC 00-00-5E-00-01-{VRID} (IPv6: -02-) on a macvlan.
    pub virtual_mac: bool,
    /// Command run on every transition, with the new state (`master`, `backup`, `fault`)
    /// as its last argument; one at a time, in the order of the transitions, each killed
    /// after 30 s.
    pub notify: Option<String>,
    /// Longest a stopping master keeps the VIP while waiting for a successor to announce.
    #[serde(with = "duration_ms")]
    pub handover_timeout: Duration,
    /// After a planned handover (maintenance, stop, preemption) the previous holder keeps
    /// serving the TCP connections it has, for at most this long, and the new holder
    /// forwards their packets to it (docs/handover.md). Zero: off (they are reset).
    #[serde(with = "duration_ms")]
    pub drain_established: Duration,
    pub track: Track,
}

/// How the IPv4 VRRPv3 checksum is computed and checked (the protocol crate's type).
pub use vrrp_proto::packet::ChecksumMode;

/// What lowers a node's priority, like keepalived's track_script / track_interface.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Track {
    /// Effect of lbd not answering, or no healthy backend for `lbd_service`.
    pub lbd: TrackEffect,
    /// Which service's health counts for the lbd tracker (default: the one on port 8443).
    pub lbd_service: Option<String>,
    #[serde(with = "duration_ms")]
    pub lbd_interval: Duration,
    /// Link down on the VIP interface is a fault (enter Backup with priority not advertised).
    pub link: bool,
    pub scripts: Vec<TrackScript>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "effect", content = "weight")]
pub enum TrackEffect {
    /// Not tracked.
    Off,
    /// Subtract (or add) this weight from the priority while failing.
    Weight(i16),
    /// Go to fault: stop being a candidate for master.
    Fault,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackScript {
    pub name: String,
    pub command: String,
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub effect: TrackEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    pub address: IpAddr,
    /// Optional IPv6 address of the node (used for IPv6 VRRP peers and backends).
    pub address6: Option<Ipv6Addr>,
    pub role: Role,
    /// VRRP priority (servers only; agents do not run vrrpd).
    pub priority: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    RoundRobin,
    LeastConn,
    Source,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "roundrobin",
            Balance::LeastConn => "leastconn",
            Balance::Source => "source",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub name: String,
    pub listen: u16,
    /// Address to listen on; `None` = wildcard (with IP_FREEBIND semantics not needed).
    pub bind: Option<IpAddr>,
    pub backend_port: u16,
    pub backends: Vec<Backend>,
    pub balance: Balance,
    pub check: Check,
    pub timeouts: Timeouts,
    /// Per-frontend connection cap; 0 = only the global cap applies.
    pub max_connections: u32,
    /// Connect attempts on other servers after a failed one.
    pub retries: u32,
    /// Close open connections to a server when it is marked down.
    pub close_on_down: bool,
    /// The PROXY protocol header lbd sends each server before the client's first byte
    /// (HAProxy's `send-proxy` / `send-proxy-v2`); `None`: no header.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Version 2 TLVs lbd adds to the header it sends.
    pub proxy_tlvs: ProxyTlvs,
    /// Clients send a PROXY protocol header (another balancer in front of lbd, HAProxy's
    /// `accept-proxy`); `None`: they do not, and a header would be data.
    pub accept_proxy: Option<AcceptProxy>,
}

/// The PROXY protocol version sent to servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// The text line (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

impl ProxyProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        }
    }
}

/// Optional version 2 TLVs (HAProxy's `proxy-v2-options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ProxyTlvs {
    /// `PP2_TYPE_CRC32C`: a checksum of the header.
    pub crc32c: bool,
    /// `PP2_TYPE_UNIQUE_ID`: `NODE-ID`, the node's name and lbd's connection number (the
    /// `id` of lbd's per-connection log lines).
    pub unique_id: bool,
}

/// Where PROXY protocol headers are accepted from, and how long one may take.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcceptProxy {
    /// A connection from any other address is closed without reading.
    pub trusted: Vec<IpNet>,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
}

impl AcceptProxy {
    pub fn trusts(&self, a: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(a))
    }
}

/// A network of either family (`10.0.0.0/8`, `fd00::/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum IpNet {
    V4(IpNet4),
    V6(IpNet6),
}

impl IpNet {
    /// Whether `a` is in the network; an IPv4 address of a dual-stack socket
    /// (`::ffff:a.b.c.d`) counts as the IPv4 address it is.
    pub fn contains(&self, a: IpAddr) -> bool {
        let a = match a {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
            IpAddr::V4(_) => a,
        };
        match (self, a) {
            (IpNet::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(n.prefix)).unwrap_or(0);
                u32::from(a) & mask == u32::from(n.addr) & mask
            }
            (IpNet::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(n.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n.addr) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpNet::V4(n) => write!(f, "{}/{}", n.addr, n.prefix),
            IpNet::V6(n) => write!(f, "{}/{}", n.addr, n.prefix),
        }
    }
}

impl From<IpNet> for String {
    fn from(n: IpNet) -> String {
        n.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// Node name for role-derived backends, else the `host:port` as written.
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Used only when no non-backup server is up.
    pub backup: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Tls,
    Http,
    Https,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Tls => "tls",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub kind: CheckKind,
    /// HTTP(S) path, e.g. `/readyz`.
    pub path: String,
    /// Accepted HTTP status codes (kube-apiserver answers 401 to anonymous requests).
    pub expect: Vec<u16>,
    /// SNI / Host header to send; default: the backend's address.
    pub host: Option<String>,
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    /// Interval used while a server is between states (after a failure or first success).
    #[serde(with = "duration_ms")]
    pub fast_interval: Duration,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Verify the server certificate against this CA bundle; `None`: do not verify
    /// (a health check proves liveness, not identity).
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for checks against an apiserver's `/readyz`.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// How long a connect to a server may take before it counts as failed and the client is
/// retried on another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectTimeout {
    /// Fit to the cluster (the default): a server on the cluster's own segment answers a SYN
    /// in a few round trips, so a connect that takes longer is a dead server. The timeout is
    /// the VRRP advert interval (at most 1 s), or four times the server's smoothed connect
    /// time when that is longer (a far or loaded server), at most 10 s.
    Auto,
    /// A fixed timeout (`timeouts.connect = "5s"`, or imported from HAProxy).
    Fixed(#[serde(with = "duration_ms")] Duration),
}

impl ConnectTimeout {
    /// The longest an automatic timeout gets, however slow the server's connects are.
    pub const AUTO_MAX: Duration = Duration::from_secs(10);

    /// The timeout for one connect, given the cluster's advert interval and the server's
    /// smoothed connect time (`None` before the first one).
    pub fn for_server(self, vrrp_interval: Duration, srtt: Option<Duration>) -> Duration {
        match self {
            Self::Fixed(d) => d,
            Self::Auto => {
                let base = vrrp_interval.min(Duration::from_secs(1));
                srtt.map_or(base, |r| base.max(r * 4)).min(Self::AUTO_MAX)
            }
        }
    }
}

impl std::fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(d) => f.write_str(&format_duration(*d)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    pub connect: ConnectTimeout,
    /// Inactivity limit for ordinary connections.
    #[serde(with = "duration_ms")]
    pub idle: Duration,
    /// Inactivity limit once both sides have sent data (long-lived watches, `logs -f`).
    #[serde(with = "duration_ms")]
    pub tunnel: Duration,
    /// How long to keep a half-closed connection open for the other direction.
    #[serde(with = "duration_ms")]
    pub half_close: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Where the stats page listens; `None`: `stats.listen = "off"`, no stats page (as
    /// HAProxy without a stats section).
    pub listen: Option<SocketAddr>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Seconds between auto-refreshes of the HTML page.
    pub refresh_secs: u32,
}

/// Process-wide lbd settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LbdSettings {
    /// Global connection cap over all frontends.
    pub max_connections: u32,
    /// How long SIGTERM waits for open connections before closing them.
    #[serde(with = "duration_ms")]
    pub drain_timeout: Duration,
    /// TCP port on which every server's lbd shares the cluster's admin states (drain,
    /// maintenance, weights) with the others; 0: each lbd keeps its own.
    pub peer_port: u16,
    /// Threads that accept and carry lbd's connections (HAProxy's `nbthread`); `None`: one
    /// per CPU lbd may run on (its affinity mask). With 1, that one thread also runs the
    /// checks, the stats page and the control socket; with more, each runs its own
    /// single-threaded scheduler, and those run on one more, mostly idle, thread. Read at
    /// start (and at an upgrade, whose new process reads the file anew), not at reload.
    pub threads: Option<u16>,
}

/// lbd's default `lbd.peer_port`.
pub const DEFAULT_PEER_PORT: u16 = 8405;

impl Cluster {
    pub fn servers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Server)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Is `addr` the address of a cluster node (v4 or v6)?
    pub fn is_node_address(&self, addr: IpAddr) -> bool {
        self.nodes
            .iter()
            .any(|n| n.address == addr || n.address6.map(IpAddr::V6) == Some(addr))
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The service whose health the lbd tracker watches.
    pub fn tracked_service(&self) -> Option<&Service> {
        match &self.vrrp.track.lbd_service {
            Some(name) => self.service(name),
            None => self
                .services
                .iter()
                .find(|s| s.listen == 8443)
                .or(self.services.first()),
        }
    }
}

/// (De)serialise a `Duration` as whole milliseconds in JSON output.
pub mod duration_ms {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Format a duration the way cluster.toml writes them: `1s`, `100ms`, `1m30s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 {
        out.push_str(&format!("{sec}s"));
    }
    out
}
