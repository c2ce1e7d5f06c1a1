//! `lbctl install demo-app`: nginx behind the ingress with TLS, for `nginx.<domain>`.
//! It answers with the client's address as the ingress controller saw it (`X-Real-IP`,
//! `X-Forwarded-For`): the client's own when lbd sends the PROXY protocol header
//! (`proxy_protocol`, and the controller's `use-proxy-protocol`), else a server's.
//!
//! The certificate is signed by a small CA the installer generates once per cluster (rcgen,
//! ECDSA P-256) and keeps in `/etc/k3s-ha/pki`; both are reused on later runs.

use std::fmt::Write as _;
use std::io::Read as _;
use std::time::Duration;

use anyhow::{Context, Result};
use common::config::Cluster;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

use super::ingress::CLASS;
use super::text::{base64, q};
use super::{Date, InstallState, Plan, PlannedFile, DEMO_IMAGE, PKI_DIR};

pub(super) const NAMESPACE: &str = "demo";
pub(super) const APP: &str = "nginx";
pub(super) const SECRET: &str = "nginx-tls";
pub(super) const MANIFEST_PATH: &str = "/etc/k3s-ha/manifests/demo-app.yaml";

const DAY: Duration = Duration::from_secs(86_400);

/// The demo CA and the `nginx.<domain>` certificate, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// `nginx.<domain>`.
pub fn demo_host(cluster: &Cluster) -> String {
    format!("{APP}.{}", cluster.domain.trim_end_matches('.'))
}

pub(super) fn ca_cert_path(cluster: &Cluster) -> String {
    format!("{PKI_DIR}/{}-demo-ca.pem", cluster.name)
}
pub(super) fn ca_key_path(cluster: &Cluster) -> String {
    format!("{PKI_DIR}/{}-demo-ca.key", cluster.name)
}
pub(super) fn cert_path(cluster: &Cluster) -> String {
    format!("{PKI_DIR}/{}.pem", demo_host(cluster))
}
pub(super) fn key_path(cluster: &Cluster) -> String {
    format!("{PKI_DIR}/{}.key", demo_host(cluster))
}

/// Random bytes from the kernel.
pub(super) fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf)
}

fn serial() -> Result<SerialNumber> {
    let mut b = random_bytes(16)?;
    b[0] &= 0x7f; // positive INTEGER
    b[0] |= 0x01; // and exactly 16 bytes long
    Ok(SerialNumber::from_slice(&b))
}

