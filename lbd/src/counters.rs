//! Lock-free counters the hot path bumps and the snapshot reads.
//!
//! Everything is a relaxed atomic: a snapshot may see one counter a chunk ahead of another,
//! which no reader can tell apart from having looked a microsecond later.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds on a process-wide monotonic clock (0 at first use).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Events per second over the last second, HAProxy `freq_ctr` style: the count in the
/// current second plus the previous second's count scaled by the part of it still inside
/// the one-second window. Also keeps the highest rate seen.
#[derive(Debug, Default)]
pub struct Rate {
    /// Second (of [`now_ms`]) the `cur` bucket belongs to.
    sec: AtomicU64,
    cur: AtomicU64,
    prev: AtomicU64,
    max: AtomicU64,
}

impl Rate {
    pub fn hit(&self) {
        self.hit_at(now_ms());
    }

    pub fn hit_at(&self, now_ms: u64) {
        self.rotate(now_ms);
        self.cur.fetch_add(1, Relaxed);
        let r = self.read_at(now_ms);
        self.max.fetch_max(r, Relaxed);
    }

    fn rotate(&self, now_ms: u64) {
        let now_sec = now_ms / 1000;
        let sec = self.sec.load(Relaxed);
        if sec == now_sec {
            return;
        }
        if self
            .sec
            .compare_exchange(sec, now_sec, Relaxed, Relaxed)
            .is_ok()
        {
            let cur = self.cur.swap(0, Relaxed);
            let prev = if now_sec == sec + 1 { cur } else { 0 };
            self.prev.store(prev, Relaxed);
        }
    }

    pub fn read(&self) -> u64 {
        self.read_at(now_ms())
    }

    pub fn read_at(&self, now_ms: u64) -> u64 {
        let now_sec = now_ms / 1000;
        let sec = self.sec.load(Relaxed);
        let (cur, prev) = if sec == now_sec {
            (self.cur.load(Relaxed), self.prev.load(Relaxed))
        } else if sec + 1 == now_sec {
            (0, self.cur.load(Relaxed))
        } else {
            (0, 0)
        };
        let left = 1000 - now_ms % 1000;
        cur + (prev * left).div_ceil(1000)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Relaxed).max(self.read())
    }
}

/// A gauge with a high-water mark.
#[derive(Debug, Default)]
pub struct Gauge {
    cur: AtomicU64,
    max: AtomicU64,
}

impl Gauge {
    /// Add one; returns the new value.
    pub fn inc(&self) -> u64 {
        let v = self.cur.fetch_add(1, Relaxed) + 1;
        self.max.fetch_max(v, Relaxed);
        v
    }

    /// Add one unless that would reach above `limit`, in one atomic step (admissions on
    /// several threads never pass the limit together); returns the new value.
    pub fn inc_below(&self, limit: u64) -> Option<u64> {
        let v = self
            .cur
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()?
            + 1;
        self.max.fetch_max(v, Relaxed);
        Some(v)
    }

    pub fn dec(&self) {
        self.cur.fetch_sub(1, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.cur.load(Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inc_below_stops_at_the_limit_across_threads() {
        let g = std::sync::Arc::new(Gauge::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..1000).filter(|_| g.inc_below(100).is_some()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 100);
        assert_eq!((g.get(), g.max()), (100, 100));
        g.dec();
        assert_eq!(g.inc_below(100), Some(100));
        assert_eq!(g.inc_below(100), None);
    }

    #[test]
    fn rate_counts_the_last_second() {
        let r = Rate::default();
        for i in 0..10 {
            r.hit_at(5000 + i * 10);
        }
        assert_eq!(r.read_at(5500), 10);
        // Half way into the next second, half of the previous second still counts.
        assert_eq!(r.read_at(6500), 5);
        r.hit_at(6500);
        assert_eq!(r.read_at(6500), 6);
        // Long idle: nothing.
        assert_eq!(r.read_at(9000), 0);
        assert_eq!(r.max.load(Relaxed), 10);
    }

    #[test]
    fn gauge_keeps_its_high_water_mark() {
        let g = Gauge::default();
        g.inc();
        g.inc();
        g.dec();
        assert_eq!((g.get(), g.max()), (1, 2));
    }
}
