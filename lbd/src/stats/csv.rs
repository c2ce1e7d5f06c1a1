//! HAProxy's `show stat` CSV (management guide section 9.1), so that tools written for
//! HAProxy's stats keep working against lbd.
//!
//! Every frontend becomes what HAProxy shows for a `listen` section: a `FRONTEND` row, one
//! row per server and a `BACKEND` row, all with the frontend's name as `pxname`. Columns
//! lbd has no figure for are left empty, as HAProxy does for fields that do not apply.

use crate::snapshot::{FrontendStats, ServerStats, ServerStatus, Snapshot};

/// HAProxy 2.6's stat columns, in its order (taken from `show stat` of HAProxy 2.6.12; the
/// per-module columns after its `-` separator are not emitted).
pub const CSV_COLUMNS: [&str; 103] = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
    "srv_icur",
    "src_ilim",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
    "eint",
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
    "uweight",
    "agg_server_status",
    "agg_server_check_status",
    "agg_check_status",
];

/// HAProxy's `type` column: 0 frontend, 1 backend, 2 server.
const TYPE_FRONTEND: u8 = 0;
const TYPE_BACKEND: u8 = 1;
const TYPE_SERVER: u8 = 2;

pub(super) fn render(s: &Snapshot) -> String {
    let mut out = String::from("# ");
    out.push_str(&CSV_COLUMNS.join(","));
    out.push_str(",\n");
    for (i, fe) in s.frontends.iter().enumerate() {
        let iid = i + 1;
        frontend_row(fe, iid).write(&mut out);
        for (j, srv) in fe.servers.iter().enumerate() {
            server_row(fe, srv, iid, j + 1).write(&mut out);
        }
        backend_row(fe, iid).write(&mut out);
    }
    out
}

/// One CSV line under construction, filled by column name.
struct Row([String; CSV_COLUMNS.len()]);

impl Row {
    fn new(pxname: &str, svname: &str) -> Self {
        let mut row = Row(std::array::from_fn(|_| String::new()));
        row.set("pxname", pxname);
        row.set("svname", svname);
        row
    }

    fn set(&mut self, column: &str, value: impl ToString) -> &mut Self {
        if let Some(i) = CSV_COLUMNS.iter().position(|c| *c == column) {
            self.0[i] = value.to_string();
        } else {
            debug_assert!(false, "unknown CSV column {column}");
        }
        self
    }

    fn write(&self, out: &mut String) {
        for field in &self.0 {
            push_field(out, field);
            out.push(',');
        }
        out.push('\n');
    }
}

/// Quotes a field only when it must be (RFC 4180): it holds a comma, a quote or a line
/// break. HAProxy's own fields never need it; lbd's check descriptions might.
fn push_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

fn frontend_row(fe: &FrontendStats, iid: usize) -> Row {
    let mut r = Row::new(&fe.name, "FRONTEND");
    r.set("scur", fe.current_sessions)
        .set("smax", fe.max_sessions)
        .set("slim", fe.session_limit)
        .set("stot", fe.total_sessions)
        .set("bin", fe.bytes_in)
        .set("bout", fe.bytes_out)
        .set("dreq", fe.denied)
        .set("status", &fe.status)
        .set("pid", 1)
        .set("iid", iid)
        .set("sid", 0)
        .set("type", TYPE_FRONTEND)
        .set("rate", fe.session_rate)
        .set("rate_max", fe.session_rate_max)
        .set("mode", "tcp")
        .set("conn_rate", fe.session_rate)
        .set("conn_rate_max", fe.session_rate_max)
        .set("conn_tot", fe.total_sessions);
    r
}

/// HAProxy's status text: `UP`, `DOWN`, `DRAIN`, `MAINT`, with the check progress while a
/// server is changing state (`UP 1/3` is an UP server that failed 1 of 3 checks).
fn status_text(srv: &ServerStats) -> String {
    let progress = srv
        .transition
        .as_deref()
        .and_then(|t| t.split_whitespace().next())
        .filter(|p| p.contains('/') && p.chars().all(|c| c.is_ascii_digit() || c == '/'));
    // HAProxy starts a checked server UP with check_status INI: CHECKING is that.
    let status = match srv.status {
        ServerStatus::Checking => "UP",
        s => s.as_str(),
    };
    match progress {
        Some(p) => format!("{status} {p}"),
        None => status.to_owned(),
    }
}

