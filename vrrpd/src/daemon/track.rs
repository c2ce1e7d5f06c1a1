//! Trackers: things whose failure lowers this node's priority or makes it a fault, like
//! keepalived's `track_script` / `track_interface`.
//!
//! Each tracker is a task that sends a [`TrackUpdate`] when its verdict changes; the daemon
//! folds them in [`Tracking`] and applies the result to the core
//! (`set_priority_offset`, `set_fault`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::config::{TrackEffect, TrackScript};
use common::proto::lbd::{ServerStatus, Snapshot};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A tracker's verdict changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackUpdate {
    pub name: String,
    pub effect: TrackEffect,
    pub ok: bool,
    /// Why (for the log and the status API).
    pub detail: String,
}

/// Everything tracked, folded into one fault flag and one priority offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracking {
    trackers: BTreeMap<String, TrackUpdate>,
    link_down: bool,
}

impl Tracking {
    pub fn update(&mut self, u: TrackUpdate) {
        self.trackers.insert(u.name.clone(), u);
    }

    /// Forget a tracker (its config was removed by a reload).
    pub fn remove_all_but(&mut self, keep: &[String]) {
        self.trackers.retain(|k, _| keep.contains(k));
    }

    pub fn set_link_down(&mut self, down: bool) {
        self.link_down = down;
    }

    pub fn link_down(&self) -> bool {
        self.link_down
    }

    /// Link down, or a failing tracker whose effect is `fault`.
    pub fn fault(&self) -> bool {
        self.link_down
            || self
                .trackers
                .values()
                .any(|t| !t.ok && t.effect == TrackEffect::Fault)
    }

    /// The sum of the weights of failing trackers (cluster.toml: a weight is added to the
    /// priority while its tracker fails; usually negative).
    pub fn offset(&self) -> i32 {
        self.trackers
            .values()
            .map(|t| match t.effect {
                TrackEffect::Weight(w) if !t.ok => i32::from(w),
                _ => 0,
            })
            .sum()
    }

    /// What the status answer shows.
    pub fn status(&self) -> common::proto::vrrpd::Tracking {
        common::proto::vrrpd::Tracking {
            link_down: self.link_down,
            fault: self.fault(),
            priority_offset: self.offset(),
            trackers: self
                .trackers
                .values()
                .map(|t| common::proto::vrrpd::Tracker {
                    name: t.name.clone(),
                    ok: t.ok,
                    effect: t.effect,
                    detail: t.detail.clone(),
                })
                .collect(),
        }
    }
}

/// Judge lbd's `status` answer: does the tracked frontend have at least one server UP?
pub fn judge_lbd(snap: &Snapshot, service: &str) -> Result<(), String> {
    let fe = snap
        .frontends
        .iter()
        .find(|f| f.name == service)
        .ok_or_else(|| format!("lbd has no frontend {service:?}"))?;
    if fe.servers.iter().any(|s| s.status == ServerStatus::Up) {
        Ok(())
    } else {
        Err(format!("no server of {service} is UP"))
    }
}

/// Name under which the lbd tracker reports.
pub const LBD_TRACKER: &str = "lbd";

