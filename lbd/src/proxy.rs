//! The PROXY protocol on both of lbd's sides (the codec is the `proxy-proto` crate).
//!
//! ```text
//!   balancer in front --[header][client bytes]--> lbd --[header][client bytes]--> server
//!        accept_proxy: [`accept`]                          proxy_protocol: [`send`]
//!                                                  health checks: [`check_header`]
//! ```
//!
//! - [`accept`] (a service with `accept_proxy`): a connection from outside
//!   `trusted_proxies` is closed before a byte is read; otherwise the header is peeked
//!   (`MSG_PEEK`) until it is whole, within `timeouts.proxy_header`, and then exactly its
//!   bytes are consumed, so what follows stays in the socket for the copy phase (splice).
//!   A refusal is counted by cause ([`Refusals`], in the snapshot) and logged, one line per
//!   second per service at most.
//! - [`send`] (a service with `proxy_protocol`): right after the connect, the header is
//!   written together with whatever the client has sent already, in one write (one
//!   segment), so the header costs no packet of its own when the client spoke first, and
//!   never waits for the client when it did not (a server that speaks first gets the
//!   header at once). No round trip is added. A service without `proxy_protocol` never
//!   comes here.
//! - [`check_header`]: what a health check sends first. Version 2: LOCAL (the connection
//!   is lbd's own, not a client's: the server uses its real endpoints), as HAProxy's
//!   checks do. Version 1 has no LOCAL: the line carries the check connection's own
//!   endpoints, as HAProxy sends and the specification recommends for checks (section
//!   2.1). TCP checks send nothing: they never complete a handshake the server's
//!   application could see (see `health::probe`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::config::{AcceptProxy, ProxyProtocol, ProxyTlvs};
use common::proto::lbd::ProxyRefused;
use nix::sys::socket::MsgFlags;
use proxy_proto::{self as pp, Addresses, Command, Decoded};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::copy;

/// The longest header accepted from a client (a v1 line is at most 107 bytes; a v2 header
/// with the TLVs cloud balancers add is well under 1 KiB).
pub const MAX_HEADER: usize = 4096;

/// `accept_proxy` refusals of one service, by cause.
#[derive(Debug, Default)]
pub struct Refusals {
    untrusted: AtomicU64,
    malformed: AtomicU64,
    timeout: AtomicU64,
    log: LogLimit,
}

impl Refusals {
    pub fn snapshot(&self) -> ProxyRefused {
        ProxyRefused {
            untrusted: self.untrusted.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            timeout: self.timeout.load(Relaxed),
        }
    }

    fn refuse(&self, why: Why, service: &str, peer: SocketAddr, detail: &dyn std::fmt::Display) {
        let counter = match why {
            Why::Untrusted => &self.untrusted,
            Why::Malformed => &self.malformed,
            Why::Timeout => &self.timeout,
        };
        counter.fetch_add(1, Relaxed);
        if let Some(not_logged) = self.log.allow() {
            warn!(
                service,
                client = %peer,
                reason = why.as_str(),
                detail = %detail,
                not_logged,
                "PROXY header refused: connection closed"
            );
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Why {
    Untrusted,
    Malformed,
    Timeout,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Untrusted => "untrusted",
            Why::Malformed => "malformed",
            Why::Timeout => "timeout",
        }
    }
}

/// One log line per [`LogLimit::EVERY`] at most; the next line says how many were not
/// logged meanwhile (a flood of bad headers must not flood the journal).
#[derive(Debug, Default)]
struct LogLimit {
    /// Milliseconds since [`epoch`] of the last line, plus one (0: none yet).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimit {
    const EVERY: Duration = Duration::from_secs(1);

    /// `Some(lines not logged since the last one)` if this one may be logged.
    fn allow(&self) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        self.allow_at(now)
    }

