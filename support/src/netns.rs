//! Network-namespace helpers for tests and the lab.
//!
//! Everything here shells out to iproute2 (`ip`), which is what an operator would type, and
//! keeps each test inside namespaces it created itself:
//!
//! - [`NetNs`]: a guard for one named namespace (`ip netns add`), deleted in `Drop`. It is
//!   `!Send` like aya's `NetNsGuard`: work that must run *inside* a namespace goes through
//!   `ip netns exec NAME ...` ([`NetNs::command`], [`NetNs::spawn`]), never through `setns`
//!   on a shared thread.
//! - [`NsChild`]: a long-running process inside a namespace (or, from [`spawn`], in the
//!   caller's own), killed and reaped in `Drop`.
//! - [`Lab`] / [`LabBuilder`]: "one bridge namespace and N host namespaces, each with one
//!   veth `eth0` plugged into the bridge at the given addresses" - the topology every
//!   vrrpd/lbd/end-to-end test and the lab of `lbctl lab up` start from.
//!
//! Names: a namespace name is `PREFIX-PID-N` (see [`unique_name`]), so parallel tests and
//! parallel test binaries never collide, and a name left behind by a crashed run is removed
//! before it is reused. Interface names are chosen per namespace (veths are created inside
//! the namespaces), so they never collide across tests either.
//!
//! `Drop` never panics: cleanup failures are collected and printed to stderr. Call
//! [`NetNs::close`] / [`Lab::close`] to get them as a `Result` instead.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Something in namespace setup or teardown failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("could not run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("unexpected output from `{cmd}`: {problem}")]
    Parse { cmd: String, problem: String },
    #[error("invalid name {name:?}: {problem}")]
    BadName { name: String, problem: &'static str },
    #[error("no host {0:?} in the lab")]
    NoSuchHost(String),
    #[error("cannot run `{cmd}`: {source}")]
    Tool {
        cmd: String,
        #[source]
        source: crate::tools::ToolError,
    },
    #[error("{} cleanup error(s): {}", .0.len(), join_errors(.0))]
    Cleanup(Vec<NetnsError>),
}

