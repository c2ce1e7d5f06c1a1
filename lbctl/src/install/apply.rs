//! The impure half of `lbctl install`: gather the real state, then print, render or apply a
//! [`Plan`]. Every external command and every wait is bounded in time and reports progress;
//! a failed command puts the files it replaced back.

use std::io::Read as _;
use std::net::TcpStream;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use common::config::{Cluster, Node, Role};

use super::demo::{self, random_bytes, TlsMaterial};
use super::k3s::{K3S_BINARY, SCRIPT_DOWNLOAD_PATH, SCRIPT_LOCAL_PATH};
use super::{
    first_server, plan, select_node, state_paths, Date, InstallOpts, InstallState, Plan,
    PlannedWait, Target, Tools, WaitFor, TOKEN_PATH,
};

/// How often a long wait prints that it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Today's date in UTC (days since the epoch to a civil date, proleptic Gregorian).
pub fn today_utc() -> Date {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0))
}

/// Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(z: i64) -> Date {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date {
        year: i32::try_from(year).unwrap_or(i32::MAX),
        month: u8::try_from(month).unwrap_or(1),
        day: u8::try_from(day).unwrap_or(1),
    }
}

/// `path` (absolute, as on the system) under `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Run `program args`, quietly, for at most `timeout`; `None` when it cannot run or times out.
fn probe(program: &str, args: &[&str], timeout: Duration) -> Option<(ExitStatus, String)> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_bounded(&mut cmd, timeout, None, true)
        .ok()
        .map(|(st, out)| (st, String::from_utf8_lossy(&out).into_owned()))
}

