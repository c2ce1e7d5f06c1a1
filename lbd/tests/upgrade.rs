//! Upgrades: the running lbd hands every listener to a new process running the binary at
//! the path it was started from, and drains. The real binary, copied to a temporary path
//! (then replaced there as dpkg does: a new file renamed over it, so the path names a new
//! inode and the old process's /proc/PID/exe a deleted file), backends that are std threads
//! in this process, loopback only.
//!
//! Index:
//! - `an_upgrade_to_a_new_binary_keeps_every_connection`: 20 keep-alive HTTP connections
//!   (a request every 100 ms) and 20 byte streams (every byte checked) across the upgrade,
//!   a new connection every 10 ms throughout; no reset, no refusal, no byte lost; the old
//!   process exits once its connections end; the new PID serves (prints the figures)
//! - `a_failing_new_binary_leaves_the_old_one_serving`: a binary that exits 1, a
//!   cluster.toml made invalid, a binary that never gets ready; each answered with why,
//!   nothing dropped meanwhile, and the old process still has every listener
//! - `the_new_process_starts_with_the_health_the_old_one_had`: a server the old process
//!   knows DOWN gets no client of the new one before its own first check
//! - `sigusr2_upgrades_and_systemd_hears_the_new_main_pid`: a fake systemd that enforces
//!   `NotifyAccess=main` sees MAINPID= from the old process, then READY=1 and WATCHDOG=1
//!   from the new one, and nothing from the old one after
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k3sha_support::netns::{self, NsChild};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Backends

/// A keep-alive HTTP/1.1 server: `GET /PATH` is answered `200` with body `PATH\n`.
fn http_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve_http(s);
            });
        }
    });
    addr
}

fn serve_http(s: TcpStream) -> std::io::Result<()> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            if h == "\r\n" {
                break;
            }
        }
        let body = format!("{path}\n");
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
    }
}

