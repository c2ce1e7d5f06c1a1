//! `lbctl install ingress`: pinned ingress-nginx Helm values, the helm command, and the same as
//! a k3s HelmChart manifest for clusters without helm.
//!
//! The controller runs as a DaemonSet on the control-plane nodes (where lbd forwards the VIP's
//! ports 80/443) behind a NodePort service whose ports are the cluster's ingress backends.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use common::config::Cluster;

use super::text::{indent, q};
use super::{InstallState, Plan, PlannedFile, INGRESS_NGINX_CHART_VERSION, INGRESS_NGINX_REPO};

pub(super) const VALUES_PATH: &str = "/etc/k3s-ha/ingress-nginx/values.yaml";
pub(super) const HELMCHART_PATH: &str =
    "/var/lib/rancher/k3s/server/manifests/k3s-ha-ingress-nginx.yaml";
pub(super) const KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
pub(super) const NAMESPACE: &str = "ingress-nginx";
pub(super) const RELEASE: &str = "ingress-nginx";
pub(super) const CLASS: &str = "nginx";

/// The NodePorts lbd forwards the VIP's HTTP and HTTPS to (backends of the services on 80/443).
pub(super) fn node_ports(cluster: &Cluster) -> Result<(u16, u16)> {
    let port = |listen: u16| {
        cluster
            .services
            .iter()
            .find(|s| s.listen == listen)
            .map(|s| s.backend_port)
            .with_context(|| {
                format!(
                    "no [[services]] entry listens on port {listen}: the ingress NodePorts are \
                     taken from the backends of the services on 80 and 443"
                )
            })
    };
    Ok((port(80)?, port(443)?))
}

/// Whether lbd sends the PROXY protocol header to the ingress (its services on 80 and 443
/// both have `proxy_protocol`; ingress-nginx's `use-proxy-protocol` is one switch for both
/// of its ports, so the two must agree).
pub(super) fn proxy_protocol(cluster: &Cluster) -> Result<bool> {
    let on = |listen: u16| {
        cluster
            .services
            .iter()
            .find(|s| s.listen == listen)
            .is_some_and(|s| s.proxy_protocol.is_some())
    };
    match (on(80), on(443)) {
        (a, b) if a == b => Ok(a),
        (a, _) => anyhow::bail!(
            "the services on 80 and 443 disagree on proxy_protocol ({} on 80, {} on 443): \
             ingress-nginx's use-proxy-protocol applies to both of its ports; set it on both or neither",
            if a { "set" } else { "off" },
            if a { "off" } else { "set" }
        ),
    }
}

/// The servers' addresses (where lbd connects to the NodePorts from), as CIDRs.
fn server_cidrs(cluster: &Cluster) -> String {
    let mut out = Vec::new();
    for n in cluster.servers() {
        out.push(match n.address {
            std::net::IpAddr::V4(a) => format!("{a}/32"),
            std::net::IpAddr::V6(a) => format!("{a}/128"),
        });
        if let Some(a6) = n.address6 {
            out.push(format!("{a6}/128"));
        }
    }
    out.join(",")
}

