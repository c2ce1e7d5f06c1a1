//! lbctl: the operator CLI of k3s-ha.
//!
//! - [`check`]: `lbctl config check`.
//! - [`import`]: `lbctl import` (keepalived.conf + haproxy.cfg -> cluster.toml).
//! - [`install`]: `lbctl install k3s|dns|ingress|demo-app`.
//! - [`lab`]: `lbctl lab up|down|status|fail|recover|test`.
//! - [`ops`]: `status`, `drain`/`enable`/`disable`, `reload`, `maintenance`.

pub mod check;
pub mod import;
pub mod install;
pub mod lab;
pub mod ops;
