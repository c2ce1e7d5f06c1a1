//! The PROXY header decoder on arbitrary bytes: `decode` never panics and never reads past
//! its input; a header it accepts lies within the input, and re-encodes to a header that
//! decodes to the same meaning (command, addresses, TLVs); need-more always asks for more
//! than it was given.
//!
//! Input layout: byte 0 picks the length limit (16 + 4 * byte); the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_proto::{canonical, decode, Decoded};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let max = 16 + 4 * usize::from(sel);
    match decode(bytes, max) {
        Ok(Decoded::Complete { header, len }) => {
            assert!(len <= bytes.len() && len <= max.max(proxy_proto::V1_MAX_LEN));
            let mut buf = vec![0u8; len + 64];
            let n = header.write(&mut buf).expect("a decoded header fits its own length");
            match decode(&buf[..n], usize::MAX) {
                Ok(Decoded::Complete { header: again, len: l }) => {
                    assert_eq!(l, n);
                    assert_eq!(header.command, again.command);
                    let addrs = |h: &proxy_proto::Header<'_>| {
                        h.addresses.map(|a| (canonical(a.source), canonical(a.destination)))
                    };
                    assert_eq!(addrs(&header), addrs(&again));
                    assert_eq!(header.tlvs, again.tlvs);
                }
                other => panic!("re-encoded header does not decode: {other:?}"),
            }
        }
        Ok(Decoded::Incomplete { at_least }) => assert!(at_least > bytes.len()),
        Err(_) => {}
    }
});
