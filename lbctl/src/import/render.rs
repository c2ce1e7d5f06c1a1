//! Rendering the draft as cluster.toml text.

use std::fmt::Write as _;
use std::time::Duration;

use common::config::format_duration;

use super::draft::*;
use super::Note;

/// A TOML basic string.
pub(super) fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(super) fn dur(d: Duration) -> String {
    q(&format_duration(d))
}

/// One line of a comment: control characters would end it early.
pub(super) fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub(super) fn render(
    d: &Draft,
    name: &str,
    domain: &str,
    sources: &[String],
    notes: &[Note],
) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(
        w,
        "# cluster.toml converted by `lbctl import` from: {}",
        comment_text(&sources.join(", "))
    );
    let _ = writeln!(
        w,
        "# Review it and run `lbctl config check` on it. Settings that could not be mapped"
    );
    let _ = writeln!(w, "# are listed at the end of this file.");
    let _ = writeln!(w, "\n[cluster]\nname = {}\ndomain = {}", q(name), q(domain));
    let _ = writeln!(w, "\n[vip]");
    if let Some((a, p)) = d.vip4 {
        let _ = writeln!(w, "address = {}", q(&format!("{a}/{p}")));
    }
    if let Some((a, p)) = d.vip6 {
        let _ = writeln!(w, "address6 = {}", q(&format!("{a}/{p}")));
    }
    if let Some(i) = &d.interface {
        let _ = writeln!(w, "interface = {}", q(i));
    }
    let v = &d.vrrp;
    let _ = writeln!(w, "\n[vrrp]");
    if let Some(x) = v.vrid {
        let _ = writeln!(w, "vrid = {x}");
    }
    if v.version == Some(2) {
        let _ = writeln!(w, "version = 2");
    }
    if let Some(x) = v.interval {
        let _ = writeln!(w, "interval = {}", dur(x));
    }
    if let Some(x) = v.preempt {
        let _ = writeln!(w, "preempt = {x}");
    }
    if let Some(x) = v.preempt_delay {
        let _ = writeln!(w, "preempt_delay = {}", dur(x));
    }
    if let Some(x) = v.accept_mode {
        let _ = writeln!(w, "accept_mode = {x}");
    }
    if let Some(x) = &v.password {
        let _ = writeln!(w, "password = {}", q(x));
    }
    if v.unicast {
        let _ = writeln!(w, "unicast = true");
    }
    if let Some(x) = v.garp_repeat {
        let _ = writeln!(w, "garp_repeat = {x}");
    }
    if let Some(x) = v.garp_interval {
        let _ = writeln!(w, "garp_interval = {}", dur(x));
    }
    if let Some(x) = v.garp_refresh {
        let _ = writeln!(w, "garp_refresh = {}", dur(x));
    }
    if v.virtual_mac {
        let _ = writeln!(w, "virtual_mac = true");
    }
    if let Some(x) = &v.notify {
        let _ = writeln!(w, "notify = {}", q(x));
    }
    let effect = |e: Option<i16>| e.map_or_else(|| q("fault"), |n| n.to_string());
    if v.track_lbd.is_some() || v.track_link.is_some() {
        let _ = writeln!(w, "\n[vrrp.track]");
        if let Some(e) = v.track_lbd {
            let _ = writeln!(w, "lbd = {}", effect(e));
        }
        if let Some(l) = v.track_link {
            let _ = writeln!(w, "link = {l}");
        }
    }
    for s in &v.scripts {
        let _ = writeln!(
            w,
            "\n[[vrrp.track.script]]\nname = {}\ncommand = {}",
            q(&s.name),
            q(&s.command)
        );
        if let Some(x) = s.interval {
            let _ = writeln!(w, "interval = {}", dur(x));
        }
        if let Some(x) = s.timeout {
            let _ = writeln!(w, "timeout = {}", dur(x));
        }
        if let Some(x) = s.rise {
            let _ = writeln!(w, "rise = {x}");
        }
        if let Some(x) = s.fall {
            let _ = writeln!(w, "fall = {x}");
        }
        let _ = writeln!(w, "effect = {}", effect(s.weight));
    }
    for n in &d.nodes {
        let _ = writeln!(
            w,
            "\n[[nodes]]\nname = {}\naddress = {}\nrole = \"server\"",
            q(&n.name),
            q(&n.address.to_string())
        );
        if let Some(p) = n.priority {
            let _ = writeln!(w, "priority = {p}");
        }
    }
    for s in &d.services {
        let _ = writeln!(
            w,
            "\n[[services]]\nname = {}\nlisten = {}",
            q(&s.name),
            s.listen
        );
        match &s.backends {
            DraftBackends::Servers(port) => {
                let _ = writeln!(w, "backends = \"servers\"\nbackend_port = {port}");
            }
            DraftBackends::List(list) => {
                let _ = writeln!(w, "backends = [");
                for (a, wt, b) in list {
                    if *wt == 1 && !*b {
                        let _ = writeln!(w, "  {},", q(a));
                    } else {
                        let _ = writeln!(
                            w,
                            "  {{ address = {}, weight = {wt}, backup = {b} }},",
                            q(a)
                        );
                    }
                }
                let _ = writeln!(w, "]");
            }
        }
        if let Some(b) = s.balance {
            let _ = writeln!(w, "balance = {}", q(b));
        }
        if let Some(r) = s.retries {
            let _ = writeln!(w, "retries = {r}");
        }
        if let Some(m) = s.max_connections {
            let _ = writeln!(w, "max_connections = {m}");
        }
        let c = &s.check;
        let mut check = String::new();
        if let Some(k) = c.kind {
            let _ = writeln!(check, "kind = {}", q(k));
        }
        if let Some(p) = &c.path {
            let _ = writeln!(check, "path = {}", q(p));
        }
        if let Some(e) = &c.expect {
            let codes: Vec<String> = e.iter().map(u16::to_string).collect();
            let _ = writeln!(check, "expect = [{}]", codes.join(", "));
        }
        for (k, x) in [
            ("interval", c.interval),
            ("fast_interval", c.fast_interval),
            ("timeout", c.timeout),
        ] {
            if let Some(x) = x {
                let _ = writeln!(check, "{k} = {}", dur(x));
            }
        }
        if let Some(x) = c.rise {
            let _ = writeln!(check, "rise = {x}");
        }
        if let Some(x) = c.fall {
            let _ = writeln!(check, "fall = {x}");
        }
        if !check.is_empty() {
            let _ = write!(w, "\n[services.check]\n{check}");
        }
        let mut t = String::new();
        for (k, x) in [
            ("connect", s.connect),
            ("idle", s.idle),
            ("tunnel", s.tunnel),
            ("half_close", s.half_close),
        ] {
            if let Some(x) = x {
                let _ = writeln!(t, "{k} = {}", dur(x));
            }
        }
        if !t.is_empty() {
            let _ = write!(w, "\n[services.timeouts]\n{t}");
        }
    }
    let st = &d.stats;
    if st.listen.is_some() || st.user.is_some() || st.refresh.is_some() {
        let _ = writeln!(w, "\n[stats]");
        if let Some(p) = st.listen {
            let _ = writeln!(w, "listen = {}", q(&format!(":{p}")));
        }
        if let (Some(u), Some(p)) = (&st.user, &st.password) {
            let _ = writeln!(w, "user = {}\npassword = {}", q(u), q(p));
        }
        if let Some(r) = st.refresh {
            let _ = writeln!(w, "refresh = {}", dur(r));
        }
    }
    if let Some(m) = d.max_connections {
        let _ = writeln!(w, "\n[lbd]\nmax_connections = {m}");
    }
    let _ = writeln!(w);
    if notes.is_empty() {
        let _ = writeln!(w, "# Every setting was mapped.");
    } else {
        let _ = writeln!(w, "# Not mapped, or changed in meaning ({}):", notes.len());
        for n in notes {
            let _ = writeln!(w, "#   {}", comment_text(&n.to_string()));
        }
    }
    o
}