/// Echoes everything; on EOF closes its side too.
fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = s;
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// A port free on the wildcard address and on 127.0.0.1, below the ephemeral range (so
/// the clients' own sockets never take it), never the same twice in this process.
fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 23_000 + (std::process::id() as usize % 300) * 20;
    for _ in 0..3000 {
        let n = NEXT.fetch_add(1, SeqCst);
        let port = u16::try_from(base + n % 8_000).unwrap();
        if TcpListener::bind(("::", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port");
}

// ---------------------------------------------------------------------------------------
// lbd

const CHECK: &str = r#"check = { kind = "tcp", interval = "200ms", fast_interval = "100ms", timeout = "200ms", rise = 1, fall = 2 }"#;
const DRAIN: Duration = Duration::from_secs(5);

struct Ports {
    stats: u16,
    http: u16,
    stream: u16,
}

fn cluster(p: &Ports, http: &str, stream: &str, extra_check: &str) -> String {
    let check = if extra_check.is_empty() {
        CHECK
    } else {
        extra_check
    };
    format!(
        r#"[cluster]
name = "t"
domain = "t.test.local"

[vip]
address = "127.0.0.100/8"

[[nodes]]
name = "n1"
address = "127.0.0.1"
role = "server"

[stats]
listen = "127.0.0.1:{stats}"

[lbd]
drain_timeout = "{drain}s"

[[services]]
name = "http"
listen = {http_port}
backends = [{http}]
{check}

[[services]]
name = "stream"
listen = {stream_port}
backends = [{stream}]
{check}
"#,
        stats = p.stats,
        drain = DRAIN.as_secs(),
        http_port = p.http,
        stream_port = p.stream,
    )
}

/// lbd started from a copy of the built binary in its own directory. Dropping it kills
/// the process it started and every lbd that runs from its directory (the upgrades' new
/// processes are not children of the test).
struct Lbd {
    old: Option<NsChild>,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Lbd {
    fn start(cfg: &str) -> Lbd {
        Lbd::start_with(cfg, None)
    }

    /// `notify`: a NOTIFY_SOCKET path, and a watchdog asked for, as systemd would.
    fn start_with(cfg: &str, notify: Option<&Path>) -> Lbd {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("sbin/lbd");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_lbd"), &bin).unwrap();
        std::fs::write(dir.path().join("cluster.toml"), cfg).unwrap();
        // A test thread forking while another wrote a copy holds the copy open for
        // writing until its exec: ETXTBSY for a moment.
        let mut tries = 0;
        let old = loop {
            match netns::spawn(Lbd::command(&bin, notify, dir.path())) {
                Ok(c) => break c,
                Err(netns::NetnsError::Spawn { source, .. })
                    if source.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 50 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let l = Lbd {
            old: Some(old),
            dir,
            bin,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while l.try_status().is_err() {
            assert!(
                Instant::now() < deadline,
                "lbd did not come up: {}",
                l.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        l
    }

    fn command(bin: &Path, notify: Option<&Path>, dir: &Path) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("lbd.log"))
            .unwrap();
        let mut cmd = match notify {
            None => Command::new(bin),
            Some(sock) => {
                // `exec "$0"`: lbd keeps the shell's PID (WATCHDOG_PID) and gets its path
                // as argv[0].
                let script = format!(
                    "NOTIFY_SOCKET={} WATCHDOG_USEC=400000 WATCHDOG_PID=$$ exec \"$0\" \"$@\"",
                    sock.display()
                );
                let mut c = Command::new("sh");
                c.args(["-c", &script]).arg(bin);
                c
            }
        };
        cmd.arg("--config")
            .arg(dir.join("cluster.toml"))
            .args(["--node", "n1", "--run-dir"])
            .arg(dir.join("run"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lbd.log")).unwrap_or_default()
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("run/lbd.sock")
    }

    fn try_status(&self) -> Result<Value, String> {
        common::ctl::call(&self.sock(), "status", Value::Null, Duration::from_secs(2))
            .map_err(|e| e.to_string())
    }

    fn status(&self) -> Value {
        self.try_status()
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    fn pid(&self) -> u32 {
        u32::try_from(self.status()["pid"].as_u64().unwrap()).unwrap()
    }

    fn old_pid(&self) -> u32 {
        self.old.as_ref().unwrap().pid().unwrap()
    }

    fn upgrade(&self, args: Value) -> Result<Value, String> {
        common::ctl::call(&self.sock(), "upgrade", args, Duration::from_secs(30))
            .map_err(|e| e.to_string())
    }

    /// Put a new file at the binary's path as dpkg does: written beside it, renamed over.
    fn replace_binary(&self, contents: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        let tmp = self.bin.with_extension("dpkg-new");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &self.bin).unwrap();
    }

    fn fresh_binary(&self) {
        self.replace_binary(&std::fs::read(env!("CARGO_BIN_EXE_lbd")).unwrap());
    }

    fn server(&self, svc: &str, addr: SocketAddr) -> Value {
        let s = self.status();
        let f = s["frontends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == svc)
            .unwrap()
            .clone();
        f["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["addr"] == addr.to_string())
            .unwrap()
            .clone()
    }

    /// Until every server has had a check.
    fn wait_checked(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.status();
            let all = s["frontends"].as_array().unwrap().iter().all(|f| {
                f["servers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s["check_status"] != "INI")
            });
            if all {
                return;
            }
            assert!(Instant::now() < deadline, "checks never ran: {s}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        if let Some(mut c) = self.old.take() {
            c.kill();
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        for pid in pids_running_from(&dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("--- lbd log ---\n{}", self.log());
        }
    }
}

/// Processes whose command line mentions `dir` (this test's lbd processes).
fn pids_running_from(dir: &str) -> Vec<i32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| u32::try_from(*p).ok() != Some(me))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(dir))
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn exe(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Clients

/// What went wrong for the clients, each said once.
#[derive(Default)]
struct Faults(Mutex<Vec<String>>);

impl Faults {
    fn add(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn kind(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::ConnectionRefused => "REFUSED",
        ErrorKind::ConnectionReset => "RESET",
        ErrorKind::ConnectionAborted => "ABORTED",
        ErrorKind::BrokenPipe => "BROKEN PIPE",
        ErrorKind::UnexpectedEof => "CLOSED",
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "TIMEOUT",
        _ => "ERROR",
    }
}

fn dial(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// One request on a keep-alive connection; the body must name the path.
fn request(w: &mut TcpStream, r: &mut BufReader<TcpStream>, path: &str) -> std::io::Result<()> {
    write!(w, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut len = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.strip_prefix("Content-Length: ") {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0u8; len.ok_or_else(|| std::io::Error::other("no length"))?];
    r.read_exact(&mut body)?;
    if body != format!("{path}\n").as_bytes() {
        return Err(std::io::Error::other(format!(
            "answer {:?} to {path}",
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(())
}

/// A keep-alive HTTP client: a request every 100 ms until `stop`, then closes.
fn http_client(
    port: u16,
    id: usize,
    stop: Arc<AtomicBool>,
    faults: Arc<Faults>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let s = match dial(port) {
            Ok(s) => s,
            Err(e) => {
                faults.add(format!("http {id}: connect {}: {e}", kind(&e)));
                return 0;
            }
        };
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut n = 0u64;
        while !stop.load(SeqCst) {
            if let Err(e) = request(&mut w, &mut r, &format!("/c{id}/{n}")) {
                faults.add(format!("http {id}: request {n}: {}: {e}", kind(&e)));
                return n;
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        n
    })
}

/// A deterministic byte sequence per connection (xorshift).
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0 >> 24) as u8;
        }
    }
}

/// A byte stream through the echo service: 1500 bytes every 10 ms until `stop`; every
/// byte that comes back is compared with what was sent. Returns the bytes verified.
fn stream_client(
    port: u16,
    id: usize,
    stop: Arc<AtomicBool>,
    faults: Arc<Faults>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let s = match dial(port) {
            Ok(s) => s,
            Err(e) => {
                faults.add(format!("stream {id}: connect {}: {e}", kind(&e)));
                return 0;
            }
        };
        let mut w = s.try_clone().unwrap();
        let seed = 0x9E37_79B9_7F4A_7C15u64 ^ (id as u64 + 1);
        let reader = {
            let mut r = s;
            let faults = faults.clone();
            std::thread::spawn(move || {
                let mut want = Bytes(seed);
                let mut got = vec![0u8; 16384];
                let mut expect = vec![0u8; 16384];
                let mut total = 0u64;
                loop {
                    match r.read(&mut got) {
                        Ok(0) => return total,
                        Ok(n) => {
                            want.fill(&mut expect[..n]);
                            if got[..n] != expect[..n] {
                                faults.add(format!("stream {id}: wrong bytes at {total}"));
                                return total;
                            }
                            total += n as u64;
                        }
                        Err(e) => {
                            faults.add(format!("stream {id}: read at {total}: {}: {e}", kind(&e)));
                            return total;
                        }
                    }
                }
            })
        };
        let mut gen = Bytes(seed);
        let mut chunk = [0u8; 1500];
        let mut sent = 0u64;
        while !stop.load(SeqCst) {
            gen.fill(&mut chunk);
            if let Err(e) = w.write_all(&chunk) {
                faults.add(format!("stream {id}: write at {sent}: {}: {e}", kind(&e)));
                break;
            }
            sent += chunk.len() as u64;
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = w.shutdown(Shutdown::Write);
        let back = reader.join().unwrap();
        if back != sent {
            faults.add(format!("stream {id}: sent {sent} bytes, {back} came back"));
        }
        back
    })
}

/// A new connection every 10 ms, one request on each, until `stop`. Returns how many were
/// served.
fn new_connections(port: u16, stop: Arc<AtomicBool>, faults: Arc<Faults>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(SeqCst) {
            let r = dial(port).and_then(|s| {
                let mut w = s.try_clone()?;
                let mut r = BufReader::new(s);
                request(&mut w, &mut r, &format!("/new/{n}"))
            });
            match r {
                Ok(()) => n += 1,
                Err(e) => faults.add(format!("new connection {n}: {}: {e}", kind(&e))),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        n
    })
}

/// Everything the clients do, started together.
struct Load {
    stop_long: Arc<AtomicBool>,
    stop_new: Arc<AtomicBool>,
    faults: Arc<Faults>,
    http: Vec<JoinHandle<u64>>,
    streams: Vec<JoinHandle<u64>>,
    fresh: Option<JoinHandle<u64>>,
}

impl Load {
    fn start(p: &Ports, long: usize) -> Load {
        let stop_long = Arc::new(AtomicBool::new(false));
        let stop_new = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(Faults::default());
        let http = (0..long)
            .map(|i| http_client(p.http, i, stop_long.clone(), faults.clone()))
            .collect();
        let streams = (0..long)
            .map(|i| stream_client(p.stream, i, stop_long.clone(), faults.clone()))
            .collect();
        let fresh = Some(new_connections(p.http, stop_new.clone(), faults.clone()));
        Load {
            stop_long,
            stop_new,
            faults,
            http,
            streams,
            fresh,
        }
    }

    fn stop_new(&mut self) -> u64 {
        self.stop_new.store(true, SeqCst);
        self.fresh.take().map_or(0, |h| h.join().unwrap())
    }

    /// Close the long-lived connections (each checked to the last byte): (requests, bytes).
    fn stop_long(&mut self) -> (Vec<u64>, Vec<u64>) {
        self.stop_long.store(true, SeqCst);
        let req = self.http.drain(..).map(|h| h.join().unwrap()).collect();
        let bytes = self.streams.drain(..).map(|h| h.join().unwrap()).collect();
        (req, bytes)
    }
}

fn ports() -> Ports {
    Ports {
        stats: free_port(),
        http: free_port(),
        stream: free_port(),
    }
}

fn stats_page_answers(port: u16) -> bool {
    dial(port).is_ok_and(|mut s| {
        let _ = s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n");
        let mut all = String::new();
        let _ = s.read_to_string(&mut all);
        all.starts_with("HTTP/1.1 200") || all.starts_with("HTTP/1.0 200")
    })
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn an_upgrade_to_a_new_binary_keeps_every_connection() {
    const LONG: usize = 20;
    let p = ports();
    let http = http_backend();
    let echo = echo_backend();
    let mut lbd = Lbd::start(&cluster(
        &p,
        &format!("\"{http}\""),
        &format!("\"{echo}\""),
        "",
    ));
    lbd.wait_checked();
    let old = lbd.old_pid();
    let old_inode = std::fs::metadata(&lbd.bin).unwrap().ino();

    let mut load = Load::start(&p, LONG);
    std::thread::sleep(Duration::from_secs(1));
    // As dpkg: a new file at the path. The running process's executable is the old
    // (deleted) file now; the upgrade must run the path, not /proc/self/exe.
    lbd.fresh_binary();
    let new_inode = std::fs::metadata(&lbd.bin).unwrap().ino();
    assert_ne!(old_inode, new_inode);
    assert!(exe(old).ends_with(" (deleted)"), "{}", exe(old));
    // Every long-lived connection is open (and perhaps one of the new ones).
    let open = lbd.status()["current_connections"].as_u64().unwrap();
    assert!(
        (2 * LONG as u64..=2 * LONG as u64 + 1).contains(&open),
        "{open}"
    );

    let t = Instant::now();
    let up = lbd
        .upgrade(json!({}))
        .unwrap_or_else(|e| panic!("upgrade: {e}\n{}", lbd.log()));
    let took = t.elapsed();
    let new = u32::try_from(up["new_pid"].as_u64().unwrap()).unwrap();
    assert_eq!(up["old_pid"].as_u64().unwrap(), u64::from(old), "{up}");
    assert_ne!(new, old);
    assert_eq!(up["binary"], lbd.bin.display().to_string());
    // (and perhaps one of the new connections, accepted by the old process just before)
    let draining = up["draining"].as_u64().unwrap();
    assert!(
        (2 * LONG as u64..=2 * LONG as u64 + 1).contains(&draining),
        "{up}"
    );
    // The new process runs the new file; it answers the control socket and the stats page.
    assert_eq!(exe(new), lbd.bin.display().to_string());
    assert_eq!(lbd.pid(), new);
    assert!(stats_page_answers(p.stats));
    // Its servers are UP from the start (the old process's view, not unchecked).
    for svc in ["http", "stream"] {
        let addr = if svc == "http" { http } else { echo };
        let s = lbd.server(svc, addr);
        assert_eq!(s["status"], "UP", "{s}");
        assert_ne!(s["check_status"], "INI", "{s}");
    }

    // The long-lived connections go on through the old process, new ones go to the new.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alive(old), "the old lbd left before its connections ended");
    let new_conns = load.stop_new();
    let closed = Instant::now();
    let (requests, bytes) = load.stop_long();
    let old_child = lbd.old.as_mut().unwrap();
    let status = old_child.wait_timeout(DRAIN).unwrap_or_else(|| {
        panic!("the old lbd did not exit within {DRAIN:?} of its last connection")
    });
    let exit_after = closed.elapsed();
    assert!(status.success(), "{status}");
    lbd.old = None;

    let faults = load.faults.take();
    assert!(faults.is_empty(), "{} faults: {faults:#?}", faults.len());
    // Every long-lived connection kept working: at most 10 requests and 100 chunks in the
    // second before the upgrade, and as many again after it.
    assert!(requests.iter().all(|n| *n >= 15), "{requests:?}");
    assert!(bytes.iter().all(|n| *n >= 150 * 1500), "{bytes:?}");
    assert!(new_conns >= 150, "{new_conns} new connections");
    // After the old one is gone, the new one serves alone.
    assert!(alive(new));
    let mut extra = Load::start(&p, 2);
    std::thread::sleep(Duration::from_millis(300));
    let after = extra.stop_new();
    extra.stop_long();
    assert!(after > 5 && extra.faults.take().is_empty());
    let total_bytes: u64 = bytes.iter().sum();
    println!(
        "upgrade: {} long-lived connections kept ({} keep-alive HTTP, {} requests; {} byte streams, {} bytes checked), {new_conns} new connections meanwhile, 0 faults; handover {took:?} (lbd: {} ms); the old process exited {exit_after:?} after its last connection closed",
        2 * LONG,
        LONG,
        requests.iter().sum::<u64>(),
        LONG,
        total_bytes,
        up["took_ms"],
    );
    let log = lbd.log();
    assert!(log.contains("upgrade done"), "{log}");
    assert!(log.contains("drained"), "{log}");
}

#[test]
fn a_failing_new_binary_leaves_the_old_one_serving() {
    let p = ports();
    let http = http_backend();
    let echo = echo_backend();
    let cfg = cluster(&p, &format!("\"{http}\""), &format!("\"{echo}\""), "");
    let lbd = Lbd::start(&cfg);
    lbd.wait_checked();
    let old = lbd.old_pid();
    let mut load = Load::start(&p, 4);
    std::thread::sleep(Duration::from_millis(300));

    // 1. A binary that exits at once.
    lbd.replace_binary(b"#!/bin/sh\necho 'broken lbd' >&2\nexit 1\n");
    let e = lbd.upgrade(json!({})).unwrap_err();
    assert!(
        e.contains("upgrade failed, the running lbd goes on serving")
            && e.contains("ended before taking over: exit status: 1"),
        "{e}"
    );
    assert_eq!(lbd.pid(), old);

    // 2. The right binary, but cluster.toml made invalid: the new process says why.
    lbd.fresh_binary();
    let cfg_path = lbd.dir.path().join("cluster.toml");
    std::fs::write(&cfg_path, cfg.replace("[lbd]", "[lbd]\nbogus = 1")).unwrap();
    let e = lbd.upgrade(json!({})).unwrap_err();
    assert!(
        e.contains("did not take over") && e.contains("bogus"),
        "{e}"
    );
    assert_eq!(lbd.pid(), old);
    std::fs::write(&cfg_path, &cfg).unwrap();

    // 3. A binary that never gets ready: killed at the timeout.
    lbd.replace_binary(b"#!/bin/sh\nexec sleep 60\n");
    let t = Instant::now();
    let e = lbd.upgrade(json!({"timeout_ms": 700})).unwrap_err();
    assert!(e.contains("was not ready within 700ms"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let pid: u32 = e
        .split("(PID ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no PID in {e}"));
    assert!(
        !alive(pid),
        "the hanging new process {pid} was left running"
    );

    // Meanwhile nothing dropped, and the old process has every listener still.
    std::thread::sleep(Duration::from_millis(300));
    let fresh = load.stop_new();
    let (requests, _) = load.stop_long();
    let faults = load.faults.take();
    assert!(faults.is_empty(), "{faults:#?}");
    assert!(
        fresh > 50 && requests.iter().all(|n| *n > 5),
        "{fresh} {requests:?}"
    );
    assert_eq!(lbd.pid(), old);
    assert!(stats_page_answers(p.stats));
    assert!(lbd.sock().exists());
    let log = lbd.log();
    assert_eq!(
        log.matches("upgrade failed: this lbd goes on serving")
            .count(),
        3,
        "{log}"
    );

    // And a good binary still upgrades afterwards.
    lbd.fresh_binary();
    let up = lbd
        .upgrade(json!({}))
        .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
    assert_ne!(up["new_pid"].as_u64().unwrap(), u64::from(old));
}

/// A server whose node is gone (it takes no SYN: its check times out) is DOWN in the old
/// process. At a normal start the new process would send clients to it until its own
/// first check timed out; handed over, it is DOWN from the start.
#[test]
fn the_new_process_starts_with_the_health_the_old_one_had() {
    let p = ports();
    let http = http_backend();
    let echo = echo_backend();
    // A black hole: a listener with a full accept queue drops SYNs.
    let hole = {
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        l.listen(0).unwrap();
        let addr = l.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        while let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            queued.push(s);
            assert!(queued.len() < 8, "the accept queue never filled");
        }
        (l, queued, addr)
    };
    let dead = hole.2;
    let slow = r#"check = { kind = "tcp", interval = "5s", fast_interval = "5s", timeout = "2s", rise = 1, fall = 1 }"#;
    let lbd = Lbd::start(&cluster(
        &p,
        &format!("\"{dead}\", \"{http}\""),
        &format!("\"{echo}\""),
        slow,
    ));
    let deadline = Instant::now() + Duration::from_secs(6);
    while lbd.server("http", dead)["status"] != "DOWN" {
        assert!(Instant::now() < deadline, "{}", lbd.server("http", dead));
        std::thread::sleep(Duration::from_millis(50));
    }
    lbd.upgrade(json!({}))
        .unwrap_or_else(|e| panic!("{e}\n{}", lbd.log()));
    let s = lbd.server("http", dead);
    assert_eq!(s["status"], "DOWN", "{s}");
    assert_eq!(s["check_status"], "L4TOUT", "{s}");
    assert!(s["checks_failed"].as_u64().unwrap() >= 1, "{s}");
    // Every client goes to the live server at once (the new process's own check of the
    // dead one takes 2 s).
    for i in 0..20 {
        let t = Instant::now();
        let s = dial(p.http).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        request(&mut w, &mut r, &format!("/h/{i}")).unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
    let s = lbd.server("http", dead);
    assert_eq!(s["connect_errors"].as_u64().unwrap(), 0, "{s}");
    assert_eq!(s["total_sessions"].as_u64().unwrap(), 0, "{s}");
    drop(hole);
}

#[test]
fn sigusr2_upgrades_and_systemd_hears_the_new_main_pid() {
    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;
    let p = ports();
    let http = http_backend();
    let echo = echo_backend();
    let nd = tempfile::tempdir().unwrap();
    let path = nd.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    setsockopt(&sock, sockopt::PassCred, &true).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // (pid, message) as systemd sees them: the sender's PID from the kernel.
    let seen: Arc<Mutex<Vec<(i32, String)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (seen, done) = (seen.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(SeqCst) {
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let mut space = nix::cmsg_space!(nix::libc::ucred, [std::os::fd::RawFd; 4]);
                let Ok(msg) = recvmsg::<UnixAddr>(
                    sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) else {
                    continue;
                };
                let mut pid = 0;
                for c in msg.cmsgs().unwrap() {
                    match c {
                        ControlMessageOwned::ScmCredentials(cred) => pid = cred.pid(),
                        // A barrier's pipe: closed, as systemd does once it got here.
                        ControlMessageOwned::ScmRights(fds) => {
                            for fd in fds {
                                let _ = nix::unistd::close(fd);
                            }
                        }
                        _ => {}
                    }
                }
                let n = msg.bytes;
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.lock().unwrap().push((pid, text));
            }
        })
    };
    let mut lbd = Lbd::start_with(
        &cluster(&p, &format!("\"{http}\""), &format!("\"{echo}\""), ""),
        Some(&path),
    );
    lbd.wait_checked();
    let old = lbd.old_pid();
    let mut load = Load::start(&p, 4);
    std::thread::sleep(Duration::from_millis(300));
    lbd.fresh_binary();
    lbd.old.as_ref().unwrap().signal(Signal::SIGUSR2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        if let Ok(s) = lbd.try_status() {
            let pid = u32::try_from(s["pid"].as_u64().unwrap()).unwrap();
            if pid != old {
                break pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no upgrade on SIGUSR2: {}",
            lbd.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Two watchdog intervals of the new process.
    std::thread::sleep(Duration::from_millis(900));
    load.stop_new();
    load.stop_long();
    assert!(lbd.old.as_mut().unwrap().wait_timeout(DRAIN).is_some());
    done.store(true, SeqCst);
    reader.join().unwrap();
    let faults = load.faults.take();
    assert!(faults.is_empty(), "{faults:#?}");

    // systemd with NotifyAccess=main: the main PID is the old one until it says
    // MAINPID=<new>; every message must come from the main PID of its moment (barriers
    // are the manager's, from anyone).
    let seen = seen.lock().unwrap().clone();
    let (old, new) = (i32::try_from(old).unwrap(), i32::try_from(new).unwrap());
    let mut main = old;
    let mut handoff = None;
    for (i, (pid, msg)) in seen.iter().enumerate() {
        if msg.trim_end() == "BARRIER=1" {
            continue;
        }
        assert_eq!(
            *pid, main,
            "message {i} {msg:?} from PID {pid}, the main PID is {main}: {seen:?}"
        );
        if let Some(m) = msg.lines().find_map(|l| l.strip_prefix("MAINPID=")) {
            assert_eq!(m, new.to_string(), "{seen:?}");
            main = new;
            handoff = Some(i);
        }
    }
    let handoff = handoff.unwrap_or_else(|| panic!("no MAINPID= in {seen:?}"));
    let after: Vec<&String> = seen[handoff + 1..]
        .iter()
        .filter(|(pid, _)| *pid == new)
        .map(|(_, m)| m)
        .collect();
    assert!(
        after.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "{seen:?}"
    );
    assert!(
        after.iter().any(|m| m.lines().any(|l| l == "WATCHDOG=1")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|(_, m)| m.contains("STOPPING=1")),
        "an upgrade is no stop: {seen:?}"
    );
    assert!(lbd.log().contains("SIGUSR2: upgrading"));
}
