//! `lbctl install dns`: BIND9 zones for the cluster domain and its reverse networks.
//!
//! Files: one stanza file per cluster (`/etc/bind/k3s-ha/<cluster>.conf`) included from
//! `named.conf.local` (the include line is appended once, the rest of that file is kept),
//! the forward zone and one reverse zone per network. Serials are `YYYYMMDDnn` and change
//! only when a zone's records change, so a re-run with the same cluster is a no-op.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use anyhow::{bail, Result};
use common::config::Cluster;

use super::text::is_hostname_label;
use super::{first_server, Date, InstallState, Plan, PlannedFile};

pub(super) const NAMED_CONF: &str = "/etc/bind/named.conf";
pub(super) const NAMED_CONF_LOCAL: &str = "/etc/bind/named.conf.local";
pub(super) const ZONE_DIR: &str = "/etc/bind/k3s-ha";
/// Owner name of the VIP inside the domain.
pub(super) const API_LABEL: &str = "api";

const TTL: u32 = 300;

/// `api.<domain>`: the VIP's name.
pub(super) fn api_fqdn(cluster: &Cluster) -> String {
    format!("{API_LABEL}.{}", cluster.domain)
}

/// Debian's stock `named.conf.local`, used when the file does not exist yet.
const DEBIAN_NAMED_CONF_LOCAL: &str = "//\n// Do any local configuration here\n//\n\n\
// Consider adding the 1918 zones here, if they are not used in your\n// organization\n\
//include \"/etc/bind/zones.rfc1918\";\n";

/// The in-addr.arpa zone for an IPv4 prefix, cut at the octet boundary at or above it
/// (/24 -> `c.b.a.in-addr.arpa`, /20 -> `b.a.in-addr.arpa`), with how many octets it fixes.
pub fn reverse_zone_v4(addr: Ipv4Addr, prefix: u8) -> (String, usize) {
    let octets = usize::from(prefix / 8).clamp(1, 3);
    let o = addr.octets();
    let labels: Vec<String> = o[..octets].iter().rev().map(u8::to_string).collect();
    (format!("{}.in-addr.arpa", labels.join(".")), octets)
}

/// The ip6.arpa zone for an IPv6 prefix, cut at the nibble boundary at or above it, with how
/// many nibbles it fixes.
pub fn reverse_zone_v6(addr: Ipv6Addr, prefix: u8) -> (String, usize) {
    let nibbles = usize::from(prefix / 4).clamp(1, 31);
    let all = nibbles_of(addr);
    let labels: Vec<String> = all[..nibbles]
        .iter()
        .rev()
        .map(|n| format!("{n:x}"))
        .collect();
    (format!("{}.ip6.arpa", labels.join(".")), nibbles)
}

fn v4_zone_name(octets: &[u8]) -> String {
    let labels: Vec<String> = octets.iter().rev().map(u8::to_string).collect();
    format!("{}.in-addr.arpa", labels.join("."))
}

fn v6_zone_name(nibbles: &[u8]) -> String {
    let labels: Vec<String> = nibbles.iter().rev().map(|n| format!("{n:x}")).collect();
    format!("{}.ip6.arpa", labels.join("."))
}

fn in_net_v4(a: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a) & mask == u32::from(net) & mask
}

fn in_net_v6(a: Ipv6Addr, net: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(a) & mask == u128::from(net) & mask
}

fn nibbles_of(addr: Ipv6Addr) -> Vec<u8> {
    addr.octets()
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .collect()
}

/// The next `YYYYMMDDnn` serial after `current` (RFC 1982 ordering is not needed: the serial
/// only ever grows). The first change of a day is `..01`; more than 99 changes a day carry
/// into the date, which still increases.
pub fn next_serial(current: Option<u32>, today: Date) -> u32 {
    let base = u32::try_from(today.year).unwrap_or(0) * 1_000_000
        + u32::from(today.month) * 10_000
        + u32::from(today.day) * 100;
    match current {
        Some(c) if c >= base => c.saturating_add(1),
        _ => base + 1,
    }
}

