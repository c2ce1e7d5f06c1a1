//! The PROXY protocol, versions 1 and 2, as a pure codec (HAProxy's
//! `doc/proxy-protocol.txt`, the specification; section numbers below are its own).
//!
//! A proxy that sits between a client and a server loses the client's address: the server
//! sees the proxy's. The PROXY protocol puts one header before the first byte of the
//! connection saying who the client was (source) and what it connected to (destination).
//!
//! ```text
//!   decode(bytes, max_len) -> Decoded::Complete { header, len }   the header is bytes[..len]
//!                           | Decoded::Incomplete { at_least }    read more, then call again
//!                           | DecodeError::*                      close the connection
//!   write_v1(buf, addresses)              -> "PROXY TCP4 ...\r\n" (or UNKNOWN) into buf
//!   V2Writer::new(buf, command, addresses) .tlv(..) .crc32c() .finish() -> the binary form
//! ```
//!
//! The crate owns no socket, no runtime and no clock; it depends on std and thiserror only,
//! so the fuzz target (`fuzz/`) links it alone. The decoder never reads past `bytes`, never
//! panics and never allocates; a header it accepts re-encodes to one it decodes the same
//! (tests and the fuzz target check both).
//!
//! Addresses: an IPv4 client of a dual-stack socket shows as `::ffff:a.b.c.d`. The writers
//! send such an address as IPv4 (TCP4 / AF_INET), as the client really used IPv4; when one
//! side is IPv4 and the other IPv6, both go as IPv6 (the IPv4 one mapped), as HAProxy does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

mod crc32c;
pub use crc32c::crc32c;

/// The 12 bytes every version 2 header starts with (section 2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a version 2 header: signature, version/command, family, length.
pub const V2_FIXED_LEN: usize = 16;
/// The longest version 1 line, CRLF included (section 2.1).
pub const V1_MAX_LEN: usize = 107;
/// The longest version 1 line lbd's writer produces (TCP6 with both addresses at full
/// length), CRLF included.
pub const V1_WRITE_MAX: usize = 104;
/// A version 2 header with IPv6 addresses and no TLV.
pub const V2_INET6_LEN: usize = V2_FIXED_LEN + 36;

/// Registered TLV types (section 2.2).
pub mod tlv {
    pub const ALPN: u8 = 0x01;
    pub const AUTHORITY: u8 = 0x02;
    pub const CRC32C: u8 = 0x03;
    pub const NOOP: u8 = 0x04;
    pub const UNIQUE_ID: u8 = 0x05;
    pub const SSL: u8 = 0x20;
    pub const NETNS: u8 = 0x30;
    /// The longest `UNIQUE_ID` value allowed (section 2.2.5).
    pub const UNIQUE_ID_MAX: usize = 128;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Version 2's command (section 2.2). Version 1 has none: its `UNKNOWN` decodes as
/// [`Command::Local`] (use the connection's own addresses), everything else as `Proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The proxy made the connection itself (a health check): the receiver uses the real
    /// connection's endpoints.
    Local,
    /// Relayed on behalf of a client: the header's addresses are the client's.
    Proxy,
}

/// The relayed connection's endpoints: the client and the address it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// A decoded header. `addresses` is `None` where the receiver must use the connection's
/// own endpoints: LOCAL, v1 `UNKNOWN`, and v2 families this crate does not carry (UNSPEC,
/// UNIX, UDP: the specification's "fall back to UNSPEC").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub version: Version,
    pub command: Command,
    pub addresses: Option<Addresses>,
    /// Version 2's TLVs, already checked to be well formed (and the CRC32C, if one is
    /// there, to match). Empty for version 1.
    pub tlvs: Tlvs<'a>,
}

/// What [`decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole header: the first `len` bytes; what follows is the client's data.
    Complete { header: Header<'a>, len: usize },
    /// Everything so far is a valid beginning; at least `at_least` bytes in all are needed.
    Incomplete { at_least: usize },
}

