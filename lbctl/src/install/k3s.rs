//! `lbctl install k3s`: `/etc/rancher/k3s/config.yaml` per role, the shared token, and k3s's
//! install script with a pinned version, one server at a time.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Result};
use common::config::{Cluster, Node, Role};

use super::text::q;
use super::{
    api_port, first_server, is_server, InstallState, Plan, PlannedFile, PlannedWait, WaitFor,
    TOKEN_PATH,
};

pub(super) const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";
/// Where the install script is downloaded to when no local copy exists.
pub(super) const SCRIPT_DOWNLOAD_PATH: &str = "/var/lib/k3s-ha/k3s-install.sh";
pub(super) const SCRIPT_URL: &str = "https://get.k3s.io";
/// Where an air-gapped install keeps its copy of the script.
pub(super) const SCRIPT_LOCAL_PATH: &str = "/usr/local/share/k3s-ha/k3s-install.sh";
pub(super) const K3S_BINARY: &str = "/usr/local/bin/k3s";

/// Where k3s looks for air-gap image bundles.
pub(super) const AIRGAP_IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";

/// How long a joining node waits for an apiserver to answer through the VIP.
const JOIN_WAIT: Duration = Duration::from_secs(300);
/// How long a server install waits for its node to turn Ready.
const READY_WAIT: Duration = Duration::from_secs(600);

/// The addresses and names every server's certificate must carry. Identical on every server.
pub(super) fn tls_sans(cluster: &Cluster) -> Vec<String> {
    let mut sans = Vec::new();
    if let Some(v4) = cluster.vip.v4 {
        sans.push(v4.addr.to_string());
    }
    if let Some(v6) = cluster.vip.v6 {
        sans.push(v6.addr.to_string());
    }
    sans.push(super::dns::api_fqdn(cluster));
    sans
}

/// The join URL: the VIP on the load-balanced apiserver port.
pub(super) fn server_url(cluster: &Cluster) -> Result<(String, SocketAddr)> {
    let port = api_port(cluster)?;
    let addr: IpAddr = match (cluster.vip.v4, cluster.vip.v6) {
        (Some(v4), _) => v4.addr.into(),
        (None, Some(v6)) => v6.addr.into(),
        (None, None) => bail!("the cluster has no VIP; joining nodes register through it"),
    };
    let sock = SocketAddr::new(addr, port);
    Ok((format!("https://{sock}"), sock))
}

pub(super) fn render_config(cluster: &Cluster, node: &Node) -> Result<String> {
    let first = first_server(cluster)?;
    let is_first = node.name == first.name;
    let (url, _) = server_url(cluster)?;
    let mut out = String::new();
    let role = match (node.role, is_first) {
        (Role::Server, true) => "server, first: initialises the embedded etcd cluster",
        (Role::Server, false) => "server, joins through the VIP",
        (Role::Agent, _) => "agent, joins through the VIP",
    };
    let _ = writeln!(out, "# {CONFIG_PATH} for {} ({role}).", node.name);
    let _ = writeln!(
        out,
        "# Rendered by `lbctl install k3s` from cluster.toml (cluster {}); re-run it instead of editing.",
        cluster.name
    );
    if is_first {
        out.push_str("cluster-init: true\n");
    } else {
        let _ = writeln!(
            out,
            "# Registers through the load-balanced apiserver on the VIP, so a join survives one dead server."
        );
        let _ = writeln!(out, "server: {}", q(&url));
    }
    let _ = writeln!(out, "token-file: {}", q(TOKEN_PATH));
    let _ = writeln!(out, "node-name: {}", q(&node.name));
    let _ = writeln!(out, "node-ip: {}", q(&node.address.to_string()));
    if is_server(node) {
        out.push_str("# Identical on every server (k3s requires these to match):\n");
        out.push_str("tls-san:\n");
        for san in tls_sans(cluster) {
            let _ = writeln!(out, "  - {}", q(&san));
        }
        out.push_str(
            "# traefik: the ingress is ingress-nginx (lbctl install ingress).\n\
             # servicelb: its hostPort 80/443 pods would capture the VIP's traffic.\n",
        );
        out.push_str("disable:\n  - \"traefik\"\n  - \"servicelb\"\n");
        out.push_str("write-kubeconfig-mode: \"0600\"\n");
    }
    Ok(out)
}

