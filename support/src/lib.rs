//! Test and lab support of k3s-ha: what the tests, the lab (`lbctl lab`), the end-to-end
//! tests and the benchmarks build on, and the daemons never link (`cargo tree -p vrrpd -e
//! normal` and `-p lbd` do not show this crate).
//!
//! - [`netns`]: network namespaces, veths and a bridge, with guards that clean up
//!   ([`netns::NetNs`], [`netns::NsChild`], [`netns::Lab`]), [`netns::spawn`] for a
//!   process of a test's own killed on drop, and [`netns::require_root`] for the tests
//!   that need root.
//! - [`ports`]: a free loopback port for a test's listener.
//! - [`standin`]: a stand-in for a daemon's control socket, served from a test's handler.
//! - [`tools`]: the external programs tests and the lab run, from `scripts/test-tools.txt`.

pub mod netns;
pub mod ports;
pub mod standin;
pub mod tools;
