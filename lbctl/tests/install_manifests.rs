//! The Kubernetes manifests and the demo certificate, checked by the real tools.
//!
//! Index:
//! - `manifests_pass_kubernetes_validate_strict`: the demo app (Namespace, Deployment,
//!   Service, Secret, Ingress) and the HelmChart manifest pass `kubernetes-validate --strict`
//!   for the pinned Kubernetes minor; a manifest with an unknown field fails it.
//! - `certificate_verifies_for_its_host_only`: `run(demo-app)` into a render dir issues a CA
//!   and a certificate; `openssl verify -verify_hostname nginx.<domain> -purpose sslserver`
//!   passes, another host name fails, the key matches, the Secret carries the certificate,
//!   and a re-run reuses both (same bytes).
//!
//! Needs `kubernetes-validate` (`pip install kubernetes-validate`) and `openssl`; fails,
//! never skips, when they are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod install_support;

use std::path::Path;

use common::config::Cluster;
use install_support::{clusters, golden_state, require_tool, run};
use lbctl::install::{demo_host, plan, InstallOpts, Target, KUBERNETES_MINOR};

fn validate(file: &Path) -> (bool, String) {
    run(
        "kubernetes-validate",
        &["--strict", "-k", KUBERNETES_MINOR, file.to_str().unwrap()],
    )
}

#[test]
fn manifests_pass_kubernetes_validate_strict() {
    require_tool("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    for (short, cluster) in clusters() {
        let state = golden_state(&cluster);
        let opts = InstallOpts::default();
        let demo = plan(&cluster, Target::DemoApp, &opts, &state).unwrap();
        let manifest = demo
            .files
            .iter()
            .find(|f| f.path.ends_with("demo-app.yaml"))
            .unwrap();
        let path = dir.path().join(format!("{short}-demo.yaml"));
        std::fs::write(&path, &manifest.contents).unwrap();
        let (ok, out) = validate(&path);
        assert!(ok, "{short}: demo app manifest rejected:\n{out}");
        for resource in [
            "namespace/demo",
            "deployment/nginx",
            "service/nginx",
            "secret/nginx-tls",
            "ingress/nginx",
        ] {
            let line = format!("passed for resource {resource} against version {KUBERNETES_MINOR}");
            assert!(
                out.contains(&line),
                "{short}: {resource} not validated:\n{out}"
            );
        }
        assert!(
            !out.contains("WARN"),
            "{short}: warnings on core kinds:\n{out}"
        );

        // The HelmChart is a k3s CRD: kubernetes-validate has no schema for it and says so;
        // anything else (a YAML error, an invalid core object) fails.
        let ingress = plan(&cluster, Target::Ingress, &opts, &state).unwrap();
        let chart = ingress
            .files
            .iter()
            .find(|f| f.path.ends_with("k3s-ha-ingress-nginx.yaml"))
            .unwrap();
        let path = dir.path().join(format!("{short}-helmchart.yaml"));
        std::fs::write(&path, &chart.contents).unwrap();
        let (ok, out) = validate(&path);
        assert!(ok, "{short}: HelmChart manifest rejected:\n{out}");
        let other: Vec<&str> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| {
                !l.contains(
                    "Couldn't find schema for kind HelmChart with api version helm.cattle.io/v1",
                )
            })
            .filter(|l| !l.contains("PASSED"))
            .collect();
        assert!(
            other.is_empty(),
            "{short}: unexpected output for the HelmChart:\n{out}"
        );
    }
    // The validator is strict: an unknown field in the Deployment is an error.
    let (_, cluster) = &clusters()[0];
    let demo = plan(
        cluster,
        Target::DemoApp,
        &InstallOpts::default(),
        &golden_state(cluster),
    )
    .unwrap();
    let text = String::from_utf8(demo.files.last().unwrap().contents.clone()).unwrap();
    let broken = text.replacen("  replicas: 2\n", "  replicas: 2\n  replicaz: 2\n", 1);
    assert_ne!(broken, text);
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, broken).unwrap();
    let (ok, out) = validate(&path);
    assert!(
        !ok,
        "kubernetes-validate --strict accepted an unknown field:\n{out}"
    );
}

fn render_demo(cluster: &Cluster, dir: &Path) {
    let opts = InstallOpts {
        render_dir: Some(dir.to_path_buf()),
        ..InstallOpts::default()
    };
    lbctl::install::run(cluster, Target::DemoApp, &opts).unwrap();
}

fn openssl(args: &[&str]) -> (bool, String) {
    run("openssl", args)
}

#[test]
fn certificate_verifies_for_its_host_only() {
    require_tool("openssl");
    for (short, cluster) in clusters() {
        let dir = tempfile::tempdir().unwrap();
        render_demo(&cluster, dir.path());
        let pki = dir.path().join("etc/k3s-ha/pki");
        let host = demo_host(&cluster);
        let ca = pki.join(format!("{}-demo-ca.pem", cluster.name));
        let leaf = pki.join(format!("{host}.pem"));
        let key = pki.join(format!("{host}.key"));
        let (ca, leaf, key) = (
            ca.to_str().unwrap(),
            leaf.to_str().unwrap(),
            key.to_str().unwrap(),
        );

        let verify = |name: &str| {
            openssl(&[
                "verify",
                "-CAfile",
                ca,
                "-verify_hostname",
                name,
                "-purpose",
                "sslserver",
                leaf,
            ])
        };
        let (ok, out) = verify(&host);
        assert!(
            ok && out.contains(": OK"),
            "{short}: {host} does not verify:\n{out}"
        );
        let other = format!("other.{}", cluster.domain);
        let (ok, out) = verify(&other);
        assert!(!ok, "{short}: the certificate verified for {other}:\n{out}");
        // Not for clients: -purpose sslclient fails (serverAuth only).
        let (ok, _) = openssl(&["verify", "-CAfile", ca, "-purpose", "sslclient", leaf]);
        assert!(
            !ok,
            "{short}: the certificate is usable as a client certificate"
        );

        // The key belongs to the certificate.
        let (_, cert_pub) = openssl(&["x509", "-in", leaf, "-noout", "-pubkey"]);
        let (_, key_pub) = openssl(&["pkey", "-in", key, "-pubout"]);
        assert!(cert_pub.contains("BEGIN PUBLIC KEY"), "{cert_pub}");
        assert_eq!(
            cert_pub, key_pub,
            "{short}: key does not match the certificate"
        );

        // Key files are private.
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{short}: {key} mode {mode:o}");

        // The Secret in the manifest carries this certificate.
        let (_, b64) = openssl(&["base64", "-A", "-in", leaf]);
        let manifest =
            std::fs::read_to_string(dir.path().join("etc/k3s-ha/manifests/demo-app.yaml")).unwrap();
        assert!(
            manifest.contains(&format!("tls.crt: {}\n", b64.trim())),
            "{short}: Secret"
        );

        // A re-run reuses the CA and the certificate.
        let before: Vec<Vec<u8>> = [ca, leaf, key]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        render_demo(&cluster, dir.path());
        let after: Vec<Vec<u8>> = [ca, leaf, key]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert_eq!(before, after, "{short}: re-run issued new certificates");
    }
}
