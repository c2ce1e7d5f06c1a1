//! Prometheus text exposition format 0.0.4: one `# HELP`, one `# TYPE` and then every
//! sample of a metric family, families one after the other.

use std::fmt::Write as _;

use crate::snapshot::{FrontendStats, ServerStats, ServerStatus, Snapshot};

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

/// One metric family: its samples are `(labels, value)` pairs.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(String, String)>,
}

impl Family {
    fn write(&self, out: &mut String) {
        let kind = match self.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        for (labels, value) in &self.samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{} {value}", self.name);
            } else {
                let _ = writeln!(out, "{}{{{labels}}} {value}", self.name);
            }
        }
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn fe_labels(fe: &FrontendStats) -> String {
    format!("frontend=\"{}\"", label_value(&fe.name))
}

fn srv_labels(fe: &FrontendStats, srv: &ServerStats) -> String {
    format!(
        "frontend=\"{}\",server=\"{}\",addr=\"{}\"",
        label_value(&fe.name),
        label_value(&srv.name),
        srv.addr
    )
}

fn single(name: &'static str, help: &'static str, kind: Kind, value: impl ToString) -> Family {
    Family {
        name,
        help,
        kind,
        samples: vec![(String::new(), value.to_string())],
    }
}

fn per_frontend(
    s: &Snapshot,
    name: &'static str,
    help: &'static str,
    kind: Kind,
    value: fn(&FrontendStats) -> u64,
) -> Family {
    Family {
        name,
        help,
        kind,
        samples: s
            .frontends
            .iter()
            .map(|fe| (fe_labels(fe), value(fe).to_string()))
            .collect(),
    }
}

fn per_server(
    s: &Snapshot,
    name: &'static str,
    help: &'static str,
    kind: Kind,
    value: impl Fn(&ServerStats) -> Option<String>,
) -> Family {
    let mut samples = Vec::new();
    for fe in &s.frontends {
        for srv in &fe.servers {
            if let Some(v) = value(srv) {
                samples.push((srv_labels(fe, srv), v));
            }
        }
    }
    Family {
        name,
        help,
        kind,
        samples,
    }
}

