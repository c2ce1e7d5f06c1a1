//! The HTML stats page: one table per frontend, servers colour-coded by status.

use std::fmt::Write as _;

use super::fmt::{bytes, duration, html_escape as esc};
use crate::snapshot::{FrontendStats, ServerStats, ServerStatus, Snapshot};

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;font-size:14px;margin:1em;color:#222}\
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.2em 0 .3em}\
.meta{color:#555;margin:.2em 0}.err{color:#a00;font-weight:bold}\
table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:2px 6px;text-align:right}\
th{background:#e8e8e8;text-align:center}td{white-space:nowrap}td.name,td.addr,td.check{text-align:left}td.check{white-space:normal}\
tr.st-up{background:#c8f7c8}tr.st-down{background:#ffa8a8}tr.st-drain{background:#a8d0ff}\
tr.st-maint{background:#d8d8d8}tr.st-checking{background:#f0f0f0}tr.going{background:#fff1a0}tr.total{background:#f4f4e0;font-weight:bold}\
td.status{font-weight:bold;text-align:center}.vrrp{padding:.4em .6em;border:1px solid #bbb;display:inline-block}\
.vrrp-master{background:#c8f7c8}.vrrp-missing{background:#ffa8a8}\
.legend td{padding:1px 8px}.links a{margin-right:1em}";

pub(super) fn render(s: &Snapshot, refresh_secs: u32) -> String {
    let mut o = String::with_capacity(8 * 1024);
    let title = format!("lbd on {} ({})", esc(&s.node), esc(&s.cluster));
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n\
         <h1>{title}</h1>\n\
         <p class=\"meta\">lbd {version} &middot; up {uptime} &middot; {cur} connections open \
         (cap {cap}) &middot; {reloads} reloads &middot; refreshes every {refresh}s</p>\n\
         <p class=\"links\" id=\"links\">The same figures as <a href=\"/stats.csv\">CSV</a>\
         <a href=\"/stats.json\">JSON</a><a href=\"/metrics\">Prometheus metrics</a></p>\n",
        refresh = refresh_secs.max(1),
        version = esc(&s.version),
        uptime = duration(s.uptime_secs),
        cur = s.current_connections,
        cap = if s.max_connections == 0 {
            "none".to_owned()
        } else {
            s.max_connections.to_string()
        },
        reloads = s.reloads,
    );
    if let Some(err) = &s.last_reload_error {
        let _ = writeln!(
            o,
            "<p class=\"err\" id=\"reload-error\">Last reload refused: {}</p>",
            esc(err)
        );
    }
    vrrp(&mut o, s);
    for fe in &s.frontends {
        frontend(&mut o, fe);
    }
    o.push_str(LEGEND);
    o.push_str("</body></html>\n");
    o
}

fn vrrp(o: &mut String, s: &Snapshot) {
    match &s.vrrp {
        Some(v) => {
            let class = if v.problem.is_some() {
                "vrrp vrrp-missing"
            } else if !v.vips_here.is_empty() {
                "vrrp vrrp-master"
            } else {
                "vrrp"
            };
            // "Held here" only when the kernel has the VIP here, whatever the state says.
            let holder = if !v.vips_here.is_empty() {
                "this node".to_owned()
            } else {
                v.master.as_deref().map_or_else(|| "nobody".to_owned(), esc)
            };
            let _ = writeln!(
                o,
                "<p class=\"{class}\" id=\"vrrp\">VRRP: this node is <b>{state}</b>{since} \
                 (priority {prio}{maint}); VIP {vips} held by <b>{holder}</b>{problem}</p>",
                state = esc(&v.state.to_uppercase()),
                since = v
                    .state_since_secs
                    .map_or_else(String::new, |s| format!(" since {} ago", duration(s))),
                prio = v.priority,
                maint = if v.maintenance {
                    ", maintenance on"
                } else {
                    ""
                },
                vips = esc(&v.vips.join(", ")),
                problem = v
                    .problem
                    .as_deref()
                    .map_or_else(String::new, |p| format!("; <b>FAULT</b>: {}", esc(p))),
            );
        }
        None => {
            o.push_str("<p class=\"vrrp vrrp-missing\" id=\"vrrp\">VRRP: vrrpd not answering</p>\n")
        }
    }
}

fn frontend(o: &mut String, fe: &FrontendStats) {
    let up = fe
        .servers
        .iter()
        .filter(|s| s.status == ServerStatus::Up)
        .count();
    let _ = write!(
        o,
        "<h2>{name}</h2>\n<p class=\"meta\">listen {listen} &rarr; port {port} &middot; {balance} \
         &middot; <b>{status}</b> &middot; {up}/{total} servers up &middot; {denied} denied \
         by cap &middot; {no_server} closed for want of a server{proxy}</p>\n\
         <table class=\"frontend\" data-frontend=\"{name}\">\n<thead><tr>\
         <th>Server</th><th>Address</th><th>Status</th><th>Last check</th><th>Latency</th>\
         <th>Cur</th><th>Max</th><th>Total</th><th>Rate/s</th><th>Bytes in</th><th>Bytes out</th>\
         <th>Conn errors</th><th>Retries</th><th>Weight</th><th>Last change</th><th>Downtime</th>\
         </tr></thead>\n<tbody>\n",
        name = esc(&fe.name),
        listen = fe.listen,
        port = fe.backend_port,
        balance = esc(&fe.balance),
        status = esc(&fe.status),
        total = fe.servers.len(),
        denied = fe.denied,
        no_server = fe.no_server,
        proxy = match fe.proxy_refused {
            r if r.total() == 0 => String::new(),
            r => format!(
                " &middot; PROXY header refused: {} untrusted, {} malformed, {} timed out",
                r.untrusted, r.malformed, r.timeout
            ),
        },
    );
    for srv in &fe.servers {
        server(o, srv);
    }
    let _ = write!(
        o,
        "<tr class=\"total\"><td class=\"name\">Frontend</td><td class=\"addr\"></td>\
         <td class=\"status\">{status}</td><td class=\"check\"></td><td></td>\
         <td>{cur}</td><td>{max}</td><td>{tot}</td><td>{rate} (max {rmax})</td>\
         <td>{bin}</td><td>{bout}</td><td></td><td></td><td></td><td></td><td></td></tr>\n\
         </tbody></table>\n",
        status = esc(&fe.status),
        cur = fe.current_sessions,
        max = if fe.session_limit > 0 {
            format!("{} / {}", fe.max_sessions, fe.session_limit)
        } else {
            fe.max_sessions.to_string()
        },
        tot = fe.total_sessions,
        rate = fe.session_rate,
        rmax = fe.session_rate_max,
        bin = bytes(fe.bytes_in),
        bout = bytes(fe.bytes_out),
    );
}

/// What the row colours mean.
const LEGEND: &str = "<h2>Legend</h2>\n<table class=\"legend\" id=\"legend\"><tbody>\n\
<tr class=\"st-up\"><td>UP</td><td>checks pass; gets new connections</td></tr>\n\
<tr class=\"st-down\"><td>DOWN</td><td>checks fail; no new connections</td></tr>\n\
<tr class=\"going\"><td>UP/DOWN (n/m)</td><td>checks disagree with the state: n of the m needed to change it</td></tr>\n\
<tr class=\"st-checking\"><td>CHECKING</td><td>not checked yet (lbd just started); still gets connections</td></tr>\n\
<tr class=\"st-drain\"><td>DRAIN</td><td>lbctl drain: open connections go on, no new ones</td></tr>\n\
<tr class=\"st-maint\"><td>MAINT</td><td>lbctl disable: no connections, checks not counted</td></tr>\n\
</tbody></table>\n";

fn server(o: &mut String, srv: &ServerStats) {
    let mut class = match srv.status {
        ServerStatus::Checking => "srv st-checking",
        ServerStatus::Up => "srv st-up",
        ServerStatus::Down => "srv st-down",
        ServerStatus::Drain => "srv st-drain",
        ServerStatus::Maint => "srv st-maint",
    }
    .to_owned();
    if srv.transition.is_some() {
        class.push_str(" going");
    }
    let status = match &srv.transition {
        Some(t) => format!("{} <small>({})</small>", srv.status.as_str(), esc(t)),
        None => srv.status.as_str().to_owned(),
    };
    let check = if srv.check_desc.is_empty() {
        esc(&srv.check_status)
    } else {
        format!("{}: {}", esc(&srv.check_status), esc(&srv.check_desc))
    };
    let latency = srv
        .check_latency_ms
        .map_or_else(String::new, |ms| format!("{ms:.1} ms"));
    let _ = writeln!(
        o,
        "<tr class=\"{class}\" data-server=\"{name}\"><td class=\"name\">{name}{backup}</td>\
         <td class=\"addr\">{addr}</td><td class=\"status\">{status}</td>\
         <td class=\"check\">{check} <small>({fails} failed)</small></td><td>{latency}</td>\
         <td>{cur}</td><td>{max}</td><td>{tot}</td><td>{rate}</td><td>{bin}</td><td>{bout}</td>\
         <td>{econ}</td><td>{retries}</td><td>{weight}</td><td>{lastchg} ago</td>\
         <td>{downtime}{downs}</td></tr>",
        name = esc(&srv.name),
        backup = if srv.backup {
            " <small>(backup)</small>"
        } else {
            ""
        },
        addr = srv.addr,
        fails = srv.checks_failed,
        cur = srv.current_sessions,
        max = srv.max_sessions,
        tot = srv.total_sessions,
        rate = srv.session_rate,
        bin = bytes(srv.bytes_in),
        bout = bytes(srv.bytes_out),
        econ = srv.connect_errors,
        retries = srv.retries,
        weight = srv.weight,
        lastchg = duration(srv.last_change_secs),
        downtime = duration(srv.downtime_secs),
        downs = if srv.down_transitions > 0 {
            format!(" <small>({}&times; down)</small>", srv.down_transitions)
        } else {
            String::new()
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testdata::sample;

    #[test]
    fn page_has_refresh_and_every_server_with_its_status() {
        let page = render(&sample(), 7);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"7\">"));
        assert!(page.contains(
            "<tr class=\"srv st-up\" data-server=\"server-1\"><td class=\"name\">server-1</td>"
        ));
        assert!(page.contains("<td class=\"status\">UP</td>"));
        assert!(page.contains("<tr class=\"srv st-down going\" data-server=\"server-2\">"));
        assert!(page.contains("<td class=\"status\">DOWN <small>(1/2 up)</small></td>"));
        assert!(page.contains("<tr class=\"srv st-drain\" data-server=\"ingress-a\">"));
        assert!(page.contains("L7OK: HTTP 200"));
        assert!(page.contains("3.2 ms"));
        assert!(page.contains("1.95 KiB")); // server-1 bytes out: 2000
        assert!(page.contains("1h1m ago")); // last change 3700 s
        assert!(page.contains("42s <small>(2&times; down)</small>"));
        assert!(page.contains("up 1d2h"));
        assert!(page.contains("VRRP: this node is <b>MASTER</b>"));
        assert!(page.contains("held by <b>this node</b>"));
        // Two frontends and the legend.
        assert_eq!(page.matches("<table").count(), 3);
        assert_eq!(page.matches("<tr class=\"srv ").count(), 5);
        // Regressions (issue [8] 16): links to the other views, a colour legend, how long
        // this node has been master.
        for link in [
            "href=\"/stats.csv\"",
            "href=\"/stats.json\"",
            "href=\"/metrics\"",
        ] {
            assert!(page.contains(link), "{link}");
        }
        assert!(page.contains("<table class=\"legend\""));
        assert!(page.contains("<td>CHECKING</td>"));
        assert!(
            page.contains("this node is <b>MASTER</b> since 3m5s ago"),
            "{page}"
        );
    }

    /// Regression: a master that could not add the VIP was shown as holding it.
    #[test]
    fn a_vip_the_kernel_does_not_have_is_not_shown_as_held() {
        let mut snap = sample();
        if let Some(v) = snap.vrrp.as_mut() {
            v.state = "fault".into();
            v.vips_here.clear();
            v.master = None;
            v.problem = Some("could not add the VIP 10.0.0.100/24 to eth0: EPERM".into());
        }
        let page = render(&snap, 10);
        assert!(page.contains("held by <b>nobody</b>"), "{page}");
        assert!(page.contains("<b>FAULT</b>: could not add the VIP 10.0.0.100/24 to eth0"));
        assert!(!page.contains("this node</b>"));
    }

    #[test]
    fn all_text_is_escaped() {
        let page = render(&sample(), 10);
        assert!(!page.contains("<img"));
        assert!(!page.contains("<script"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
        assert!(page.contains("lab &amp; co"));
        assert!(page.contains("connect: refused, &quot;twice&quot;"));
        // The only tags are the page's own.
        let tags: std::collections::BTreeSet<&str> = page
            .split('<')
            .skip(1)
            .map(|t| t.split([' ', '>', '\n']).next().unwrap_or(""))
            .collect();
        let allowed = [
            "!DOCTYPE", "html", "/html", "head", "/head", "meta", "title", "/title", "style",
            "/style", "body", "/body", "h1", "/h1", "h2", "/h2", "p", "/p", "b", "/b", "small",
            "/small", "table", "/table", "thead", "/thead", "tbody", "/tbody", "tr", "/tr", "th",
            "/th", "td", "/td", "a", "/a",
        ];
        for t in tags {
            assert!(allowed.contains(&t), "unexpected tag <{t}");
        }
    }

    #[test]
    fn missing_vrrpd_is_said_plainly() {
        let mut snap = sample();
        snap.vrrp = None;
        let page = render(&snap, 10);
        assert!(page.contains("vrrpd not answering"));
        assert!(!page.contains("this node is"));
    }
}
