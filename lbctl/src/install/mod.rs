//! `lbctl install`: turn the same `cluster.toml` into a working HA k3s cluster, its DNS and
//! its ingress.
//!
//! Two halves, so the rendering is golden-testable:
//!
//! ```text
//!   Cluster ──┐
//!   Target ───┼──> plan() (pure) ──> Plan { files, commands, waits } ──> apply (run())
//!   State  ───┘        ^                                                  │ write files (modes)
//!   (token, serials,   │                                                  │ run commands, bounded,
//!    date, CA, tools)  └────────── run() reads the real state ────────────┘ with progress
//! ```
//!
//! [`plan`] never reads the system, the clock or a random source: everything that is not
//! derived from the [`Cluster`] comes in through [`InstallState`]. [`run`] gathers that state
//! (existing token, current zone files, today's date, the demo CA, which tools exist),
//! plans, and then applies, prints (`--dry-run`) or writes under a directory (`--render`).

mod apply;
mod demo;
mod dns;
mod ingress;
mod k3s;
mod text;
pub(crate) use text::base64;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::config::{Cluster, Node, Role};

pub use apply::{civil_from_days, describe_steps, today_utc};
pub use demo::{demo_host, issue_ca, issue_leaf, TlsMaterial};
pub use dns::{next_serial, reverse_zone_v4, reverse_zone_v6};

/// The k3s release installed when cluster.toml's `[k3s] version` is not set.
pub const K3S_VERSION: &str = common::config::DEFAULT_K3S_VERSION;
/// Kubernetes minor the manifests are written and validated for (matches [`K3S_VERSION`]).
pub const KUBERNETES_MINOR: &str = "1.33";
/// Pinned ingress-nginx Helm chart (controller v1.14.1).
pub const INGRESS_NGINX_CHART_VERSION: &str = "4.14.1";
/// Helm repository of the ingress-nginx chart.
pub const INGRESS_NGINX_REPO: &str = "https://kubernetes.github.io/ingress-nginx";
/// Pinned image of the demo app.
pub const DEMO_IMAGE: &str = "nginx:1.27.5-alpine";
/// k3s's own apiserver/supervisor port: never bound or proxied by k3s-ha on a node address.
pub const K3S_API_PORT: u16 = 6443;

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct InstallOpts {
    /// Print every file and command; touch nothing.
    pub dry_run: bool,
    /// Write the files under this directory instead of `/`, run no command.
    pub render_dir: Option<PathBuf>,
    /// The node to install (k3s); default: the node this machine is.
    pub node: Option<String>,
}

/// What to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    K3s,
    Dns,
    Ingress,
    DemoApp,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::K3s => "k3s",
            Target::Dns => "dns",
            Target::Ingress => "ingress",
            Target::DemoApp => "demo-app",
        }
    }
}

/// Everything one target would do: files first, then commands in order, with waits between.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub files: Vec<PlannedFile>,
    pub commands: Vec<Vec<String>>,
    /// Bounded waits, each run just before `commands[before_command]` (or after the last
    /// command when `before_command == commands.len()`).
    pub waits: Vec<PlannedWait>,
    /// Lines printed to the operator after a successful run (how to trust the CA, ...).
    pub notes: Vec<String>,
}

/// One file: absolute path as on the system, contents, Unix mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl PlannedFile {
    fn new(path: impl Into<PathBuf>, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        PlannedFile {
            path: path.into(),
            contents: contents.into(),
            mode,
        }
    }

    /// A secret (token, private key): printed redacted by `--dry-run`.
    pub fn is_secret(&self) -> bool {
        self.mode & 0o077 == 0
    }
}

/// A bounded wait between commands, shown with progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWait {
    pub before_command: usize,
    pub what: WaitFor,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// A TCP connect to this address succeeds.
    TcpConnect(std::net::SocketAddr),
    /// A k3s supervisor answers `GET /ping` with `pong` over TLS at this address: through
    /// the VIP, some server's k3s is up (a TCP connect alone would be lbd answering).
    K3sPing(std::net::SocketAddr),
    /// `k3s kubectl get node NAME` reports condition Ready=True.
    NodeReady(String),
}

impl std::fmt::Display for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitFor::TcpConnect(a) => write!(f, "tcp connect {a}"),
            WaitFor::K3sPing(a) => write!(f, "k3s answering on https://{a}/ping"),
            WaitFor::NodeReady(n) => write!(f, "node {n} Ready"),
        }
    }
}

/// Today's date (UTC), for zone serials and certificate validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

