//! vrrpd: VRRPv3 (RFC 5798 as revised by RFC 9568) holding the cluster's VIP.
//!
//! The protocol itself (codec, state machine, frames) is the `vrrp-proto` crate, re-exported
//! here as [`core`], [`packet`] and [`frames`]; this crate is the I/O shell around it.
//! - [`io`]: raw sockets, netlink, GARP/NA, link state, the ARP/ND responder.
//! - [`daemon`]: wires config, core, io, tracking, the control socket and signals.

pub use vrrp_proto::{core, frames, packet};

pub mod daemon;
pub mod io;
