//! The `vrrp.notify` command: run once per transition, one at a time, in the order of the
//! transitions. Spawned side by side, two commands a few microseconds apart (backup, then
//! fault when a tracker fails at start) can finish in either order, and a script that
//! keeps the last state it was told would keep the wrong one. keepalived has the same race
//! with its notify scripts and offers `notify_fifo` for order; here the order is the
//! default.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

/// How long one command may run before it is killed (the next one waits for it).
const TIMEOUT: Duration = Duration::from_secs(30);
/// Transitions queued behind a running command. More than this while one hangs is a flap
/// storm: the newest transitions are dropped, each with a warning.
const QUEUE: usize = 64;

pub(super) struct Notifier {
    tx: mpsc::Sender<String>,
    task: JoinHandle<()>,
}

impl Notifier {
    pub(super) fn spawn() -> Notifier {
        Notifier::with_timeout(TIMEOUT)
    }

    fn with_timeout(timeout: Duration) -> Notifier {
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                run(&line, timeout).await;
            }
        });
        Notifier { tx, task }
    }

    /// Queue `command state` behind the commands already queued.
    pub(super) fn send(&self, command: &str, state: &str) {
        let line = format!("{command} {state}");
        if let Err(e) = self.tx.try_send(line) {
            let line = match e {
                mpsc::error::TrySendError::Full(l) | mpsc::error::TrySendError::Closed(l) => l,
            };
            warn!(command = %line, queued = QUEUE, "notify command not run: too many transitions wait behind a running one");
        }
    }

    /// Let the queued commands run (up to `within`), then stop.
    pub(super) async fn finish(self, within: Duration) {
        drop(self.tx);
        let mut task = self.task;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            warn!(within = ?within, "notify commands still running at exit: killed");
            task.abort();
            let _ = task.await;
        }
    }
}

async fn run(line: &str, timeout: Duration) {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(line)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut c = match child {
        Ok(c) => c,
        Err(e) => {
            warn!(command = %line, error = %e, "could not run the notify command");
            return;
        }
    };
    match tokio::time::timeout(timeout, c.wait()).await {
        Ok(Ok(st)) if st.success() => {}
        Ok(Ok(st)) => warn!(command = %line, status = %st, "notify command failed"),
        Ok(Err(e)) => warn!(command = %line, error = %e, "notify command: wait failed"),
        Err(_) => warn!(command = %line, timeout = ?timeout, "notify command timed out; killed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Each command sleeps a time that shrinks with its turn: run side by side, the later
    /// ones would write first. One at a time, the file is in the order of the calls.
    #[tokio::test]
    async fn commands_run_in_order_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let n = Notifier::spawn();
        let cmd = format!(
            "f() {{ sleep \"0.0$2\"; echo \"$1\" >> '{}'; }}; f",
            out.display()
        );
        for (i, state) in ["backup", "master", "fault", "backup", "master"]
            .iter()
            .enumerate()
        {
            n.send(&cmd, &format!("{state} {}", 5 - i));
        }
        n.finish(Duration::from_secs(10)).await;
        assert_eq!(
            read(&out),
            ["backup", "master", "fault", "backup", "master"]
        );
    }

    /// A command that hangs is killed after the timeout, and the next one still runs.
    #[tokio::test]
    async fn a_hanging_command_is_killed_and_the_queue_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let n = Notifier::with_timeout(Duration::from_millis(200));
        let cmd = format!(
            "f() {{ [ \"$1\" = hang ] && exec sleep 30; echo \"$1\" >> '{}'; }}; f",
            out.display()
        );
        let t0 = std::time::Instant::now();
        n.send(&cmd, "hang");
        n.send(&cmd, "master");
        n.finish(Duration::from_secs(10)).await;
        assert_eq!(read(&out), ["master"]);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
}
