//! Health checks: the rise/fall state machine ([`Health`], pure) and the probes
//! ([`probe`]): TCP connect, TLS handshake, HTTP or HTTPS `GET` with expected statuses.
//!
//! Check results use HAProxy's `check_status` names: `L4OK`/`L4TOUT`/`L4CON` for the TCP
//! connect, `L6OK`/`L6TOUT`/`L6RSP` for the TLS handshake, `L7OK`/`L7STS`/`L7TOUT`/`L7RSP`
//! for the HTTP exchange. The whole probe is bounded by `check.timeout`.
//!
//! TLS: rustls with ring. Without `check.ca` any server certificate is accepted (a health
//! check proves liveness, not identity; the signature over the handshake is still checked
//! against the presented certificate). With `check.client_cert`/`client_key` the check
//! presents a client certificate (kube-apiserver answers `/readyz` with 200 instead of 401).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::config::{Check, CheckKind, ProxyProtocol};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;

/// A check configuration that cannot be used (refused at start or reload).
#[derive(Debug, thiserror::Error)]
pub enum CheckConfigError {
    #[error("check CA bundle {path}: {source}")]
    Ca {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("check CA bundle {path}: no usable certificate ({reason})")]
    CaEmpty { path: PathBuf, reason: String },
    #[error("check client certificate {path}: {source}")]
    ClientCert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("check client key {path}: {source}")]
    ClientKey {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("check client_cert and client_key must be given together")]
    ClientPair,
    #[error("check TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("check TLS verifier: {0}")]
    Verifier(String),
}

/// Rise/fall bookkeeping of one server.
///
/// A server starts UP in an initial state where the first check result is decisive (a
/// restarted lbd must not send clients to a dead server for `fall` intervals, nor withhold
/// them from a live one for `rise` intervals). After that, `fall` consecutive failures take
/// an UP server DOWN and `rise` consecutive successes bring a DOWN server UP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub up: bool,
    initial: bool,
    /// Consecutive results against the current state.
    count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    WentUp,
    WentDown,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: true,
            initial: true,
            count: 0,
        }
    }
}

impl Health {
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Change {
        if self.initial {
            self.initial = false;
            self.count = 0;
            let was = self.up;
            self.up = ok;
            return match (was, ok) {
                (true, false) => Change::WentDown,
                (false, true) => Change::WentUp,
                _ => Change::None,
            };
        }
        if ok == self.up {
            self.count = 0;
            return Change::None;
        }
        self.count += 1;
        let need = if self.up { fall } else { rise };
        if self.count < need.max(1) {
            return Change::None;
        }
        self.count = 0;
        self.up = ok;
        if ok {
            Change::WentUp
        } else {
            Change::WentDown
        }
    }

    /// True while results disagree with the state (check at the fast interval).
    pub fn in_transition(&self) -> bool {
        self.initial || self.count > 0
    }

    /// The state another lbd process had (an upgrade hands it over): past the initial
    /// state, `count` results against `up` so far.
    pub fn resumed(up: bool, count: u32) -> Health {
        Health {
            up,
            initial: false,
            count,
        }
    }

    /// Results against the current state so far (what [`Health::resumed`] takes).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// `"1/3 down"` while an UP server fails, `"1/2 up"` while a DOWN one recovers.
    pub fn transition(&self, rise: u32, fall: u32) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        Some(if self.up {
            format!("{}/{} down", self.count, fall)
        } else {
            format!("{}/{} up", self.count, rise)
        })
    }
}

/// Every check status a probe or a client's failed connect records (HAProxy's names),
/// and `INI` before the first.
pub const CHECK_STATUSES: &[&str] = &[
    "INI", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7OK", "L7TOUT", "L7RSP", "L7STS",
];

/// The static name of a check status read back from another process, if it is one.
pub fn check_status(name: &str) -> Option<&'static str> {
    CHECK_STATUSES.iter().copied().find(|s| *s == name)
}

