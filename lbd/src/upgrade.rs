//! Upgrades and restarts that refuse no connection and drop none, and leave the VIP where
//! it is: the running lbd starts the binary it was started from (after a package upgrade,
//! the new one) as its child and hands it every listening socket by SCM_RIGHTS. The two
//! processes then hold the same sockets (one accept queue each, shared), so at no moment
//! does nothing listen: a client connecting in between waits in the kernel's queue.
//!
//! ```text
//!  old lbd (systemd's main PID)                         new lbd (its child)
//!  SIGUSR2 | ctl `upgrade` (lbctl upgrade lbd)
//!  spawn BINARY ARGS (the ones it started with): stdin = one end of a socketpair,
//!        LBD_UPGRADE_FROM=<old pid>, WATCHDOG_PID removed
//!  Offer: every listener (services, stats, ────────►  read cluster.toml, identify the node
//!         peer port, control socket) by              (an error: Failed, and exit 1);
//!         SCM_RIGHTS, what each one is, the          take the listeners, bind only what
//!         servers' health, the admin states          is new, servers start with the
//!                                                    health handed over, checks run,
//!                                                    accepting paused
//!                                        ◄────────  Ready {pid, version} | Failed {error}
//!  sd_notify MAINPID=<new>, BARRIER=1
//!  Commit {admin states}                 ────────►  accept on every listener; READY=1,
//!  stop accepting (close this process's              STATUS=, the watchdog: the daemon
//!  copies; the sockets stay open there)              from now on
//!  Final {admin states}                  ────────►  merged; the channel ends
//!  answer the trigger, drain <= lbd.drain_timeout, exit 0
//!
//!  the child exits, says Failed, or is not Ready in time: SIGKILL it, reap it, say why (in
//!  the journal and to whoever asked); this process never stopped accepting and goes on.
//! ```
//!
//! Why a child and not `systemctl restart`: systemd starts the new process only once the
//! old one has exited, so during the old one's drain nobody would accept (and its open
//! connections would have to end first). The new process is in the unit's cgroup, so
//! systemd takes it as the main process when the old one says `MAINPID=` (which
//! `NotifyAccess=main` allows: the old one is main when it says it).
//!
//! The binary is the path this process was started from (`argv[0]`, made absolute at
//! start), never `/proc/self/exe`: after dpkg replaced `/usr/sbin/lbd`, that names the
//! deleted old file, while the path names the new one. Nobody can ask for another path: a
//! member of the control group must not make the daemon's user run a file of their
//! choosing.

use std::ffi::{OsStr, OsString};
use std::io::{self, IoSlice, IoSliceMut, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::proto::lbd::AdminEntry;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::engine::HealthView;

/// Set in the new process's environment: it takes over from the process of this PID, and
/// its standard input is the channel.
pub const ENV_FROM: &str = "LBD_UPGRADE_FROM";
/// How long the new process may take to be ready, unless the request says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the new process waits for the old one's Commit once it is ready.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The handover's own version: a new lbd refuses an offer it does not know (the old one
/// then goes on serving and says why).
const PROTOCOL: u32 = 1;
const MAX_MESSAGE: usize = 64 << 20;
/// SCM_MAX_FD: the kernel passes at most this many descriptors in one message.
pub const MAX_FDS: usize = 253;

/// What this process was started as: what an upgrade runs.
#[derive(Debug, Clone)]
pub struct Exec {
    pub binary: PathBuf,
    pub args: Vec<OsString>,
}

impl Exec {
    /// `argv[0]` made absolute now (against the working directory, or found on `PATH`),
    /// and the arguments after it.
    pub fn of_this_process() -> Exec {
        let mut argv = std::env::args_os();
        let argv0 = argv.next().unwrap_or_default();
        Exec {
            binary: resolve(&argv0),
            args: argv.collect(),
        }
    }
}

fn resolve(argv0: &OsStr) -> PathBuf {
    let fallback = || std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/sbin/lbd"));
    let p = Path::new(argv0);
    if argv0.is_empty() {
        return fallback();
    }
    if argv0.as_bytes().contains(&b'/') {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        return std::env::current_dir().map_or_else(|_| fallback(), |d| d.join(p));
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(p))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(fallback)
}

/// What each descriptor of the offer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A service's listener (its address says which).
    Service,
    /// The stats page (`[stats] listen`).
    Stats,
    /// The peer port (`lbd.peer_port` on this node's address).
    Peer,
    /// The control socket (`RUN_DIR/lbd.sock`).
    Control,
}

