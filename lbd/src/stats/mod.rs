//! The stats page on :8404: HTML for operators, `/stats.json`, HAProxy-compatible
//! `/stats.csv`, Prometheus `/metrics` and `/healthz`.
//!
//! ```text
//!   listener ──accept──► [table: MAX_CONNECTIONS; full: evict the longest idle] ──spawn──► hyper http1 conn
//!                                                                  │ GET/HEAD only
//!   shutdown ──► stop accepting ──watch──► graceful close ◄────────┘ (DRAIN_DEADLINE)
//!   every request: source.snapshot() ──► render_{html,csv,prometheus} / serde_json
//! ```
//!
//! The page is read-only: it never changes lbd's state, so it needs no CSRF care; basic auth
//! (optional) keeps the figures away from anyone who can reach the port.

mod auth;
mod csv;
mod fmt;
mod html;
mod prometheus;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::snapshot::Snapshot;

pub use csv::CSV_COLUMNS;

/// Where the stats server gets its figures: the proxy engine implements it.
pub trait SnapshotSource: Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// At most this many stats connections are open at once. A new connection beyond it
/// closes the one that has been idle longest (no request being answered), so sockets that
/// send nothing cannot lock Prometheus and operators out.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request head within this time (also between keep-alive
/// requests: hyper arms it when it starts reading a head).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// On shutdown, open connections get this long to finish their current response.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);
/// Back-off after an accept error (EMFILE and friends) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The open stats connections, for eviction.
#[derive(Default)]
struct Conns {
    next_id: u64,
    open: std::collections::HashMap<u64, ConnEntry>,
}

struct ConnEntry {
    /// Last time a request started or a response ended (or the connection opened).
    last: std::time::Instant,
    /// A request is being answered right now.
    busy: bool,
    evict: Arc<tokio::sync::Notify>,
}

impl Conns {
    /// Make room for one more: evict the connection idle longest. `false` if all are busy.
    fn make_room(&mut self) -> bool {
        if self.open.len() < MAX_CONNECTIONS {
            return true;
        }
        let victim = self
            .open
            .iter()
            .filter(|(_, e)| !e.busy)
            .min_by_key(|(_, e)| e.last)
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some(e) => {
                e.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

fn lock(m: &std::sync::Mutex<Conns>) -> std::sync::MutexGuard<'_, Conns> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves the stats page on `listener` until `shutdown` completes, then lets open
/// connections finish for up to [`DRAIN_DEADLINE`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: common::config::Stats,
    source: Arc<dyn SnapshotSource>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let state = Arc::new(State {
        auth: auth::BasicAuth::new(cfg.user.as_deref(), cfg.password.as_deref()),
        refresh_secs: cfg.refresh_secs,
        source,
    });
    let table = Arc::new(std::sync::Mutex::new(Conns::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut refused: u64 = 0;
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "stats: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while conns.try_join_next().is_some() {}

        let (id, evict) = {
            let mut t = lock(&table);
            if !t.make_room() {
                refused += 1;
                tracing::debug!(%peer, refused, "stats: every connection is answering a request; closed");
                continue;
            }
            t.next_id += 1;
            let id = t.next_id;
            let evict = Arc::new(tokio::sync::Notify::new());
            t.open.insert(
                id,
                ConnEntry {
                    last: std::time::Instant::now(),
                    busy: false,
                    evict: evict.clone(),
                },
            );
            (id, evict)
        };

        let state = Arc::clone(&state);
        let mut stop_rx = stop_rx.clone();
        let table = Arc::clone(&table);
        conns.spawn(async move {
            let mark = {
                let table = Arc::clone(&table);
                move |busy: bool| {
                    if let Some(e) = lock(&table).open.get_mut(&id) {
                        e.busy = busy;
                        e.last = std::time::Instant::now();
                    }
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                let mark = mark.clone();
                async move {
                    mark(true);
                    let resp = state.handle(&req);
                    mark(false);
                    Ok::<_, Infallible>(resp)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "stats: connection ended with error");
                    }
                }
                () = evict.notified() => {
                    tracing::debug!(%peer, "stats: idle connection closed to make room");
                }
                () = stopped(&mut stop_rx) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            lock(&table).open.remove(&id);
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = conns.len(),
            "stats: closing connections at the drain deadline"
        );
        conns.abort_all();
    }
    Ok(())
}

/// Completes once `serve` asks connections to finish (or has gone away).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await.is_ok();
}

struct State {
    auth: Option<auth::BasicAuth>,
    refresh_secs: u32,
    source: Arc<dyn SnapshotSource>,
}

impl State {
    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        // /healthz answers without credentials: it tells a prober only that lbd is alive.
        if req.uri().path() == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        if let Some(auth) = &self.auth {
            if !auth.allows(req.headers().get(hyper::header::AUTHORIZATION)) {
                let mut resp = text(StatusCode::UNAUTHORIZED, "authentication required\n");
                resp.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"lbd stats\", charset=\"UTF-8\""),
                );
                return resp;
            }
        }
        match req.uri().path() {
            "/" => {
                let snap = self.source.snapshot();
                respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    html::render(&snap, self.refresh_secs),
                )
            }
            "/stats.json" => {
                let snap = self.source.snapshot();
                match serde_json::to_string(&snap) {
                    Ok(body) => respond(StatusCode::OK, "application/json", body),
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("cannot encode the snapshot: {e}\n"),
                    ),
                }
            }
            "/stats.csv" | "/;csv" => respond(
                StatusCode::OK,
                "text/csv; charset=utf-8",
                render_csv(&self.source.snapshot()),
            ),
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                render_prometheus(&self.source.snapshot()),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The HTML page, with the default refresh of 10 seconds.
pub fn render_html(s: &Snapshot) -> String {
    html::render(s, 10)
}

/// HAProxy's `show stat` CSV: a FRONTEND row, one row per server and a BACKEND row for
/// every frontend, in HAProxy 2.6's column order ([`CSV_COLUMNS`]).
pub fn render_csv(s: &Snapshot) -> String {
    csv::render(s)
}

/// Prometheus text exposition format 0.0.4.
pub fn render_prometheus(s: &Snapshot) -> String {
    prometheus::render(s)
}

#[cfg(test)]
pub(crate) mod testdata;