fn generate_token() -> Result<String> {
    Ok(random_bytes(32)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn read_tls(cluster: &Cluster, root: &Path, today: Date) -> Result<TlsMaterial> {
    let read = |p: String| std::fs::read_to_string(under(root, Path::new(&p))).ok();
    let ca = read(demo::ca_cert_path(cluster)).zip(read(demo::ca_key_path(cluster)));
    let (ca_cert_pem, ca_key_pem, fresh_ca) = match ca {
        Some((c, k)) => (c, k, false),
        None => {
            let (c, k) = demo::issue_ca(cluster, today)?;
            (c, k, true)
        }
    };
    let leaf = read(demo::cert_path(cluster)).zip(read(demo::key_path(cluster)));
    let (cert_pem, key_pem) = match leaf {
        Some(pair) if !fresh_ca => pair,
        _ => demo::issue_leaf(cluster, &ca_key_pem, today)?,
    };
    Ok(TlsMaterial {
        ca_cert_pem,
        ca_key_pem,
        cert_pem,
        key_pem,
    })
}

fn gather_state(
    cluster: &Cluster,
    target: Target,
    node: Option<&Node>,
    root: &Path,
    opts: &InstallOpts,
) -> Result<InstallState> {
    let today = today_utc();
    let mut state = InstallState::empty(today);
    for path in state_paths(cluster, target) {
        if let Ok(bytes) = std::fs::read(under(root, &path)) {
            state.existing.insert(path, bytes);
        }
    }
    let mut tools = Tools::default();
    match target {
        Target::Dns => {
            tools.named_checkconf = which("named-checkconf");
            tools.named_checkzone = which("named-checkzone");
            tools.named_running = which("rndc")
                && probe("rndc", &["status"], Duration::from_secs(5))
                    .is_some_and(|(s, _)| s.success());
        }
        Target::Ingress => tools.helm = which("helm"),
        Target::K3s => {
            // Everything about the node comes from `root`: with --render that is the
            // render directory, not this machine (its k3s, its systemd).
            let binary = under(root, Path::new(K3S_BINARY));
            if binary.exists() {
                let bin = binary.display().to_string();
                tools.k3s_version = probe(&bin, &["--version"], Duration::from_secs(10))
                    .and_then(|(_, out)| out.split_whitespace().nth(2).map(String::from));
            }
            let unit = match node.map(|n| n.role) {
                Some(Role::Agent) => "k3s-agent",
                _ => "k3s",
            };
            tools.k3s_active = opts.render_dir.is_none()
                && probe(
                    "systemctl",
                    &["is-active", "--quiet", unit],
                    Duration::from_secs(5),
                )
                .is_some_and(|(s, _)| s.success());
            if let Some(dir) = &cluster.k3s.airgap {
                let dir = under(root, dir);
                let mut images: Vec<String> = std::fs::read_dir(&dir)
                    .with_context(|| format!("k3s.airgap: reading {}", dir.display()))?
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with("k3s-airgap-images"))
                    .collect();
                images.sort();
                for need in ["k3s", "install.sh"] {
                    if !opts.dry_run && opts.render_dir.is_none() && !dir.join(need).is_file() {
                        bail!("k3s.airgap: {} has no {need}", dir.display());
                    }
                }
                tools.airgap_images = images;
            }
            if under(root, Path::new(SCRIPT_LOCAL_PATH)).is_file() {
                tools.install_script = Some(SCRIPT_LOCAL_PATH.into());
            }
            let token_file = under(root, Path::new(TOKEN_PATH));
            state.token = match std::fs::read_to_string(&token_file) {
                Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                _ => {
                    let first = first_server(cluster)?;
                    if node.is_some_and(|n| n.name == first.name) || opts.dry_run {
                        Some(generate_token()?)
                    } else {
                        None
                    }
                }
            };
        }
        Target::DemoApp => state.tls = Some(read_tls(cluster, root, today)?),
    }
    state.tools = tools;
    Ok(state)
}

/// Quote an argument for display the way a shell would need it.
fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=+,@%{}[]".contains(&b))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

pub(super) fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The plan as text: files, then steps in order (what `--dry-run` prints and golden tests
/// check for commands).
pub fn describe_steps(plan: &Plan) -> String {
    let mut out = String::new();
    let waits_before = |i: usize| plan.waits.iter().filter(move |w| w.before_command == i);
    for i in 0..=plan.commands.len() {
        for w in waits_before(i) {
            out.push_str(&format!(
                "wait {} (up to {} s)\n",
                w.what,
                w.timeout.as_secs()
            ));
        }
        if let Some(cmd) = plan.commands.get(i) {
            out.push_str(&format!("$ {}\n", command_line(cmd)));
        }
    }
    out
}

fn print_dry_run(plan: &Plan, root: &Path) {
    for f in &plan.files {
        let dest = under(root, &f.path);
        let status = match std::fs::read(&dest) {
            Ok(old) if old == f.contents => "unchanged",
            Ok(_) => "changed",
            Err(_) => "new",
        };
        println!("--- {} (mode {:04o}, {status})", f.path.display(), f.mode);
        if f.is_secret() {
            match redacted_manifest(&f.contents) {
                Some(text) => print!("{text}"),
                None => println!("<secret: {} bytes, not shown>", f.contents.len()),
            }
        } else {
            print!("{}", String::from_utf8_lossy(&f.contents));
        }
    }
    println!("--- steps, in order (dry run: nothing was written or run)");
    print!("{}", describe_steps(plan));
    print_notes(plan);
}

/// A Kubernetes manifest holding a Secret, with the Secret's data values replaced.
fn redacted_manifest(contents: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(contents).ok()?;
    if !text.contains("\nkind: Secret\n") {
        return None;
    }
    let mut in_data = false;
    let mut out = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_data = line == "data:";
        }
        match line.split_once(": ") {
            Some((key, _)) if in_data && line.starts_with("  ") => {
                out.push_str(&format!("{key}: <redacted>\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Some(out)
}

fn print_notes(plan: &Plan) {
    for n in &plan.notes {
        println!("{n}");
    }
}

/// A replaced file's previous state, to put back if a later step fails.
struct Backup {
    dest: PathBuf,
    old: Option<(Vec<u8>, u32)>,
}

fn write_files(plan: &Plan, root: &Path) -> Result<Vec<Backup>> {
    let mut backups = Vec::new();
    for f in &plan.files {
        let dest = under(root, &f.path);
        let old = std::fs::read(&dest).ok().map(|bytes| {
            let mode = std::fs::metadata(&dest).map_or(0, |m| m.permissions().mode() & 0o7777);
            (bytes, mode)
        });
        if old
            .as_ref()
            .is_some_and(|(b, m)| *b == f.contents && *m == f.mode)
        {
            println!("unchanged {}", dest.display());
            continue;
        }
        write_atomic(&dest, &f.contents, f.mode)?;
        println!("wrote     {} (mode {:04o})", dest.display(), f.mode);
        backups.push(Backup { dest, old });
    }
    Ok(backups)
}

fn write_atomic(dest: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = dest.parent().context("a file path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.k3s-ha-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    std::io::Write::write_all(&mut file, contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("renaming onto {}", dest.display()))?;
    Ok(())
}

fn restore(backups: &[Backup]) {
    for b in backups.iter().rev() {
        let result = match &b.old {
            Some((bytes, mode)) => write_atomic(&b.dest, bytes, *mode),
            None => std::fs::remove_file(&b.dest).map_err(Into::into),
        };
        match result {
            Ok(()) => eprintln!("restored  {}", b.dest.display()),
            Err(e) => eprintln!("could not restore {}: {e:#}", b.dest.display()),
        }
    }
}

/// Run a command for at most `timeout`, printing progress under `label` every
/// [`PROGRESS_EVERY`]. `capture`: collect stdout (stderr discarded) instead of inheriting.
fn run_bounded(
    cmd: &mut Command,
    timeout: Duration,
    label: Option<&str>,
    capture: bool,
) -> Result<(ExitStatus, Vec<u8>)> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null());
    if capture {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`{program}` not found: install it or put it on PATH")
        }
        Err(e) => return Err(e).with_context(|| format!("starting `{program}`")),
    };
    let reader = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        })
    });
    let start = Instant::now();
    let mut next_progress = PROGRESS_EVERY;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{program}`"))?
        {
            break status;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{program}` did not finish within {} s and was stopped",
                timeout.as_secs()
            );
        }
        if let Some(label) = label.filter(|_| elapsed >= next_progress) {
            println!(
                "  ... {label}: still running ({} s of at most {} s)",
                elapsed.as_secs(),
                timeout.as_secs()
            );
            next_progress += PROGRESS_EVERY;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    Ok((status, out))
}