pub(super) fn render_values(cluster: &Cluster) -> Result<String> {
    let (http, https) = node_ports(cluster)?;
    let proxy = proxy_protocol(cluster)?;
    let mut v = String::new();
    let _ = writeln!(
        v,
        "# ingress-nginx chart {INGRESS_NGINX_CHART_VERSION} values for cluster {} ({}).",
        cluster.name, cluster.domain
    );
    let _ = writeln!(
        v,
        "# Rendered by `lbctl install ingress`; lbd on the VIP forwards 80 -> {http} and 443 -> {https}."
    );
    let _ = writeln!(v, "controller:");
    let _ = writeln!(v, "  kind: DaemonSet");
    let _ = writeln!(v, "  # On the servers, which hold the VIP and run lbd.");
    let _ = writeln!(v, "  nodeSelector:");
    let _ = writeln!(v, "    kubernetes.io/os: linux");
    let _ = writeln!(v, "    node-role.kubernetes.io/control-plane: \"true\"");
    let _ = writeln!(v, "  tolerations:");
    for key in [
        "node-role.kubernetes.io/control-plane",
        "node-role.kubernetes.io/master",
    ] {
        let _ = writeln!(v, "    - key: {key}");
        let _ = writeln!(v, "      operator: Exists");
        let _ = writeln!(v, "      effect: NoSchedule");
    }
    let _ = writeln!(v, "    - key: CriticalAddonsOnly");
    let _ = writeln!(v, "      operator: Exists");
    let _ = writeln!(v, "  service:");
    let _ = writeln!(v, "    type: NodePort");
    let _ = writeln!(
        v,
        "    # Local: a server without a ready controller refuses the NodePort, so lbd's check marks it down."
    );
    let _ = writeln!(v, "    externalTrafficPolicy: Local");
    let _ = writeln!(v, "    nodePorts:");
    let _ = writeln!(v, "      http: {http}");
    let _ = writeln!(v, "      https: {https}");
    let _ = writeln!(v, "  ingressClassResource:");
    let _ = writeln!(v, "    name: {CLASS}");
    let _ = writeln!(v, "    enabled: true");
    let _ = writeln!(v, "    default: true");
    let _ = writeln!(v, "  ingressClass: {CLASS}");
    let _ = writeln!(v, "  watchIngressWithoutClass: true");
    if proxy {
        let _ = writeln!(
            v,
            "  # lbd sends a PROXY protocol header (proxy_protocol in cluster.toml): the controller"
        );
        let _ = writeln!(
            v,
            "  # takes the client's address from it, from the servers' addresses only."
        );
        let _ = writeln!(v, "  config:");
        let _ = writeln!(v, "    use-proxy-protocol: \"true\"");
        let _ = writeln!(v, "    proxy-real-ip-cidr: {}", q(&server_cidrs(cluster)));
    }
    let _ = writeln!(v, "  resources:");
    let _ = writeln!(v, "    requests:");
    let _ = writeln!(v, "      cpu: 100m");
    let _ = writeln!(v, "      memory: 90Mi");
    Ok(v)
}

pub(super) fn render_helmchart(cluster: &Cluster) -> Result<String> {
    let values = render_values(cluster)?;
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# ingress-nginx for cluster {}, installed by k3s's helm-controller (no helm needed).",
        cluster.name
    );
    let _ = writeln!(
        m,
        "# Rendered by `lbctl install ingress`; values as in {VALUES_PATH}."
    );
    let _ = writeln!(m, "apiVersion: helm.cattle.io/v1");
    let _ = writeln!(m, "kind: HelmChart");
    let _ = writeln!(m, "metadata:");
    let _ = writeln!(m, "  name: {RELEASE}");
    let _ = writeln!(m, "  namespace: kube-system");
    let _ = writeln!(m, "spec:");
    let _ = writeln!(m, "  repo: {}", q(INGRESS_NGINX_REPO));
    let _ = writeln!(m, "  chart: ingress-nginx");
    let _ = writeln!(m, "  version: {}", q(INGRESS_NGINX_CHART_VERSION));
    let _ = writeln!(m, "  targetNamespace: {NAMESPACE}");
    let _ = writeln!(m, "  createNamespace: true");
    let _ = writeln!(m, "  valuesContent: |-");
    m.push_str(&indent(&values, 4));
    Ok(m)
}

pub(super) fn helm_command() -> Vec<String> {
    [
        "helm",
        "upgrade",
        "--install",
        RELEASE,
        "ingress-nginx",
        "--repo",
        INGRESS_NGINX_REPO,
        "--version",
        INGRESS_NGINX_CHART_VERSION,
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--values",
        VALUES_PATH,
        "--kubeconfig",
        KUBECONFIG,
        "--wait",
        "--timeout",
        "10m",
    ]
    .map(String::from)
    .to_vec()
}

