//! lbd: the L4 TCP proxy of k3s-ha.
//!
//! - [`balance`]: server selection (round robin, least connections, source hash), pure.
//! - [`health`]: check probes (TCP, TLS, HTTP, HTTPS) and the rise/fall state machine.
//! - [`copy`]: moving bytes (splice through a pipe, or a buffered fallback), timeouts.
//! - [`proxy`]: the PROXY protocol: headers read from clients (`accept_proxy`), sent to
//!   servers (`proxy_protocol`) and by health checks.
//! - [`engine`]: frontends, servers, listeners, checkers, caps, reload, snapshot.
//! - [`control`]: the control-socket commands; [`daemon`]: the process ([`run`]);
//!   [`upgrade`]: handing every listener to a new process (upgrades, restarts).
//! - [`admin`]: the cluster's admin states (drain, maintenance, weights), kept on disk;
//!   [`peers`]: shared with the other servers' lbd.
//! - [`snapshot`] (`common::proto::lbd`): the one view of the proxy's state that the stats
//!   page, the control socket and `lbctl` all read; [`stats`] renders it.

pub mod admin;
pub mod balance;
pub mod control;
pub mod copy;
pub mod counters;
pub mod daemon;
pub mod engine;
pub mod health;
pub mod peers;
pub mod proxy;
/// The snapshot types live with the control protocol they are part of.
pub use common::proto::lbd as snapshot;
pub mod stats;
pub mod upgrade;

pub use daemon::{run, Options, RunError};
pub use engine::Engine;
