//! Shared pieces of k3s-ha.
//!
//! - [`config`]: `cluster.toml`, parsed and validated into [`config::Cluster`], and working
//!   out which node this process is ([`config::identify`]).
//! - [`ctl`]: the Unix-socket transport between lbctl and the daemons; [`proto`]: every
//!   request and answer on it, typed.
//! - [`dump`]: state dumps on SIGUSR1 / SIGUSR2 (what keepalived's users expect).
//! - [`logging`]: one logging setup for both daemons (journal priorities, no stray colours).
//! - [`netns`]: network-namespace test and lab helpers (veth, bridge, guards that clean up).
//! - [`notify`]: sd_notify(3) that never blocks a daemon.
//! - `tls` (feature `tls`): the TLS client of health checks and probes that accepts any
//!   certificate.
//! - [`tools`]: the external programs tests and the lab run, from `scripts/test-tools.txt`.

pub mod config;
pub mod ctl;
pub mod dump;
pub mod logging;
pub mod netns;
pub mod notify;
pub mod proto;
#[cfg(feature = "tls")]
pub mod tls;
pub mod tools;

/// Default location of the cluster file.
pub const DEFAULT_CONFIG: &str = "/etc/k3s-ha/cluster.toml";
/// Default run directory holding the control sockets.
pub const DEFAULT_RUN_DIR: &str = "/run/k3s-ha";
/// Group allowed on the control sockets (besides root).
pub const CONTROL_GROUP: &str = "k3s-ha";