    /// [`LogLimit::allow`] at `now` (milliseconds since [`epoch`], plus one).
    fn allow_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Relaxed);
        let every = u64::try_from(Self::EVERY.as_millis()).unwrap_or(1000);
        if last != 0 && now.saturating_sub(last) < every {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// What a trusted client's header said.
#[derive(Debug)]
pub struct Proxied {
    /// The real client and what it connected to; `None` (LOCAL, v1 UNKNOWN): the
    /// balancer's own connection (its health check of lbd), used as it is.
    pub addresses: Option<Addresses>,
    /// Version 2 TLVs to pass on to the server (all but CRC32C and NOOP, which describe
    /// the header itself, not the client).
    pub tlvs: Box<[u8]>,
}

impl Proxied {
    /// The address clients are balanced by (`balance = "source"`).
    pub fn client(&self, peer: SocketAddr) -> SocketAddr {
        self.addresses.map_or(peer, |a| a.source)
    }
}

/// `accept_proxy`: read the client's header. `None`: refused (counted, logged) or the
/// client left; the connection is closed by the caller.
pub async fn accept(
    client: &TcpStream,
    peer: SocketAddr,
    ap: &AcceptProxy,
    refusals: &Refusals,
    service: &str,
) -> Option<Proxied> {
    if !ap.trusts(peer.ip()) {
        refusals.refuse(Why::Untrusted, service, peer, &"not in trusted_proxies");
        return None;
    }
    let mut buf = copy::take_buf();
    let read = tokio::time::timeout(ap.timeout, read_header(client, &mut buf[..MAX_HEADER])).await;
    copy::give_buf(buf);
    match read {
        Err(_) => {
            let limit = format!("no whole header within {:?}", ap.timeout);
            refusals.refuse(Why::Timeout, service, peer, &limit);
            None
        }
        Ok(Err(ReadError::Decode(e))) => {
            refusals.refuse(Why::Malformed, service, peer, &e);
            None
        }
        Ok(Err(ReadError::Truncated(n))) => {
            let detail = format!("closed after {n} bytes of a header");
            refusals.refuse(Why::Malformed, service, peer, &detail);
            None
        }
        Ok(Err(ReadError::Closed)) => {
            // Connected and closed without a byte: a balancer's TCP check of lbd.
            debug!(client = %peer, "closed before sending a PROXY header");
            None
        }
        Ok(Err(ReadError::Io(e))) => {
            debug!(client = %peer, error = %e, "reading the PROXY header failed");
            None
        }
        Ok(Ok(p)) => {
            if let Some(a) = &p.addresses {
                debug!(client = %peer, source = %a.source, destination = %a.destination, "PROXY header accepted");
            }
            Some(p)
        }
    }
}

#[derive(Debug)]
enum ReadError {
    /// Closed before any byte.
    Closed,
    /// Closed after this many bytes, a header's beginning.
    Truncated(usize),
    Decode(pp::DecodeError),
    Io(io::Error),
}

enum Peeked {
    Whole(usize, Proxied),
    Closed(usize),
    Bad(pp::DecodeError),
}

/// Peek until a whole header is there, then consume exactly it.
async fn read_header(client: &TcpStream, buf: &mut [u8]) -> Result<Proxied, ReadError> {
    let fd = client.as_raw_fd();
    let limit = buf.len();
    let (len, proxied) = loop {
        let ready = client
            .ready(Interest::READABLE)
            .await
            .map_err(ReadError::Io)?;
        let peeked = client.try_io(Interest::READABLE, || {
            let n = nix::sys::socket::recv(fd, buf, MsgFlags::MSG_PEEK).map_err(io::Error::from)?;
            match pp::decode(&buf[..n], limit) {
                Ok(Decoded::Complete { header, len }) => Ok(Peeked::Whole(len, proxied(&header))),
                Err(e) => Ok(Peeked::Bad(e)),
                // The peer closed: what is here is all there will be.
                Ok(Decoded::Incomplete { .. }) if n == 0 || ready.is_read_closed() => {
                    Ok(Peeked::Closed(n))
                }
                // Wait for more: a would-block clears the readiness, so the next `ready`
                // sleeps until new bytes arrive instead of peeking the same ones again.
                Ok(Decoded::Incomplete { .. }) => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match peeked {
            Ok(Peeked::Whole(len, p)) => break (len, p),
            Ok(Peeked::Bad(e)) => return Err(ReadError::Decode(e)),
            Ok(Peeked::Closed(0)) => return Err(ReadError::Closed),
            Ok(Peeked::Closed(n)) => return Err(ReadError::Truncated(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    };
    // The bytes are in the socket (peeked): consume exactly the header.
    let mut got = 0;
    while got < len {
        client.readable().await.map_err(ReadError::Io)?;
        match client.try_read(&mut buf[got..len]) {
            Ok(0) => return Err(ReadError::Truncated(got)),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(proxied)
}

fn proxied(h: &pp::Header<'_>) -> Proxied {
    let mut tlvs = Vec::new();
    for t in h.tlvs {
        if t.kind != pp::tlv::CRC32C && t.kind != pp::tlv::NOOP {
            tlvs.push(t.kind);
            tlvs.extend_from_slice(&u16::try_from(t.value.len()).unwrap_or(0).to_be_bytes());
            tlvs.extend_from_slice(t.value);
        }
    }
    Proxied {
        addresses: match h.command {
            Command::Proxy => h.addresses,
            Command::Local => None,
        },
        tlvs: tlvs.into_boxed_slice(),
    }
}

/// What the header to a server says, besides the service's settings.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The client's connection to lbd.
    pub peer: SocketAddr,
    /// What `accept_proxy` read from it, if the service has it.
    pub proxied: Option<&'a Proxied>,
    /// This node's name and the connection's number, for the unique-id TLV.
    pub node: &'a str,
    pub id: u64,
}

/// The header to a server (and the client's first bytes, if they are already here) in one
/// write. `counters` count the client's bytes moved here (not the header's).
pub async fn send(
    version: ProxyProtocol,
    tlvs: ProxyTlvs,
    origin: Origin<'_>,
    client: &TcpStream,
    server: &TcpStream,
    counters: [&AtomicU64; 2],
) -> io::Result<()> {
    let mut buf = copy::take_buf();
    let r = send_in(
        &mut buf[..],
        version,
        tlvs,
        origin,
        client,
        server,
        counters,
    )
    .await;
    copy::give_buf(buf);
    r
}

async fn send_in(
    buf: &mut [u8],
    version: ProxyProtocol,
    tlvs: ProxyTlvs,
    origin: Origin<'_>,
    client: &TcpStream,
    server: &TcpStream,
    counters: [&AtomicU64; 2],
) -> io::Result<()> {
    let addresses = match origin.proxied.map(|p| p.addresses) {
        Some(Some(a)) => a,
        // Not proxied, or the balancer's own connection: this connection's endpoints.
        _ => Addresses {
            source: origin.peer,
            destination: client.local_addr()?,
        },
    };
    let n = encode(buf, version, tlvs, &addresses, origin)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // What the client has sent already rides in the same segment; nothing is waited for.
    let data = match client.try_read(&mut buf[n..]) {
        Ok(k) => k,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    let total = n + data;
    let mut off = 0;
    while off < total {
        match server.try_write(&buf[off..total]) {
            Ok(k) => off += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => server.writable().await?,
            Err(e) => return Err(e),
        }
    }
    for c in counters {
        c.fetch_add(data as u64, Relaxed);
    }
    Ok(())
}

fn encode(
    buf: &mut [u8],
    version: ProxyProtocol,
    tlvs: ProxyTlvs,
    a: &Addresses,
    origin: Origin<'_>,
) -> Result<usize, pp::BufferTooSmall> {
    match version {
        ProxyProtocol::V1 => pp::write_v1(buf, Some(a)),
        ProxyProtocol::V2 => {
            let mut w = pp::V2Writer::new(buf, Command::Proxy, Some(a))?;
            if tlvs.crc32c {
                w.crc32c()?;
            }
            if let Some(p) = origin.proxied {
                w.raw_tlvs(&p.tlvs)?;
            }
            if tlvs.unique_id {
                use std::io::Write as _;
                let mut id = [0u8; pp::tlv::UNIQUE_ID_MAX];
                let mut c = io::Cursor::new(&mut id[..]);
                // A node name longer than the TLV allows is cut (names are short).
                let _ = write!(c, "{}-{}", origin.node, origin.id);
                let len = usize::try_from(c.position()).unwrap_or(0);
                w.tlv(pp::tlv::UNIQUE_ID, &id[..len])?;
            }
            w.finish()
        }
    }
}

/// Send what a health check sends first (see the module comment).
pub async fn check_header(tcp: &mut TcpStream, version: ProxyProtocol) -> io::Result<()> {
    let mut buf = [0u8; pp::V1_WRITE_MAX];
    let n = match version {
        ProxyProtocol::V2 => {
            pp::V2Writer::new(&mut buf, Command::Local, None).and_then(pp::V2Writer::finish)
        }
        ProxyProtocol::V1 => {
            let a = Addresses {
                source: tcp.local_addr()?,
                destination: tcp.peer_addr()?,
            };
            pp::write_v1(&mut buf, Some(&a))
        }
    }
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    tcp.write_all(&buf[..n]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn ap(trusted: &str, timeout_ms: u64) -> AcceptProxy {
        let net = match trusted.parse::<IpAddr>().unwrap() {
            IpAddr::V4(addr) => {
                common::config::IpNet::V4(common::config::IpNet4 { addr, prefix: 8 })
            }
            IpAddr::V6(addr) => {
                common::config::IpNet::V6(common::config::IpNet6 { addr, prefix: 128 })
            }
        };
        AcceptProxy {
            trusted: vec![net],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, peer) = l.accept().await.unwrap();
        (c, s, peer)
    }

    /// A header sent one byte at a time is read whole, without spinning, and the bytes
    /// after it stay in the socket for the copy phase.
    #[tokio::test]
    async fn a_header_in_pieces_is_read_whole_and_the_rest_stays() {
        let (mut c, s, peer) = pair().await;
        let r = Refusals::default();
        let writer = tokio::spawn(async move {
            for b in b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\r\n" {
                c.write_all(&[*b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            c.write_all(b"hello").await.unwrap();
            c
        });
        let p = accept(&s, peer, &ap("127.0.0.0", 2000), &r, "t")
            .await
            .unwrap();
        assert_eq!(
            p.addresses.unwrap().source,
            "192.0.2.1:40000".parse().unwrap()
        );
        let _c = writer.await.unwrap();
        let mut s = s;
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        assert_eq!(r.snapshot(), ProxyRefused::default());
    }

    #[tokio::test]
    async fn refusals_are_counted_by_cause() {
        let r = Refusals::default();
        // Untrusted: nothing is read.
        let (_c, s, peer) = pair().await;
        assert!(accept(&s, peer, &ap("10.0.0.0", 2000), &r, "t")
            .await
            .is_none());
        // Malformed.
        let (mut c, s, peer) = pair().await;
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(accept(&s, peer, &ap("127.0.0.0", 2000), &r, "t")
            .await
            .is_none());
        // Cut short by the client's close.
        let (mut c, s, peer) = pair().await;
        c.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
        c.shutdown().await.unwrap();
        assert!(accept(&s, peer, &ap("127.0.0.0", 2000), &r, "t")
            .await
            .is_none());
        // Silent: the timeout.
        let (_c, s, peer) = pair().await;
        let t = Instant::now();
        assert!(accept(&s, peer, &ap("127.0.0.0", 200), &r, "t")
            .await
            .is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
        // Closed at once: a balancer's TCP check, not counted.
        let (c, s, peer) = pair().await;
        drop(c);
        assert!(accept(&s, peer, &ap("127.0.0.0", 2000), &r, "t")
            .await
            .is_none());
        assert_eq!(
            r.snapshot(),
            ProxyRefused {
                untrusted: 1,
                malformed: 2,
                timeout: 1
            }
        );
    }

    #[test]
    fn the_log_is_limited_and_says_how_many_were_not_logged() {
        let l = LogLimit::default();
        assert_eq!(l.allow_at(10), Some(0));
        for t in [11, 500, 1009] {
            assert_eq!(l.allow_at(t), None);
        }
        // A second later the next line carries the three.
        assert_eq!(l.allow_at(1010), Some(3));
        assert_eq!(l.allow_at(1011), None);
    }

    /// With the client's bytes already there, the header and they leave in one write.
    #[tokio::test]
    async fn the_header_and_the_first_bytes_go_in_one_write() {
        let (mut outer_c, pc, peer) = pair().await;
        let (ps, mut outer_s, _) = pair().await;
        outer_c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        pc.readable().await.unwrap();
        let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
        let origin = Origin {
            peer,
            proxied: None,
            node: "n1",
            id: 7,
        };
        let tlvs = ProxyTlvs {
            crc32c: true,
            unique_id: true,
        };
        send(ProxyProtocol::V2, tlvs, origin, &pc, &ps, [&a, &b])
            .await
            .unwrap();
        drop(ps);
        let mut got = Vec::new();
        outer_s.read_to_end(&mut got).await.unwrap();
        let Ok(Decoded::Complete { header, len }) = pp::decode(&got, MAX_HEADER) else {
            panic!("{got:?}");
        };
        assert_eq!(header.addresses.unwrap().source, peer);
        assert_eq!(header.tlvs.get(pp::tlv::UNIQUE_ID), Some(&b"n1-7"[..]));
        assert!(header.tlvs.get(pp::tlv::CRC32C).is_some());
        assert_eq!(&got[len..], b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!((a.load(Relaxed), b.load(Relaxed)), (18, 18));
    }
}