/// Why bytes are not a PROXY header. Each is a reason to close the connection
/// (section 2.1: "any sequence which does not exactly match the protocol must be
/// discarded").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a PROXY protocol header (neither \"PROXY \" nor the version 2 signature)")]
    Signature,
    #[error("version 1: no CRLF in the first 107 bytes")]
    V1TooLong,
    #[error("version 1: a CR or LF that is not the line's CRLF")]
    V1LineEnd,
    #[error("version 1: the protocol is not TCP4, TCP6 or UNKNOWN")]
    V1Protocol,
    #[error("version 1: fields not separated by exactly one space, or too few or too many")]
    V1Fields,
    #[error("version 1: an address that is not of the protocol's family")]
    V1Address,
    #[error(
        "version 1: a port that is not a decimal number from 0 to 65535 without leading zeros"
    )]
    V1Port,
    #[error("version 2: protocol version {0} (only 2 is defined)")]
    V2Version(u8),
    #[error("version 2: command {0} (only LOCAL 0 and PROXY 1 are defined)")]
    V2Command(u8),
    #[error("version 2: address family and protocol byte {0:#04x} is not defined")]
    V2Family(u8),
    #[error("version 2: length {len} is shorter than the family's addresses ({need} bytes)")]
    V2AddressLength { len: usize, need: usize },
    #[error("version 2: header of {len} bytes is longer than the {max} accepted")]
    V2TooLong { len: usize, max: usize },
    #[error("version 2: a TLV runs past the end of the header")]
    V2Tlv,
    #[error("version 2: CRC32C TLV of {0} bytes (must be 4)")]
    V2Crc32cLength(usize),
    #[error("version 2: the CRC32C does not match the header")]
    V2Crc32c,
}

/// Decode the header at the start of `bytes`. `max_len` bounds a version 2 header (its
/// length field allows 64 KiB; a receiver reads into a buffer of its own size). A prefix
/// of a valid header is [`Decoded::Incomplete`]; anything that can no longer become one is
/// an error, as early as the bytes show it.
pub fn decode(bytes: &[u8], max_len: usize) -> Result<Decoded<'_>, DecodeError> {
    match bytes.first() {
        None => Ok(Decoded::Incomplete { at_least: 1 }),
        Some(b'P') => decode_v1(bytes),
        Some(b'\r') => decode_v2(bytes, max_len),
        Some(_) => Err(DecodeError::Signature),
    }
}

const V1_PREFIX: &[u8] = b"PROXY ";

fn decode_v1(bytes: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let n = bytes.len().min(V1_PREFIX.len());
    if bytes[..n] != V1_PREFIX[..n] {
        return Err(DecodeError::Signature);
    }
    let window = &bytes[..bytes.len().min(V1_MAX_LEN)];
    // The line ends at the first CR, which must be followed by LF; a LF before it is a bare
    // LF (section 2.1: "must not tolerate a single CR or LF").
    let cr = window.iter().position(|&b| b == b'\r');
    let lf = window.iter().position(|&b| b == b'\n');
    if lf.is_some_and(|l| cr.is_none_or(|c| l < c)) {
        return Err(DecodeError::V1LineEnd);
    }
    let end = match cr {
        None if window.len() == V1_MAX_LEN => return Err(DecodeError::V1TooLong),
        None => {
            return Ok(Decoded::Incomplete {
                at_least: bytes.len().max(V1_PREFIX.len()) + 2,
            })
        }
        Some(c) if c + 1 == window.len() => {
            return if window.len() == V1_MAX_LEN {
                Err(DecodeError::V1TooLong)
            } else {
                Ok(Decoded::Incomplete { at_least: c + 2 })
            };
        }
        Some(c) if window[c + 1] != b'\n' => return Err(DecodeError::V1LineEnd),
        Some(c) => c,
    };
    let line = &bytes[V1_PREFIX.len().min(end)..end];
    if end < V1_PREFIX.len() {
        return Err(DecodeError::Signature);
    }
    let mut fields = line.split(|&b| b == b' ');
    let proto = fields.next().unwrap_or_default();
    let family = match proto {
        // The rest of an UNKNOWN line is ignored, whatever it is.
        b"UNKNOWN" => None,
        b"TCP4" => Some(false),
        b"TCP6" => Some(true),
        _ => return Err(DecodeError::V1Protocol),
    };
    let addresses = match family {
        None => None,
        Some(v6) => {
            let f: [&[u8]; 4] = [
                fields.next().ok_or(DecodeError::V1Fields)?,
                fields.next().ok_or(DecodeError::V1Fields)?,
                fields.next().ok_or(DecodeError::V1Fields)?,
                fields.next().ok_or(DecodeError::V1Fields)?,
            ];
            if fields.next().is_some() || f.iter().any(|x| x.is_empty()) {
                return Err(DecodeError::V1Fields);
            }
            let ip = |s: &[u8]| -> Result<IpAddr, DecodeError> {
                let s = std::str::from_utf8(s).map_err(|_| DecodeError::V1Address)?;
                if v6 {
                    s.parse::<Ipv6Addr>().map(IpAddr::V6)
                } else {
                    s.parse::<Ipv4Addr>().map(IpAddr::V4)
                }
                .map_err(|_| DecodeError::V1Address)
            };
            Some(Addresses {
                source: SocketAddr::new(ip(f[0])?, v1_port(f[2])?),
                destination: SocketAddr::new(ip(f[1])?, v1_port(f[3])?),
            })
        }
    };
    Ok(Decoded::Complete {
        header: Header {
            version: Version::V1,
            command: if addresses.is_some() {
                Command::Proxy
            } else {
                Command::Local
            },
            addresses,
            tlvs: Tlvs(&[]),
        },
        len: end + 2,
    })
}

