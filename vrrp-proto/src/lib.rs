//! VRRP as a pure protocol: RFC 5798 as revised by RFC 9568 (v3) and RFC 3768 (v2).
//!
//! - [`packet`]: the codec, a pure function over bytes with a typed error per cause.
//! - [`core`]: the state machine of one VRRP instance. Time is passed in, actions come out
//!   in the order the shell must execute them; the handover order (hold and announce the
//!   VIP before the advert that makes the old master let go) and the release linger are
//!   the core's, so the deterministic simulation drives exactly what production does.
//! - [`frames`]: gratuitous ARP, neighbour advertisements, and the ARP / ND solicitation
//!   parser of the `accept_mode = false` responder.
//!
//! The crate owns no socket, no runtime and no clock (it depends on std, thiserror, tracing
//! and serde only), so the fuzz targets link it alone.

pub mod core;
pub mod frames;
pub mod packet;
