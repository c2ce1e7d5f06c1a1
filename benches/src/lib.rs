//! Shared benchmark helpers (the benchmarks themselves are in `benches/`).
//!
//! Everything here runs on loopback only and is bounded in time: child processes are
//! killed (by their own pid) when their guard drops, every wait has a deadline.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// The workspace root (this crate lives in `<root>/benches`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map_or_else(|| here.to_path_buf(), Path::to_path_buf)
}

/// The release binary `name` of this workspace: `$ENV_VAR` when set (relative paths are
/// taken from the workspace root, where the command was most likely typed), else built
/// now with `cargo build --release -p NAME` (bounded to 20 minutes).
pub fn release_binary(name: &str, env_var: &str) -> Result<PathBuf> {
    if let Ok(bin) = std::env::var(env_var) {
        let mut bin = PathBuf::from(bin);
        if bin.is_relative() && !bin.exists() {
            bin = workspace_root().join(bin);
        }
        if !bin.exists() {
            bail!("{env_var}={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("building {name}: {cargo} build --release -p {name}");
    let mut child = Command::new(&cargo)
        .args(["build", "--release", "-p", name, "--bin", name])
        .current_dir(&root)
        .spawn()
        .context("starting cargo build")?;
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    let status = loop {
        if let Some(s) = child.try_wait().context("waiting for cargo")? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("cargo build --release -p {name} took over 20 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!("cargo build --release -p {name} failed ({status})");
    }
    let target =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    Ok(target.join("release").join(name))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr().context("local_addr")?.port())
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl ChildGuard {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("dup log file")?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(ChildGuard {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited, quoting the end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("try_wait")? {
            bail!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                tail(&self.log, 15)
            );
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a text file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `addr` accepts a TCP connection, or fails after `timeout`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{addr} not accepting connections after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Resident set size of `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&text).with_context(|| format!("no VmRSS line in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU time (user + system) `pid` has used so far, from /proc/PID/stat (USER_HZ = 100 on
/// Linux).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| Duration::from_millis(t * 10))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name (which may hold spaces) end at the last ')':
    // state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14)
    // stime(15).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Number of threads of `pid` (`Threads` of /proc/PID/status).
pub fn threads(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Raises this process's open-file limit (soft and hard) to at least `want`; children
/// inherit it. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    if soft >= want {
        return Ok(soft);
    }
    let new_hard = hard.max(want);
    if setrlimit(Resource::RLIMIT_NOFILE, want, new_hard).is_ok() {
        return Ok(want);
    }
    // Not allowed to raise the hard limit (not root): take what the hard limit allows.
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit RLIMIT_NOFILE")?;
    Ok(hard)
}

/// The `p`-th percentile (0..=100) of sorted samples, nearest-rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "rank of a sample; bounded by len"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Writes `text` to `path` (used for generated configs).
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_micros(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_micros(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_micros(100));
        assert_eq!(percentile(&v, 0.0), Duration::from_micros(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn cpu_ticks_skip_the_command_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 2";
        assert_eq!(parse_cpu_ticks(stat), Some(287));
        assert!(cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\thaproxy\nVmPeak:\t  1000 kB\nVmRSS:\t    8816 kB\nThreads:\t2\n";
        assert_eq!(parse_vm_rss(status), Some(8816));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        // And on ourselves, for real.
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}

/// tcpdump of VRRP adverts in a namespace.
pub mod capture;
/// Helpers for the failover-through-the-proxy benchmark.
pub mod failover;
/// Helpers for the vrrpd vs keepalived benchmark.
pub mod vrrp;
/// wrk runs and reports (proxy_workloads).
pub mod wrk;