/// HAProxy's `check_desc`: the fixed description of a `check_status` code (the detail of
/// the last check goes to `last_chk`, as HAProxy does).
fn check_status_desc(code: &str) -> &'static str {
    match code {
        "INI" => "Initializing",
        "L4OK" => "Layer4 check passed",
        "L4TOUT" => "Layer4 timeout",
        "L4CON" => "Layer4 connection problem",
        "L6OK" => "Layer6 check passed",
        "L6TOUT" => "Layer6 timeout",
        "L6RSP" => "Layer6 invalid response",
        "L7OK" => "Layer7 check passed",
        "L7TOUT" => "Layer7 timeout",
        "L7RSP" => "Layer7 invalid response",
        "L7STS" => "Layer7 wrong status",
        _ => "",
    }
}

fn server_row(fe: &FrontendStats, srv: &ServerStats, iid: usize, sid: usize) -> Row {
    let mut r = Row::new(&fe.name, &srv.name);
    r.set("qcur", 0)
        .set("qmax", 0)
        .set("scur", srv.current_sessions)
        .set("smax", srv.max_sessions)
        .set("stot", srv.total_sessions)
        .set("bin", srv.bytes_in)
        .set("bout", srv.bytes_out)
        .set("dresp", 0)
        .set("econ", srv.connect_errors)
        .set("wretr", srv.retries)
        .set("status", status_text(srv))
        .set("weight", srv.weight)
        .set("act", u8::from(!srv.backup))
        .set("bck", u8::from(srv.backup))
        .set("chkfail", srv.checks_failed)
        .set("chkdown", srv.down_transitions)
        .set("lastchg", srv.last_change_secs)
        .set("downtime", srv.downtime_secs)
        .set("pid", 1)
        .set("iid", iid)
        .set("sid", sid)
        .set("lbtot", srv.total_sessions)
        .set("type", TYPE_SERVER)
        .set("rate", srv.session_rate)
        .set("check_status", &srv.check_status)
        .set("check_desc", check_status_desc(&srv.check_status))
        .set("last_chk", &srv.check_desc)
        .set("addr", srv.addr)
        .set("mode", "tcp")
        .set("uweight", srv.weight);
    if let Some(ms) = srv.check_latency_ms {
        r.set("check_duration", ms.round());
    }
    r
}