#[derive(Debug, Serialize, Deserialize)]
struct Offer {
    protocol: u32,
    pid: u32,
    version: String,
    /// One per descriptor passed with this message, in order.
    sockets: Vec<Kind>,
    #[serde(default)]
    health: Vec<HealthView>,
    #[serde(default)]
    admin: Vec<AdminEntry>,
}

/// Every message after the offer, both ways.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "lowercase")]
enum Step {
    Ready { pid: u32, version: String },
    Failed { error: String },
    Commit { admin: Vec<AdminEntry> },
    Final { admin: Vec<AdminEntry> },
}

// ---------------------------------------------------------------------------------------
// The channel: a 4-byte length, then JSON; the offer's descriptors ride on its first bytes.

fn send(s: &UnixStream, msg: &impl Serialize, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
        return Err(io::Error::other(format!(
            "handover message too large ({} bytes, {} descriptors)",
            body.len(),
            fds.len()
        )));
    }
    let head = u32::try_from(body.len())
        .map_err(io::Error::other)?
        .to_be_bytes();
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let n = sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(&head)],
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    let mut w = s;
    w.write_all(&head[n..])?;
    w.write_all(&body)?;
    w.flush()
}

fn recv<T: DeserializeOwned>(s: &UnixStream) -> io::Result<(T, Vec<OwnedFd>)> {
    let mut head = [0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds, truncated) = {
        let mut iov = [IoSliceMut::new(&mut head)];
        let msg = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| match e {
            nix::errno::Errno::EAGAIN => {
                io::Error::new(io::ErrorKind::TimedOut, "no message in time")
            }
            e => io::Error::from(e),
        })?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                fds.extend(received.into_iter().map(owned));
            }
        }
        (msg.bytes, fds, msg.flags.contains(MsgFlags::MSG_CTRUNC))
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other process closed the channel",
        ));
    }
    if truncated {
        return Err(io::Error::other("descriptors lost (MSG_CTRUNC)"));
    }
    let mut r = s;
    r.read_exact(&mut head[n..])?;
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::other(format!("message of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let msg = serde_json::from_slice(&body).map_err(io::Error::other)?;
    Ok((msg, fds))
}

#[allow(
    unsafe_code,
    reason = "recvmsg(2) hands received descriptors over as numbers; nix has no owned form"
)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: SCM_RIGHTS has just installed this descriptor in this process; it is open
    // and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

// ---------------------------------------------------------------------------------------
// The old process's side.

/// What the old process does at the steps of a handover (the daemon implements it).
pub trait Old: Send + Sync + 'static {
    /// The admin states to hand over now.
    fn admin(&self) -> Vec<AdminEntry>;
    /// From now on sd_notify is the new process's: send nothing more (`quiet(true)`),
    /// or carry on after all (`quiet(false)`).
    fn quiet(&self, quiet: bool);
    /// The new process accepts now: stop accepting everywhere, close this process's
    /// copies of the listeners, stop sharing admin states with the peers.
    fn let_go(&self);
}

/// What the old process hands over.
#[derive(Debug)]
pub struct Outgoing {
    pub exec: Exec,
    pub timeout: Duration,
    /// Copies of every listening socket, with what each one is.
    pub sockets: Vec<(Kind, OwnedFd)>,
    pub health: Vec<HealthView>,
}

/// A handover that went through.
#[derive(Debug, Clone)]
pub struct Done {
    pub new_pid: u32,
    pub new_version: String,
    pub binary: PathBuf,
    pub took: Duration,
}

/// The child until it has taken over: killed and reaped if the handover fails.
struct Kid {
    child: Option<Child>,
    pid: u32,
    binary: PathBuf,
}