fn command_timeout(argv: &[String]) -> Duration {
    let has = |s: &str| argv.iter().any(|a| a == s);
    if has(SCRIPT_DOWNLOAD_PATH) && argv.first().is_some_and(|a| a == "curl") {
        Duration::from_secs(5 * 60)
    } else if has("sh") {
        Duration::from_secs(15 * 60)
    } else if argv.first().is_some_and(|a| a == "helm") {
        Duration::from_secs(12 * 60)
    } else if has("rollout") {
        Duration::from_secs(6 * 60)
    } else {
        Duration::from_secs(2 * 60)
    }
}

fn hint(argv: &[String], status: ExitStatus) -> String {
    if argv.first().is_some_and(|a| a == "curl") {
        let why = match status.code() {
            Some(6) => "cannot resolve the host name",
            Some(7) => "cannot connect",
            Some(28) => "timed out",
            Some(22) => "the server answered with an HTTP error",
            _ => "download failed",
        };
        return format!(
            " ({why}: no network? For an air-gapped install put k3s's install script at \
             {SCRIPT_LOCAL_PATH} and the k3s binary at {K3S_BINARY})"
        );
    }
    String::new()
}

fn run_command(argv: &[String]) -> Result<()> {
    let line = command_line(argv);
    println!("$ {line}");
    let (program, args) = argv.split_first().context("empty command")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    let (status, _) = run_bounded(&mut cmd, command_timeout(argv), Some(program), false)
        .with_context(|| format!("running {line}"))?;
    if !status.success() {
        bail!(
            "{line} failed: {status} (its output is above){}",
            hint(argv, status)
        );
    }
    Ok(())
}

fn node_ready(name: &str) -> std::result::Result<(), String> {
    let jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
    let args = ["kubectl", "get", "node", name, "-o", jsonpath];
    match probe(K3S_BINARY, &args, Duration::from_secs(15)) {
        Some((st, out)) if st.success() && out.trim() == "True" => Ok(()),
        Some((st, out)) if st.success() => Err(format!("Ready is {:?}", out.trim())),
        Some((st, _)) => Err(format!("k3s kubectl get node: {st}")),
        None => Err("k3s kubectl did not answer".into()),
    }
}

/// `GET /ping` over TLS, expecting k3s's `pong` (its supervisor serves it without
/// authentication; the certificate is the cluster's own, not checked here).
fn k3s_ping(addr: std::net::SocketAddr) -> std::result::Result<(), String> {
    use std::io::{Read, Write};
    let cfg = common::tls::unverified_client_config().map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET /ping HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("TLS: {e}"))?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    if text.starts_with("HTTP/1.1 200") && text.contains("pong") {
        Ok(())
    } else if text.is_empty() {
        Err("no answer (no apiserver behind the VIP yet)".into())
    } else {
        Err(format!(
            "answered {:?}",
            text.lines().next().unwrap_or_default()
        ))
    }
}

