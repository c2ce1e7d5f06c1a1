//! Sharing the cluster's admin states with the other servers' lbd over TCP
//! (`lbd.peer_port`, 8405): one `sync` exchange gives each side what the other knows.
//!
//! ```text
//!  start            --> every peer: exchange, retried with backoff until it answers once
//!  lbctl drain here --> every peer: exchange now (lbctl hears who has it), retried for
//!                       the ones that did not answer
//!  a peer's sync    --> merge (newer stamp wins) --> engine --> answer with everything
//!  upgrade          --> the listener goes to the new lbd process; here everything stops
//! ```
//!
//! Who may talk: a connection must come from another server's address in cluster.toml and
//! say that server's name; anything else is refused, counted and logged. lbd connects out
//! only from this node's own address, so a daemon started with `--node` on a host that is
//! not that node (a test, a laptop) sends nothing anywhere. This is the trust VRRP itself
//! has on the segment (RFC 9568 dropped authentication): whoever can send from a server's
//! address can already take the VIP.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::config::Cluster;
use common::ctl::{self, Response};
use common::proto::lbd::{AdminEntry, Answer, Pending, Request, Shared, Sync, Synced};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::engine::Engine;

/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries of a peer that did not answer: 0.5 s doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Peer {
    name: String,
    addr: SocketAddr,
    /// Something changed that this peer has not confirmed yet.
    dirty: Notify,
}

/// The other servers' lbd.
#[derive(Debug)]
pub struct Peers {
    me: String,
    /// This node's own address: every connection out starts from it.
    local: IpAddr,
    list: Vec<Arc<Peer>>,
    refused: AtomicU64,
    /// Set when a new lbd process took over (an upgrade): this one shares nothing more.
    stopped: watch::Sender<bool>,
}

impl Peers {
    /// The peers of this node in `cluster`, or `None` when there is nothing to share with
    /// (`lbd.peer_port = 0`, or a single server).
    pub fn of(cluster: &Cluster, me: &str) -> Option<Arc<Peers>> {
        let port = cluster.lbd.peer_port;
        let mine = cluster.node(me)?;
        let list: Vec<Arc<Peer>> = cluster
            .servers()
            .filter(|n| n.name != me)
            .map(|n| {
                Arc::new(Peer {
                    name: n.name.clone(),
                    addr: SocketAddr::new(n.address, port),
                    dirty: Notify::new(),
                })
            })
            .collect();
        (port != 0 && !list.is_empty()).then(|| {
            Arc::new(Peers {
                me: me.to_owned(),
                local: mine.address,
                list,
                refused: AtomicU64::new(0),
                stopped: watch::Sender::new(false),
            })
        })
    }