pub(super) fn render(s: &Snapshot) -> String {
    use Kind::{Counter, Gauge};
    let n = |v: u64| Some(v.to_string());
    let mut families = vec![
        Family {
            name: "lbd_info",
            help: "lbd build and node; always 1.",
            kind: Gauge,
            samples: vec![(
                format!(
                    "version=\"{}\",node=\"{}\",cluster=\"{}\"",
                    label_value(&s.version),
                    label_value(&s.node),
                    label_value(&s.cluster)
                ),
                "1".to_owned(),
            )],
        },
        single(
            "lbd_uptime_seconds",
            "Seconds since lbd started.",
            Gauge,
            s.uptime_secs,
        ),
        single(
            "lbd_current_connections",
            "Connections open over all frontends.",
            Gauge,
            s.current_connections,
        ),
        single(
            "lbd_max_connections",
            "Global connection cap (0: none).",
            Gauge,
            s.max_connections,
        ),
        single(
            "lbd_reloads_total",
            "Configuration reloads done.",
            Counter,
            s.reloads,
        ),
        single(
            "lbd_last_reload_failed",
            "1 if the last reload was refused, else 0.",
            Gauge,
            u8::from(s.last_reload_error.is_some()),
        ),
        single(
            "lbd_vrrp_answering",
            "1 if vrrpd answered lbd's last query, else 0.",
            Gauge,
            u8::from(s.vrrp.is_some()),
        ),
    ];
    if let Some(v) = &s.vrrp {
        families.push(single(
            "lbd_vrrp_master",
            "1 if this node's VRRP state is master, else 0.",
            Gauge,
            u8::from(v.state.eq_ignore_ascii_case("master")),
        ));
        families.push(single(
            "lbd_vrrp_vip_held",
            "1 if the kernel has the VIP on this node (vrrpd's reading), else 0.",
            Gauge,
            u8::from(!v.vips_here.is_empty()),
        ));
        families.push(single(
            "lbd_vrrp_priority",
            "This node's VRRP priority.",
            Gauge,
            v.priority,
        ));
    }
    families.extend([
        per_frontend(
            s,
            "lbd_frontend_up",
            "1 if the frontend accepts connections (OPEN or FULL), else 0.",
            Gauge,
            |fe| u64::from(fe.status != "STOP"),
        ),
        per_frontend(
            s,
            "lbd_frontend_current_sessions",
            "Sessions open now.",
            Gauge,
            |fe| fe.current_sessions,
        ),
        per_frontend(
            s,
            "lbd_frontend_max_sessions",
            "Highest number of sessions open at once.",
            Gauge,
            |fe| fe.max_sessions,
        ),
        per_frontend(
            s,
            "lbd_frontend_limit_sessions",
            "Per-frontend session cap (0: only the global cap).",
            Gauge,
            |fe| fe.session_limit,
        ),
        per_frontend(
            s,
            "lbd_frontend_sessions_total",
            "Sessions accepted.",
            Counter,
            |fe| fe.total_sessions,
        ),
        per_frontend(
            s,
            "lbd_frontend_session_rate",
            "New sessions in the last second.",
            Gauge,
            |fe| fe.session_rate,
        ),
        per_frontend(
            s,
            "lbd_frontend_session_rate_max",
            "Highest session rate seen.",
            Gauge,
            |fe| fe.session_rate_max,
        ),
        per_frontend(
            s,
            "lbd_frontend_bytes_in_total",
            "Bytes received from clients.",
            Counter,
            |fe| fe.bytes_in,
        ),
        per_frontend(
            s,
            "lbd_frontend_bytes_out_total",
            "Bytes sent to clients.",
            Counter,
            |fe| fe.bytes_out,
        ),
        per_frontend(
            s,
            "lbd_frontend_denied_total",
            "Connections refused by a connection cap.",
            Counter,
            |fe| fe.denied,
        ),
        per_frontend(
            s,
            "lbd_frontend_no_server_total",
            "Clients closed because no healthy server was available.",
            Counter,
            |fe| fe.no_server,
        ),
        Family {
            name: "lbd_frontend_proxy_refused_total",
            help: "Clients accept_proxy closed: untrusted (an address outside trusted_proxies), malformed (not a PROXY header), timeout (no whole header in time).",
            kind: Counter,
            samples: s
                .frontends
                .iter()
                .flat_map(|fe| {
                    let r = fe.proxy_refused;
                    [
                        ("untrusted", r.untrusted),
                        ("malformed", r.malformed),
                        ("timeout", r.timeout),
                    ]
                    .into_iter()
                    .map(move |(why, v)| (format!("{},reason=\"{why}\"", fe_labels(fe)), v.to_string()))
                })
                .collect(),
        },
        per_server(
            s,
            "lbd_server_up",
            "1 if the server is UP (takes new connections), else 0.",
            Gauge,
            |srv| n(u64::from(srv.status == ServerStatus::Up)),
        ),
        Family {
            name: "lbd_server_status",
            help: "1 for the server's current status (CHECKING, UP, DOWN, DRAIN, MAINT), 0 for the others.",
            kind: Gauge,
            samples: s
                .frontends
                .iter()
                .flat_map(|fe| fe.servers.iter().map(move |srv| (fe, srv)))
                .flat_map(|(fe, srv)| {
                    [
                        ServerStatus::Checking,
                        ServerStatus::Up,
                        ServerStatus::Down,
                        ServerStatus::Drain,
                        ServerStatus::Maint,
                    ]
                    .into_iter()
                    .map(move |st| {
                        (
                            format!("{},state=\"{}\"", srv_labels(fe, srv), st.as_str()),
                            u8::from(srv.status == st).to_string(),
                        )
                    })
                })
                .collect(),
        },
        per_server(
            s,
            "lbd_server_backup",
            "1 for a backup server, else 0.",
            Gauge,
            |srv| n(u64::from(srv.backup)),
        ),
        per_server(s, "lbd_server_weight", "Balancing weight.", Gauge, |srv| {
            n(u64::from(srv.weight))
        }),
        per_server(
            s,
            "lbd_server_check_latency_seconds",
            "Duration of the last health check.",
            Gauge,
            |srv| srv.check_latency_ms.map(|ms| format!("{}", ms / 1000.0)),
        ),
        per_server(
            s,
            "lbd_server_check_failures_total",
            "Failed health checks.",
            Counter,
            |srv| n(srv.checks_failed),
        ),
        per_server(
            s,
            "lbd_server_down_transitions_total",
            "Transitions from UP to DOWN.",
            Counter,
            |srv| n(srv.down_transitions),
        ),
        per_server(
            s,
            "lbd_server_current_sessions",
            "Sessions open now.",
            Gauge,
            |srv| n(srv.current_sessions),
        ),
        per_server(
            s,
            "lbd_server_max_sessions",
            "Highest number of sessions open at once.",
            Gauge,
            |srv| n(srv.max_sessions),
        ),
        per_server(
            s,
            "lbd_server_sessions_total",
            "Sessions sent to this server.",
            Counter,
            |srv| n(srv.total_sessions),
        ),
        per_server(
            s,
            "lbd_server_session_rate",
            "New sessions in the last second.",
            Gauge,
            |srv| n(srv.session_rate),
        ),
        per_server(
            s,
            "lbd_server_bytes_in_total",
            "Bytes received from clients for this server.",
            Counter,
            |srv| n(srv.bytes_in),
        ),
        per_server(
            s,
            "lbd_server_bytes_out_total",
            "Bytes sent to clients from this server.",
            Counter,
            |srv| n(srv.bytes_out),
        ),
        per_server(
            s,
            "lbd_server_connect_errors_total",
            "Failed connects to this server.",
            Counter,
            |srv| n(srv.connect_errors),
        ),
        per_server(
            s,
            "lbd_server_retries_total",
            "Connects retried on another server after failing here.",
            Counter,
            |srv| n(srv.retries),
        ),
        per_server(
            s,
            "lbd_server_last_change_seconds",
            "Seconds since the last UP/DOWN change.",
            Gauge,
            |srv| n(srv.last_change_secs),
        ),
        per_server(
            s,
            "lbd_server_downtime_seconds_total",
            "Seconds spent DOWN since start.",
            Counter,
            |srv| n(srv.downtime_secs),
        ),
    ]);

    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        f.write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::stats::testdata::sample;

    /// A strict line parser for the 0.0.4 text format: returns (name, labels, value).
    fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(
            !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()),
            "{line}"
        );
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let mut key = String::new();
            let end;
            loop {
                let (i, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("unterminated labels: {line}"));
                match c {
                    '}' if key.is_empty() => {
                        end = i;
                        break;
                    }
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                        let mut val = String::new();
                        loop {
                            let (_, c) = chars
                                .next()
                                .unwrap_or_else(|| panic!("unterminated value: {line}"));
                            match c {
                                '\\' => match chars.next().map(|x| x.1) {
                                    Some('\\') => val.push('\\'),
                                    Some('"') => val.push('"'),
                                    Some('n') => val.push('\n'),
                                    other => panic!("bad escape {other:?}: {line}"),
                                },
                                '"' => break,
                                c => val.push(c),
                            }
                        }
                        assert!(
                            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                            "{line}"
                        );
                        labels.push((std::mem::take(&mut key), val));
                        if let Some((_, ',')) = chars.peek() {
                            chars.next();
                        }
                    }
                    c => key.push(c),
                }
            }
            rest = &r[end + 1..];
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{e}: {line}"));
        (name.to_owned(), labels, value)
    }

    #[test]
    fn every_line_parses_and_families_are_contiguous() {
        let text = render(&sample());
        assert!(text.ends_with('\n'));
        let mut typed: HashMap<String, String> = HashMap::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut current = String::new();
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(
                    !finished.contains(name) && !typed.contains_key(name),
                    "HELP twice: {name}"
                );
                if !current.is_empty() {
                    finished.insert(std::mem::take(&mut current));
                }
                current = name.to_owned();
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let (name, kind) = (it.next().unwrap(), it.next().unwrap());
                assert_eq!(name, current, "TYPE not after its HELP");
                assert!(matches!(kind, "gauge" | "counter"), "{line}");
                typed.insert(name.to_owned(), kind.to_owned());
            } else {
                let (name, labels, value) = parse_sample(line);
                assert_eq!(name, current, "sample outside its family: {line}");
                if typed[&name] == "counter" {
                    assert!(name.ends_with("_total"), "counter without _total: {name}");
                    assert!(value >= 0.0);
                }
                let keys: HashSet<_> = labels.iter().map(|l| &l.0).collect();
                assert_eq!(keys.len(), labels.len(), "duplicate label: {line}");
                samples += 1;
            }
        }
        assert!(samples > 50, "only {samples} samples");
    }

    #[test]
    fn server_up_and_escaped_labels() {
        let text = render(&sample());
        let ups: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("lbd_server_up{"))
            .map(parse_sample)
            .collect();
        assert_eq!(ups.len(), 5);
        let value_of = |server: &str| {
            ups.iter()
                .find(|(_, l, _)| l.iter().any(|(k, v)| k == "server" && v == server))
                .map(|x| x.2)
                .unwrap()
        };
        assert_eq!(value_of("server-1"), 1.0);
        assert_eq!(value_of("server-2"), 0.0);
        assert_eq!(value_of("<img src=x onerror=alert(1)>"), 0.0);
        assert_eq!(value_of("ingress-a"), 0.0);
        assert_eq!(value_of("ingress-b"), 1.0);
        assert!(text.contains("lbd_server_check_latency_seconds{frontend=\"kube-apiserver\",server=\"server-1\",addr=\"10.0.0.1:6443\"} 0.0032\n"));
        assert!(
            text.contains("lbd_frontend_bytes_out_total{frontend=\"kube-apiserver\"} 7654321\n")
        );
        assert!(text.contains("lbd_vrrp_master 1\n"));
        // Only servers with a measured latency get the sample.
        assert_eq!(text.matches("lbd_server_check_latency_seconds{").count(), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut snap = sample();
        snap.frontends[0].servers[0].name = "a\"b\\c\nd".to_owned();
        let text = render(&snap);
        let line = text
            .lines()
            .find(|l| l.starts_with("lbd_server_up{") && l.contains("a\\\"b"))
            .unwrap();
        assert!(line.contains(r#"server="a\"b\\c\nd""#), "{line}");
        let (_, labels, _) = parse_sample(line);
        assert!(labels.contains(&("server".to_owned(), "a\"b\\c\nd".to_owned())));
    }

    #[test]
    fn no_vrrp_no_vrrp_samples() {
        let mut snap = sample();
        snap.vrrp = None;
        let text = render(&snap);
        assert!(text.contains("lbd_vrrp_answering 0\n"));
        assert!(!text.contains("lbd_vrrp_master"));
    }
}
