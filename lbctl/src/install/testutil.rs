//! A hand-built reference lab for unit tests (the same as examples/cluster.toml).

use std::time::Duration;

use common::config::*;

use super::Date;

pub(crate) fn today() -> Date {
    Date {
        year: 2026,
        month: 11,
        day: 24,
    }
}

fn node(name: &str, addr: &str, role: Role, priority: Option<u8>) -> Node {
    Node {
        name: name.into(),
        address: addr.parse().unwrap(),
        address6: None,
        role,
        priority,
    }
}

fn service(name: &str, listen: u16, backend_port: u16, servers: &[&Node]) -> Service {
    Service {
        name: name.into(),
        listen,
        bind: None,
        backend_port,
        backends: servers
            .iter()
            .map(|n| Backend {
                name: n.name.clone(),
                addr: std::net::SocketAddr::new(n.address, backend_port),
                weight: 1,
                backup: false,
            })
            .collect(),
        balance: Balance::RoundRobin,
        check: Check {
            kind: CheckKind::Tcp,
            path: "/".into(),
            expect: vec![200],
            host: None,
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            ca: None,
            client_cert: None,
            client_key: None,
        },
        timeouts: Timeouts {
            connect: ConnectTimeout::Fixed(Duration::from_secs(5)),
            idle: Duration::from_secs(60),
            tunnel: Duration::from_secs(3600),
            half_close: Duration::from_secs(10),
        },
        max_connections: 0,
        retries: 2,
        close_on_down: false,
        proxy_protocol: None,
        proxy_tlvs: common::config::ProxyTlvs::default(),
        accept_proxy: None,
    }
}

pub(crate) fn lab() -> Cluster {
    let nodes = vec![
        node(
            "lx-k3s-server-01",
            "192.168.168.111",
            Role::Server,
            Some(150),
        ),
        node(
            "lx-k3s-server-02",
            "192.168.168.112",
            Role::Server,
            Some(140),
        ),
        node(
            "lx-k3s-server-03",
            "192.168.168.113",
            Role::Server,
            Some(130),
        ),
        node("lx-k3s-agent-01", "192.168.168.121", Role::Agent, None),
        node("lx-k3s-agent-02", "192.168.168.122", Role::Agent, None),
    ];
    let servers: Vec<&Node> = nodes.iter().filter(|n| n.role == Role::Server).collect();
    let services = vec![
        service("kube-apiserver", 8443, 6443, &servers),
        service("ingress-http", 80, 30080, &servers),
        service("ingress-https", 443, 30443, &servers),
    ];
    Cluster {
        source: None,
        name: "k3s-lab".into(),
        domain: "k3s.test.local".into(),
        vip: Vip {
            v4: Some(IpNet4 {
                addr: "192.168.168.100".parse().unwrap(),
                prefix: 24,
            }),
            v6: None,
            interface: None,
        },
        vrrp: Vrrp {
            vrid: 51,
            version: 3,
            interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept_mode: false,
            only_cluster_nodes: true,
            password: None,
            checksum: ChecksumMode::Keepalived,
            unicast: false,
            garp_repeat: 5,
            garp_interval: Duration::from_millis(100),
            garp_refresh: Duration::ZERO,
            virtual_mac: false,
            notify: None,
            handover_timeout: Duration::from_secs(3),
            drain_established: Duration::from_secs(600),
            track: Track {
                lbd: TrackEffect::Fault,
                lbd_service: None,
                lbd_interval: Duration::from_secs(1),
                link: true,
                scripts: Vec::new(),
            },
        },
        nodes,
        services,
        stats: Stats {
            listen: Some("0.0.0.0:8404".parse().unwrap()),
            user: None,
            password: None,
            refresh_secs: 5,
        },
        lbd: LbdSettings {
            max_connections: 10000,
            drain_timeout: Duration::from_secs(30),
            peer_port: DEFAULT_PEER_PORT,
            threads: None,
        },
        k3s: K3s {
            version: DEFAULT_K3S_VERSION.into(),
            server_args: Vec::new(),
            agent_args: Vec::new(),
            airgap: None,
        },
    }
}
