//! A stand-in for a daemon's control socket: a test's own handler served on
//! `RUN_DIR/DAEMON.sock` through the real transport ([`common::ctl`]), so the program
//! under test (lbctl, lbd, vrrpd) talks to it exactly as to the daemon.
//!
//! The socket is served on a thread of its own with a single-threaded runtime (the caller
//! needs none). [`StandIn::serve`] returns once the socket is bound; dropping the
//! [`StandIn`] stops serving, removes the socket file and joins the thread (requests still
//! in a handler are cancelled with the runtime).

use std::future::Future;
use std::path::{Path, PathBuf};

use common::ctl::{self, Response};
use serde::de::DeserializeOwned;

/// A control socket served by a test's handler until dropped.
#[derive(Debug)]
pub struct StandIn {
    path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandIn {
    /// Serve `handler` on `RUN_DIR/DAEMON.sock` ([`ctl::socket_path`]). Panics when the
    /// socket cannot be bound: a stand-in that is not there would only show up later as a
    /// vague failure of the program under test.
    pub fn serve<R, F, Fut>(run_dir: &Path, daemon: &str, handler: F) -> StandIn
    where
        R: DeserializeOwned + Send + 'static,
        F: Fn(R) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Response> + Send,
    {
        let path = ctl::socket_path(run_dir, daemon);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let p = path.clone();
        let thread = std::thread::Builder::new()
            .name(format!("stand-in {daemon}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match ctl::bind(&p) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = bound_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = bound_tx.send(Ok(()));
                    // A dropped sender stops the server as a sent () does.
                    let stop = async {
                        let _ = stop_rx.await;
                    };
                    ctl::serve_on(listener, &p, handler, stop).await;
                });
            })
            .unwrap_or_else(|e| panic!("stand-in {}: no thread: {e}", path.display()));
        match bound_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("stand-in {}: {e}", path.display()),
            Err(_) => panic!("stand-in {}: the serving thread died", path.display()),
        }
        StandIn {
            path,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The socket served.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop serving now (what Drop does): the socket file is gone when this returns.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() && !std::thread::panicking() {
                eprintln!(
                    "stand-in {}: the serving thread panicked",
                    self.path.display()
                );
            }
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn serves_until_dropped_and_removes_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let s = StandIn::serve(dir.path(), "testd", |req: ctl::Request| async move {
            match req.cmd.as_str() {
                "echo" => Response::ok(req.args),
                _ => Response::err("unknown command"),
            }
        });
        let path = s.path().to_path_buf();
        assert_eq!(path, dir.path().join("testd.sock"));
        let send = |cmd: &str| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let req = serde_json::json!({"cmd": cmd, "args": {"a": 1}});
            rt.block_on(ctl::send_async(&path, &req, Duration::from_secs(2)))
        };
        assert_eq!(send("echo").unwrap(), serde_json::json!({"a": 1}));
        assert!(send("nope").is_err());
        // A second server on the same socket is refused, loudly.
        let again = std::panic::catch_unwind(|| {
            StandIn::serve(dir.path(), "testd", |_: ctl::Request| async {
                Response::err("second")
            })
        });
        assert!(again.is_err());
        s.stop();
        assert!(!path.exists());
        assert!(matches!(
            send("echo"),
            Err(ctl::CtlError::NotRunning { .. })
        ));
    }
}
