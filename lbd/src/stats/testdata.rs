//! A hand-built snapshot for the renderer tests, with awkward text in it.

use crate::snapshot::{FrontendStats, ServerStats, ServerStatus, Snapshot, VrrpView};

pub(crate) fn server(name: &str, addr: &str, status: ServerStatus) -> ServerStats {
    ServerStats {
        name: name.to_owned(),
        addr: addr.parse().unwrap(),
        status,
        admin: common::proto::lbd::AdminState::Ready,
        transition: None,
        weight: 1,
        backup: false,
        check_status: "L4OK".to_owned(),
        check_desc: String::new(),
        check_latency_ms: None,
        checks_failed: 0,
        current_sessions: 0,
        max_sessions: 0,
        total_sessions: 0,
        session_rate: 0,
        bytes_in: 0,
        bytes_out: 0,
        connect_errors: 0,
        retries: 0,
        last_change_secs: 0,
        downtime_secs: 0,
        down_transitions: 0,
    }
}

pub(crate) fn sample() -> Snapshot {
    let mut s1 = server("server-1", "10.0.0.1:6443", ServerStatus::Up);
    s1.check_status = "L7OK".to_owned();
    s1.check_desc = "HTTP 200".to_owned();
    s1.check_latency_ms = Some(3.2);
    s1.current_sessions = 5;
    s1.max_sessions = 9;
    s1.total_sessions = 600;
    s1.session_rate = 4;
    s1.bytes_in = 1000;
    s1.bytes_out = 2000;
    s1.connect_errors = 1;
    s1.retries = 2;
    s1.last_change_secs = 3700;
    s1.weight = 3;

    let mut s2 = server("server-2", "10.0.0.2:6443", ServerStatus::Down);
    s2.transition = Some("1/2 up".to_owned());
    s2.check_status = "L4CON".to_owned();
    s2.check_desc = "connect: refused, \"twice\"".to_owned();
    s2.checks_failed = 17;
    s2.total_sessions = 34;
    s2.downtime_secs = 42;
    s2.last_change_secs = 42;
    s2.down_transitions = 2;

    let mut s3 = server(
        "<img src=x onerror=alert(1)>",
        "[fd00::3]:6443",
        ServerStatus::Maint,
    );
    s3.backup = true;
    s3.check_status = "INI".to_owned();
    s3.last_change_secs = 9;

    let mut i1 = server("ingress-a", "10.0.0.1:30443", ServerStatus::Drain);
    i1.current_sessions = 1;
    let i2 = server("ingress-b", "10.0.0.2:30443", ServerStatus::Up);

    Snapshot {
        node: "server-1".to_owned(),
        cluster: "lab & co".to_owned(),
        version: "0.1.0".to_owned(),
        pid: 4242,
        uptime_secs: 93_784,
        now_unix_ms: 1_700_000_000_000,
        current_connections: 8,
        max_connections: 10_000,
        fd_cap: 0,
        fd_cap_waits: 0,
        reloads: 2,
        last_reload_error: Some("line 3: <script>alert(\"x\")</script>".to_owned()),
        vrrp: Some(VrrpView {
            state: "master".to_owned(),
            priority: 150,
            master: Some("10.0.0.1".to_owned()),
            vips: vec!["10.0.0.100/24".to_owned()],
            maintenance: false,
            vips_here: vec!["10.0.0.100".to_owned()],
            problem: None,
            state_since_secs: Some(185),
        }),
        frontends: vec![
            FrontendStats {
                name: "kube-apiserver".to_owned(),
                listen: "0.0.0.0:8443".parse().unwrap(),
                backend_port: 6443,
                balance: "leastconn".to_owned(),
                status: "OPEN".to_owned(),
                current_sessions: 7,
                max_sessions: 20,
                session_limit: 0,
                total_sessions: 1234,
                session_rate: 5,
                session_rate_max: 50,
                bytes_in: 123_456,
                bytes_out: 7_654_321,
                denied: 0,
                no_server: 3,
                local_errors: 0,
                proxy_refused: Default::default(),
                servers: vec![s1, s2, s3],
            },
            FrontendStats {
                name: "ingress-https".to_owned(),
                listen: "[::]:443".parse().unwrap(),
                backend_port: 30443,
                balance: "roundrobin".to_owned(),
                status: "FULL".to_owned(),
                current_sessions: 1,
                max_sessions: 1,
                session_limit: 1,
                total_sessions: 1,
                session_rate: 0,
                session_rate_max: 1,
                bytes_in: 0,
                bytes_out: 0,
                denied: 4,
                no_server: 0,
                local_errors: 0,
                proxy_refused: Default::default(),
                servers: vec![i1, i2],
            },
        ],
    }
}
