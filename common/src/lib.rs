//! Shared pieces of k3s-ha.
//!
//! - [`config`]: `cluster.toml`, parsed and validated into [`config::Cluster`], and working
//!   out which node this process is ([`config::identify`]).
//! - [`ctl`]: the Unix-socket transport between lbctl and the daemons; [`proto`]: every
//!   request and answer on it, typed.
//! - [`dump`]: state dumps on SIGUSR1 / SIGUSR2 (what keepalived's users expect).
//! - [`logging`]: one logging setup for both daemons (journal priorities, no stray colours).
//! - [`notify`]: sd_notify(3) that never blocks a daemon.
//! - `tls` (feature `tls`): the TLS client of health checks and probes that accepts any
//!   certificate.
//!
//! Test and lab support (network namespaces, the external programs tests run) lives in
//! `k3sha-support`, which the daemons do not link.

pub mod config;
pub mod ctl;
pub mod dump;
pub mod flows;
pub mod logging;
pub mod notify;
pub mod proto;
#[cfg(feature = "tls")]
pub mod tls;

/// Default location of the cluster file.
pub const DEFAULT_CONFIG: &str = "/etc/k3s-ha/cluster.toml";
/// Default run directory holding the control sockets.
pub const DEFAULT_RUN_DIR: &str = "/run/k3s-ha";
/// What the daemons keep across restarts and reboots (lbd's admin states, vrrpd's
/// maintenance): systemd's `StateDirectory=k3s-ha`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/k3s-ha";

/// The state directory when none is given: [`DEFAULT_STATE_DIR`] for a daemon on the
/// default run directory; with another run directory (a lab node, a test), that run
/// directory, so such a daemon never writes the host's state.
pub fn default_state_dir(run_dir: &std::path::Path) -> std::path::PathBuf {
    if run_dir == std::path::Path::new(DEFAULT_RUN_DIR) {
        DEFAULT_STATE_DIR.into()
    } else {
        run_dir.to_path_buf()
    }
}
/// Group allowed on the control sockets (besides root).
pub const CONTROL_GROUP: &str = "k3s-ha";