/// A check ready to run: the config plus a prepared TLS client config.
#[derive(Clone)]
pub struct Probe {
    pub kind: CheckKind,
    pub path: String,
    pub expect: Vec<u16>,
    pub host: Option<String>,
    pub timeout: Duration,
    /// The service's `proxy_protocol`: TLS, HTTP and HTTPS checks send a header first
    /// (`crate::proxy::check_header`), as HAProxy's checks of a `send-proxy` server do.
    pub proxy: Option<ProxyProtocol>,
    tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("expect", &self.expect)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Probe {
    pub fn new(check: &Check) -> Result<Self, CheckConfigError> {
        let tls = match check.kind {
            CheckKind::Tls | CheckKind::Https => Some(Arc::new(tls_config(check)?)),
            CheckKind::Tcp | CheckKind::Http => None,
        };
        Ok(Probe {
            kind: check.kind,
            path: check.path.clone(),
            expect: check.expect.clone(),
            host: check.host.clone(),
            timeout: check.timeout,
            proxy: None,
            tls,
        })
    }

    /// Checks that send the PROXY protocol header `proxy` first (`None`: no header).
    pub fn with_proxy(mut self, proxy: Option<ProxyProtocol>) -> Self {
        self.proxy = proxy;
        self
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub status: &'static str,
    pub desc: String,
    pub latency: Duration,
    /// The probe failed for a reason of this host (no descriptor, no buffer): it says
    /// nothing about the server and must not count as a check.
    pub local: bool,
}

/// Run one check against `addr`.
pub async fn probe(p: &Probe, addr: SocketAddr) -> Outcome {
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + p.timeout);
    let done = |ok: bool, status: &'static str, desc: String| Outcome {
        ok,
        status,
        desc,
        latency: start.elapsed(),
        local: false,
    };
    let tcp = match timeout_at(deadline, connect(addr, p.kind == CheckKind::Tcp)).await {
        Err(_) => return done(false, "L4TOUT", "connect timeout".into()),
        Ok(Err(e)) if crate::engine::is_local_error(&e) => {
            return Outcome {
                local: true,
                ..done(false, "L4CON", io_desc(&e))
            }
        }
        Ok(Err(e)) => return done(false, "L4CON", io_desc(&e)),
        Ok(Ok(s)) => s,
    };
    let mut tcp = tcp;
    let _ = tcp.set_nodelay(true);
    // A TCP check sends nothing: it never completes a handshake the application sees.
    if let (Some(v), false) = (p.proxy, p.kind == CheckKind::Tcp) {
        match timeout_at(deadline, crate::proxy::check_header(&mut tcp, v)).await {
            Err(_) => return done(false, "L4TOUT", "PROXY header not sent in time".into()),
            Ok(Err(e)) => return done(false, "L4CON", format!("PROXY header: {}", io_desc(&e))),
            Ok(Ok(())) => {}
        }
    }
    match (p.kind, &p.tls) {
        (CheckKind::Tcp, _) => {
            close_unacknowledged(tcp);
            done(true, "L4OK", String::new())
        }
        (CheckKind::Http, _) => {
            let (ok, status, desc) = http_get(p, addr, tcp, deadline).await;
            done(ok, status, desc)
        }
        (CheckKind::Tls | CheckKind::Https, Some(cfg)) => {
            let name = server_name(p.host.as_deref(), addr);
            let connector = tokio_rustls::TlsConnector::from(cfg.clone());
            let tls = match timeout_at(deadline, connector.connect(name, tcp)).await {
                Err(_) => return done(false, "L6TOUT", "TLS handshake timeout".into()),
                Ok(Err(e)) => return done(false, "L6RSP", io_desc(&e)),
                Ok(Ok(s)) => s,
            };
            if p.kind == CheckKind::Tls {
                // close_notify first: the server sees an orderly TLS close, not an error.
                let mut tls = tls;
                let _ = timeout_at(deadline, tls.shutdown()).await;
                return done(true, "L6OK", String::new());
            }
            let (ok, status, desc) = http_get(p, addr, tls, deadline).await;
            done(ok, status, desc)
        }
        (CheckKind::Tls | CheckKind::Https, None) => {
            done(false, "L6RSP", "TLS not configured".into())
        }
    }
}

/// Connect for a check. A pure TCP check (`quiet`) connects as HAProxy's do: with
/// TCP_QUICKACK off the last ACK of the handshake is delayed, so when the check closes at
/// once (see [`close_unacknowledged`]) the server has seen only SYN, SYN-ACK, RST. The
/// connection never reaches the server's accept queue, so the application behind it
/// (kube-apiserver, an ingress controller, iperf3...) logs no client that came and went.
async fn connect(addr: SocketAddr, quiet: bool) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if quiet {
        let _ = socket2::SockRef::from(&sock).set_tcp_quickack(false);
    }
    sock.connect(addr).await
}

/// Close with a reset (SO_LINGER 0), before the delayed ACK of the handshake leaves.
fn close_unacknowledged(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    drop(tcp);
}