pub(super) fn plan(cluster: &Cluster, node: &Node, state: &InstallState) -> Result<Plan> {
    let Some(token) = state.token.as_deref() else {
        bail!(
            "no k3s token: the first server ({}) generates {TOKEN_PATH}; copy it to this node \
             (mode 0600) before installing {}",
            first_server(cluster)?.name,
            node.name
        );
    };
    let config = render_config(cluster, node)?;
    let mut plan = Plan {
        files: vec![
            PlannedFile::new(TOKEN_PATH, format!("{token}\n"), 0o600),
            PlannedFile::new(CONFIG_PATH, config.clone(), 0o644),
        ],
        ..Plan::default()
    };

    let version = cluster.k3s.version.as_str();
    let config_unchanged = state.existing(CONFIG_PATH.as_ref()) == Some(config.as_bytes());
    let installed = state.tools.k3s_version.as_deref();
    if installed == Some(version) && state.tools.k3s_active && config_unchanged {
        plan.notes.push(format!(
            "k3s {version} is installed and running with this config: nothing to install"
        ));
    } else {
        let airgap = cluster.k3s.airgap.as_ref();
        let script = match (airgap, &state.tools.install_script) {
            (Some(dir), _) => {
                // Air-gapped: the binary and the images from the directory, no download.
                let bin = dir.join("k3s").display().to_string();
                plan.commands.push(
                    ["install", "-m", "0755", &bin, K3S_BINARY]
                        .map(String::from)
                        .to_vec(),
                );
                for image in &state.tools.airgap_images {
                    let src = dir.join(image).display().to_string();
                    let dst = format!("{AIRGAP_IMAGES_DIR}/{image}");
                    plan.commands.push(
                        ["install", "-D", "-m", "0644", &src, &dst]
                            .map(String::from)
                            .to_vec(),
                    );
                }
                dir.join("install.sh").display().to_string()
            }
            (None, Some(path)) => path.display().to_string(),
            (None, None) => {
                plan.commands.push(
                    [
                        "curl",
                        "-sfL",
                        "--connect-timeout",
                        "10",
                        "--max-time",
                        "120",
                        "--retry",
                        "2",
                        "--create-dirs",
                        "-o",
                        SCRIPT_DOWNLOAD_PATH,
                        SCRIPT_URL,
                    ]
                    .map(String::from)
                    .to_vec(),
                );
                SCRIPT_DOWNLOAD_PATH.to_string()
            }
        };
        if node.name != first_server(cluster)?.name {
            // A join registers through the VIP, so it needs one apiserver answering there,
            // whichever: not every earlier server (one dead server must not block every
            // join). Right after the first server's install that one is the first server.
            plan.waits.push(PlannedWait {
                before_command: plan.commands.len(),
                what: WaitFor::K3sPing(server_url(cluster)?.1),
                timeout: JOIN_WAIT,
            });
        }
        let args = match node.role {
            Role::Server => &cluster.k3s.server_args,
            Role::Agent => &cluster.k3s.agent_args,
        };
        let mut exec = node.role.as_str().to_owned();
        for a in args {
            exec.push(' ');
            exec.push_str(a);
        }
        let mut cmd = vec![
            "env".to_string(),
            format!("INSTALL_K3S_VERSION={version}"),
            format!("INSTALL_K3S_EXEC={exec}"),
        ];
        if airgap.is_some() {
            cmd.push("INSTALL_K3S_SKIP_DOWNLOAD=true".into());
        } else if let Some(v) = installed {
            cmd.push("INSTALL_K3S_SKIP_DOWNLOAD=true".into());
            if v != version {
                plan.notes.push(format!(
                    "{K3S_BINARY} is {v}, not {version} (cluster.toml [k3s] version): \
                     INSTALL_K3S_SKIP_DOWNLOAD keeps it; replace the binary to change versions"
                ));
            }
        }
        cmd.push("sh".into());
        cmd.push(script);
        plan.commands.push(cmd);
    }
    if is_server(node) {
        plan.waits.push(PlannedWait {
            before_command: plan.commands.len(),
            what: WaitFor::NodeReady(node.name.clone()),
            timeout: READY_WAIT,
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::testutil::{lab, today};
    use crate::install::K3S_VERSION;

    fn state() -> InstallState {
        let mut s = InstallState::empty(today());
        s.token = Some("t0ken".into());
        s
    }

    #[test]
    fn first_server_inits_and_others_join_through_the_vip() {
        let c = lab();
        let first = render_config(&c, &c.nodes[0]).unwrap();
        assert!(first.contains("cluster-init: true\n"));
        assert!(!first.contains("server:"));
        let second = render_config(&c, &c.nodes[1]).unwrap();
        assert!(
            second.contains("server: \"https://192.168.168.100:8443\"\n"),
            "{second}"
        );
        assert!(!second.contains("cluster-init"));
        let agent = render_config(&c, &c.nodes[3]).unwrap();
        assert!(agent.contains("server: \"https://192.168.168.100:8443\"\n"));
        assert!(
            !agent.contains("tls-san"),
            "agents take no server flags: {agent}"
        );
        assert!(!agent.contains("disable"));
    }

    #[test]
    fn values_k3s_needs_identical_are_identical_across_servers() {
        let c = lab();
        let tail = |n: &Node| {
            let s = render_config(&c, n).unwrap();
            s[s.find("# Identical").unwrap()..].to_string()
        };
        let servers: Vec<_> = c.servers().map(tail).collect();
        assert!(servers.windows(2).all(|w| w[0] == w[1]));
        assert!(servers[0].contains("\"servicelb\""));
        assert!(servers[0].contains("\"traefik\""));
    }

    #[test]
    fn no_token_is_a_clear_error_on_joiners() {
        let c = lab();
        let err = plan(&c, &c.nodes[1], &InstallState::empty(today())).unwrap_err();
        assert!(err.to_string().contains("copy it to this node"), "{err}");
    }

    #[test]
    fn skip_download_when_the_binary_exists() {
        let c = lab();
        let mut s = state();
        s.tools.k3s_version = Some(K3S_VERSION.into());
        s.tools.install_script = Some("/opt/install.sh".into());
        let p = plan(&c, &c.nodes[0], &s).unwrap();
        assert_eq!(p.commands.len(), 1, "no download: {:?}", p.commands);
        assert!(p.commands[0].contains(&"INSTALL_K3S_SKIP_DOWNLOAD=true".to_string()));
        assert_eq!(p.commands[0].last().unwrap(), "/opt/install.sh");
    }

    #[test]
    fn rerun_with_same_config_installs_nothing() {
        let c = lab();
        let mut s = state();
        s.tools.k3s_version = Some(K3S_VERSION.into());
        s.tools.k3s_active = true;
        s.existing.insert(
            CONFIG_PATH.into(),
            render_config(&c, &c.nodes[1]).unwrap().into_bytes(),
        );
        let p = plan(&c, &c.nodes[1], &s).unwrap();
        assert!(p.commands.is_empty(), "{:?}", p.commands);
        assert_eq!(p.waits.len(), 1, "still waits for Ready");
    }

    /// Regression: a join waited on every earlier server's own :6443, so one dead server
    /// blocked every later install. It waits for an apiserver answering through the VIP.
    #[test]
    fn a_join_waits_only_for_an_apiserver_behind_the_vip() {
        let c = lab();
        let p = plan(&c, &c.nodes[2], &state()).unwrap();
        let waits: Vec<String> = p.waits.iter().map(|w| w.what.to_string()).collect();
        assert_eq!(
            waits,
            [
                "k3s answering on https://192.168.168.100:8443/ping",
                "node lx-k3s-server-03 Ready"
            ]
        );
        // The wait sits between the download and the install script.
        assert_eq!(p.waits[0].before_command, 1);
        assert_eq!(p.waits[1].before_command, 2);
        let agent = plan(&c, &c.nodes[4], &state()).unwrap();
        let waits: Vec<String> = agent.waits.iter().map(|w| w.what.to_string()).collect();
        assert_eq!(
            waits,
            ["k3s answering on https://192.168.168.100:8443/ping"]
        );
        // The first server waits for nobody.
        let first = plan(&c, &c.nodes[0], &state()).unwrap();
        assert!(first
            .waits
            .iter()
            .all(|w| matches!(w.what, WaitFor::NodeReady(_))));
    }

    /// Regression: the k3s version and flags lived only in code.
    #[test]
    fn version_flags_and_airgap_come_from_cluster_toml() {
        let mut c = lab();
        c.k3s.version = "v1.32.5+k3s1".into();
        c.k3s.server_args = vec!["--flannel-backend=wireguard-native".into()];
        c.k3s.agent_args = vec!["--node-label=tier=edge".into()];
        let p = plan(&c, &c.nodes[1], &state()).unwrap();
        let install = p.commands.last().unwrap();
        assert!(
            install.contains(&"INSTALL_K3S_VERSION=v1.32.5+k3s1".to_string()),
            "{install:?}"
        );
        assert!(install
            .contains(&"INSTALL_K3S_EXEC=server --flannel-backend=wireguard-native".to_string()));
        let p = plan(&c, &c.nodes[3], &state()).unwrap();
        assert!(p
            .commands
            .last()
            .unwrap()
            .contains(&"INSTALL_K3S_EXEC=agent --node-label=tier=edge".to_string()));
        // Air-gapped: binary and images from the directory, its install.sh, no download.
        c.k3s.airgap = Some("/opt/k3s-airgap".into());
        let mut s = state();
        s.tools.airgap_images = vec!["k3s-airgap-images-amd64.tar.zst".into()];
        let p = plan(&c, &c.nodes[1], &s).unwrap();
        let lines: Vec<String> = p.commands.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            lines[0],
            "install -m 0755 /opt/k3s-airgap/k3s /usr/local/bin/k3s"
        );
        assert_eq!(
            lines[1],
            "install -D -m 0644 /opt/k3s-airgap/k3s-airgap-images-amd64.tar.zst \
             /var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst"
        );
        assert!(lines[2].contains("INSTALL_K3S_SKIP_DOWNLOAD=true"));
        assert!(
            lines[2].ends_with(" sh /opt/k3s-airgap/install.sh"),
            "{}",
            lines[2]
        );
        assert!(!lines.iter().any(|l| l.contains("curl")));
    }
}