/// The CA's parameters; its name depends only on the cluster, so an issuer can be rebuilt
/// from the stored key to sign a new leaf.
fn ca_params(cluster: &Cluster) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "k3s-ha");
    dn.push(
        DnType::CommonName,
        format!("k3s-ha demo CA {}", cluster.name),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A new CA (certificate PEM, key PEM), valid ten years from yesterday.
pub fn issue_ca(cluster: &Cluster, today: Date) -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut p = ca_params(cluster);
    p.serial_number = Some(serial()?);
    p.not_before = date_time_ymd(today.year, today.month, today.day) - DAY;
    p.not_after = p.not_before + 3650 * DAY;
    let cert = p.self_signed(&key).context("signing the CA certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A certificate for `nginx.<domain>` signed by the CA key, valid two years from yesterday.
pub fn issue_leaf(cluster: &Cluster, ca_key_pem: &str, today: Date) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem).context("reading the CA key")?;
    let issuer = Issuer::new(ca_params(cluster), ca_key);
    let key = KeyPair::generate().context("generating the certificate key")?;
    let host = demo_host(cluster);
    let mut p = CertificateParams::new(vec![host.clone()])
        .with_context(|| format!("{host:?} is not a valid DNS name"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host);
    p.distinguished_name = dn;
    p.serial_number = Some(serial()?);
    p.not_before = date_time_ymd(today.year, today.month, today.day) - DAY;
    p.not_after = p.not_before + 730 * DAY;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let cert = p
        .signed_by(&key, &issuer)
        .context("signing the certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

pub(super) fn render_manifest(cluster: &Cluster, tls: &TlsMaterial) -> String {
    let host = demo_host(cluster);
    let labels = format!("app.kubernetes.io/name: {APP}\n");
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# Demo app for cluster {}: https://{host}/ through the ingress.",
        cluster.name
    );
    let _ = writeln!(
        m,
        "# Rendered by `lbctl install demo-app`; holds a private key (mode 0600)."
    );
    let _ = writeln!(
        m,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n---"
    );
    let _ = write!(
        m,
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {APP}
  namespace: {NAMESPACE}
  labels:
    {labels}spec:
  replicas: 2
  selector:
    matchLabels:
      {labels}  template:
    metadata:
      labels:
        {labels}    spec:
      containers:
        - name: {APP}
          image: {image}
          ports:
            - name: http
              containerPort: 80
          volumeMounts:
            - name: conf
              mountPath: /etc/nginx/conf.d
              readOnly: true
          resources:
            requests:
              cpu: 10m
              memory: 16Mi
            limits:
              cpu: 200m
              memory: 64Mi
          readinessProbe:
            httpGet:
              path: /
              port: http
            periodSeconds: 5
          livenessProbe:
            httpGet:
              path: /
              port: http
            periodSeconds: 20
      volumes:
        - name: conf
          configMap:
            name: {APP}-conf
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {APP}-conf
  namespace: {NAMESPACE}
data:
  default.conf: |
    server {{
        listen 80;
        default_type text/plain;
        location / {{
            return 200 \"{host}: $hostname answers client $http_x_real_ip (X-Forwarded-For: $http_x_forwarded_for)\\n\";
        }}
    }}
---
apiVersion: v1
kind: Service
metadata:
  name: {APP}
  namespace: {NAMESPACE}
spec:
  type: ClusterIP
  selector:
    {labels}  ports:
    - name: http
      port: 80
      targetPort: http
---
apiVersion: v1
kind: Secret
metadata:
  name: {SECRET}
  namespace: {NAMESPACE}
type: kubernetes.io/tls
data:
  tls.crt: {crt}
  tls.key: {key}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {APP}
  namespace: {NAMESPACE}
spec:
  ingressClassName: {CLASS}
  tls:
    - hosts:
        - {qhost}
      secretName: {SECRET}
  rules:
    - host: {qhost}
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: {APP}
                port:
                  name: http
",
        image = q(DEMO_IMAGE),
        crt = base64(tls.cert_pem.as_bytes()),
        key = base64(tls.key_pem.as_bytes()),
        qhost = q(&host),
    );
    m
}

pub(super) fn plan(cluster: &Cluster, state: &InstallState) -> Result<Plan> {
    let tls = state
        .tls
        .as_ref()
        .context("no demo CA / certificate in the install state (run() issues them)")?;
    let host = demo_host(cluster);
    let ca = ca_cert_path(cluster);
    let mut plan = Plan {
        files: vec![
            PlannedFile::new(&ca, tls.ca_cert_pem.clone(), 0o644),
            PlannedFile::new(ca_key_path(cluster), tls.ca_key_pem.clone(), 0o600),
            PlannedFile::new(cert_path(cluster), tls.cert_pem.clone(), 0o644),
            PlannedFile::new(key_path(cluster), tls.key_pem.clone(), 0o600),
            PlannedFile::new(MANIFEST_PATH, render_manifest(cluster, tls), 0o600),
        ],
        ..Plan::default()
    };
    plan.commands.push(
        ["k3s", "kubectl", "apply", "-f", MANIFEST_PATH]
            .map(String::from)
            .to_vec(),
    );
    plan.commands.push(vec![
        "k3s".into(),
        "kubectl".into(),
        "-n".into(),
        NAMESPACE.into(),
        "rollout".into(),
        "status".into(),
        format!("deployment/{APP}"),
        "--timeout=300s".into(),
    ]);
    plan.notes.extend([
        format!("Trust the demo CA ({ca}) to browse https://{host}/ without warnings:"),
        format!(
            "  Debian/Ubuntu: cp {ca} /usr/local/share/ca-certificates/k3s-ha-{}-demo-ca.crt && update-ca-certificates",
            cluster.name
        ),
        format!("  one request:   curl --cacert {ca} https://{host}/"),
        "  browsers:      import it as an authority (Firefox: Settings > Certificates; Chromium: chrome://certificate-manager)".into(),
    ]);
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::testutil::{lab, today};

    #[test]
    fn ca_and_leaf_are_issued_and_the_leaf_names_the_host() {
        let c = lab();
        let (ca, ca_key) = issue_ca(&c, today()).unwrap();
        let (leaf, key) = issue_leaf(&c, &ca_key, today()).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        assert_ne!(ca, leaf);
        let tls = TlsMaterial {
            ca_cert_pem: ca,
            ca_key_pem: ca_key,
            cert_pem: leaf,
            key_pem: key,
        };
        let m = render_manifest(&c, &tls);
        assert!(m.contains("- host: \"nginx.k3s.test.local\""));
        assert!(m.contains(&base64(tls.cert_pem.as_bytes())));
        // The answer names the client as the ingress controller saw it.
        assert!(
            m.contains("answers client $http_x_real_ip (X-Forwarded-For: $http_x_forwarded_for)")
        );
    }
}