fn wait(w: &PlannedWait) -> Result<()> {
    println!("waiting for {} (up to {} s)", w.what, w.timeout.as_secs());
    let start = Instant::now();
    let mut next_progress = PROGRESS_EVERY;
    loop {
        let attempt = match &w.what {
            WaitFor::TcpConnect(addr) => TcpStream::connect_timeout(addr, Duration::from_secs(3))
                .map(drop)
                .map_err(|e| e.to_string()),
            WaitFor::K3sPing(addr) => k3s_ping(*addr),
            WaitFor::NodeReady(name) => node_ready(name),
        };
        let last = match attempt {
            Ok(()) => {
                println!("  {} after {} s", w.what, start.elapsed().as_secs());
                return Ok(());
            }
            Err(e) => e,
        };
        let elapsed = start.elapsed();
        if elapsed >= w.timeout {
            bail!(
                "timed out after {} s waiting for {} (last: {last})",
                w.timeout.as_secs(),
                w.what
            );
        }
        if elapsed >= next_progress {
            println!(
                "  ... {}: {} s of {} s (last: {last})",
                w.what,
                elapsed.as_secs(),
                w.timeout.as_secs()
            );
            next_progress += PROGRESS_EVERY;
        }
        std::thread::sleep(Duration::from_secs(2).min(w.timeout.saturating_sub(elapsed)));
    }
}

fn execute(plan: &Plan) -> Result<()> {
    for i in 0..=plan.commands.len() {
        for w in plan.waits.iter().filter(|w| w.before_command == i) {
            wait(w)?;
        }
        if let Some(cmd) = plan.commands.get(i) {
            run_command(cmd)?;
        }
    }
    Ok(())
}

pub(super) fn run(cluster: &Cluster, target: Target, opts: &InstallOpts) -> Result<()> {
    let root = opts
        .render_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/"));
    let node = match target {
        Target::K3s => Some(select_node(cluster, opts.node.as_deref())?),
        _ => None,
    };
    let state = gather_state(cluster, target, node, &root, opts)?;
    let plan = plan(cluster, target, opts, &state)?;
    if opts.dry_run {
        print_dry_run(&plan, &root);
        return Ok(());
    }
    let helmchart = Path::new(super::ingress::HELMCHART_PATH);
    if opts.render_dir.is_none()
        && plan.files.iter().any(|f| f.path == helmchart)
        && !helmchart.parent().is_some_and(Path::is_dir)
    {
        bail!(
            "helm is not installed and {} does not exist: run `lbctl install ingress` on a k3s \
             server (its helm-controller applies the chart), or install helm",
            helmchart
                .parent()
                .map_or_else(String::new, |p| p.display().to_string())
        );
    }
    if opts.render_dir.is_some() {
        write_files(&plan, &root)?;
        println!("--- steps not run (--render {}):", root.display());
        print!("{}", describe_steps(&plan));
        print_notes(&plan);
        return Ok(());
    }
    apply(&plan, &root).with_context(|| format!("lbctl install {}", target.as_str()))?;
    print_notes(&plan);
    Ok(())
}