fn backend_row(fe: &FrontendStats, iid: usize) -> Row {
    let servers = &fe.servers;
    let sum = |f: fn(&ServerStats) -> u64| servers.iter().map(f).sum::<u64>();
    let usable = |srv: &&ServerStats| srv.status == ServerStatus::Up;
    let up = servers.iter().filter(usable).count();
    let active_up = servers.iter().filter(usable).filter(|s| !s.backup).count();
    let weight: u64 = servers
        .iter()
        .filter(usable)
        .map(|s| u64::from(s.weight))
        .sum();
    let mut r = Row::new(&fe.name, "BACKEND");
    r.set("qcur", 0)
        .set("qmax", 0)
        .set("scur", sum(|s| s.current_sessions))
        .set("stot", sum(|s| s.total_sessions))
        .set("bin", sum(|s| s.bytes_in))
        .set("bout", sum(|s| s.bytes_out))
        .set("econ", sum(|s| s.connect_errors))
        .set("wretr", sum(|s| s.retries))
        .set("status", if up > 0 { "UP" } else { "DOWN" })
        .set("weight", weight)
        .set("act", active_up)
        .set("bck", up - active_up)
        .set("chkdown", sum(|s| s.down_transitions))
        .set("pid", 1)
        .set("iid", iid)
        .set("sid", 0)
        .set("lbtot", sum(|s| s.total_sessions))
        .set("type", TYPE_BACKEND)
        .set("rate", sum(|s| s.session_rate))
        .set("mode", "tcp")
        .set("algo", &fe.balance);
    if let Some(min) = servers.iter().map(|s| s.last_change_secs).min() {
        r.set("lastchg", min);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testdata::sample;

    /// Splits one CSV line as a HAProxy CSV reader would (RFC 4180 quoting).
    fn split(line: &str) -> Vec<String> {
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut cur)),
                (c, _) => cur.push(c),
            }
        }
        fields.push(cur);
        fields
    }

    #[test]
    fn header_is_haproxy_2_6_column_order() {
        let csv = render(&sample());
        let header = csv.lines().next().unwrap();
        assert!(header.starts_with(
            "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,\
             wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,\
             sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,\
             check_duration,hrsp_1xx,"
        ));
        let cols = split(header.trim_start_matches("# "));
        // HAProxy ends every line with a comma, hence the empty last field.
        assert_eq!(cols.len(), CSV_COLUMNS.len() + 1);
        assert_eq!(cols[CSV_COLUMNS.len()], "");
        assert_eq!(cols[65], "check_desc");
        assert_eq!(cols[73], "addr");
        assert_eq!(cols[75], "mode");
        assert_eq!(cols[76], "algo");
    }

    #[test]
    fn rows_have_every_column_and_the_right_figures() {
        let snap = sample();
        let csv = render(&snap);
        let rows: Vec<Vec<String>> = csv.lines().skip(1).map(split).collect();
        // 2 frontends: FRONTEND + servers + BACKEND each.
        let expected_rows: usize = snap.frontends.iter().map(|f| f.servers.len() + 2).sum();
        assert_eq!(rows.len(), expected_rows);
        for row in &rows {
            assert_eq!(row.len(), CSV_COLUMNS.len() + 1, "{row:?}");
        }
        let col = |name: &str| CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
        let fe = &rows[0];
        assert_eq!(fe[col("pxname")], "kube-apiserver");
        assert_eq!(fe[col("svname")], "FRONTEND");
        assert_eq!(fe[col("scur")], "7");
        assert_eq!(fe[col("stot")], "1234");
        assert_eq!(fe[col("status")], "OPEN");
        assert_eq!(fe[col("type")], "0");
        assert_eq!(fe[col("econ")], "");

        let s1 = &rows[1];
        assert_eq!(s1[col("svname")], "server-1");
        assert_eq!(s1[col("status")], "UP");
        assert_eq!(s1[col("bin")], "1000");
        assert_eq!(s1[col("bout")], "2000");
        assert_eq!(s1[col("econ")], "1");
        assert_eq!(s1[col("wretr")], "2");
        assert_eq!(s1[col("check_status")], "L7OK");
        assert_eq!(s1[col("check_desc")], "Layer7 check passed");
        assert_eq!(s1[col("last_chk")], "HTTP 200");
        assert_eq!(s1[col("check_duration")], "3");
        assert_eq!(s1[col("addr")], "10.0.0.1:6443");
        assert_eq!(s1[col("type")], "2");
        assert_eq!(s1[col("act")], "1");
        assert_eq!(s1[col("bck")], "0");

        let s2 = &rows[2];
        assert_eq!(s2[col("status")], "DOWN 1/2");
        // The description holds a comma and quotes: quoted, and read back intact.
        assert_eq!(s2[col("check_desc")], "Layer4 connection problem");
        assert_eq!(s2[col("last_chk")], "connect: refused, \"twice\"");
        assert_eq!(s2[col("downtime")], "42");

        let be = &rows[4];
        assert_eq!(be[col("svname")], "BACKEND");
        assert_eq!(be[col("type")], "1");
        assert_eq!(be[col("algo")], "leastconn");
        assert_eq!(be[col("status")], "UP");
        assert_eq!(be[col("act")], "1");
        assert_eq!(be[col("stot")], "634");
    }

    #[test]
    fn backend_with_no_server_up_is_down() {
        let mut snap = sample();
        for s in &mut snap.frontends[0].servers {
            s.status = ServerStatus::Down;
        }
        let csv = render(&snap);
        let be = csv
            .lines()
            .find(|l| l.starts_with("kube-apiserver,BACKEND,"))
            .unwrap();
        assert_eq!(split(be)[17], "DOWN");
    }
}