/// Which helper programs exist on this machine, and what is running.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tools {
    pub named_checkconf: bool,
    pub named_checkzone: bool,
    /// `named` is running (answers `rndc status`): reload it after a change.
    pub named_running: bool,
    pub helm: bool,
    /// `k3s --version` of the installed binary (first word after `k3s version`).
    pub k3s_version: Option<String>,
    /// The k3s (or k3s-agent) unit is active.
    pub k3s_active: bool,
    /// A local copy of k3s's install script (air-gapped installs); `None`: download it.
    pub install_script: Option<PathBuf>,
    /// With `[k3s] airgap`: the image bundles found in that directory (file names).
    pub airgap_images: Vec<String>,
}

/// What [`plan`] must not generate itself, so that rendering is deterministic.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallState {
    /// The k3s join token (existing, or one [`run`] generated for the first server).
    pub token: Option<String>,
    pub today: Date,
    /// Current contents of files [`plan`] compares or merges with (see [`state_paths`]).
    pub existing: BTreeMap<PathBuf, Vec<u8>>,
    pub tools: Tools,
    /// The demo CA and the `nginx.<domain>` certificate (existing or freshly issued).
    pub tls: Option<TlsMaterial>,
}

impl InstallState {
    /// A state with nothing existing and no tools, for tests and renders.
    pub fn empty(today: Date) -> Self {
        InstallState {
            token: None,
            today,
            existing: BTreeMap::new(),
            tools: Tools::default(),
            tls: None,
        }
    }

    fn existing(&self, path: &Path) -> Option<&[u8]> {
        self.existing.get(path).map(Vec::as_slice)
    }
}

/// Where k3s-ha keeps its own installer state on a node.
pub const STATE_DIR: &str = "/etc/k3s-ha";
/// The shared k3s token (0600), identical on every node.
pub const TOKEN_PATH: &str = "/etc/k3s-ha/k3s-token";
/// The demo CA and certificate.
pub const PKI_DIR: &str = "/etc/k3s-ha/pki";

/// The files whose current contents [`plan`] needs in [`InstallState::existing`].
pub fn state_paths(cluster: &Cluster, target: Target) -> Vec<PathBuf> {
    match target {
        Target::K3s => vec![PathBuf::from(k3s::CONFIG_PATH)],
        Target::Dns => dns::state_paths(cluster),
        Target::Ingress => vec![PathBuf::from(ingress::HELMCHART_PATH)],
        Target::DemoApp => Vec::new(),
    }
}

/// Pure rendering: every file and command a target would write and run.
pub fn plan(
    cluster: &Cluster,
    target: Target,
    opts: &InstallOpts,
    state: &InstallState,
) -> Result<Plan> {
    match target {
        Target::K3s => {
            let node = select_node(cluster, opts.node.as_deref())?;
            k3s::plan(cluster, node, state)
        }
        Target::Dns => dns::plan(cluster, state),
        Target::Ingress => ingress::plan(cluster, state),
        Target::DemoApp => demo::plan(cluster, state),
    }
}

/// Plan, then apply / print / render according to `opts`.
pub fn run(cluster: &Cluster, target: Target, opts: &InstallOpts) -> Result<()> {
    apply::run(cluster, target, opts)
}

/// The node named by `--node`, or the one this machine is.
fn select_node<'a>(cluster: &'a Cluster, flag: Option<&str>) -> Result<&'a Node> {
    if let Some(name) = flag {
        return cluster.node(name).with_context(|| {
            let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "no node named {name:?} in the cluster; nodes: {}",
                names.join(", ")
            )
        });
    }
    match common::config::identify(cluster, None) {
        Ok((node, _)) => Ok(node),
        Err(e) => bail!("{e}"),
    }
}

/// The first server in file order: the one that runs `cluster-init`.
fn first_server(cluster: &Cluster) -> Result<&Node> {
    cluster
        .servers()
        .next()
        .context("the cluster has no node with role \"server\"")
}

/// The port on the VIP that proxies to the apiservers (the service with backend 6443).
fn api_port(cluster: &Cluster) -> Result<u16> {
    cluster
        .services
        .iter()
        .find(|s| s.backend_port == K3S_API_PORT)
        .map(|s| s.listen)
        .with_context(|| {
            format!(
                "no [[services]] entry proxies to the apiserver port {K3S_API_PORT}; joining \
                 nodes register through it"
            )
        })
}

fn is_server(node: &Node) -> bool {
    node.role == Role::Server
}

#[cfg(test)]
pub(crate) mod testutil;
