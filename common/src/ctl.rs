//! The control protocol between `lbctl` and the daemons: newline-delimited JSON over a Unix
//! stream socket (`RUN_DIR/vrrpd.sock`, `RUN_DIR/lbd.sock`).
//!
//! A request is one line `{"cmd": "status", "args": {...}}`; the answer is one line
//! `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`. A connection may carry
//! several requests. This module is the transport; [`crate::proto`] types every request
//! and answer. Sockets are mode 0660, group `k3s-ha` when that group exists, so only
//! root and that group may talk to a daemon.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request or answer line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// `RUN_DIR/DAEMON.sock`.
pub fn socket_path(run_dir: &Path, daemon: &str) -> PathBuf {
    run_dir.join(format!("{daemon}.sock"))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub cmd: String,
    #[serde(default)]
    pub args: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// The answer to a typed request (a [`crate::proto`] `Answer`), or its refusal.
    pub fn from_result<T: Serialize>(r: Result<T, String>) -> Self {
        match r.and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string())) {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(e),
        }
    }

    pub fn ok(result: Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(msg: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(msg.into()),
        }
    }
}

/// Why a call to a daemon failed, worded for an operator.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{daemon} is not running here: nothing answers on {path} ({source})")]
    NotRunning {
        daemon: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("permission denied on {path}: run as root or as a member of group k3s-ha")]
    PermissionDenied { path: PathBuf },
    #[error("{daemon} did not answer within {timeout:?} on {path}")]
    Timeout {
        daemon: String,
        path: PathBuf,
        timeout: Duration,
    },
    #[error("talking to {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} answered something that is not the control protocol: {detail}")]
    Protocol { path: PathBuf, detail: String },
    #[error("{daemon} refused {cmd:?}: {message}")]
    Refused {
        daemon: String,
        cmd: String,
        message: String,
    },
}

fn daemon_of(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "daemon".into(), |s| s.to_string_lossy().into_owned())
}

fn connect_error(path: &Path, e: io::Error) -> CtlError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => CtlError::PermissionDenied { path: path.into() },
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => CtlError::NotRunning {
            daemon: daemon_of(path),
            path: path.into(),
            source: e,
        },
        _ => CtlError::Io {
            path: path.into(),
            source: e,
        },
    }
}

/// Send one untyped request and wait for its answer (tests and tools that speak the JSON
/// directly; the programs use the typed calls in [`crate::proto`]).
pub async fn call_async(
    path: &Path,
    cmd: &str,
    args: Value,
    timeout: Duration,
) -> Result<Value, CtlError> {
    let req = serde_json::to_value(Request {
        cmd: cmd.into(),
        args,
    })
    .map_err(|e| CtlError::Protocol {
        path: path.into(),
        detail: e.to_string(),
    })?;
    send_async(path, &req, timeout).await
}

/// Send one request line (`{"cmd": ..., "args": ...}` as a value) and wait for the answer's
/// `result`; a refusal is [`CtlError::Refused`].
pub async fn send_async(path: &Path, req: &Value, timeout: Duration) -> Result<Value, CtlError> {
    let cmd = req
        .get("cmd")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let fut = async {
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|e| connect_error(path, e))?;
        let resp = exchange(&mut stream, req).await.map_err(|e| match e {
            ExchangeError::Io(source) => CtlError::Io {
                path: path.into(),
                source,
            },
            ExchangeError::Protocol(detail) => CtlError::Protocol {
                path: path.into(),
                detail,
            },
        })?;
        if resp.ok {
            Ok(resp.result.unwrap_or(Value::Null))
        } else {
            Err(CtlError::Refused {
                daemon: daemon_of(path),
                cmd: cmd.clone(),
                message: resp.error.unwrap_or_else(|| "no reason given".into()),
            })
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(CtlError::Timeout {
                daemon: daemon_of(path),
                path: path.into(),
                timeout,
            })
        })
}

/// Why one request/answer exchange on a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("{0}")]
    Protocol(String),
}

/// One request line out, one answer line back, on any stream (the Unix control sockets, and
/// lbd's TCP peer port).
pub async fn exchange<S>(stream: &mut S, req: &Value) -> Result<Response, ExchangeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut line = serde_json::to_vec(req).map_err(|e| ExchangeError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut answer = String::new();
    let n = BufReader::new(stream)
        .take(MAX_LINE as u64)
        .read_line(&mut answer)
        .await?;
    if n == 0 {
        return Err(ExchangeError::Protocol(
            "connection closed without an answer".into(),
        ));
    }
    serde_json::from_str(&answer).map_err(|e| ExchangeError::Protocol(e.to_string()))
}

/// Blocking form of [`call_async`] for the CLI (runs a small runtime of its own).
pub fn call(path: &Path, cmd: &str, args: Value, timeout: Duration) -> Result<Value, CtlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Io {
            path: path.into(),
            source: e,
        })?;
    rt.block_on(call_async(path, cmd, args, timeout))
}