fn server_name(host: Option<&str>, addr: SocketAddr) -> ServerName<'static> {
    host.and_then(|h| ServerName::try_from(h.to_owned()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
}

fn io_desc(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

/// `GET path HTTP/1.0`, then read the status line. Returns (ok, status, description).
async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    p: &Probe,
    addr: SocketAddr,
    mut s: S,
    deadline: tokio::time::Instant,
) -> (bool, &'static str, String) {
    let host = match &p.host {
        Some(h) => h.clone(),
        None => addr.to_string(),
    };
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lbd-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        p.path
    );
    let exchange = async {
        s.write_all(req.as_bytes()).await?;
        s.flush().await?;
        let mut buf = [0u8; 512];
        let mut n = 0;
        while n < buf.len() {
            let m = s.read(&mut buf[n..]).await?;
            if m == 0 {
                break;
            }
            n += m;
            if buf[..n].contains(&b'\n') {
                break;
            }
        }
        Ok::<_, std::io::Error>(parse_status(&buf[..n]))
    };
    match timeout_at(deadline, exchange).await {
        Err(_) => (false, "L7TOUT", "HTTP response timeout".into()),
        Ok(Err(e)) => (false, "L7RSP", io_desc(&e)),
        Ok(Ok(None)) => (false, "L7RSP", "malformed HTTP response".into()),
        Ok(Ok(Some(code))) => {
            let desc = format!("HTTP {code}");
            if p.expect.contains(&code) {
                (true, "L7OK", desc)
            } else {
                (false, "L7STS", desc)
            }
        }
    }
}

