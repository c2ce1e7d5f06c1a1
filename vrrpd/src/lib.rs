//! vrrpd: VRRPv3 (RFC 5798 as revised by RFC 9568) holding the cluster's VIP.
//!
//! - [`packet`]: pure codec for VRRP v2/v3 over IPv4/IPv6.
//! - [`core`]: the sans-IO protocol state machine (time passed in, actions out).
//! - [`io`]: the thin I/O shell: raw sockets, netlink, GARP/NA, link state.
//! - [`daemon`]: wires config, core, io, tracking, the control socket and signals.

pub mod core;
pub mod daemon;
pub mod io;
pub mod packet;
