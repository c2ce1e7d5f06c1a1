//! Which node of the cluster is this process?
//!
//! In order: `--node NAME`; else the node whose name is the host name (or its first label);
//! else the one node whose address is on a local interface. No match, or more than one, is
//! an error that says what was tried.

use std::net::IpAddr;

use super::{Cluster, Node};

/// How the node was found (for the startup log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSource {
    Flag,
    Hostname,
    LocalAddress,
}

impl NodeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeSource::Flag => "--node",
            NodeSource::Hostname => "host name",
            NodeSource::LocalAddress => "local address",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    #[error("--node {given:?} names no node of the cluster; nodes are: {known}")]
    UnknownNode { given: String, known: String },
    #[error(
        "cannot tell which node this is: host name {hostname:?} is no node's name and no node's \
         address is on a local interface; pass --node NAME (nodes are: {known})"
    )]
    NoMatch { hostname: String, known: String },
    #[error(
        "cannot tell which node this is: addresses of several nodes are on local interfaces \
         ({matches}); pass --node NAME"
    )]
    Ambiguous { matches: String },
}

pub fn identify<'a>(
    cluster: &'a Cluster,
    flag: Option<&str>,
) -> Result<(&'a Node, NodeSource), IdentifyError> {
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    identify_with(cluster, flag, &hostname, &local_addresses())
}

/// The pure part of [`identify`], for tests.
pub fn identify_with<'a>(
    cluster: &'a Cluster,
    flag: Option<&str>,
    hostname: &str,
    local: &[IpAddr],
) -> Result<(&'a Node, NodeSource), IdentifyError> {
    let known = || {
        cluster
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = flag {
        return cluster
            .node(name)
            .map(|n| (n, NodeSource::Flag))
            .ok_or_else(|| IdentifyError::UnknownNode {
                given: name.to_owned(),
                known: known(),
            });
    }
    let short = hostname.split('.').next().unwrap_or(hostname);
    if let Some(n) = cluster
        .nodes
        .iter()
        .find(|n| n.name == hostname || n.name == short)
    {
        return Ok((n, NodeSource::Hostname));
    }
    let matches: Vec<&Node> = cluster
        .nodes
        .iter()
        .filter(|n| {
            local.contains(&n.address) || n.address6.is_some_and(|a| local.contains(&IpAddr::V6(a)))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok((one, NodeSource::LocalAddress)),
        [] => Err(IdentifyError::NoMatch {
            hostname: hostname.to_owned(),
            known: known(),
        }),
        many => Err(IdentifyError::Ambiguous {
            matches: many
                .iter()
                .map(|n| format!("{} ({})", n.name, n.address))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Every address on a local interface (empty on error).
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_flag_hostname_and_address() {
        let c = crate::config::reference_lab();
        let (n, s) = identify_with(&c, Some("lx-k3s-server-02"), "x", &[]).unwrap();
        assert_eq!((n.name.as_str(), s), ("lx-k3s-server-02", NodeSource::Flag));
        let (n, s) = identify_with(&c, None, "lx-k3s-server-03.k3s.test.local", &[]).unwrap();
        assert_eq!(
            (n.name.as_str(), s),
            ("lx-k3s-server-03", NodeSource::Hostname)
        );
        let local = [
            "127.0.0.1".parse().unwrap(),
            "192.168.168.112".parse().unwrap(),
        ];
        let (n, s) = identify_with(&c, None, "laptop", &local).unwrap();
        assert_eq!(
            (n.name.as_str(), s),
            ("lx-k3s-server-02", NodeSource::LocalAddress)
        );
    }

    #[test]
    fn errors_say_what_was_tried() {
        let c = crate::config::reference_lab();
        let e = identify_with(&c, Some("nope"), "x", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--node \"nope\" names no node of the cluster; nodes are: lx-k3s-server-01, \
             lx-k3s-server-02, lx-k3s-server-03, lx-k3s-agent-01, lx-k3s-agent-02"
        );
        let e = identify_with(&c, None, "laptop", &[]).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("cannot tell which node this is: host name \"laptop\""));
        let local = [
            "192.168.168.111".parse().unwrap(),
            "192.168.168.112".parse().unwrap(),
        ];
        let e = identify_with(&c, None, "laptop", &local).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot tell which node this is: addresses of several nodes are on local interfaces \
             (lx-k3s-server-01 (192.168.168.111), lx-k3s-server-02 (192.168.168.112)); pass --node NAME"
        );
    }
}