/// The status code of an HTTP/1.x status line.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(check: &Check) -> Result<ClientConfig, CheckConfigError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &check.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(ca).map_err(|source| CheckConfigError::Ca {
                    path: ca.clone(),
                    source,
                })?
            {
                let cert = cert.map_err(|source| CheckConfigError::Ca {
                    path: ca.clone(),
                    source,
                })?;
                roots.add(cert).map_err(|e| CheckConfigError::CaEmpty {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            if roots.is_empty() {
                return Err(CheckConfigError::CaEmpty {
                    path: ca.clone(),
                    reason: "no certificate in file".into(),
                });
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| CheckConfigError::Verifier(e.to_string()))?;
            builder.with_webpki_verifier(verifier)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider))),
    };
    match (&check.client_cert, &check.client_key) {
        (Some(cert), Some(key)) => {
            let chain = load_chain(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| {
                CheckConfigError::ClientKey {
                    path: key.clone(),
                    source,
                }
            })?;
            Ok(builder.with_client_auth_cert(chain, key)?)
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(CheckConfigError::ClientPair),
    }
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CheckConfigError> {
    let err = |source| CheckConfigError::ClientCert {
        path: path.to_owned(),
        source,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(err)?
        .map(|c| c.map_err(err))
        .collect()
}

pub use common::tls::{unverified_client_config, AnyServerCert};

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// An upgrade hands a server's check status over by name: a name missing from the
    /// list would make the new process start that server unchecked.
    #[test]
    fn every_check_status_written_is_in_the_list() {
        let sources = [include_str!("health.rs"), include_str!("engine/connect.rs")];
        let mut found = 0;
        for src in sources {
            for (i, _) in src.match_indices("\"L") {
                let name: String = src[i + 1..]
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect();
                let quoted = src[i + 1 + name.len()..].starts_with('"');
                if quoted && name.len() >= 4 && name[1..2].chars().all(|c| c.is_ascii_digit()) {
                    found += 1;
                    assert!(
                        check_status(&name).is_some(),
                        "{name} is not in CHECK_STATUSES"
                    );
                }
            }
        }
        assert!(found >= 10, "only {found} status names found");
        for s in CHECK_STATUSES {
            assert_eq!(check_status(s), Some(*s));
        }
        assert_eq!(check_status(&format!("L{}XX", 9)), None);
    }

    #[test]
    fn first_result_is_decisive_then_rise_and_fall_count() {
        let mut h = Health::default();
        assert!(h.up && h.in_transition());
        assert_eq!(h.record(false, 2, 3), Change::WentDown);
        assert!(!h.in_transition());
        assert_eq!(h.record(true, 2, 3), Change::None);
        assert_eq!(h.transition(2, 3).as_deref(), Some("1/2 up"));
        assert_eq!(h.record(false, 2, 3), Change::None);
        assert_eq!(h.transition(2, 3), None);
        assert_eq!(h.record(true, 2, 3), Change::None);
        assert_eq!(h.record(true, 2, 3), Change::WentUp);
        assert_eq!(h.record(false, 2, 3), Change::None);
        assert_eq!(h.record(false, 2, 3), Change::None);
        assert_eq!(h.transition(2, 3).as_deref(), Some("2/3 down"));
        assert!(h.in_transition());
        assert_eq!(h.record(false, 2, 3), Change::WentDown);
        assert!(!h.up);
    }

    #[test]
    fn first_success_keeps_up_without_change() {
        let mut h = Health::default();
        assert_eq!(h.record(true, 2, 2), Change::None);
        assert!(h.up && !h.in_transition());
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 401 Unauthorized\r\n"), Some(401));
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\nx"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    fn check(kind: CheckKind) -> Check {
        Check {
            kind,
            path: "/readyz".into(),
            expect: vec![200, 401],
            host: None,
            interval: Duration::from_millis(200),
            fast_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
            ca: None,
            client_cert: None,
            client_key: None,
        }
    }

    /// A one-shot HTTP server answering `status` to every request.
    async fn http_server(status: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_check_ok_and_refused() {
        let p = Probe::new(&check(CheckKind::Tcp)).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let o = probe(&p, l.local_addr().unwrap()).await;
        assert_eq!((o.ok, o.status), (true, "L4OK"));
        let dead = l.local_addr().unwrap();
        drop(l);
        let o = probe(&p, dead).await;
        assert_eq!(
            (o.ok, o.status, o.desc.as_str()),
            (false, "L4CON", "connection refused")
        );
    }

    #[tokio::test]
    async fn http_check_expects_statuses() {
        let p = Probe::new(&check(CheckKind::Http)).unwrap();
        let o = probe(&p, http_server("401 Unauthorized").await).await;
        assert_eq!(
            (o.ok, o.status, o.desc.as_str()),
            (true, "L7OK", "HTTP 401")
        );
        let o = probe(&p, http_server("503 Service Unavailable").await).await;
        assert_eq!(
            (o.ok, o.status, o.desc.as_str()),
            (false, "L7STS", "HTTP 503")
        );
    }

    #[tokio::test]
    async fn http_check_times_out_on_a_silent_server() {
        let p = Probe::new(&check(CheckKind::Http)).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let o = probe(&p, addr).await;
        assert_eq!((o.ok, o.status), (false, "L7TOUT"));
        assert!(o.latency >= Duration::from_millis(450), "{:?}", o.latency);
    }

    /// A TLS server with a fresh self-signed certificate; answers HTTP `status`.
    async fn https_server(status: &'static str) -> SocketAddr {
        tls_server(status, None).await
    }

    /// Same, requiring a client certificate signed by `client_ca` when given.
    async fn tls_server(
        status: &'static str,
        client_ca: Option<CertificateDer<'static>>,
    ) -> SocketAddr {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca).unwrap();
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(v)
            }
        };
        let cfg = builder.with_single_cert(vec![cert], key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn client_certificate_is_presented_when_configured() {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(vec!["lbd-check".to_owned()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        let addr = tls_server("200 OK", Some(ca.der().clone())).await;
        // Anonymous: the server refuses (k3s would answer 401; a strict server closes).
        let p = Probe::new(&check(CheckKind::Https)).unwrap();
        let o = probe(&p, addr).await;
        assert!(!o.ok, "{o:?}");
        // With the client certificate and key: HTTP 200.
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, client.pem()).unwrap();
        std::fs::write(&key_path, client_key.serialize_pem()).unwrap();
        let mut c = check(CheckKind::Https);
        c.client_cert = Some(cert_path);
        c.client_key = Some(key_path);
        let p = Probe::new(&c).unwrap();
        let o = probe(&p, addr).await;
        assert_eq!(
            (o.ok, o.status, o.desc.as_str()),
            (true, "L7OK", "HTTP 200"),
            "{o:?}"
        );
        // Only one of the pair is a configuration error.
        let mut c = check(CheckKind::Https);
        c.client_key = None;
        c.client_cert = Some(dir.path().join("c.pem"));
        assert!(matches!(Probe::new(&c), Err(CheckConfigError::ClientPair)));
    }

    #[tokio::test]
    async fn tls_and_https_checks_accept_a_self_signed_server() {
        let addr = https_server("401 Unauthorized").await;
        let p = Probe::new(&check(CheckKind::Tls)).unwrap();
        let o = probe(&p, addr).await;
        assert_eq!((o.ok, o.status), (true, "L6OK"), "{o:?}");
        let p = Probe::new(&check(CheckKind::Https)).unwrap();
        let o = probe(&p, addr).await;
        assert_eq!(
            (o.ok, o.status, o.desc.as_str()),
            (true, "L7OK", "HTTP 401"),
            "{o:?}"
        );
        // A plain TCP server is not a TLS server.
        let plain = http_server("200 OK").await;
        let o = probe(&p, plain).await;
        assert_eq!((o.ok, o.status), (false, "L6RSP"), "{o:?}");
    }

    #[tokio::test]
    async fn a_ca_that_did_not_sign_the_server_fails_the_handshake() {
        let addr = https_server("200 OK").await;
        let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, other.cert.pem()).unwrap();
        let mut c = check(CheckKind::Https);
        c.ca = Some(ca);
        c.host = Some("localhost".into());
        let p = Probe::new(&c).unwrap();
        let o = probe(&p, addr).await;
        assert_eq!((o.ok, o.status), (false, "L6RSP"), "{o:?}");
    }

    #[test]
    fn missing_ca_file_is_a_config_error() {
        let mut c = check(CheckKind::Https);
        c.ca = Some("/nonexistent/ca.pem".into());
        let e = Probe::new(&c).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("check CA bundle /nonexistent/ca.pem"),
            "{e}"
        );
    }
}
