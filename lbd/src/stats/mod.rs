//! The stats page on :8404: HTML for operators, `/stats.json`, HAProxy-compatible
//! `/stats.csv`, Prometheus `/metrics` and `/healthz`.
//!
//! ```text
//!   listener ──accept──► [semaphore: MAX_CONNECTIONS] ──spawn──► hyper http1 conn
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
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::snapshot::Snapshot;

pub use csv::CSV_COLUMNS;

/// Where the stats server gets its figures: the proxy engine implements it.
pub trait SnapshotSource: Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// At most this many stats connections are served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// On shutdown, open connections get this long to finish their current response.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);
/// Back-off after an accept error (EMFILE and friends) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_closed) => break,
            },
        };
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

        let state = Arc::clone(&state);
        let mut stop_rx = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(state.handle(&req)) }
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
                () = stopped(&mut stop_rx) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
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