fn join_errors(errs: &[NetnsError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Set to `1` to skip the tests that need root when not root (a developer's quick run);
/// without it such a test fails. A skip is never a pass by default: CI runs as root and
/// sets nothing.
pub const SKIP_ROOT_TESTS_ENV: &str = "K3SHA_SKIP_ROOT_TESTS";

/// Are we root? If so, true. If not, the test fails naming itself and what it needs,
/// unless skipping was asked for ([`SKIP_ROOT_TESTS_ENV`]`=1`): then it prints a loud
/// SKIPPED banner and returns false, so the test can `if !require_root("name") { return; }`.
pub fn require_root(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let need = "needs root (network namespaces, veth, raw sockets)";
    if std::env::var(SKIP_ROOT_TESTS_ENV).as_deref() != Ok("1") {
        panic!(
            "{what} {need}: run the suite as root (CI does), or set {SKIP_ROOT_TESTS_ENV}=1 \
             to skip the root-only tests on purpose"
        );
    }
    // Straight to the process's stderr: the test harness captures eprintln! of a test
    // that passes, and a skip must be seen.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n## SKIPPED ({SKIP_ROOT_TESTS_ENV}=1): {what}: {need}\n"
    );
    false
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `PREFIX-PID-N`: unique within this process (N counts up) and across concurrently
/// running processes (PID).
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

fn check_name(name: &str) -> Result<(), NetnsError> {
    let bad = |problem| {
        Err(NetnsError::BadName {
            name: name.to_owned(),
            problem,
        })
    };
    if name.is_empty() || name.len() > 200 {
        return bad("must be 1..=200 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    if name.starts_with('.') {
        return bad("must not start with '.'");
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The program a command finally runs: `PROG` of `ip netns exec NAME PROG ...`, else the
/// command's own program.
fn final_program(cmd: &Command) -> &OsStr {
    let args: Vec<&OsStr> = cmd.get_args().collect();
    let is_ip = std::path::Path::new(cmd.get_program()).file_name() == Some(OsStr::new("ip"));
    match args.as_slice() {
        [netns, exec, _name, prog, ..] if is_ip && *netns == "netns" && *exec == "exec" => prog,
        _ => cmd.get_program(),
    }
}

/// Before running anything: a system program must be in `scripts/test-tools.txt` (so a
/// fresh machine gets it) and installed; otherwise the error names it and its package,
/// instead of a child that fails quietly (an empty capture, a vague assertion later).
/// Programs outside the system directories (this workspace's own binaries) pass.
fn preflight(cmd: &Command) -> Result<(), NetnsError> {
    let prog = final_program(cmd).to_string_lossy();
    let system = ["/usr/", "/bin/", "/sbin/"]
        .iter()
        .any(|d| prog.starts_with(d));
    if prog.contains('/') && !system {
        return Ok(());
    }
    crate::tools::find(&prog)
        .map(|_| ())
        .map_err(|source| NetnsError::Tool {
            cmd: describe(cmd),
            source,
        })
}

/// Run a command to completion; success or a [`NetnsError`] carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<Output, NetnsError> {
    preflight(cmd)?;
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: describe(cmd),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Failed {
            cmd: describe(cmd),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// Start a long-running process as `cmd` says (in the caller's namespace, unless it is an
/// `ip netns exec` command of [`NetNs::command`]); it is killed and reaped when the
/// returned [`NsChild`] is dropped, also on panic. The program is checked as [`run`] checks
/// it.
pub fn spawn(mut cmd: Command) -> Result<NsChild, NetnsError> {
    preflight(&cmd)?;
    let desc = describe(&cmd);
    let child = cmd.spawn().map_err(|source| NetnsError::Spawn {
        cmd: desc.clone(),
        source,
    })?;
    Ok(NsChild {
        child: Some(child),
        desc,
    })
}

/// Run `ip ARGS...` in the current (caller's) namespace.
fn ip(args: &[&str]) -> Result<Output, NetnsError> {
    run(Command::new("ip").args(args))
}

/// Names of all named namespaces (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>, NetnsError> {
    let out = ip(&["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        // Lines look like "name" or "name (id: 3)".
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Does a namespace with this name exist?
pub fn exists(name: &str) -> bool {
    std::path::Path::new(NETNS_DIR).join(name).exists()
}

/// Delete a namespace by name: kill every process still inside it first (a process keeps
/// its namespace alive, with its veths and the addresses on them), then `ip netns del`.
/// A missing namespace is not an error.
pub fn delete_namespace(name: &str) -> Result<(), NetnsError> {
    check_name(name)?;
    if !exists(name) {
        return Ok(());
    }
    let mut errors = Vec::new();
    // `ip netns pids` lists processes whose network namespace is this one. A few rounds,
    // bounded: a process that was entering the namespace during the first listing is
    // caught by the next.
    for round in 0..5 {
        match namespace_pids(name) {
            Ok(pids) if pids.is_empty() => break,
            Ok(pids) => {
                for pid in pids {
                    // ESRCH (already gone) is fine.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            Err(e) => {
                errors.push(e);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10 * (round + 1)));
    }
    if let Err(e) = ip(&["netns", "del", name]) {
        if exists(name) {
            errors.push(e);
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(NetnsError::Cleanup(errors)),
    }
}

/// Pids of the processes inside namespace `name` (`ip netns pids`).
pub fn namespace_pids(name: &str) -> Result<Vec<i32>, NetnsError> {
    let out = ip(&["netns", "pids", name])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Delete every namespace whose name starts with `prefix` (e.g. everything a crashed lab
/// left behind). Returns the names deleted.
pub fn delete_with_prefix(prefix: &str) -> Result<Vec<String>, NetnsError> {
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for name in list_namespaces()? {
        if name.starts_with(prefix) {
            match delete_namespace(&name) {
                Ok(()) => deleted.push(name),
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(deleted)
    } else {
        Err(NetnsError::Cleanup(errors))
    }
}

/// A named network namespace, deleted when dropped (unless [`NetNs::persist`]ed).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    persist: bool,
    /// `!Send` and `!Sync`: a namespace guard belongs to the thread (test) that made it.
    _not_send: PhantomData<*const ()>,
}

impl NetNs {
    /// A new namespace named [`unique_name`]`(prefix)`, with `lo` up.
    pub fn new(prefix: &str) -> Result<NetNs, NetnsError> {
        NetNs::with_name(&unique_name(prefix))
    }

    /// A new namespace with exactly this name, with `lo` up. A leftover namespace of the
    /// same name (from a crashed run) is deleted first.
    pub fn with_name(name: &str) -> Result<NetNs, NetnsError> {
        check_name(name)?;
        delete_namespace(name)?;
        ip(&["netns", "add", name])?;
        let ns = NetNs {
            name: name.to_owned(),
            persist: false,
            _not_send: PhantomData,
        };
        ns.link_set("lo", true)?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Keep the namespace after this guard is dropped (the lab outlives `lbctl lab up`);
    /// remove it later with [`delete_namespace`] or [`delete_with_prefix`].
    pub fn persist(mut self) -> String {
        self.persist = true;
        std::mem::take(&mut self.name)
    }

    /// A `Command` that runs `program` inside this namespace (`ip netns exec NAME program`).
    /// `ip netns exec` execs the program, so the child's pid is the program's pid.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Run `program args...` inside the namespace to completion; stdout on success.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, NetnsError> {
        let out = run(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run `ip ARGS...` against this namespace (`ip -n NAME ARGS...`); stdout on success.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let out = run(Command::new("ip").args(["-n", &self.name]).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start a long-running process inside the namespace; it is killed when the returned
    /// [`NsChild`] is dropped. Configure stdio etc. on the `Command` from [`NetNs::command`].
    pub fn spawn(&self, cmd: Command) -> Result<NsChild, NetnsError> {
        spawn(cmd)
    }

    /// Set a sysctl inside the namespace (`net.*` keys are per namespace). Written through
    /// `/proc/sys` from a shell inside the namespace, so procps need not be installed.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if !key.chars().all(ok) || !value.chars().all(ok) {
            return Err(NetnsError::BadName {
                name: format!("{key}={value}"),
                problem: "sysctl keys and values: ASCII letters, digits, '.', '_', '-'",
            });
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.exec("sh", &["-c", &format!("echo {value} > {path}")])
            .map(drop)
    }

    /// Read a sysctl inside the namespace.
    pub fn sysctl_get(&self, key: &str) -> Result<String, NetnsError> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        Ok(self.exec("cat", &[&path])?.trim().to_owned())
    }

    /// Create a Linux bridge (STP off, forward delay 0, multicast snooping off so VRRP
    /// multicast reaches every port) and bring it up.
    pub fn add_bridge(&self, name: &str) -> Result<(), NetnsError> {
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        self.link_set(name, true)
    }

    /// Set a link administratively up or down.
    pub fn link_set(&self, dev: &str, up: bool) -> Result<(), NetnsError> {
        self.ip(&["link", "set", "dev", dev, if up { "up" } else { "down" }])
            .map(drop)
    }

    /// Plug `dev` (in this namespace) into `bridge` (in this namespace).
    pub fn set_master(&self, dev: &str, bridge: &str) -> Result<(), NetnsError> {
        self.ip(&["link", "set", "dev", dev, "master", bridge])
            .map(drop)
    }

    /// Add an address in CIDR form (`10.1.0.5/24`, `fd00::5/64`). IPv6 addresses are added
    /// with `nodad` so they are usable at once.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<(), NetnsError> {
        let mut args = vec!["addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args).map(drop)
    }

    pub fn del_addr(&self, dev: &str, cidr: &str) -> Result<(), NetnsError> {
        self.ip(&["addr", "del", cidr, "dev", dev]).map(drop)
    }

    /// Addresses on `dev` (without prefix length).
    pub fn addrs(&self, dev: &str) -> Result<Vec<IpAddr>, NetnsError> {
        let text = self.ip(&["-j", "addr", "show", "dev", dev])?;
        let cmd = || format!("ip -n {} -j addr show dev {dev}", self.name);
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| NetnsError::Parse {
            cmd: cmd(),
            problem: e.to_string(),
        })?;
        let mut out = Vec::new();
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if let Some(Ok(ip)) = a["local"].as_str().map(str::parse::<IpAddr>) {
                    out.push(ip);
                }
            }
        }
        Ok(out)
    }

    /// Does `dev` hold `addr`?
    pub fn has_addr(&self, dev: &str, addr: IpAddr) -> Result<bool, NetnsError> {
        Ok(self.addrs(dev)?.contains(&addr))
    }

    /// The MAC address of `dev` as `aa:bb:cc:dd:ee:ff`.
    pub fn mac(&self, dev: &str) -> Result<String, NetnsError> {
        let text = self.ip(&["-j", "link", "show", "dev", dev])?;
        let cmd = || format!("ip -n {} -j link show dev {dev}", self.name);
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| NetnsError::Parse {
            cmd: cmd(),
            problem: e.to_string(),
        })?;
        v.get(0)
            .and_then(|l| l["address"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| NetnsError::Parse {
                cmd: cmd(),
                problem: "no \"address\" in the output".into(),
            })
    }

    /// The neighbour (ARP / NDP) entry for `addr`: (MAC, state) if there is one with a
    /// link-layer address.
    pub fn neighbour(&self, addr: IpAddr) -> Result<Option<(String, String)>, NetnsError> {
        let text = self.ip(&["-j", "neigh", "show", &addr.to_string()])?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| NetnsError::Parse {
            cmd: format!("ip -n {} -j neigh show {addr}", self.name),
            problem: e.to_string(),
        })?;
        Ok(v.as_array().into_iter().flatten().find_map(|n| {
            let mac = n["lladdr"].as_str()?;
            let state = n["state"]
                .as_array()
                .and_then(|s| s.first())
                .and_then(|s| s.as_str())
                .unwrap_or("");
            Some((mac.to_owned(), state.to_owned()))
        }))
    }

    /// Explicitly delete the namespace, reporting failure (Drop only prints it).
    pub fn close(mut self) -> Result<(), NetnsError> {
        self.persist = true; // Drop does nothing more.
        delete_namespace(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.persist || self.name.is_empty() {
            return;
        }
        if let Err(e) = delete_namespace(&self.name) {
            eprintln!("netns: cleanup of {} failed: {e}", self.name);
        }
    }
}

/// Create a veth pair: `a_dev` in namespace `a`, `b_dev` in namespace `b`, both brought up.
/// The pair is created inside `a`, so no name ever appears in the caller's namespace.
pub fn veth(a: &NetNs, a_dev: &str, b: &NetNs, b_dev: &str) -> Result<(), NetnsError> {
    a.ip(&[
        "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b.name,
    ])?;
    a.link_set(a_dev, true)?;
    b.link_set(b_dev, true)
}

/// A process started by [`spawn`] or [`NetNs::spawn`] (inside a namespace, or in the
/// caller's own: a test's haproxy or lbd); killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct NsChild {
    child: Option<Child>,
    desc: String,
}

impl NsChild {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The command line, for messages.
    pub fn describe(&self) -> &str {
        &self.desc
    }

    /// Send a signal (e.g. SIGTERM for a graceful stop, SIGHUP for reload).
    pub fn signal(&self, sig: Signal) -> Result<(), NetnsError> {
        let Some(child) = &self.child else {
            return Ok(());
        };
        let pid = i32::try_from(child.id()).map_err(|_| NetnsError::Parse {
            cmd: self.desc.clone(),
            problem: "pid out of range".into(),
        })?;
        kill(Pid::from_raw(pid), sig).map_err(|e| NetnsError::Spawn {
            cmd: format!("kill -{sig} {pid}"),
            source: e.into(),
        })
    }

    /// Has it exited? `Some(status)` once it has (reaping it).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait, without a bound, for the process to exit by itself (reaping it). `None` once
    /// it has been killed.
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.wait().ok())
    }

    /// SIGKILL and reap now (what Drop does). Returns the exit status if it could be read.
    pub fn kill(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Take the child's piped stdout (when the `Command` had `Stdio::piped()`).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Take the child's piped stderr.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.as_mut().and_then(|c| c.stderr.take())
    }

    /// Hand the `Child` over (it will no longer be killed on drop).
    pub fn into_inner(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One host of a [`Lab`]: a namespace with `eth0` on the lab bridge.
#[derive(Debug)]
pub struct LabHost {
    pub name: String,
    pub ns: NetNs,
    /// Addresses given to `eth0` (CIDR strings as passed to the builder).
    pub addrs: Vec<String>,
    /// Name of this host's port on the bridge (in the bridge namespace).
    pub port: String,
}

/// Builder for a [`Lab`].
#[derive(Debug, Clone)]
pub struct LabBuilder {
    prefix: String,
    hosts: Vec<(String, Vec<String>)>,
    ipv6: bool,
}

impl LabBuilder {
    /// Namespace names will be `PREFIX-PID-N` (see [`unique_name`]).
    pub fn new(prefix: &str) -> LabBuilder {
        LabBuilder {
            prefix: prefix.to_owned(),
            hosts: Vec::new(),
            ipv6: true,
        }
    }

    /// Add a host (a namespace with `eth0` on the bridge) holding these addresses (CIDR).
    pub fn host(mut self, name: &str, addrs: &[&str]) -> LabBuilder {
        self.hosts.push((
            name.to_owned(),
            addrs.iter().map(|s| (*s).to_owned()).collect(),
        ));
        self
    }

    /// Disable IPv6 on every host (default: enabled, with DAD off so link-local addresses
    /// are usable at once).
    pub fn ipv6(mut self, on: bool) -> LabBuilder {
        self.ipv6 = on;
        self
    }

    pub fn build(self) -> Result<Lab, NetnsError> {
        let bridge_ns = NetNs::new(&format!("{}-br", self.prefix))?;
        bridge_ns.add_bridge(Lab::BRIDGE)?;
        let mut lab = Lab {
            bridge: bridge_ns,
            hosts: Vec::new(),
        };
        for (i, (name, addrs)) in self.hosts.into_iter().enumerate() {
            let ns = NetNs::new(&format!("{}-{name}", self.prefix))?;
            if self.ipv6 {
                // Set before eth0 exists, so the new link inherits it via "default".
                ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
                ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            } else {
                ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
                ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            }
            let port = format!("p{i}");
            veth(&lab.bridge, &port, &ns, "eth0")?;
            lab.bridge.set_master(&port, Lab::BRIDGE)?;
            for a in &addrs {
                ns.add_addr("eth0", a)?;
            }
            lab.hosts.push(LabHost {
                name,
                ns,
                addrs,
                port,
            });
        }
        Ok(lab)
    }
}

/// A bridge namespace plus host namespaces each with one `eth0` on the bridge.
/// Dropping it deletes every namespace (hosts first), printing any cleanup error.
#[derive(Debug)]
pub struct Lab {
    pub bridge: NetNs,
    pub hosts: Vec<LabHost>,
}

impl Lab {
    /// Name of the bridge inside the bridge namespace.
    pub const BRIDGE: &'static str = "br0";

    pub fn builder(prefix: &str) -> LabBuilder {
        LabBuilder::new(prefix)
    }

    pub fn host(&self, name: &str) -> Result<&LabHost, NetnsError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| NetnsError::NoSuchHost(name.to_owned()))
    }

    /// The namespace of host `name`.
    pub fn ns(&self, name: &str) -> Result<&NetNs, NetnsError> {
        Ok(&self.host(name)?.ns)
    }

    /// Cut (or restore) a host's cable: its port on the bridge goes down, so the host sees
    /// carrier loss on `eth0` (what pulling a cable or a switch port failure looks like).
    pub fn set_cable(&self, name: &str, connected: bool) -> Result<(), NetnsError> {
        let port = self.host(name)?.port.clone();
        self.bridge.link_set(&port, connected)
    }

    /// Set a host's own `eth0` administratively up or down (`ip link set eth0 down` on
    /// the node). IPv6 addresses other than link-local are removed by the kernel on down.
    pub fn set_host_link(&self, name: &str, up: bool) -> Result<(), NetnsError> {
        self.host(name)?.ns.link_set("eth0", up)
    }

    /// Map host name -> namespace name (for messages and for `ip netns exec` by hand).
    pub fn namespace_names(&self) -> BTreeMap<String, String> {
        self.hosts
            .iter()
            .map(|h| (h.name.clone(), h.ns.name().to_owned()))
            .collect()
    }

    /// Delete everything now, collecting every error.
    pub fn close(self) -> Result<(), NetnsError> {
        let mut errors = Vec::new();
        for h in self.hosts {
            if let Err(e) = h.ns.close() {
                errors.push(e);
            }
        }
        if let Err(e) = self.bridge.close() {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NetnsError::Cleanup(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_carry_pid() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("t-{}-", std::process::id())));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(
            NetNs::with_name("a/b"),
            Err(NetnsError::BadName { .. })
        ));
        assert!(matches!(
            NetNs::with_name(""),
            Err(NetnsError::BadName { .. })
        ));
        assert!(matches!(
            NetNs::with_name(".."),
            Err(NetnsError::BadName { .. })
        ));
    }

    #[test]
    fn namespace_is_created_and_removed_on_drop() {
        if !require_root("netns::namespace_is_created_and_removed_on_drop") {
            return;
        }
        let ns = NetNs::new("k3sha-ut").unwrap();
        let name = ns.name().to_owned();
        assert!(exists(&name));
        assert!(list_namespaces().unwrap().contains(&name));
        // lo is up and answers.
        ns.exec("ping", &["-c", "1", "-W", "1", "127.0.0.1"])
            .unwrap();
        drop(ns);
        assert!(!exists(&name), "{name} still exists after drop");
    }

    #[test]
    fn leftover_namespace_with_same_name_is_replaced() {
        if !require_root("netns::leftover_namespace_with_same_name_is_replaced") {
            return;
        }
        let name = unique_name("k3sha-ut-left");
        // Simulate a crashed run: a namespace of that name with a marker link in it.
        let first = NetNs::with_name(&name).unwrap();
        first
            .ip(&[
                "link", "add", "marker0", "type", "veth", "peer", "name", "marker1",
            ])
            .unwrap();
        first.persist();
        assert!(exists(&name));
        let second = NetNs::with_name(&name).unwrap();
        let links = second.ip(&["link", "show"]).unwrap();
        assert!(
            !links.contains("marker0"),
            "old namespace survived: {links}"
        );
        second.close().unwrap();
        assert!(!exists(&name));
    }

    #[test]
    fn drop_kills_processes_inside_and_removes_namespace() {
        if !require_root("netns::drop_kills_processes_inside_and_removes_namespace") {
            return;
        }
        let ns = NetNs::new("k3sha-ut-proc").unwrap();
        let name = ns.name().to_owned();
        let mut cmd = ns.command("sleep");
        cmd.arg("30").stdout(Stdio::null());
        let mut child = ns.spawn(cmd).unwrap();
        assert!(child.try_wait().is_none());
        // A second process left running (not owned by a guard) must not block cleanup.
        let stray = ns.command("sleep").arg("30").spawn().unwrap();
        let stray_pid = stray.id();
        // Wait (bounded) until it has entered the namespace.
        let t0 = Instant::now();
        while !namespace_pids(&name)
            .unwrap()
            .contains(&i32::try_from(stray_pid).unwrap())
        {
            assert!(t0.elapsed() < Duration::from_secs(5), "stray never entered");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(child);
        ns.close().unwrap();
        assert!(!exists(&name));
        // The stray was SIGKILLed by delete_namespace.
        let mut stray = stray;
        let st = stray.wait().unwrap();
        assert!(!st.success(), "stray {stray_pid} exited normally?");
    }

    #[test]
    fn child_signal_and_wait() {
        if !require_root("netns::child_signal_and_wait") {
            return;
        }
        let ns = NetNs::new("k3sha-ut-sig").unwrap();
        let mut cmd = ns.command("sleep");
        cmd.arg("30");
        let mut child = ns.spawn(cmd).unwrap();
        assert!(child.wait_timeout(Duration::from_millis(100)).is_none());
        child.signal(Signal::SIGTERM).unwrap();
        let st = child.wait_timeout(Duration::from_secs(5)).unwrap();
        assert!(!st.success());
    }

    #[test]
    fn lab_hosts_reach_each_other_over_the_bridge() {
        if !require_root("netns::lab_hosts_reach_each_other_over_the_bridge") {
            return;
        }
        let lab = Lab::builder("k3sha-ut-lab")
            .host("a", &["10.231.0.1/24", "fd31:231::1/64"])
            .host("b", &["10.231.0.2/24", "fd31:231::2/64"])
            .build()
            .unwrap();
        let names = lab.namespace_names();
        let a = lab.ns("a").unwrap();
        assert_eq!(a.sysctl_get("net.ipv6.conf.eth0.accept_dad").unwrap(), "0");
        assert!(a.sysctl("net.ipv4.ip_forward", "1; rm -rf /").is_err());
        assert!(a.has_addr("eth0", "10.231.0.1".parse().unwrap()).unwrap());
        a.exec("ping", &["-c", "1", "-W", "2", "10.231.0.2"])
            .unwrap();
        a.exec("ping", &["-c", "1", "-W", "2", "fd31:231::2"])
            .unwrap();
        // The neighbour entry now holds b's MAC.
        let mac_b = lab.ns("b").unwrap().mac("eth0").unwrap();
        let (mac, _) = a.neighbour("10.231.0.2".parse().unwrap()).unwrap().unwrap();
        assert_eq!(mac, mac_b);
        // Cutting b's cable breaks reachability, restoring it heals it.
        lab.set_cable("b", false).unwrap();
        assert!(a
            .exec("ping", &["-c", "1", "-W", "1", "10.231.0.2"])
            .is_err());
        lab.set_cable("b", true).unwrap();
        let mut ok = false;
        for _ in 0..20 {
            if a.exec("ping", &["-c", "1", "-W", "1", "10.231.0.2"])
                .is_ok()
            {
                ok = true;
                break;
            }
        }
        assert!(ok, "no reachability after the cable came back");
        assert!(matches!(lab.host("zz"), Err(NetnsError::NoSuchHost(_))));
        lab.close().unwrap();
        for n in names.values() {
            assert!(!exists(n), "{n} left behind");
        }
    }
}
