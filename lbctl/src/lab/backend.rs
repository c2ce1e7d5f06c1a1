//! Stand-in backends for the lab, run inside each server's namespace by
//! `lbctl lab backend`: an HTTPS "kube-apiserver" answering `/readyz` and `/version`, and the
//! ingress NodePorts (HTTP and HTTPS) answering with the node's name.
//!
//! Deliberately small: HTTP/1.1 with keep-alive and Content-Length, and `GET /echo` with
//! `Upgrade: echo` turning the connection into an echo stream; nothing else. Each
//! listener is its own task; the process exits on SIGTERM.
//!
//! A port of a service with `proxy_protocol` (`--proxy-protocol PORT`) requires a PROXY
//! protocol header (v1 or v2) first, as an ingress controller with `use-proxy-protocol`
//! does: a connection without one is closed. Its answers name the client the header
//! carried (`client ADDRESS` on the HTTP body's second line, `"client"` in the API's
//! `/version`), so the lab can show that the client's address went through lbd; a LOCAL
//! header (lbd's health checks) names the connection's own source.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What one backend process serves.
#[derive(Debug, Clone)]
pub struct BackendOpts {
    pub node: String,
    pub api_port: Option<u16>,
    pub http_port: Option<u16>,
    pub https_port: Option<u16>,
    /// Any other ports: `--serve PORT:KIND`.
    pub serve: Vec<(u16, StandIn)>,
    /// Ports that require a PROXY protocol header: `--proxy-protocol PORT`.
    pub proxy: Vec<u16>,
}

/// What a stand-in speaks on one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandIn {
    /// HTTPS kube-apiserver: `/readyz`, `/version`.
    Api,
    /// HTTP, every path answered with the node's name.
    Http,
    /// The same over TLS.
    Https,
    /// Plain TCP: the node's name on a line, then an echo of everything sent.
    Tcp,
}

impl std::str::FromStr for StandIn {
    type Err = String;
    fn from_str(s: &str) -> Result<StandIn, String> {
        match s {
            "api" => Ok(StandIn::Api),
            "http" => Ok(StandIn::Http),
            "https" => Ok(StandIn::Https),
            "tcp" => Ok(StandIn::Tcp),
            _ => Err(format!("{s:?}: one of api, http, https, tcp")),
        }
    }
}

impl StandIn {
    pub fn as_str(self) -> &'static str {
        match self {
            StandIn::Api => "api",
            StandIn::Http => "http",
            StandIn::Https => "https",
            StandIn::Tcp => "tcp",
        }
    }

    /// The stand-in for a service's backends: the API on 6443; otherwise what its check
    /// speaks (a TCP-checked service on 443 is the HTTPS ingress, on 80 the HTTP one).
    pub fn for_service(s: &common::config::Service) -> StandIn {
        use common::config::CheckKind;
        if s.backend_port == crate::install::K3S_API_PORT {
            return StandIn::Api;
        }
        match s.check.kind {
            CheckKind::Https | CheckKind::Tls => StandIn::Https,
            CheckKind::Http => StandIn::Http,
            CheckKind::Tcp if s.listen == 443 => StandIn::Https,
            CheckKind::Tcp if s.listen == 80 => StandIn::Http,
            CheckKind::Tcp => StandIn::Tcp,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Api,
    App,
    Tcp,
}

/// `client` is the address a PROXY header carried (ports that require one).
fn answer(
    kind: Kind,
    node: &str,
    path: &str,
    client: Option<IpAddr>,
) -> (u16, &'static str, String) {
    match (kind, path) {
        (Kind::Api, "/readyz" | "/livez" | "/healthz") => (200, "text/plain", "ok".into()),
        (Kind::Api, "/version") => (
            200,
            "application/json",
            format!(
                "{{\"major\":\"1\",\"minor\":\"31\",\"gitVersion\":\"v1.31.0+k3s-ha-lab\",\"node\":\"{node}\"{}}}",
                client.map_or(String::new(), |c| format!(",\"client\":\"{c}\""))
            ),
        ),
        (Kind::Api, _) => (404, "text/plain", "not found".into()),
        (Kind::App | Kind::Tcp, _) => match client {
            Some(c) => (200, "text/plain", format!("{node}\nclient {c}\n")),
            None => (200, "text/plain", format!("{node}\n")),
        },
    }
}

/// The longest PROXY header a stand-in reads.
const PROXY_MAX: usize = 1024;

/// Read the PROXY protocol header at the start of `s` (peeked until whole, then exactly
/// its bytes consumed, so a TLS handshake after it is untouched): the client it names, or
/// for LOCAL / UNKNOWN the connection's own source. `None`: no valid header within 3 s.
async fn proxy_header(s: &mut tokio::net::TcpStream) -> Option<IpAddr> {
    let read = async {
        let mut buf = [0u8; PROXY_MAX];
        // Bounded: 3 s at most (the timeout below), a few ms between peeks.
        loop {
            let n = s.peek(&mut buf).await.ok()?;
            match proxy_proto::decode(&buf[..n], PROXY_MAX) {
                Ok(proxy_proto::Decoded::Complete { header, len }) => {
                    let client = match header.addresses {
                        Some(a) => proxy_proto::canonical(a.source).ip(),
                        None => proxy_proto::canonical(s.peer_addr().ok()?).ip(),
                    };
                    s.read_exact(&mut buf[..len]).await.ok()?;
                    return Some(client);
                }
                Ok(proxy_proto::Decoded::Incomplete { .. }) if n > 0 => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .ok()
        .flatten()
}

/// Serve HTTP/1.1 requests on one connection until the client closes or goes quiet.
async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    kind: Kind,
    node: &str,
    client: Option<IpAddr>,
) -> Result<()> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > 16 * 1024 {
                return Ok(());
            }
            let n = match tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut lines = head.lines();
        let path = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/")
            .to_owned();
        let close = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("connection:") && l.contains("close")
        }) || head.starts_with("GET / HTTP/1.0")
            || head.contains(" HTTP/1.0\r\n");
        let upgrade = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("upgrade:") && l.contains("echo")
        });
        if matches!(kind, Kind::App) && path == "/echo" && upgrade {
            // A long-lived byte stream through the ingress (as a websocket is): after the
            // 101, everything sent comes back.
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Backend: {node}\r\n\r\n"
            );
            s.write_all(resp.as_bytes()).await?;
            s.write_all(&buf).await?;
            return echo(s).await;
        }
        let (code, ctype, body) = answer(kind, node, path.split('?').next().unwrap_or("/"), client);
        let reason = if code == 200 { "OK" } else { "Not Found" };
        let resp = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Backend: {node}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        s.write_all(resp.as_bytes()).await?;
        s.flush().await?;
        if close {
            let _ = s.shutdown().await;
            return Ok(());
        }
    }
}