fn v1_port(s: &[u8]) -> Result<u16, DecodeError> {
    let digits = !s.is_empty() && s.len() <= 5 && s.iter().all(u8::is_ascii_digit);
    if !digits || (s.len() > 1 && s[0] == b'0') {
        return Err(DecodeError::V1Port);
    }
    let n = s.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).map_err(|_| DecodeError::V1Port)
}

fn decode_v2(bytes: &[u8], max_len: usize) -> Result<Decoded<'_>, DecodeError> {
    let n = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..n] != V2_SIGNATURE[..n] {
        return Err(DecodeError::Signature);
    }
    if let Some(&vc) = bytes.get(12) {
        if vc >> 4 != 2 {
            return Err(DecodeError::V2Version(vc >> 4));
        }
        if vc & 0x0f > 1 {
            return Err(DecodeError::V2Command(vc & 0x0f));
        }
    }
    let need = match bytes.get(13) {
        Some(&fam) => family_len(fam)?,
        None => 0,
    };
    if bytes.len() < V2_FIXED_LEN {
        return Ok(Decoded::Incomplete {
            at_least: V2_FIXED_LEN,
        });
    }
    let (vc, fam) = (bytes[12], bytes[13]);
    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let total = V2_FIXED_LEN + len;
    if len < need {
        return Err(DecodeError::V2AddressLength { len, need });
    }
    if total > max_len {
        return Err(DecodeError::V2TooLong {
            len: total,
            max: max_len,
        });
    }
    if bytes.len() < total {
        return Ok(Decoded::Incomplete { at_least: total });
    }
    let block = &bytes[V2_FIXED_LEN..V2_FIXED_LEN + need];
    let tlvs = &bytes[V2_FIXED_LEN + need..total];
    check_tlvs(&bytes[..total], V2_FIXED_LEN + need)?;
    let command = if vc & 0x0f == 0 {
        Command::Local
    } else {
        Command::Proxy
    };
    // LOCAL: "the receiver must ... discard the protocol block including the family".
    let addresses = match (command, fam) {
        (Command::Proxy, 0x11) => {
            let ip = |i: usize| Ipv4Addr::new(block[i], block[i + 1], block[i + 2], block[i + 3]);
            let port = |i: usize| u16::from_be_bytes([block[i], block[i + 1]]);
            Some(Addresses {
                source: SocketAddr::new(IpAddr::V4(ip(0)), port(8)),
                destination: SocketAddr::new(IpAddr::V4(ip(4)), port(10)),
            })
        }
        (Command::Proxy, 0x21) => {
            let ip = |i: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&block[i..i + 16]);
                Ipv6Addr::from(a)
            };
            let port = |i: usize| u16::from_be_bytes([block[i], block[i + 1]]);
            Some(Addresses {
                source: SocketAddr::new(IpAddr::V6(ip(0)), port(32)),
                destination: SocketAddr::new(IpAddr::V6(ip(16)), port(34)),
            })
        }
        _ => None,
    };
    Ok(Decoded::Complete {
        header: Header {
            version: Version::V2,
            command,
            addresses,
            tlvs: Tlvs(tlvs),
        },
        len: total,
    })
}

