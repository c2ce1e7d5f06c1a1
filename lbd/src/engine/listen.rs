//! Listeners: binding, the descriptor cap, accepting and admitting connections.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A listening socket with SO_REUSEADDR (and IP_FREEBIND for a specific address that may
/// not be on this host yet, such as the VIP), and TCP_NODELAY, which every accepted socket
/// inherits (one setsockopt per listener instead of one per connection).
pub fn bind_listener(addr: SocketAddr, freebind: bool) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_tcp_nodelay(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        sock.set_only_v6(false)?;
    }
    if freebind {
        if addr.is_ipv4() {
            sock.set_freebind_v4(true)?;
        } else {
            sock.set_freebind_v6(true)?;
        }
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// A listening socket's accept loops: one per accept worker, each on its own copy of the
/// descriptor registered with that worker's reactor; without workers, one on the current
/// runtime (`None`). `sock` itself stays unregistered, for an upgrade to hand over.
pub(super) fn register(
    sock: &std::net::TcpListener,
    workers: &[tokio::runtime::Handle],
) -> io::Result<Vec<(Option<tokio::runtime::Handle>, TcpListener)>> {
    sock.set_nonblocking(true)?;
    if workers.is_empty() {
        return Ok(vec![(None, TcpListener::from_std(sock.try_clone()?)?)]);
    }
    workers
        .iter()
        .map(|rt| {
            let copy = sock.try_clone()?;
            let _in = rt.enter();
            Ok((Some(rt.clone()), TcpListener::from_std(copy)?))
        })
        .collect()
}

/// Releases a connection's slots when its task ends, however it ends: its place under the
/// global and the frontend's caps, and its descriptor-cap slot ([`FdSlot`]).
pub(super) struct ConnGuard {
    pub(super) engine: Engine,
    pub(super) fe: Arc<Frontend>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.fe.sessions.dec();
        self.engine.0.conns.dec();
        self.engine.0.fd_slots.fetch_sub(1, Relaxed);
        self.engine.0.slot_freed.notify_waiters();
    }
}

#[cfg(test)]
impl ConnGuard {
    /// A connection admitted past every cap, as [`Engine::admit`] leaves it.
    pub(super) fn for_test(engine: Engine, fe: Arc<Frontend>) -> ConnGuard {
        engine.0.fd_slots.fetch_add(1, Relaxed);
        engine.0.conns.inc();
        fe.sessions.inc();
        ConnGuard { engine, fe }
    }
}

/// One slot under the descriptor cap, taken before an accept: accept loops on several
/// threads then never accept more than the cap together (a check before the accept and an
/// increment after it would let each of them take the last slot). An admitted connection
/// keeps it ([`ConnGuard`]); otherwise it is given back when dropped.
pub(super) struct FdSlot<'a>(&'a Engine);

impl<'a> FdSlot<'a> {
    pub(super) fn take(engine: &'a Engine) -> Option<FdSlot<'a>> {
        let cap = engine.0.fd_cap.load(Relaxed);
        engine
            .0
            .fd_slots
            .fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1))
            .ok()
            .map(|_| FdSlot(engine))
    }

    /// The slot now belongs to a connection, which gives it back when it ends.
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for FdSlot<'_> {
    fn drop(&mut self) {
        self.0 .0.fd_slots.fetch_sub(1, Relaxed);
        self.0 .0.slot_freed.notify_waiters();
    }
}

/// Descriptors kept back from proxied connections: the control socket and its clients,
/// the stats page's connections, the netlink / signal / epoll machinery, log files. With
/// a small limit, at most a quarter of it.
pub(super) const FD_RESERVE: u64 = 32 + crate::stats::MAX_CONNECTIONS as u64;

/// The connections this process can proxy with its descriptor limit, as HAProxy derives
/// maxconn from `ulimit -n`: two descriptors each (client and server), after the listeners'
/// (each held once, and once more per accept loop: [`register`]), the accept workers'
/// runtimes and one per health check in flight.
/// `accept_workers`: the runtimes started at start-up ([`Engine::set_accept_workers`]; 0
/// when the main runtime accepts), not `lbd.threads`, which a reload may have changed
/// without changing the threads.
pub fn fd_cap(cluster: &Cluster, accept_workers: usize) -> u64 {
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    let workers = accept_workers as u64;
    let listeners = cluster.services.len() as u64 * (1 + workers.max(1));
    // Each accept worker's own runtime: tokio holds four descriptors for it (two epolls,
    // the eventfd that wakes it, its copy of the signal socket; counted in /proc).
    let runtimes = 4 * workers;
    let checks: u64 = cluster
        .services
        .iter()
        .map(|s| s.backends.len() as u64)
        .sum();
    let reserve = FD_RESERVE.min(nofile / 4) + listeners + runtimes + checks;
    (nofile.saturating_sub(reserve) / 2).max(1)
}

