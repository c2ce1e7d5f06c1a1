//! tcpdump of the VRRP adverts a namespace sees, shared by the benchmarks that time
//! failover from the old master's last advert (`vrrpd_vs_keepalived`,
//! `failover_with_proxy`). tcpdump is killed and its reader joined on drop.

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use k3sha_support::netns::NsChild;

use crate::vrrp::parse_tcpdump_advert;

/// tcpdump in a namespace (the client's), recording every VRRP advert: (Unix time, source,
/// priority). Used to time link-loss failover from the master's last advert, which takes
/// out the random phase of the cut within the advertisement interval.
pub struct AdvertCapture {
    child: NsChild,
    adverts: Arc<Mutex<Vec<(f64, IpAddr, u8)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl AdvertCapture {
    pub fn start(ns: &k3sha_support::netns::NetNs) -> Result<AdvertCapture> {
        let mut cmd = ns.command("tcpdump");
        cmd.args([
            "-i",
            "eth0",
            "-n",
            "-l",
            "-tt",
            "--immediate-mode",
            "ip proto 112",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        let mut child = ns.spawn(cmd)?;
        let out = child.take_stdout().context("tcpdump stdout")?;
        let adverts = Arc::new(Mutex::new(Vec::new()));
        let a2 = adverts.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .take(10_000_000)
            {
                if let Some(a) = parse_tcpdump_advert(&line) {
                    a2.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(a);
                }
            }
        });
        Ok(AdvertCapture {
            child,
            adverts,
            reader: Some(reader),
        })
    }

    /// Wait until an advert from `src` has been seen (tcpdump is running).
    pub fn wait_first(&self, src: IpAddr, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.last_before(src, f64::MAX).is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Unix time of the first advert with a non-zero priority from another source than
    /// `old` after `t` (the new master announcing itself).
    pub fn first_other_after(&self, old: IpAddr, t: f64) -> Option<f64> {
        self.adverts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(at, s, prio)| *s != old && *prio > 0 && *at > t)
            .map(|(at, _, _)| *at)
            .reduce(f64::min)
    }

    /// Unix time of the first priority-0 advert (resignation) from `src` after `t`.
    pub fn resign_after(&self, src: IpAddr, t: f64) -> Option<f64> {
        self.adverts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(at, s, prio)| *s == src && *prio == 0 && *at > t)
            .map(|(at, _, _)| *at)
            .reduce(f64::min)
    }

    /// Unix time of the last advert from `src` with a non-zero priority before `t`.
    pub fn last_before(&self, src: IpAddr, t: f64) -> Option<f64> {
        self.adverts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(at, s, prio)| *s == src && *prio > 0 && *at < t)
            .map(|(at, _, _)| *at)
            .reduce(f64::max)
    }
}

impl Drop for AdvertCapture {
    fn drop(&mut self) {
        self.child.kill();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