/// The address block's length for a family/protocol byte, or an error for an undefined
/// one (section 2.2: "other values ... must be rejected as invalid by receivers").
fn family_len(fam: u8) -> Result<usize, DecodeError> {
    let proto = fam & 0x0f;
    if proto > 2 {
        return Err(DecodeError::V2Family(fam));
    }
    match fam >> 4 {
        0 => Ok(0),
        1 => Ok(12),
        2 => Ok(36),
        3 => Ok(216),
        _ => Err(DecodeError::V2Family(fam)),
    }
}

/// Every TLV of `header[from..]` within bounds; a CRC32C TLV of 4 bytes that matches.
fn check_tlvs(header: &[u8], from: usize) -> Result<(), DecodeError> {
    let mut at = from;
    let mut crc_at = None;
    while at < header.len() {
        if header.len() - at < 3 {
            return Err(DecodeError::V2Tlv);
        }
        let len = usize::from(u16::from_be_bytes([header[at + 1], header[at + 2]]));
        let value = at + 3;
        if header.len() - value < len {
            return Err(DecodeError::V2Tlv);
        }
        if header[at] == tlv::CRC32C {
            if len != 4 {
                return Err(DecodeError::V2Crc32cLength(len));
            }
            crc_at = Some(value);
        }
        at = value + len;
    }
    if let Some(v) = crc_at {
        // Section 2.2.3: the checksum of the whole header with the field as zeroes.
        let want = u32::from_be_bytes([header[v], header[v + 1], header[v + 2], header[v + 3]]);
        let mut c = crc32c::Crc::new();
        c.update(&header[..v]);
        c.update(&[0; 4]);
        c.update(&header[v + 4..]);
        if c.finish() != want {
            return Err(DecodeError::V2Crc32c);
        }
    }
    Ok(())
}

/// The TLV area of a version 2 header (checked well formed by [`decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tlvs<'a>(&'a [u8]);

/// One TLV: its type and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub kind: u8,
    pub value: &'a [u8],
}

impl<'a> Tlvs<'a> {
    /// The raw bytes (type, length, value, ...), e.g. to forward them.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> TlvIter<'a> {
        TlvIter(self.0)
    }

    /// The first TLV of this type.
    pub fn get(&self, kind: u8) -> Option<&'a [u8]> {
        self.iter().find(|t| t.kind == kind).map(|t| t.value)
    }
}

impl<'a> IntoIterator for Tlvs<'a> {
    type Item = Tlv<'a>;
    type IntoIter = TlvIter<'a>;
    fn into_iter(self) -> TlvIter<'a> {
        self.iter()
    }
}

/// Iterates TLVs; stops at the first malformed one (a [`Tlvs`] from [`decode`] has none).
#[derive(Debug, Clone)]
pub struct TlvIter<'a>(&'a [u8]);

impl<'a> Iterator for TlvIter<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        let b = self.0;
        if b.len() < 3 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([b[1], b[2]]));
        let value = b.get(3..3 + len)?;
        self.0 = &b[3 + len..];
        Some(Tlv { kind: b[0], value })
    }
}

/// The caller's buffer is too small for the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer too small for the PROXY header")]
pub struct BufferTooSmall;

/// An IPv4 address of a dual-stack socket (`::ffff:a.b.c.d`) as the IPv4 address it is.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

fn v6_of(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Both endpoints canonical; `true` when both are IPv4.
fn family(a: &Addresses) -> (SocketAddr, SocketAddr, bool) {
    let (s, d) = (canonical(a.source), canonical(a.destination));
    let v4 = s.is_ipv4() && d.is_ipv4();
    (s, d, v4)
}

/// A version 1 line into `buf`: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, or
/// `PROXY UNKNOWN\r\n` without addresses. Returns its length (at most [`V1_WRITE_MAX`]).
pub fn write_v1(buf: &mut [u8], addresses: Option<&Addresses>) -> Result<usize, BufferTooSmall> {
    use std::io::Write as _;
    let mut w = std::io::Cursor::new(buf);
    let r = match addresses {
        None => w.write_all(b"PROXY UNKNOWN\r\n"),
        Some(a) => {
            let (s, d, v4) = family(a);
            if v4 {
                write!(
                    w,
                    "PROXY TCP4 {} {} {} {}\r\n",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                )
            } else {
                write!(
                    w,
                    "PROXY TCP6 {} {} {} {}\r\n",
                    v6_of(s.ip()),
                    v6_of(d.ip()),
                    s.port(),
                    d.port()
                )
            }
        }
    };
    r.map_err(|_| BufferTooSmall)?;
    usize::try_from(w.position()).map_err(|_| BufferTooSmall)
}

/// Writes a version 2 header into a caller's buffer: the fixed part and the addresses at
/// [`V2Writer::new`], then TLVs, then [`V2Writer::finish`] sets the length (and the
/// CRC32C, if [`V2Writer::crc32c`] asked for one).
#[derive(Debug)]
pub struct V2Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    crc_at: Option<usize>,
}

