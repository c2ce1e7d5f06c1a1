//! The health checker of one server (and the fast check of a suspect one).

#[allow(clippy::wildcard_imports)]
use super::*;

/// How long a check of a suspect server may take: vrrpd has already heard nothing from
/// its node for Master_Down_Interval (three adverts), and a live server on the same
/// segment answers in well under a millisecond, so two advert intervals (at least 200 ms,
/// at most the check's own timeout) separate a dead node from a busy one.
pub fn suspect_timeout(vrrp_interval: Duration, check: &Check) -> Duration {
    (vrrp_interval * 2)
        .max(Duration::from_millis(200))
        .min(check.timeout)
}

pub(super) async fn run_checker(
    srv: Arc<Server>,
    probe: Probe,
    check: Check,
    close_on_down: bool,
    suspect_timeout: Duration,
) {
    let mut last_local: Option<Instant> = None;
    let mut fast_probe = probe.clone();
    fast_probe.timeout = suspect_timeout;
    loop {
        if srv.admin() == Admin::Maint {
            // No checks in maintenance; wake up when the admin state changes.
            tokio::select! {
                () = srv.wake.notified() => {}
                () = tokio::time::sleep(check.interval) => {}
            }
            continue;
        }
        // The flag stays set until this check's verdict is in: the balancer keeps the server
        // as a last resort meanwhile.
        let suspect = srv.suspect.load(Relaxed);
        let o = if suspect {
            health::probe(&fast_probe, srv.addr).await
        } else {
            tokio::select! {
                o = health::probe(&probe, srv.addr) => o,
                // Became suspect meanwhile: drop this check, run the fast one.
                () = srv.suspect_now.notified() => continue,
            }
        };
        if o.local {
            // Our descriptors ran out, not the server: keep its state, try again later.
            if last_local.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(10)) {
                warn!(error = %o.desc, "health check not run: no socket (local resources); the server keeps its state");
                last_local = Some(Instant::now());
            }
            tokio::select! {
                () = tokio::time::sleep(check.interval) => {}
                () = srv.wake.notified() => {}
            }
            continue;
        }
        if !o.ok {
            srv.checks_failed.fetch_add(1, Relaxed);
        }
        // A suspect server that fails once is out (fall 1); one that answers stays as it
        // was, and a DOWN one still needs `rise` successes.
        let fall = if suspect { 1 } else { check.fall };
        if suspect {
            info!(ok = o.ok, status = o.status, desc = %o.desc, "suspect server checked");
        }
        let fast = srv.record(&o, check.rise, fall, close_on_down);
        if suspect {
            srv.suspect.store(false, Relaxed);
        }
        let wait = if fast {
            check.fast_interval
        } else {
            check.interval
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = srv.wake.notified() => {}
        }
    }
}