pub(super) fn plan(cluster: &Cluster, state: &InstallState) -> Result<Plan> {
    let mut plan = Plan::default();
    plan.files.push(PlannedFile::new(
        VALUES_PATH,
        render_values(cluster)?,
        0o644,
    ));
    // Exactly one installer owns the release. A HelmChart manifest from an earlier run
    // means k3s's helm-controller owns it: running helm as well would make two owners of one
    // release (and deleting the manifest would make helm-controller uninstall it).
    let owned_by_controller = state.existing(HELMCHART_PATH.as_ref()).is_some();
    if state.tools.helm && !owned_by_controller {
        plan.commands.push(helm_command());
    } else if owned_by_controller {
        plan.files.push(PlannedFile::new(
            HELMCHART_PATH,
            render_helmchart(cluster)?,
            0o600,
        ));
        if state.tools.helm {
            plan.notes.push(format!(
                "the release is owned by k3s's helm-controller ({HELMCHART_PATH}, from an \
                 earlier install): updated there; helm is not run. To hand it to helm, \
                 delete that manifest (helm-controller then uninstalls the release: a short \
                 ingress outage) and run this again"
            ));
        }
    } else {
        plan.files.push(PlannedFile::new(
            HELMCHART_PATH,
            render_helmchart(cluster)?,
            0o600,
        ));
        plan.notes.push(format!(
            "helm not found: k3s's helm-controller installs the chart from {HELMCHART_PATH} \
             (watch: k3s kubectl -n {NAMESPACE} get pods)"
        ));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::testutil::{lab, today};

    #[test]
    fn helm_or_helmchart_never_both() {
        let c = lab();
        let mut s = InstallState::empty(today());
        let without = plan(&c, &s).unwrap();
        assert!(without.commands.is_empty());
        assert!(without
            .files
            .iter()
            .any(|f| f.path.to_str() == Some(HELMCHART_PATH)));
        s.tools.helm = true;
        let with = plan(&c, &s).unwrap();
        assert_eq!(with.commands, [helm_command()]);
        assert!(with
            .files
            .iter()
            .all(|f| f.path.to_str() != Some(HELMCHART_PATH)));
    }

    /// Regression: after a HelmChart-mode install, a run with helm present ran `helm
    /// upgrade` and left the manifest, so two installers owned one release.
    #[test]
    fn a_helmchart_install_stays_owned_by_the_helm_controller() {
        let c = lab();
        let mut s = InstallState::empty(today());
        s.tools.helm = true;
        s.existing.insert(
            HELMCHART_PATH.into(),
            render_helmchart(&c).unwrap().into_bytes(),
        );
        let p = plan(&c, &s).unwrap();
        assert!(p.commands.is_empty(), "helm must not run: {:?}", p.commands);
        assert!(p
            .files
            .iter()
            .any(|f| f.path.to_str() == Some(HELMCHART_PATH)));
        assert!(p
            .notes
            .iter()
            .any(|n| n.contains("owned by k3s's helm-controller")));
    }

    /// With proxy_protocol on the ingress services the controller reads the header, trusting
    /// the servers only; without it nothing changes; the two ports must agree.
    #[test]
    fn proxy_protocol_turns_on_use_proxy_protocol_for_the_servers() {
        let mut c = lab();
        assert!(!render_values(&c).unwrap().contains("use-proxy-protocol"));
        for s in &mut c.services {
            if s.listen == 80 || s.listen == 443 {
                s.proxy_protocol = Some(common::config::ProxyProtocol::V2);
            }
        }
        let v = render_values(&c).unwrap();
        assert!(
            v.contains(
                "  config:\n    use-proxy-protocol: \"true\"\n    proxy-real-ip-cidr: \"192.168.168.111/32,192.168.168.112/32,192.168.168.113/32\"\n"
            ),
            "{v}"
        );
        for s in &mut c.services {
            if s.listen == 443 {
                s.proxy_protocol = None;
            }
        }
        let e = render_values(&c).unwrap_err().to_string();
        assert!(
            e.contains("disagree on proxy_protocol (set on 80, off on 443)"),
            "{e}"
        );
    }

    #[test]
    fn helmchart_embeds_the_same_values() {
        let c = lab();
        let chart = render_helmchart(&c).unwrap();
        let values = render_values(&c).unwrap();
        let embedded: String = chart
            .split("valuesContent: |-\n")
            .nth(1)
            .unwrap()
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l).to_string() + "\n")
            .collect();
        assert_eq!(embedded, values);
        assert!(values.contains("      http: 30080\n      https: 30443\n"));
    }
}