impl<'b> V2Writer<'b> {
    /// `Command::Local` writes LOCAL with family UNSPEC and no address, as the sender of a
    /// health check should (section 2.2); `Proxy` without addresses writes family UNSPEC.
    pub fn new(
        buf: &'b mut [u8],
        command: Command,
        addresses: Option<&Addresses>,
    ) -> Result<V2Writer<'b>, BufferTooSmall> {
        if buf.len() < V2_FIXED_LEN {
            return Err(BufferTooSmall);
        }
        buf[..12].copy_from_slice(&V2_SIGNATURE);
        let mut w = V2Writer {
            buf,
            len: V2_FIXED_LEN,
            crc_at: None,
        };
        w.buf[12] = match command {
            Command::Local => 0x20,
            Command::Proxy => 0x21,
        };
        match (command, addresses) {
            (Command::Proxy, Some(a)) => {
                let (s, d, v4) = family(a);
                match (s.ip(), d.ip()) {
                    (IpAddr::V4(si), IpAddr::V4(di)) if v4 => {
                        w.buf[13] = 0x11;
                        w.put(&si.octets())?;
                        w.put(&di.octets())?;
                    }
                    (si, di) => {
                        w.buf[13] = 0x21;
                        w.put(&v6_of(si).octets())?;
                        w.put(&v6_of(di).octets())?;
                    }
                }
                w.put(&s.port().to_be_bytes())?;
                w.put(&d.port().to_be_bytes())?;
            }
            // Without addresses: family UNSPEC (a LOCAL's addresses are ignored anyway).
            _ => w.buf[13] = 0x00,
        }
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.len + b.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(BufferTooSmall)?
            .copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    /// One TLV (a value of at most 64 KiB).
    pub fn tlv(&mut self, kind: u8, value: &[u8]) -> Result<(), BufferTooSmall> {
        let len = u16::try_from(value.len()).map_err(|_| BufferTooSmall)?;
        self.put(&[kind])?;
        self.put(&len.to_be_bytes())?;
        self.put(value)
    }

    /// TLVs already encoded (e.g. the ones a received header carried).
    pub fn raw_tlvs(&mut self, tlvs: &[u8]) -> Result<(), BufferTooSmall> {
        self.put(tlvs)
    }

    /// A CRC32C TLV, computed over the whole header at [`V2Writer::finish`].
    pub fn crc32c(&mut self) -> Result<(), BufferTooSmall> {
        self.tlv(tlv::CRC32C, &[0; 4])?;
        self.crc_at = Some(self.len - 4);
        Ok(())
    }

    /// Sets the length (and the checksum); returns the header's length.
    pub fn finish(self) -> Result<usize, BufferTooSmall> {
        let rest = u16::try_from(self.len - V2_FIXED_LEN).map_err(|_| BufferTooSmall)?;
        self.buf[14..16].copy_from_slice(&rest.to_be_bytes());
        if let Some(at) = self.crc_at {
            let c = crc32c(&self.buf[..self.len]);
            self.buf[at..at + 4].copy_from_slice(&c.to_be_bytes());
        }
        Ok(self.len)
    }
}

impl Header<'_> {
    /// This header (its TLVs as they are) into `buf`; returns its length.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        match self.version {
            Version::V1 => write_v1(
                buf,
                self.addresses
                    .as_ref()
                    .filter(|_| self.command == Command::Proxy),
            ),
            Version::V2 => {
                let mut w = V2Writer::new(buf, self.command, self.addresses.as_ref())?;
                w.raw_tlvs(self.tlvs.as_bytes())?;
                w.finish()
            }
        }
    }
}

#[cfg(test)]
mod tests;