/// One zone: its name, file and records (relative owner, type, rdata).
struct Zone {
    name: String,
    records: Vec<(String, &'static str, String)>,
}

impl Zone {
    fn new(name: String) -> Self {
        Zone {
            name,
            records: Vec::new(),
        }
    }

    fn file(&self) -> PathBuf {
        PathBuf::from(format!("{ZONE_DIR}/db.{}", self.name))
    }

    fn render(&self, cluster: &Cluster, serial: u32, ns: &[String]) -> Result<String> {
        let mname = ns.first().map_or("", String::as_str);
        let mut z = String::new();
        let _ = writeln!(z, "; Zone {} of cluster {}.", self.name, cluster.name);
        let _ = writeln!(
            z,
            "; Rendered by `lbctl install dns` from cluster.toml; re-run it instead of editing."
        );
        let _ = writeln!(z, "$ORIGIN {}.", self.name);
        let _ = writeln!(z, "$TTL {TTL}");
        let _ = writeln!(z, "@ IN SOA {mname} hostmaster.{}. (", cluster.domain);
        let _ = writeln!(z, "        {serial:<12} ; serial (YYYYMMDDnn)");
        let _ = writeln!(z, "        {:<12} ; refresh", 3600);
        let _ = writeln!(z, "        {:<12} ; retry", 600);
        let _ = writeln!(z, "        {:<12} ; expire", 1_209_600);
        let _ = writeln!(z, "        {:<12} ; negative-cache TTL", TTL);
        let _ = writeln!(z, "        )");
        for n in ns {
            let _ = writeln!(z, "{:<24} IN NS    {n}", "@");
        }
        for (owner, kind, data) in &self.records {
            let _ = writeln!(z, "{owner:<24} IN {kind:<5} {data}");
        }
        Ok(z)
    }
}

/// The serial written in one of our zone files.
fn parse_serial(text: &str) -> Option<u32> {
    text.lines()
        .find(|l| l.contains("; serial (YYYYMMDDnn)"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|s| s.parse().ok())
}

fn stanza_path(cluster: &Cluster) -> PathBuf {
    PathBuf::from(format!("{ZONE_DIR}/{}.conf", cluster.name))
}

/// Forward zone first, then reverse zones (IPv4, then IPv6), each with its records.
fn zones(cluster: &Cluster) -> Result<(Vec<Zone>, Vec<String>)> {
    let domain = cluster.domain.trim_end_matches('.');
    let fq = |label: &str| format!("{label}.{domain}.");
    for node in &cluster.nodes {
        if !is_hostname_label(&node.name) {
            bail!(
                "node name {:?} is not a DNS label (letters, digits and inner hyphens, at most \
                 63): it cannot be a name in {domain}",
                node.name
            );
        }
        if node.name == API_LABEL {
            bail!(
                "node name {API_LABEL:?} clashes with the VIP's name {}",
                fq(API_LABEL)
            );
        }
    }
    let ns: Vec<String> = cluster.servers().map(|s| fq(&s.name)).collect();
    first_server(cluster)?;

    let mut fwd = Zone::new(domain.to_string());
    let vip4 = cluster.vip.v4.map(|v| v.addr);
    let vip6 = cluster.vip.v6.map(|v| v.addr);
    let add_addr = |zone: &mut Zone, owner: &str, addr: IpAddr| {
        let kind = if addr.is_ipv4() { "A" } else { "AAAA" };
        zone.records
            .push((owner.to_string(), kind, addr.to_string()));
    };
    if let Some(a) = vip4 {
        add_addr(&mut fwd, API_LABEL, a.into());
    }
    if let Some(a) = vip6 {
        add_addr(&mut fwd, API_LABEL, a.into());
    }
    for node in &cluster.nodes {
        add_addr(&mut fwd, &node.name, node.address);
        if let Some(a6) = node.address6 {
            add_addr(&mut fwd, &node.name, a6.into());
        }
    }
    // Any other name in the domain (the ingress hosts) resolves to the VIP.
    if let Some(a) = vip4 {
        add_addr(&mut fwd, "*", a.into());
    }
    if let Some(a) = vip6 {
        add_addr(&mut fwd, "*", a.into());
    }

    // PTR targets: the VIP first, then the nodes in file order.
    let mut ptr4: Vec<(Ipv4Addr, String)> = Vec::new();
    let mut ptr6: Vec<(Ipv6Addr, String)> = Vec::new();
    if let Some(a) = vip4 {
        ptr4.push((a, fq(API_LABEL)));
    }
    if let Some(a) = vip6 {
        ptr6.push((a, fq(API_LABEL)));
    }
    for node in &cluster.nodes {
        match node.address {
            IpAddr::V4(a) => ptr4.push((a, fq(&node.name))),
            IpAddr::V6(a) => ptr6.push((a, fq(&node.name))),
        }
        if let Some(a) = node.address6 {
            ptr6.push((a, fq(&node.name)));
        }
    }

    let mut out = vec![fwd];
    // Reverse zones claim exactly what is the cluster's: a zone is authoritative for its
    // whole name space, so a zone wider than the network would answer NXDOMAIN (with `aa`)
    // for other people's addresses. Octet (nibble) aligned networks get their own zone;
    // a wider unaligned network (/20) one zone per /24 that holds a cluster address; a
    // network narrower than /24 (and any address outside the VIP's network) one zone per
    // address, which needs no RFC 2317 delegation from the owner of the /24 to work.
    let mut v4_zones: Vec<(Zone, Vec<u8>)> = Vec::new();
    let net4 = cluster.vip.v4.map(|v| (v.addr, v.prefix));
    for (addr, target) in ptr4 {
        let o = addr.octets();
        let idx = match v4_zones.iter().position(|(_, p)| o.starts_with(p)) {
            Some(i) => i,
            None => {
                let fixed = match net4 {
                    Some((net, prefix)) if in_net_v4(addr, net, prefix) => {
                        if prefix % 8 == 0 && (8..=24).contains(&prefix) {
                            usize::from(prefix / 8)
                        } else if prefix < 24 {
                            3
                        } else {
                            4
                        }
                    }
                    _ => 4,
                };
                v4_zones.push((Zone::new(v4_zone_name(&o[..fixed])), o[..fixed].to_vec()));
                v4_zones.len() - 1
            }
        };
        let (zone, fixed) = &mut v4_zones[idx];
        let owner: Vec<String> = o[fixed.len()..].iter().rev().map(u8::to_string).collect();
        let owner = if owner.is_empty() {
            "@".to_owned()
        } else {
            owner.join(".")
        };
        zone.records.push((owner, "PTR", target));
    }
    let mut v6_zones: Vec<(Zone, Vec<u8>)> = Vec::new();
    let net6 = cluster.vip.v6.map(|v| (v.addr, v.prefix));
    for (addr, target) in ptr6 {
        let nib = nibbles_of(addr);
        let idx = match v6_zones.iter().position(|(_, p)| nib.starts_with(p)) {
            Some(i) => i,
            None => {
                let fixed = match net6 {
                    Some((net, prefix)) if in_net_v6(addr, net, prefix) && prefix <= 124 => {
                        usize::from(prefix.div_ceil(4)).max(1)
                    }
                    _ => 32,
                };
                v6_zones.push((
                    Zone::new(v6_zone_name(&nib[..fixed])),
                    nib[..fixed].to_vec(),
                ));
                v6_zones.len() - 1
            }
        };
        let (zone, fixed) = &mut v6_zones[idx];
        let owner: Vec<String> = nib[fixed.len()..]
            .iter()
            .rev()
            .map(|n| format!("{n:x}"))
            .collect();
        let owner = if owner.is_empty() {
            "@".to_owned()
        } else {
            owner.join(".")
        };
        zone.records.push((owner, "PTR", target));
    }
    out.extend(v4_zones.into_iter().map(|(z, _)| z));
    out.extend(v6_zones.into_iter().map(|(z, _)| z));
    Ok((out, ns))
}

pub(super) fn state_paths(cluster: &Cluster) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(NAMED_CONF), PathBuf::from(NAMED_CONF_LOCAL)];
    if let Ok((zones, _)) = zones(cluster) {
        paths.extend(zones.iter().map(Zone::file));
    }
    paths.push(stanza_path(cluster));
    paths
}