/// Write the files under `root`, then run the steps; on a failed step put back every file
/// this call replaced.
fn apply(plan: &Plan, root: &Path) -> Result<()> {
    let backups = write_files(plan, root)?;
    if let Err(e) = execute(plan) {
        if !backups.is_empty() {
            eprintln!("a step failed; putting the previous files back");
            restore(&backups);
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(
            civil_from_days(0),
            Date {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        // 2000-03-01 and 2026-11-24.
        assert_eq!(
            civil_from_days(11_017),
            Date {
                year: 2000,
                month: 3,
                day: 1
            }
        );
        assert_eq!(
            civil_from_days(20_416),
            Date {
                year: 2025,
                month: 11,
                day: 24
            }
        );
    }

    #[test]
    fn dry_run_hides_secret_data_only() {
        let m = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\ndata:\n  tls.crt: QUJD\n  tls.key: REVG\n---\nkind: Service\n";
        let r = redacted_manifest(m.as_bytes()).unwrap();
        assert!(r.contains("  tls.key: <redacted>\n") && r.contains("  tls.crt: <redacted>\n"));
        assert!(!r.contains("REVG"));
        assert!(r.contains("  name: x\n") && r.contains("kind: Service\n"));
        assert!(redacted_manifest(b"secret-token\n").is_none());
    }

    #[test]
    fn failed_command_puts_the_previous_files_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/old"), "before").unwrap();
        let mut plan = Plan {
            files: vec![
                super::super::PlannedFile::new("/etc/old", "after", 0o644),
                super::super::PlannedFile::new("/etc/new", "x", 0o644),
            ],
            commands: vec![vec!["true".into()], vec!["false".into()]],
            ..Plan::default()
        };
        let err = apply(&plan, dir.path()).unwrap_err();
        assert!(err.to_string().contains("false failed"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/old")).unwrap(),
            "before"
        );
        assert!(!dir.path().join("etc/new").exists());
        plan.commands.pop();
        apply(&plan, dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/old")).unwrap(),
            "after"
        );
    }

    /// A stand-in k3s supervisor: TLS, `GET /ping` -> `pong`.
    fn fake_k3s() -> std::net::SocketAddr {
        use std::io::{Read, Write};
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der = cert.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![der], key)
                .unwrap(),
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(4).flatten() {
                let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s);
                let mut buf = [0u8; 512];
                if tls.read(&mut buf).is_ok() {
                    let _ = tls.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong",
                    );
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            }
        });
        addr
    }

    /// Regression (with the join wait): a TCP connect to the VIP succeeds as soon as lbd
    /// listens, with no apiserver behind it. The wait is for k3s itself answering.
    #[test]
    fn k3s_ping_needs_k3s_not_just_a_listener() {
        let addr = fake_k3s();
        k3s_ping(addr).unwrap();
        // A listener that accepts and closes (lbd with no server UP) is not k3s.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bare = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(2) {
                drop(s);
            }
        });
        assert!(k3s_ping(bare).is_err());
    }

    #[test]
    fn tcp_wait_succeeds_on_a_listener_and_times_out_without_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let w = |addr, ms| PlannedWait {
            before_command: 0,
            what: WaitFor::TcpConnect(addr),
            timeout: Duration::from_millis(ms),
        };
        wait(&w(addr, 2000)).unwrap();
        drop(listener);
        let start = Instant::now();
        let err = wait(&w(addr, 500)).unwrap_err();
        assert!(err.to_string().contains("timed out after"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn download_without_network_fails_fast_with_the_air_gap_hint() {
        // Port 1 on loopback: nothing listens, so curl fails to connect at once.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("install.sh");
        let argv: Vec<String> = [
            "curl",
            "-sfL",
            "--connect-timeout",
            "2",
            "--max-time",
            "5",
            "-o",
            out.to_str().unwrap(),
            "http://127.0.0.1:1/",
        ]
        .map(String::from)
        .to_vec();
        let start = Instant::now();
        let err = run_command(&argv).unwrap_err().to_string();
        assert!(
            err.contains("cannot connect") && err.contains("air-gapped"),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn quoting() {
        assert_eq!(
            command_line(&["a b".into(), "x=1".into(), "it's".into()]),
            "'a b' x=1 'it'\\''s'"
        );
    }

    #[test]
    fn bounded_run_stops_a_hang() {
        let start = Instant::now();
        let err = run_bounded(
            Command::new("sleep").arg("30"),
            Duration::from_millis(300),
            None,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_program_is_named() {
        let err = run_command(&["k3s-ha-no-such-program".into()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("`k3s-ha-no-such-program` not found"),
            "{err:#}"
        );
    }

    #[test]
    fn files_are_written_with_modes_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan {
            files: vec![
                super::super::PlannedFile::new("/etc/a/secret", "s", 0o600),
                super::super::PlannedFile::new("/etc/a/pub", "p", 0o644),
            ],
            ..Plan::default()
        };
        let backups = write_files(&plan, dir.path()).unwrap();
        assert_eq!(backups.len(), 2);
        let m = std::fs::metadata(dir.path().join("etc/a/secret")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert!(
            write_files(&plan, dir.path()).unwrap().is_empty(),
            "idempotent"
        );
        restore(&backups);
        assert!(!dir.path().join("etc/a/pub").exists());
    }
}
