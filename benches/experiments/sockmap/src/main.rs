//! Experiment (issue 16): how fast does one TCP stream go when the kernel forwards it
//! between two sockets itself (a SOCKMAP and an SK_SKB verdict program calling
//! bpf_sk_redirect_map), against a direct connection and a user-space proxy?
//!
//!   sockmap-exp LISTEN_PORT BACKEND_PORT
//!
//! Accepts on 127.0.0.1:LISTEN_PORT. The first connection (iperf3's control channel) is
//! copied in user space by two threads; every later one is put into the SOCKMAP with its
//! server connection and forwarded by the kernel (the verdict program redirects each skb
//! to the other socket of the pair: key 1 for data that arrived on LISTEN_PORT, key 0
//! otherwise). One data pair at a time: an upper-bound measurement, not a proxy.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_ATTACH: i64 = 8;
const BPF_MAP_TYPE_SOCKMAP: u32 = 15;
const BPF_PROG_TYPE_SK_SKB: u32 = 14;
const BPF_SK_SKB_STREAM_VERDICT: u32 = 5;
const BPF_SK_SKB_VERDICT: u32 = 38;

fn bpf(cmd: i64, attr: &mut [u8]) -> std::io::Result<i32> {
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

fn put<T: Copy>(a: &mut [u8], off: usize, v: T) {
    let n = std::mem::size_of::<T>();
    let b = unsafe { std::slice::from_raw_parts(&v as *const T as *const u8, n) };
    a[off..off + n].copy_from_slice(b);
}

/// One eBPF instruction: code, dst|src<<4, off, imm.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = dst | (src << 4);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen: u16 = args[1].parse().unwrap();
    let backend: u16 = args[2].parse().unwrap();

    // The map: two sockets (0: client side, 1: server side).
    let mut a = [0u8; 72];
    put(&mut a, 0, BPF_MAP_TYPE_SOCKMAP);
    put(&mut a, 4, 4u32); // key_size
    put(&mut a, 8, 4u32); // value_size
    put(&mut a, 12, 2u32); // max_entries
    let map = bpf(BPF_MAP_CREATE, &mut a).expect("BPF_MAP_CREATE sockmap");

    // r2 = skb->local_port; r3 = (r2 == listen) ? 1 : 0; r0 = bpf_sk_redirect_map(skb, map, r3, 0)
    let mut prog: Vec<[u8; 8]> = vec![
        insn(0x61, 2, 1, 136, 0),             // ldxw r2, [r1 + 136] (local_port, host order)
        insn(0xb7, 3, 0, 0, 1),               // mov r3, 1
        insn(0x15, 2, 0, 1, i32::from(listen)), // jeq r2, listen, +1
        insn(0xb7, 3, 0, 0, 0),               // mov r3, 0
        insn(0x18, 2, 1, 0, map),             // ld_imm64 r2, map (BPF_PSEUDO_MAP_FD)
        insn(0x00, 0, 0, 0, 0),
        insn(0xb7, 4, 0, 0, 0),               // mov r4, 0
        insn(0x85, 0, 0, 0, 52),              // call bpf_sk_redirect_map
        insn(0x95, 0, 0, 0, 0),               // exit
    ];
    let code: Vec<u8> = prog.drain(..).flatten().collect();
    let license = b"GPL\0";
    let mut log = vec![0u8; 65536];
    let mut a = [0u8; 128];
    put(&mut a, 0, BPF_PROG_TYPE_SK_SKB);
    put(&mut a, 4, (code.len() / 8) as u32);
    put(&mut a, 8, code.as_ptr() as u64);
    put(&mut a, 16, license.as_ptr() as u64);
    put(&mut a, 24, 1u32); // log_level
    put(&mut a, 28, log.len() as u32);
    put(&mut a, 32, log.as_mut_ptr() as u64);
    let prog_fd = match bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => fd,
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            panic!("BPF_PROG_LOAD: {e}\n{}", String::from_utf8_lossy(&log[..end]));
        }
    };
    let attach = |ty: u32| {
        let mut a = [0u8; 32];
        put(&mut a, 0, map as u32); // target_fd
        put(&mut a, 4, prog_fd as u32); // attach_bpf_fd
        put(&mut a, 8, ty); // attach_type
        bpf(BPF_PROG_ATTACH, &mut a)
    };
    match attach(BPF_SK_SKB_VERDICT) {
        Ok(_) => eprintln!("attached as BPF_SK_SKB_VERDICT"),
        Err(e) => {
            eprintln!("BPF_SK_SKB_VERDICT: {e}; trying STREAM_VERDICT");
            attach(BPF_SK_SKB_STREAM_VERDICT).expect("attach");
        }
    }

    let l = TcpListener::bind(("127.0.0.1", listen)).unwrap();
    let mut n = 0;
    let mut keep = Vec::new();
    for c in l.incoming() {
        let c = c.unwrap();
        let s = TcpStream::connect(("127.0.0.1", backend)).unwrap();
        c.set_nodelay(true).ok();
        s.set_nodelay(true).ok();
        n += 1;
        if n == 1 {
            // Control channel: user space.
            for (mut from, mut to) in [
                (c.try_clone().unwrap(), s.try_clone().unwrap()),
                (s.try_clone().unwrap(), c.try_clone().unwrap()),
            ] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(k) => {
                                if to.write_all(&buf[..k]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        } else {
            for (key, sock) in [(0u32, &c), (1u32, &s)] {
                let fd = sock.as_raw_fd() as u32;
                let mut a = [0u8; 32];
                put(&mut a, 0, map as u32);
                put(&mut a, 8, &key as *const u32 as u64);
                put(&mut a, 16, &fd as *const u32 as u64);
                put(&mut a, 24, 0u64); // BPF_ANY
                bpf(BPF_MAP_UPDATE_ELEM, &mut a).expect("sockmap update");
            }
            eprintln!("pair {n} in the sockmap");
        }
        keep.push((c, s));
    }
}