fn render_stanzas(cluster: &Cluster, zones: &[Zone]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// Zones of cluster {} ({}).",
        cluster.name, cluster.domain
    );
    let _ = writeln!(
        s,
        "// Rendered by `lbctl install dns` from cluster.toml; re-run it instead of editing."
    );
    let _ = writeln!(s, "// Included from {NAMED_CONF_LOCAL}.");
    for z in zones {
        let _ = writeln!(s, "\nzone \"{}\" {{", z.name);
        let _ = writeln!(s, "    type primary;");
        let _ = writeln!(s, "    file \"{}\";", z.file().display());
        let _ = writeln!(s, "    allow-update {{ none; }};");
        let _ = writeln!(s, "    notify no;");
        let _ = writeln!(s, "}};");
    }
    s
}

pub(super) fn plan(cluster: &Cluster, state: &InstallState) -> Result<Plan> {
    let (zones, ns) = zones(cluster)?;
    let mut plan = Plan::default();
    let mut changed = false;

    let stanza_file = stanza_path(cluster);
    let stanzas = render_stanzas(cluster, &zones);
    changed |= state.existing(&stanza_file) != Some(stanzas.as_bytes());
    plan.files
        .push(PlannedFile::new(&stanza_file, stanzas, 0o644));

    let include = format!("include \"{}\";", stanza_file.display());
    let local = match state.existing(NAMED_CONF_LOCAL.as_ref()) {
        Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        None => DEBIAN_NAMED_CONF_LOCAL.to_string(),
    };
    let local = if local.lines().any(|l| l.trim() == include) {
        local
    } else {
        let sep = if local.is_empty() || local.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        changed = true;
        format!(
            "{local}{sep}\n// k3s-ha cluster {} (lbctl install dns)\n{include}\n",
            cluster.name
        )
    };
    plan.files
        .push(PlannedFile::new(NAMED_CONF_LOCAL, local, 0o644));

    for zone in &zones {
        let path = zone.file();
        let existing = state.existing(&path).map(String::from_utf8_lossy);
        let current = existing.as_deref().and_then(parse_serial);
        let text = match (current, existing.as_deref()) {
            (Some(s), Some(old)) if zone.render(cluster, s, &ns)? == old => old.to_string(),
            _ => {
                changed = true;
                zone.render(cluster, next_serial(current, state.today), &ns)?
            }
        };
        plan.files.push(PlannedFile::new(path, text, 0o644));
    }

    if state.tools.named_checkconf {
        let conf = if state.existing(NAMED_CONF.as_ref()).is_some() {
            vec!["named-checkconf".into(), "-z".into(), NAMED_CONF.into()]
        } else {
            vec!["named-checkconf".into(), stanza_file.display().to_string()]
        };
        plan.commands.push(conf);
    } else {
        plan.notes
            .push("named-checkconf not found: the configuration was not checked".into());
    }
    if state.tools.named_checkzone {
        for zone in &zones {
            plan.commands.push(vec![
                "named-checkzone".into(),
                "-k".into(),
                "fail".into(),
                zone.name.clone(),
                zone.file().display().to_string(),
            ]);
        }
    } else {
        plan.notes
            .push("named-checkzone not found: the zones were not checked".into());
    }
    if !changed {
        plan.notes
            .push("zones unchanged: serials kept, named not reloaded".into());
    } else if state.tools.named_running {
        plan.commands.push(vec!["rndc".into(), "reload".into()]);
    } else {
        plan.notes
            .push("named is not running: start it (systemctl enable --now named)".into());
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::testutil::{lab, today};

    #[test]
    fn reverse_zones_cut_at_octet_and_nibble_boundaries() {
        let a: Ipv4Addr = "192.168.168.100".parse().unwrap();
        assert_eq!(
            reverse_zone_v4(a, 24),
            ("168.168.192.in-addr.arpa".into(), 3)
        );
        assert_eq!(reverse_zone_v4(a, 20), ("168.192.in-addr.arpa".into(), 2));
        assert_eq!(
            reverse_zone_v4(a, 26),
            ("168.168.192.in-addr.arpa".into(), 3)
        );
        assert_eq!(reverse_zone_v4(a, 8), ("192.in-addr.arpa".into(), 1));
        let b: Ipv6Addr = "fd00:20:30::10".parse().unwrap();
        assert_eq!(
            reverse_zone_v6(b, 64),
            ("0.0.0.0.0.3.0.0.0.2.0.0.0.0.d.f.ip6.arpa".into(), 16)
        );
        assert_eq!(reverse_zone_v6(b, 48).1, 12);
    }

    #[test]
    fn serial_grows_and_starts_at_01() {
        let d = Date {
            year: 2026,
            month: 11,
            day: 24,
        };
        assert_eq!(next_serial(None, d), 2026112401);
        assert_eq!(next_serial(Some(2025010105), d), 2026112401);
        assert_eq!(next_serial(Some(2026112401), d), 2026112402);
        assert_eq!(next_serial(Some(2026112499), d), 2026112500);
        assert_eq!(
            next_serial(Some(2030010101), d),
            2030010102,
            "never goes back"
        );
    }

    #[test]
    fn rerun_keeps_serial_and_does_not_reload() {
        let c = lab();
        let mut s = InstallState::empty(today());
        s.tools.named_running = true;
        let p1 = plan(&c, &s).unwrap();
        assert_eq!(
            p1.commands.last().unwrap(),
            &vec!["rndc".to_string(), "reload".into()]
        );
        for f in &p1.files {
            s.existing.insert(f.path.clone(), f.contents.clone());
        }
        s.today = Date {
            year: 2027,
            month: 1,
            day: 2,
        };
        let p2 = plan(&c, &s).unwrap();
        assert_eq!(p1.files, p2.files, "same cluster, same files, next day too");
        assert!(p2.commands.is_empty(), "{:?}", p2.commands);

        // A change bumps the serial with today's date.
        let mut c2 = c.clone();
        c2.nodes[4].address = "192.168.168.123".parse().unwrap();
        let p3 = plan(&c2, &s).unwrap();
        let fwd = p3
            .files
            .iter()
            .find(|f| f.path.ends_with("db.k3s.test.local"))
            .unwrap();
        assert!(String::from_utf8_lossy(&fwd.contents).contains("2027010201 "));
        assert_eq!(p3.commands.last().unwrap()[0], "rndc");
    }

    #[test]
    fn include_is_appended_once_to_an_existing_named_conf_local() {
        let c = lab();
        let mut s = InstallState::empty(today());
        s.existing.insert(
            NAMED_CONF_LOCAL.into(),
            b"zone \"other\" { type primary; file \"x\"; };".to_vec(),
        );
        let p = plan(&c, &s).unwrap();
        let local = p
            .files
            .iter()
            .find(|f| f.path.ends_with("named.conf.local"))
            .unwrap();
        let text = String::from_utf8(local.contents.clone()).unwrap();
        assert!(
            text.starts_with("zone \"other\""),
            "operator's zones kept: {text}"
        );
        assert_eq!(
            text.matches("include \"/etc/bind/k3s-ha/k3s-lab.conf\";")
                .count(),
            1
        );
        s.existing
            .insert(NAMED_CONF_LOCAL.into(), local.contents.clone());
        let again = plan(&c, &s).unwrap();
        let local2 = again
            .files
            .iter()
            .find(|f| f.path.ends_with("named.conf.local"))
            .unwrap();
        assert_eq!(local2.contents, local.contents);
    }

    #[test]
    fn node_outside_the_vip_network_gets_its_own_reverse_zone() {
        let mut c = lab();
        c.nodes[3].address = "10.9.8.7".parse().unwrap();
        let (zones, _) = zones(&c).unwrap();
        let names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "k3s.test.local",
                "168.168.192.in-addr.arpa",
                // Exactly the one address: 10.9.8.0/24 is not the cluster's to answer for.
                "7.8.9.10.in-addr.arpa"
            ]
        );
        assert_eq!(
            zones[2].records,
            [(
                "@".to_string(),
                "PTR",
                "lx-k3s-agent-01.k3s.test.local.".to_string()
            )]
        );
    }
}