    /// The listener on this node's address: the one a previous lbd process handed over
    /// (an upgrade) when it is on that address, else a new one. A port that cannot be had
    /// is said in the journal; lbd goes on (it still pushes its own changes).
    pub fn listen(
        &self,
        port: u16,
        inherited: Option<std::net::TcpListener>,
    ) -> Option<std::net::TcpListener> {
        let at = SocketAddr::new(self.local, port);
        if let Some(l) = inherited {
            if l.local_addr().ok() == Some(at) {
                return Some(l);
            }
        }
        match crate::engine::bind_listener(at, false) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(%at, error = %e, "cannot listen for the other servers' lbd: admin states made there do not reach this node until it can");
                None
            }
        }
    }

    /// Serve the peer port on `listener` and start one task per peer, until [`Peers::stop`].
    pub fn start(self: &Arc<Self>, engine: Engine, listener: Option<std::net::TcpListener>) {
        if let Some(l) = listener {
            match l
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(l))
            {
                Ok(l) => {
                    info!(at = ?l.local_addr().ok(), peers = ?self.list.iter().map(|p| &p.name).collect::<Vec<_>>(), "sharing admin states with the other servers");
                    tokio::spawn(
                        self.clone()
                            .until_stopped(self.clone().accept_loop(l, engine.clone())),
                    );
                }
                Err(e) => warn!(error = %e, "cannot serve the peer port"),
            }
        }
        for p in &self.list {
            p.dirty.notify_one();
            tokio::spawn(
                self.clone()
                    .until_stopped(self.clone().peer_task(p.clone(), engine.clone())),
            );
        }
    }

    /// A new lbd process took over: stop accepting on the peer port (the new process
    /// serves the same socket) and stop sharing from here, so that this process no longer
    /// writes the admin state file the new one owns.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    async fn until_stopped(self: Arc<Self>, task: impl std::future::Future<Output = ()>) {
        let mut stopped = self.stopped.subscribe();
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => {}
            () = task => {}
        }
    }

    /// A change was made here: give it to every peer now and say who has it; the ones
    /// that did not answer within `limit` keep being retried.
    pub async fn push_all(self: &Arc<Self>, engine: &Engine, limit: Duration) -> Shared {
        let mut calls = tokio::task::JoinSet::new();
        for p in &self.list {
            let (me, p, engine) = (self.clone(), p.clone(), engine.clone());
            calls.spawn(async move {
                let r = tokio::time::timeout(limit, me.exchange(&p, &engine))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")));
                if r.is_err() {
                    p.dirty.notify_one();
                }
                (p.name.clone(), r)
            });
        }
        let mut out = Shared::default();
        while let Some(done) = calls.join_next().await {
            let Ok((peer, r)) = done else { continue };
            match r {
                Ok(()) => out.peers.push(peer),
                Err(error) => out.pending.push(Pending { peer, error }),
            }
        }
        out.peers.sort();
        out.pending.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }

    async fn peer_task(self: Arc<Self>, p: Arc<Peer>, engine: Engine) {
        loop {
            p.dirty.notified().await;
            let mut backoff = Duration::from_millis(500);
            let mut failures = 0u32;
            while let Err(e) = self.exchange(&p, &engine).await {
                failures += 1;
                // The first failure and every tenth are worth a line; the rest is noise.
                if failures == 1 || failures % 10 == 0 {
                    warn!(peer = %p.name, addr = %p.addr, error = %e, failures, "cannot share admin states with a peer: retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            if failures > 0 {
                info!(peer = %p.name, failures, "admin states shared with the peer again");
            }
        }
    }

    /// One exchange with a peer: send everything, merge what comes back.
    async fn exchange(&self, p: &Peer, engine: &Engine) -> Result<(), String> {
        let r = async {
            let sock = match p.addr {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            }
            .map_err(|e| e.to_string())?;
            sock.bind(SocketAddr::new(self.local, 0)).map_err(|e| {
                format!(
                    "this node's address {} is not on this host ({e})",
                    self.local
                )
            })?;
            let mut stream: TcpStream = sock.connect(p.addr).await.map_err(|e| e.to_string())?;
            let req = Request::Sync(Sync {
                from: self.me.clone(),
                entries: engine.book().all(),
            });
            let line = serde_json::to_value(&req).map_err(|e| e.to_string())?;
            let resp = ctl::exchange(&mut stream, &line)
                .await
                .map_err(|e| e.to_string())?;
            if !resp.ok {
                return Err(resp.error.unwrap_or_else(|| "refused".into()));
            }
            let synced: Synced = serde_json::from_value(resp.result.unwrap_or_default())
                .map_err(|e| format!("not a sync answer: {e}"))?;
            merge(engine, &p.name, synced.entries);
            Ok(())
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, r)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {EXCHANGE_TIMEOUT:?}")))
    }

    async fn accept_loop(self: Arc<Self>, l: TcpListener, engine: Engine) {
        loop {
            let (stream, from) = match l.accept().await {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "peer port accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(peer) = self.peer_at(from.ip()) else {
                let n = self.refused.fetch_add(1, Relaxed) + 1;
                if n == 1 || n % 100 == 0 {
                    warn!(%from, refused = n, "peer port: refused a connection from an address that is no other server of the cluster");
                }
                continue;
            };
            let engine = engine.clone();
            tokio::spawn(async move {
                let handler = move |req: Request| {
                    let engine = engine.clone();
                    let peer = peer.clone();
                    async move {
                        // The new holder of a VIP this node parked asks how many of its
                        // flows are left (`vrrp_proto::core::Action::Steer`).
                        if let Request::Flows(f) = req {
                            return Response::from_result(
                                crate::control::flows(f).await.map(Answer::Flows),
                            );
                        }
                        Response::from_result(serve(&engine, &peer, req))
                    }
                };
                if let Err(e) = ctl::serve_stream(stream, handler).await {
                    debug!(error = %e, "peer connection ended with an error");
                }
            });
        }
    }

    fn peer_at(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        self.list
            .iter()
            .find(|p| p.addr.ip().to_canonical() == ip)
            .map(|p| p.name.clone())
    }
}

/// What a peer may ask on the peer port: `sync`, under its own name (and `flows`, above).
fn serve(engine: &Engine, peer: &str, req: Request) -> Result<Answer, String> {
    match req {
        Request::Sync(s) if s.from == peer => {
            merge(engine, peer, s.entries);
            Ok(Answer::Synced(Synced {
                entries: engine.book().all(),
            }))
        }
        Request::Sync(s) => Err(format!(
            "this connection comes from {peer}'s address, not {:?}'s",
            s.from
        )),
        _ => Err("only `sync` and `flows` are served on the peer port".into()),
    }
}

fn merge(engine: &Engine, peer: &str, entries: Vec<AdminEntry>) {
    let won = engine.book().merge(entries);
    for e in &won {
        info!(service = %e.service, server = %e.server, state = ?e.state, weight = ?e.weight, by = %e.by, via = peer, "admin state from the cluster");
    }
    engine.apply_admin(&won);
}