/// Poll lbd's control socket every `interval`; report when the verdict changes.
pub fn spawn_lbd(
    run_dir: PathBuf,
    service: String,
    interval: Duration,
    effect: TrackEffect,
    tx: mpsc::Sender<TrackUpdate>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let path = common::ctl::socket_path(&run_dir, "lbd");
        let timeout = interval.clamp(Duration::from_millis(200), Duration::from_secs(2));
        let mut last: Option<bool> = None;
        loop {
            let verdict = match common::proto::lbd::status(&path, timeout).await {
                Ok(snap) => judge_lbd(&snap, &service),
                Err(e) => Err(e.to_string()),
            };
            let ok = verdict.is_ok();
            if last != Some(ok) {
                last = Some(ok);
                let detail = verdict
                    .err()
                    .unwrap_or_else(|| format!("{service} has a server UP"));
                let u = TrackUpdate {
                    name: LBD_TRACKER.into(),
                    effect,
                    ok,
                    detail,
                };
                if tx.send(u).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// Run a script every `interval` (with its timeout); after `rise` successes in a row it is
/// OK, after `fall` failures in a row it is failing. The first result counts at once.
pub fn spawn_script(script: TrackScript, tx: mpsc::Sender<TrackUpdate>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut state: Option<bool> = None;
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        loop {
            let result = run_script(&script.command, script.timeout).await;
            let ok = result.is_ok();
            if ok {
                ok_run += 1;
                fail_run = 0;
            } else {
                fail_run += 1;
                ok_run = 0;
            }
            let new_state = match state {
                None => Some(ok),
                Some(false) if ok_run >= script.rise.max(1) => Some(true),
                Some(true) if fail_run >= script.fall.max(1) => Some(false),
                s => s,
            };
            if new_state != state {
                state = new_state;
                let u = TrackUpdate {
                    name: format!("script:{}", script.name),
                    effect: script.effect,
                    ok: new_state.unwrap_or(ok),
                    detail: result.err().unwrap_or_else(|| "exit 0".into()),
                };
                if tx.send(u).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(script.interval).await;
        }
    })
}

async fn run_script(command: &str, timeout: Duration) -> Result<(), String> {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = child.map_err(|e| format!("cannot run: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(format!("{st}")),
        Ok(Err(e)) => Err(format!("wait: {e}")),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(name: &str, effect: TrackEffect, ok: bool) -> TrackUpdate {
        TrackUpdate {
            name: name.into(),
            effect,
            ok,
            detail: String::new(),
        }
    }

    #[test]
    fn weights_of_failing_trackers_add_up_and_faults_win() {
        let mut t = Tracking::default();
        assert_eq!((t.fault(), t.offset()), (false, 0));
        t.update(upd("a", TrackEffect::Weight(-50), false));
        t.update(upd("b", TrackEffect::Weight(10), false));
        t.update(upd("c", TrackEffect::Weight(-5), true));
        t.update(upd("d", TrackEffect::Off, false));
        assert_eq!((t.fault(), t.offset()), (false, -40));
        t.update(upd("e", TrackEffect::Fault, false));
        assert!(t.fault());
        t.update(upd("e", TrackEffect::Fault, true));
        assert!(!t.fault());
        t.set_link_down(true);
        assert!(t.fault());
        t.remove_all_but(&["b".into()]);
        assert_eq!(t.offset(), 10);
    }

    #[test]
    fn lbd_answer_is_judged_by_the_tracked_frontend() {
        use common::proto::lbd::{FrontendStats, ServerStats};
        let sv = |st| ServerStats::new("s", "10.0.0.1:1".parse().unwrap(), st);
        let any = "0.0.0.0:1".parse().unwrap();
        let v = Snapshot::new(
            "n",
            "c",
            vec![
                FrontendStats::new(
                    "kube-apiserver",
                    any,
                    vec![sv(ServerStatus::Down), sv(ServerStatus::Up)],
                ),
                FrontendStats::new("ingress-http", any, vec![sv(ServerStatus::Drain)]),
            ],
        );
        assert!(judge_lbd(&v, "kube-apiserver").is_ok());
        assert!(judge_lbd(&v, "ingress-http").is_err());
        assert!(judge_lbd(&v, "nope").is_err());
        assert!(judge_lbd(&Snapshot::new("n", "c", vec![]), "kube-apiserver").is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn script_tracker_reports_rise_and_fall() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ok");
        std::fs::write(&flag, "").unwrap();
        let script = TrackScript {
            name: "t".into(),
            command: format!("test -e {}", flag.display()),
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            effect: TrackEffect::Weight(-20),
        };
        let (tx, mut rx) = mpsc::channel(8);
        let h = spawn_script(script, tx);
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(first.ok);
        std::fs::remove_file(&flag).unwrap();
        let t0 = std::time::Instant::now();
        let down = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(!down.ok);
        // fall = 3 at 20 ms: at least ~40 ms after the first failure.
        assert!(t0.elapsed() >= Duration::from_millis(40));
        h.abort();
    }
}