/// Raise the soft descriptor limit to the hard one (systemd's default soft limit, 1024, is
/// far below what a proxy needs; the unit sets both). Returns the soft limit now.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Accept errors that say nothing about the listener (the client went away first).
pub(super) fn accept_error_is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EPERM | libc::EINTR)
    )
}

pub(super) async fn listen_loop(
    engine: Engine,
    listener: TcpListener,
    mut rx: watch::Receiver<Option<Arc<Frontend>>>,
) {
    let mut last_warn: Option<Instant> = None;
    let mut last_cap_warn: Option<Instant> = None;
    // A new process of an upgrade accepts once the old one has let go (until then the
    // old one accepts from the same socket).
    let mut accepting = engine.0.accepting.subscribe();
    while !*accepting.borrow_and_update() {
        tokio::select! {
            r = accepting.changed() => if r.is_err() { return },
            r = rx.changed() => if r.is_err() || rx.borrow().is_none() { return },
        }
    }
    loop {
        let Some(fe) = rx.borrow_and_update().clone() else {
            return;
        };
        // At the descriptor cap, do not accept: the client waits in the listen queue
        // instead of being accepted and closed (or accepted and starved of a server
        // socket). A freed slot or a config change wakes us.
        let inner = &engine.0;
        let freed = inner.slot_freed.notified();
        let Some(slot) = FdSlot::take(&engine) else {
            inner.fd_cap_waits.fetch_add(1, Relaxed);
            if last_cap_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                warn!(
                    service = %fe.name,
                    open = inner.conns.get(),
                    cap = inner.fd_cap.load(Relaxed),
                    "at the connection cap RLIMIT_NOFILE allows: new connections wait in the listen queue"
                );
                last_cap_warn = Some(Instant::now());
            }
            tokio::select! {
                () = freed => {}
                changed = rx.changed() => if changed.is_err() { return },
            }
            continue;
        };
        drop(freed);
        tokio::select! {
            biased;
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            r = listener.accept() => match r {
                Ok((sock, peer)) => engine.admit(&fe, sock, peer, slot),
                Err(e) if accept_error_is_per_connection(&e) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM...: back off instead of spinning.
                    if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        warn!(service = %fe.name, error = %e, "accept failed; backing off");
                        last_warn = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

impl Engine {
    /// Accept-path admission: caps, then a task for the connection.
    pub(super) fn admit(
        &self,
        fe: &Arc<Frontend>,
        sock: TcpStream,
        peer: SocketAddr,
        slot: FdSlot<'_>,
    ) {
        let inner = &self.0;
        // Over a cap the client is closed at once (dropping `sock`) and counted as denied.
        // Each place is taken in one atomic step: loops on several threads never pass a
        // cap together.
        let limit = |n: u64| if n > 0 { n } else { u64::MAX };
        if inner
            .conns
            .inc_below(limit(inner.max_conns.load(Relaxed)))
            .is_none()
        {
            fe.denied.fetch_add(1, Relaxed);
            debug!(service = %fe.name, client = %peer, "denied: global connection cap");
            return;
        }
        let cfg = fe.cfg();
        if fe
            .sessions
            .inc_below(limit(u64::from(cfg.service.max_connections)))
            .is_none()
        {
            inner.conns.dec();
            fe.denied.fetch_add(1, Relaxed);
            debug!(service = %fe.name, client = %peer, "denied: frontend connection cap");
            return;
        }
        slot.keep();
        fe.total.fetch_add(1, Relaxed);
        fe.rate.hit();
        let guard = ConnGuard {
            engine: self.clone(),
            fe: fe.clone(),
        };
        let id = inner.next_id.fetch_add(1, Relaxed);
        let span = || tracing::debug_span!("conn", id, service = %fe.name, client = %peer);
        if cfg.service.accept_proxy.is_some() || cfg.service.proxy_protocol.is_some() {
            spawn_conn(proxied_connection(guard, cfg, sock, peer, id), span);
        } else {
            spawn_conn(connection(guard, cfg, sock, client_hash(peer.ip())), span);
        }
    }
}

fn spawn_conn(
    conn: impl Future<Output = ()> + Send + 'static,
    span: impl FnOnce() -> tracing::Span,
) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        tokio::spawn(conn.instrument(span()));
    } else {
        // No span wrapper when nobody reads it: less memory per connection.
        tokio::spawn(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::bind_listener;

    /// The per-connection setsockopt this saves relies on the kernel copying TCP_NODELAY
    /// from the listener to the sockets it accepts.
    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let l = bind_listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        l.set_nonblocking(false).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _) = l.accept().unwrap();
        assert!(a.nodelay().unwrap());
    }
}
