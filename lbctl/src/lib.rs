//! lbctl: the operator CLI of k3s-ha.
//!
//! - [`check`]: `lbctl config check`.
//! - [`install`]: `lbctl install k3s|dns|ingress|demo-app`.

pub mod check;
pub mod install;