/// Bind the control socket: replace a stale socket file, mode 0660, group `k3s-ha` if it
/// exists. Refuses to start when another live daemon answers on the path.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name(crate::CONTROL_GROUP) {
        // Best effort: without CAP_CHOWN the socket keeps the daemon's own group.
        let _ = nix::unistd::chown(path, None, Some(group.gid));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serve requests on `path` until `shutdown` completes; the socket file is removed then.
/// Each connection is handled on its own task; a bad line gets an error answer, not a hang.
pub async fn serve<R, F, Fut>(
    path: &Path,
    handler: F,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    R: DeserializeOwned + Send + 'static,
    F: Fn(R) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response> + Send,
{
    let listener = bind(path)?;
    serve_on(listener, path, handler, shutdown).await;
    Ok(())
}

/// [`serve`] on a socket [`bind`] already made, so that a daemon fails its start (not a
/// background task) when the socket cannot be had.
pub async fn serve_on<R, F, Fut>(
    listener: UnixListener,
    path: &Path,
    handler: F,
    shutdown: impl Future<Output = ()>,
) where
    R: DeserializeOwned + Send + 'static,
    F: Fn(R) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response> + Send,
{
    serve_listener(&listener, handler, shutdown).await;
    let _ = std::fs::remove_file(path);
}

/// Serve requests on `listener` until `shutdown` completes, and leave the socket file
/// alone: lbd handing its listening sockets to a new lbd process (an upgrade) stops
/// accepting here while the new process goes on serving the same socket at the same path.
/// A request being answered then (such as the one that caused the shutdown) gets up to
/// [`FINISH`] to reach its client; idle connections are closed.
pub async fn serve_listener<R, F, Fut>(
    listener: &UnixListener,
    handler: F,
    shutdown: impl Future<Output = ()>,
) where
    R: DeserializeOwned + Send + 'static,
    F: Fn(R) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response> + Send,
{
    let mut conns = tokio::task::JoinSet::new();
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                while conns.try_join_next().is_some() {}
                let handler = handler.clone();
                let busy = busy.clone();
                conns.spawn(async move {
                    if let Err(e) = serve_counted(stream, handler, &busy).await {
                        tracing::debug!(error = %e, "control connection ended with an error");
                    }
                });
            }
        }
    }
    let deadline = tokio::time::Instant::now() + FINISH;
    while busy.load(std::sync::atomic::Ordering::SeqCst) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    conns.abort_all();
}

/// How long a request being answered may take once its server stops accepting.
pub const FINISH: Duration = Duration::from_secs(2);

/// Serve the requests of one connection (a control socket's, or a peer's over TCP) until it
/// closes or stays silent for 30 s. A line that is no request gets an error answer.
pub async fn serve_stream<S, R, F, Fut>(stream: S, handler: F) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite,
    R: DeserializeOwned,
    F: Fn(R) -> Fut,
    Fut: Future<Output = Response>,
{
    serve_counted(stream, handler, &std::sync::atomic::AtomicUsize::new(0)).await
}

/// Counts a request in `busy` from its line read to its answer written.
struct Busy<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn serve_counted<S, R, F, Fut>(
    stream: S,
    handler: F,
    busy: &std::sync::atomic::AtomicUsize,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite,
    R: DeserializeOwned,
    F: Fn(R) -> Fut,
    Fut: Future<Output = Response>,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    loop {
        line.clear();
        let read = tokio::time::timeout(
            Duration::from_secs(30),
            (&mut rd).take(MAX_LINE as u64).read_line(&mut line),
        )
        .await;
        let n = match read {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _busy = Busy(busy);
        let resp = match serde_json::from_str::<R>(line.trim_end()) {
            Ok(req) => handler(req).await,
            Err(e) => Response::err(format!(
                "bad request: {e}; expected {{\"cmd\": \"...\", \"args\": {{...}}}}"
            )),
        };
        let mut out = serde_json::to_vec(&resp)
            .unwrap_or_else(|_| b"{\"ok\":false,\"error\":\"unserialisable answer\"}".to_vec());
        out.push(b'\n');
        wr.write_all(&out).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn round_trip_errors_and_missing_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "testd");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let p2 = path.clone();
        let server = tokio::spawn(async move {
            serve(
                &p2,
                |req: Request| async move {
                    match req.cmd.as_str() {
                        "echo" => Response::ok(req.args),
                        _ => Response::err(format!("unknown command {:?}", req.cmd)),
                    }
                },
                async {
                    let _ = rx.await;
                },
            )
            .await
        });
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let v = call_async(
            &path,
            "echo",
            serde_json::json!({"a": 1}),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!(v, serde_json::json!({"a": 1}));
        let e = call_async(&path, "nope", Value::Null, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "testd refused \"nope\": unknown command \"nope\""
        );
        // A second daemon on the same socket is refused.
        assert_eq!(bind(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(!path.exists());
        let e = call_async(&path, "echo", Value::Null, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(e, CtlError::NotRunning { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with("testd is not running here: nothing answers on"));
    }
}
