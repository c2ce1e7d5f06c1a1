//! One client connection: pick a server, connect (retrying on others), then copy.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Errors of this host rather than of the server (no descriptor, no buffer, no memory):
/// never a reason to take a server out of rotation.
pub fn is_local_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A connection to `addr`, as `TcpStream::connect` but without its getsockopt(SO_ERROR)
/// once the socket is writable: only a connect that failed (the socket reports an error or
/// a hang-up with its writability) is asked why. One syscall less per connection, as
/// HAProxy does.
pub async fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(sock))?;
    let ready = stream.ready(tokio::io::Interest::WRITABLE).await?;
    if ready.is_write_closed() || ready.is_error() {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok(stream)
}

/// Counts a server session for as long as it is held.
pub(super) struct ServerSlot(pub(super) Arc<Server>);

impl Drop for ServerSlot {
    fn drop(&mut self) {
        self.0.sessions.dec();
    }
}

pub(super) async fn connection(
    guard: ConnGuard,
    cfg: Arc<FrontendCfg>,
    client: TcpStream,
    hash: u64,
) {
    // Two phases in two functions, so the connect phase's state (retries, connect timer)
    // shares its bytes with the copy phase's instead of adding to them; sockets are passed
    // by reference so they are stored once.
    let Some((slot, server)) = connect_backend(&guard.fe, &cfg, hash).await else {
        return;
    };
    copy_phase(&guard, &cfg, &client, &slot, &server).await;
}

/// A connection of a service with `accept_proxy` or `proxy_protocol`: [`connection`] with
/// the PROXY header read from the client first and/or written to the server after the
/// connect. A task of its own type, so the connections of other services stay as small
/// as they were.
pub(super) async fn proxied_connection(
    guard: ConnGuard,
    cfg: Arc<FrontendCfg>,
    client: TcpStream,
    peer: SocketAddr,
    id: u64,
) {
    let proxied = match &cfg.service.accept_proxy {
        None => None,
        Some(ap) => {
            let fe = &guard.fe;
            match Box::pin(crate::proxy::accept(
                &client,
                peer,
                ap,
                &fe.proxy_refused,
                &fe.name,
            ))
            .await
            {
                Some(p) => Some(Box::new(p)),
                None => return,
            }
        }
    };
    let hash = client_hash(proxied.as_ref().map_or(peer, |p| p.client(peer)).ip());
    let Some((slot, server)) = connect_backend(&guard.fe, &cfg, hash).await else {
        return;
    };
    if let Some(version) = cfg.service.proxy_protocol {
        let origin = crate::proxy::Origin {
            peer,
            proxied: proxied.as_deref(),
            node: &guard.engine.0.node,
            id,
        };
        let counters = [&guard.fe.bytes_in, &slot.0.bytes_in];
        let sent = Box::pin(crate::proxy::send(
            version,
            cfg.service.proxy_tlvs,
            origin,
            &client,
            &server,
            counters,
        ))
        .await;
        if let Err(e) = sent {
            debug!(server = %slot.0.addr, error = %e, "sending the PROXY header failed: closing the client");
            return;
        }
    }
    drop(proxied);
    copy_phase(&guard, &cfg, &client, &slot, &server).await;
}

/// Pick a server and connect, retrying on other servers. `None`: the client is closed.
pub(super) async fn connect_backend(
    fe: &Frontend,
    cfg: &FrontendCfg,
    hash: u64,
) -> Option<(ServerSlot, TcpStream)> {
    let mut tried: Vec<usize> = Vec::new();
    for attempt in 0..=cfg.service.retries {
        let picked = {
            let cands: Vec<Candidate> = cfg.servers.iter().map(|s| s.candidate()).collect();
            lock(&cfg.balancer).pick(&cands, &tried, hash)
        };
        let Some(idx) = picked else {
            fe.no_server.fetch_add(1, Relaxed);
            debug!("no usable server: closing the client");
            return None;
        };
        let srv = cfg.servers[idx].clone();
        srv.sessions.inc();
        let slot = ServerSlot(srv.clone());
        let connect = connect_tcp(srv.addr);
        let started = Instant::now();
        let limit = cfg
            .service
            .timeouts
            .connect
            .for_server(cfg.vrrp_interval, srv.srtt());
        let failure = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(s)) => {
                srv.sample_connect(started.elapsed());
                return Some((slot, s));
            }
            Ok(Err(e)) if is_local_error(&e) => {
                // Our shortage, not the server's: no health verdict, no connect error on
                // the server, no retry elsewhere (it would fail the same way).
                fe.local_errors.fetch_add(1, Relaxed);
                warn!(server = %srv.addr, error = %e, "no socket for the server connection (local resources): closing the client");
                return None;
            }
            Ok(Err(e)) => {
                debug!(server = %srv.addr, error = %e, attempt, "connect failed");
                Some(("L4CON", format!("client connect: {e}")))
            }
            Err(_) if cfg.service.timeouts.connect == ConnectTimeout::Auto => {
                // A timeout fit to the cluster is short: a suspicion, not a verdict. The
                // checker looks now (short timeout, fall 1); the client goes on at once.
                debug!(server = %srv.addr, attempt, limit = ?limit, "connect timed out: checking the server now");
                srv.make_suspect();
                None
            }
            Err(_) => {
                debug!(server = %srv.addr, attempt, "connect timed out");
                Some(("L4TOUT", "client connect timed out".to_owned()))
            }
        };
        // Passive health (HAProxy's opt-in `observe layer4`, on here): a real connection's
        // failed connect counts like a failed check, and the checker looks again at once,
        // so a dead server leaves rotation after its first failures, not after `fall`
        // whole check intervals.
        if let Some((status, desc)) = failure {
            let check = &cfg.service.check;
            let o = health::Outcome {
                ok: false,
                status,
                desc,
                latency: started.elapsed(),
                local: false,
            };
            srv.record(&o, check.rise, check.fall, cfg.service.close_on_down);
            srv.wake.notify_one();
        }
        drop(slot);
        srv.connect_errors.fetch_add(1, Relaxed);
        if attempt < cfg.service.retries {
            srv.retries.fetch_add(1, Relaxed);
        }
        tried.push(idx);
    }
    debug!("every attempt failed: closing the client");
    None
}

pub(super) async fn copy_phase(
    guard: &ConnGuard,
    cfg: &FrontendCfg,
    client: &TcpStream,
    slot: &ServerSlot,
    server: &TcpStream,
) {
    let fe = &guard.fe;
    let timeouts = &cfg.service.timeouts;
    let srv = &slot.0;
    srv.total.fetch_add(1, Relaxed);
    srv.rate.hit();
    // (The client socket has TCP_NODELAY from its listener: bind_listener, inherit.)
    let _ = server.set_nodelay(true);
    let kill = KillSwitch(
        cfg.service
            .close_on_down
            .then(|| Box::pin(srv.kill.notified())),
    );
    let end = copy::proxy(
        client,
        server,
        Meters {
            counters: [&fe.bytes_in, &srv.bytes_in],
        },
        Meters {
            counters: [&fe.bytes_out, &srv.bytes_out],
        },
        timeouts,
        guard.engine.0.mode,
        kill,
    )
    .await;
    debug!(server = %srv.addr, ?end, "connection ended");
}

/// Completes when the server is marked DOWN (close_on_down services), never otherwise.
/// The waiter is boxed only when armed, so other connections do not carry one.
pub(super) struct KillSwitch<'a>(pub(super) Option<Pin<Box<tokio::sync::futures::Notified<'a>>>>);

impl Future for KillSwitch<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().0 {
            Some(n) => n.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}
