//! State dumps on the signals keepalived's and HAProxy's users send out of habit.
//!
//! keepalived writes its data and stats on SIGUSR1 / SIGUSR2 (and JSON on SIGRTMIN+2);
//! HAProxy stops softly on SIGUSR1, reloads on SIGUSR2 and dumps on SIGQUIT. The default
//! action of all of these is to end the process, silently for the user signals. Our
//! daemons catch them instead: the status (with its counters) goes to the journal as one
//! line and, whole, to `RUN_DIR/DAEMON.status.json`, replaced atomically.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where a daemon's dump goes.
pub fn dump_path(run_dir: &Path, daemon: &str) -> PathBuf {
    run_dir.join(format!("{daemon}.status.json"))
}

/// Write `status` (pretty JSON) to [`dump_path`], through a temporary file and a rename,
/// mode 0640 (the control group may read it, like the sockets).
pub fn write_status(
    run_dir: &Path,
    daemon: &str,
    status: &serde_json::Value,
) -> std::io::Result<PathBuf> {
    let path = dump_path(run_dir, daemon);
    let tmp = run_dir.join(format!(".{daemon}.status.json.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?;
    let mut text = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    text.push(b'\n');
    f.write_all(&text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The name of a signal number, for the log line.
pub fn signal_name(signo: i32) -> String {
    match nix::sys::signal::Signal::try_from(signo) {
        Ok(s) => s.as_str().to_owned(),
        Err(_) => {
            let rtmin = nix::libc::SIGRTMIN();
            if signo >= rtmin {
                format!("SIGRTMIN+{}", signo - rtmin)
            } else {
                format!("signal {signo}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_names_signals() {
        let dir = tempfile::tempdir().unwrap();
        let v = serde_json::json!({"state": "master", "counters": {"rx": 1}});
        let p = write_status(dir.path(), "vrrpd", &v).unwrap();
        assert_eq!(p, dir.path().join("vrrpd.status.json"));
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back, v);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(signal_name(nix::libc::SIGUSR1), "SIGUSR1");
        assert_eq!(signal_name(nix::libc::SIGRTMIN() + 2), "SIGRTMIN+2");
    }
}

/// Several signals as one stream: [`DumpSignals::recv`] returns the number of whichever
/// arrived. Created inside a tokio runtime.
#[derive(Debug)]
pub struct DumpSignals {
    signals: Vec<(i32, tokio::signal::unix::Signal)>,
}

impl DumpSignals {
    /// Catch every signal in `signos` (replacing its default action, which would end the
    /// process).
    pub fn new(signos: &[i32]) -> std::io::Result<DumpSignals> {
        let signals = signos
            .iter()
            .map(|&n| {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(n))
                    .map(|s| (n, s))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(DumpSignals { signals })
    }

    /// The next signal caught.
    pub async fn recv(&mut self) -> i32 {
        std::future::poll_fn(|cx| {
            for (n, s) in &mut self.signals {
                if let std::task::Poll::Ready(Some(())) = s.poll_recv(cx) {
                    return std::task::Poll::Ready(*n);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}