impl Kid {
    /// How it ended, once it has (waiting up to a second for it).
    fn ended(&mut self) -> String {
        let Some(c) = self.child.as_mut() else {
            return "gone".into();
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match c.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    return st.to_string();
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return "still running (killed now)".into(),
            }
        }
    }

    /// It is the daemon now: watch it from a thread so that it is reaped (and its end
    /// said) if it exits while this process still drains.
    fn release(mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = self.pid;
            let _ = std::thread::Builder::new()
                .name("upgraded".into())
                .spawn(move || {
                    if let Ok(st) = c.wait() {
                        warn!(pid, status = %st, "the new lbd exited while this one was still draining");
                    }
                });
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            warn!(pid = self.pid, binary = %self.binary.display(), "the new lbd was stopped (SIGKILL); this one goes on serving");
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// Hand every listener to a new process running `out.exec`; `Ok` once it accepts and this
/// process has stopped accepting. On `Err` (said for an operator) the new process is gone
/// and this one still accepts on every listener, as before.
pub async fn hand_over(out: Outgoing, old: std::sync::Arc<dyn Old>) -> Result<Done, String> {
    let t0 = Instant::now();
    let deadline = t0 + out.timeout;
    let binary = out.exec.binary.clone();
    let shown = binary.display().to_string();
    let n_sockets = out.sockets.len();
    if n_sockets > MAX_FDS {
        return Err(format!(
            "{n_sockets} listening sockets: one handover passes at most {MAX_FDS}"
        ));
    }
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| format!("cannot make the handover channel: {e}"))?;
    let mut cmd = Command::new(&binary);
    cmd.args(&out.exec.args)
        .env(ENV_FROM, std::process::id().to_string())
        // The new process is the watchdog's once systemd takes it as main (sd_watchdog_enabled
        // accepts a missing WATCHDOG_PID; this one's PID would be wrong there).
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::from(OwnedFd::from(theirs)));
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the new lbd {shown}: {e}"))?;
    // Our copy of the child's end: closed, so that its exit shows here as end-of-file.
    drop(cmd);
    let pid = child.id();
    let mut kid = Kid {
        child: Some(child),
        pid,
        binary: binary.clone(),
    };
    info!(pid, binary = %shown, sockets = n_sockets, "upgrade: new lbd started; handing the listening sockets over");

    let offer = Offer {
        protocol: PROTOCOL,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        sockets: out.sockets.iter().map(|(k, _)| *k).collect(),
        health: out.health,
        admin: old.admin(),
    };
    let fds = out.sockets;
    let step = blocking(move || {
        ours.set_write_timeout(Some(left(deadline)))?;
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|(_, f)| f.as_fd()).collect();
        let sent = send(&ours, &offer, &borrowed);
        drop(borrowed);
        // The copies are the child's now (or the child is gone): ours are closed.
        drop(fds);
        sent?;
        ours.set_read_timeout(Some(left(deadline)))?;
        let (step, _) = recv::<Step>(&ours)?;
        Ok((ours, step))
    })
    .await;
    let (ours, version) = match step {
        Ok((ours, Step::Ready { pid: p, version })) if p == pid => (ours, version),
        Ok((_, Step::Ready { pid: p, .. })) => {
            return Err(format!(
                "the new lbd {shown} (PID {pid}) says it is PID {p}: not taken"
            ))
        }
        Ok((_, Step::Failed { error })) => {
            let how = kid.ended();
            return Err(format!(
                "the new lbd {shown} (PID {pid}) did not take over: {error} (then it exited: {how})"
            ));
        }
        Ok((_, other)) => {
            return Err(format!(
                "the new lbd {shown} (PID {pid}) answered {other:?}, not Ready"
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
            return Err(format!(
                "the new lbd {shown} (PID {pid}) was not ready within {:?}",
                out.timeout
            ))
        }
        Err(e) => {
            let how = kid.ended();
            return Err(format!(
                "the new lbd {shown} (PID {pid}) ended before taking over: {how} (the channel: {e}; its own log lines say why)"
            ));
        }
    };

    // systemd: the new process is the main one from now on. Said before anything else,
    // and confirmed: if systemd did not hear it, this process's exit would end the unit.
    old.quiet(true);
    let main_pid = [common::notify::NotifyState::MainPid(pid)];
    match blocking(move || common::notify::notify_reliably(&main_pid, Duration::from_secs(2))).await
    {
        Ok(true) => match blocking(|| common::notify::barrier(Duration::from_secs(2))).await {
            Ok(_) => info!(pid, "systemd told: MAINPID={pid}"),
            // Sent, but not confirmed: it is in systemd's queue (a systemd before 246 has
            // no barrier); the handover goes on.
            Err(e) => warn!(pid, error = %e, "MAINPID sent to systemd, not confirmed"),
        },
        Ok(false) => {}
        Err(e) => {
            old.quiet(false);
            return Err(format!("cannot tell systemd MAINPID={pid}: {e}"));
        }
    }

    let admin = old.admin();
    let ours = match blocking(move || {
        ours.set_write_timeout(Some(Duration::from_secs(2)))?;
        send(&ours, &Step::Commit { admin }, &[])?;
        Ok(ours)
    })
    .await
    {
        Ok(o) => o,
        Err(e) => {
            let how = kid.ended();
            // systemd already has it as the main PID: if it is gone, systemd sees the
            // main process gone.
            return Err(format!(
                "the new lbd {shown} (PID {pid}) went away once ready: {how} ({e}); systemd was told MAINPID={pid}"
            ));
        }
    };
    kid.release();
    old.let_go();
    let admin = old.admin();
    if let Err(e) = blocking(move || send(&ours, &Step::Final { admin }, &[])).await {
        warn!(pid, error = %e, "upgrade: the last admin states did not reach the new lbd (it has those of the commit)");
    }
    Ok(Done {
        new_pid: pid,
        new_version: version,
        binary,
        took: t0.elapsed(),
    })
}

// ---------------------------------------------------------------------------------------
// The new process's side.

/// The sockets the old process handed over.
#[derive(Debug, Default)]
pub struct Inherited {
    pub services: Vec<std::net::TcpListener>,
    pub stats: Option<std::net::TcpListener>,
    pub peer: Option<std::net::TcpListener>,
    pub control: Option<UnixListener>,
}

/// A new process taking over ([`ENV_FROM`] is set).
#[derive(Debug)]
pub struct Takeover {
    chan: UnixStream,
    pub from_pid: u32,
    pub from_version: String,
    pub health: Vec<HealthView>,
    pub admin: Vec<AdminEntry>,
}

impl Takeover {
    /// `None` at a normal start; else the offer read from standard input, and the sockets.
    pub fn from_env() -> Option<Result<(Takeover, Inherited), String>> {
        std::env::var_os(ENV_FROM)?;
        Some(Takeover::receive())
    }

    fn receive() -> Result<(Takeover, Inherited), String> {
        let why = |e: &dyn std::fmt::Display| {
            format!("{ENV_FROM} is set, but no handover came on standard input: {e}")
        };
        let chan = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| why(&e))?;
        // Standard input is /dev/null again (as under systemd); the channel has its own
        // descriptor (close-on-exec).
        let null = std::fs::File::open("/dev/null").map_err(|e| why(&e))?;
        nix::unistd::dup2_stdin(&null).map_err(|e| why(&e))?;
        let chan = UnixStream::from(chan);
        chan.set_read_timeout(Some(COMMIT_TIMEOUT))
            .map_err(|e| why(&e))?;
        let (offer, fds) = recv::<Offer>(&chan).map_err(|e| why(&e))?;
        let t = Takeover {
            chan,
            from_pid: offer.pid,
            from_version: offer.version,
            health: offer.health,
            admin: offer.admin,
        };
        if offer.protocol != PROTOCOL {
            let e = format!(
                "lbd {} offers handover protocol {}; this lbd {} speaks {PROTOCOL}",
                t.from_version,
                offer.protocol,
                env!("CARGO_PKG_VERSION")
            );
            t.fail(&e);
            return Err(e);
        }
        if fds.len() != offer.sockets.len() {
            let e = format!(
                "the offer names {} sockets but carries {} descriptors",
                offer.sockets.len(),
                fds.len()
            );
            t.fail(&e);
            return Err(e);
        }
        let mut inh = Inherited::default();
        for (kind, fd) in offer.sockets.into_iter().zip(fds) {
            match kind {
                Kind::Service => inh.services.push(fd.into()),
                Kind::Stats => inh.stats = Some(fd.into()),
                Kind::Peer => inh.peer = Some(fd.into()),
                Kind::Control => inh.control = Some(fd.into()),
            }
        }
        info!(
            from_pid = t.from_pid,
            from_version = %t.from_version,
            services = inh.services.len(),
            stats = inh.stats.is_some(),
            peer = inh.peer.is_some(),
            control = inh.control.is_some(),
            servers_with_health = t.health.len(),
            "taking over from the running lbd"
        );
        Ok((t, inh))
    }

    /// Tell the old process why this one cannot take over (it goes on serving).
    pub fn fail(&self, error: &str) {
        if let Err(e) = send(
            &self.chan,
            &Step::Failed {
                error: error.to_owned(),
            },
            &[],
        ) {
            warn!(error = %e, "could not tell the old lbd why this one failed");
        }
    }

    /// Everything is bound or taken: say so, and wait for the old process to let go.
    /// Returns the admin states it had then, and the channel's last message to come
    /// (read on a thread of its own).
    pub async fn ready(self) -> Result<(Vec<AdminEntry>, FinalAdmin), String> {
        let from = self.from_pid;
        let chan = self.chan;
        let r = blocking(move || {
            send(
                &chan,
                &Step::Ready {
                    pid: std::process::id(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                },
                &[],
            )?;
            chan.set_read_timeout(Some(COMMIT_TIMEOUT))?;
            let (step, _) = recv::<Step>(&chan)?;
            Ok((chan, step))
        })
        .await;
        match r {
            Ok((chan, Step::Commit { admin })) => {
                let last = tokio::task::spawn_blocking(move || match recv::<Step>(&chan) {
                    Ok((Step::Final { admin }, _)) => admin,
                    _ => Vec::new(),
                });
                Ok((admin, FinalAdmin(last)))
            }
            Ok((_, other)) => Err(format!(
                "the old lbd (PID {from}) sent {other:?} instead of letting go"
            )),
            Err(e) => Err(format!(
                "the old lbd (PID {from}) did not let go ({e}): it goes on serving; this one stops"
            )),
        }
    }
}

/// The admin states the old process sends after it stopped accepting.
#[derive(Debug)]
pub struct FinalAdmin(tokio::task::JoinHandle<Vec<AdminEntry>>);

impl FinalAdmin {
    pub async fn get(self) -> Vec<AdminEntry> {
        self.0.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_and_messages_cross_the_channel() {
        let (a, b) = UnixStream::pair().unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let offer = Offer {
            protocol: PROTOCOL,
            pid: 7,
            version: "x".into(),
            sockets: vec![Kind::Service, Kind::Stats],
            health: vec![],
            admin: vec![],
        };
        send(&a, &offer, &[l1.as_fd(), l2.as_fd()]).unwrap();
        let (got, fds) = recv::<Offer>(&b).unwrap();
        assert_eq!(got.sockets, vec![Kind::Service, Kind::Stats]);
        let got: Vec<std::net::TcpListener> = fds.into_iter().map(Into::into).collect();
        assert_eq!(got[0].local_addr().unwrap(), l1.local_addr().unwrap());
        assert_eq!(got[1].local_addr().unwrap(), l2.local_addr().unwrap());
        // The same socket: a connection to it is accepted from the copy.
        drop(l1);
        let c = std::net::TcpStream::connect(got[0].local_addr().unwrap()).unwrap();
        let (s, _) = got[0].accept().unwrap();
        assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
        // Received close-on-exec.
        let flags = nix::fcntl::fcntl(&got[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);

        let big = Step::Failed {
            error: "e".repeat(300_000),
        };
        let t = std::thread::spawn(move || send(&a, &big, &[]).unwrap());
        let (got, fds) = recv::<Step>(&b).unwrap();
        t.join().unwrap();
        assert!(fds.is_empty());
        assert!(matches!(got, Step::Failed { error } if error.len() == 300_000));
    }

    #[test]
    fn argv0_is_made_absolute() {
        assert_eq!(
            resolve(OsStr::new("/usr/sbin/lbd")),
            PathBuf::from("/usr/sbin/lbd")
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(resolve(OsStr::new("bin/lbd")), cwd.join("bin/lbd"));
        // On PATH: the first directory that has it.
        let sh = resolve(OsStr::new("sh"));
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
    }
}