fn tls_acceptor(node: &str) -> Result<TlsAcceptor> {
    let cert = rcgen::generate_simple_self_signed(vec![
        node.to_owned(),
        "kubernetes".to_owned(),
        "localhost".to_owned(),
    ])
    .context("generating the stand-in certificate")?;
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("stand-in key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .context("TLS server config")?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The node's name on a line, then everything echoed back until the client closes.
async fn serve_tcp<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, node: &str) -> Result<()> {
    s.write_all(format!("{node}\n").as_bytes()).await?;
    echo(s).await
}

/// Everything read is written back, until the client closes (or 5 quiet minutes).
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(300), s.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            let _ = s.shutdown().await;
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
    }
}

async fn listen(
    port: u16,
    kind: Kind,
    node: Arc<str>,
    tls: Option<TlsAcceptor>,
    proxy: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    // Both families: the lab's nodes may have IPv6 addresses too.
    let l = TcpListener::bind(("::", port))
        .await
        .with_context(|| format!("binding port {port}"))?;
    loop {
        let accepted = tokio::select! {
            a = l.accept() => a,
            // Stopping: the listener closes here (new connections are refused).
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let (mut s, _) = match accepted {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let node = node.clone();
        let tls = tls.clone();
        let active = Active::enter();
        tokio::spawn(async move {
            let _active = active;
            let _ = s.set_nodelay(true);
            let client = if proxy {
                match proxy_header(&mut s).await {
                    Some(c) => Some(c),
                    // No header: what a controller with use-proxy-protocol does (close).
                    None => return,
                }
            } else {
                None
            };
            let r = match (tls, kind) {
                (None, Kind::Tcp) => serve_tcp(s, &node).await,
                (Some(acc), _) => {
                    match tokio::time::timeout(Duration::from_secs(10), acc.accept(s)).await {
                        Ok(Ok(t)) => serve_conn(t, kind, &node, client).await,
                        _ => Ok(()),
                    }
                }
                (None, _) => serve_conn(s, kind, &node, client).await,
            };
            drop(r);
        });
    }
}

/// Connections being served (a stop waits for them, as an application server does).
static ACTIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One connection being served, for as long as it lives.
struct Active;

impl Active {
    fn enter() -> Active {
        ACTIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How long a stop waits for the connections being served.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Run until SIGTERM / SIGINT; then stop listening (new connections are refused, so the
/// proxy's checks and retries see the application gone at once) and finish the
/// connections being served, for up to [`STOP_GRACE`], as an application server
/// (nginx, a Go server's Shutdown) does.
pub fn run(opts: BackendOpts) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let node: Arc<str> = opts.node.as_str().into();
        let tls = tls_acceptor(&opts.node)?;
        let mut tasks = tokio::task::JoinSet::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(p) = opts.api_port {
            tasks.spawn(listen(
                p,
                Kind::Api,
                node.clone(),
                Some(tls.clone()),
                opts.proxy.contains(&p),
                stop_rx.clone(),
            ));
        }
        if let Some(p) = opts.http_port {
            tasks.spawn(listen(
                p,
                Kind::App,
                node.clone(),
                None,
                opts.proxy.contains(&p),
                stop_rx.clone(),
            ));
        }
        if let Some(p) = opts.https_port {
            tasks.spawn(listen(
                p,
                Kind::App,
                node.clone(),
                Some(tls.clone()),
                opts.proxy.contains(&p),
                stop_rx.clone(),
            ));
        }
        for (p, what) in &opts.serve {
            let (kind, t) = match what {
                StandIn::Api => (Kind::Api, Some(tls.clone())),
                StandIn::Http => (Kind::App, None),
                StandIn::Https => (Kind::App, Some(tls.clone())),
                StandIn::Tcp => (Kind::Tcp, None),
            };
            let pp = opts.proxy.contains(p);
            tasks.spawn(listen(*p, kind, node.clone(), t, pp, stop_rx.clone()));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let r = tokio::select! {
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
            Some(r) = tasks.join_next() => match r {
                Ok(Err(e)) => Err(e),
                _ => Ok(()),
            },
        };
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        let until = tokio::time::Instant::now() + STOP_GRACE;
        while ACTIVE.load(std::sync::atomic::Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        r
    })
}
