//! lbd: the L4 TCP proxy of k3s-ha.
//!
//! Listeners, balancing, health checking and stats are separate modules; the
//! [`snapshot`] types are the one view of the proxy's state that the stats page, the
//! control socket and `lbctl` all read.

pub mod snapshot;
pub mod stats;
