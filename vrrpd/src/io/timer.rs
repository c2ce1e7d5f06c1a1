//! A one-shot deadline timer with microsecond precision (`timerfd`, `CLOCK_MONOTONIC`).
//!
//! tokio's timer wheel has millisecond resolution and rounds every deadline up to the next
//! tick, so its sleeps end 1-2 ms late. For VRRP that lateness lands straight on the
//! failover time (Master_Down_Interval fires late) and on the advert cadence. keepalived
//! uses a microsecond timer; so does vrrpd, through this.
//!
//! If `timerfd_create` fails (an odd sandbox), the timer falls back to tokio's sleep and
//! logs once.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

pub struct DeadlineTimer {
    fd: Option<AsyncFd<Tfd>>,
}

/// `TimerFd` with the `AsRawFd` that `AsyncFd` wants.
struct Tfd(TimerFd);

impl AsRawFd for Tfd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl DeadlineTimer {
    pub fn new() -> DeadlineTimer {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(std::io::Error::from)
        .and_then(|t| super::register(Tfd(t)));
        match fd {
            Ok(fd) => DeadlineTimer { fd: Some(fd) },
            Err(e) => {
                tracing::warn!(error = %e, "no timerfd: deadlines use tokio's millisecond timer");
                DeadlineTimer { fd: None }
            }
        }
    }

    /// Wait until `t`. Cancel-safe: dropping the future leaves nothing behind that a later
    /// call trips over (each call re-arms the timer, which also clears any expiry not read).
    pub async fn sleep_until(&self, t: Instant) {
        let Some(fd) = &self.fd else {
            tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
            return;
        };
        let now = Instant::now();
        if t <= now {
            return;
        }
        // Relative to `now`: Instant is CLOCK_MONOTONIC on Linux, but it has no public
        // conversion to a timespec. The error is the few hundred ns since `now` was read.
        let rel = TimeSpec::from_duration(t - now);
        if let Err(e) = fd
            .get_ref()
            .0
            .set(Expiration::OneShot(rel), TimerSetTimeFlags::empty())
        {
            tracing::warn!(error = %e, "timerfd_settime failed; using tokio's timer");
            tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
            return;
        }
        loop {
            let Ok(mut guard) = fd.readable().await else {
                tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
                return;
            };
            let read = guard.try_io(|inner| {
                let mut ticks = [0u8; 8];
                nix::unistd::read(inner.get_ref().0.as_fd(), &mut ticks)
                    .map_err(std::io::Error::from)
            });
            match read {
                Ok(_) => return,
                // Stale readiness from an earlier, re-armed timer: wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

impl Default for DeadlineTimer {
    fn default() -> DeadlineTimer {
        DeadlineTimer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_at_the_deadline_not_a_millisecond_later() {
        let timer = DeadlineTimer::new();
        assert!(timer.fd.is_some(), "timerfd unavailable");
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let t = Instant::now() + Duration::from_millis(5);
            timer.sleep_until(t).await;
            let now = Instant::now();
            assert!(now >= t, "woke {:?} early", t - now);
            worst = worst.max(now - t);
        }
        // A loaded 2-core CI box can delay any single wake, but not every one of 20 by a
        // whole millisecond the way tokio's wheel does; this bounds the worst loosely.
        eprintln!("worst lateness over 20 wakes: {worst:?}");
        assert!(worst < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_dropped_sleep_does_not_end_the_next_one_early() {
        let timer = DeadlineTimer::new();
        let short = Instant::now() + Duration::from_millis(2);
        // Abandon a sleep, let its expiry pass unread, then sleep for longer.
        let _ = tokio::time::timeout(Duration::from_micros(100), timer.sleep_until(short)).await;
        std::thread::sleep(Duration::from_millis(5));
        let t = Instant::now() + Duration::from_millis(20);
        timer.sleep_until(t).await;
        assert!(
            Instant::now() >= t,
            "the stale expiry ended the sleep early"
        );
    }

    #[tokio::test]
    async fn a_past_deadline_returns_at_once() {
        let timer = DeadlineTimer::new();
        let t0 = Instant::now();
        timer.sleep_until(t0 - Duration::from_millis(1)).await;
        assert!(t0.elapsed() < Duration::from_millis(50));
    }
}
