//! The cluster's admin states (drain, maintenance, weights set at run time): a map of
//! last-writer-wins registers, one per (service, server), kept in a file in lbd's state
//! directory and merged with every other server's lbd (see [`crate::peers`]).
//!
//! ```text
//!  lbctl drain S/X --> Book::set (stamp = HLC) --> file --> engine --> peers (push now)
//!  peer's Sync     --> Book::merge (newer stamp wins) --> file --> engine --> answer: all
//!  start / reload  --> Book::load (file) --> engine.apply_admin(every entry)
//! ```
//!
//! The stamp is a hybrid logical clock: the wall clock in milliseconds, but always past
//! every stamp this node has seen. A change made after another was seen therefore wins
//! over it even when the nodes' clocks disagree; two changes made on two nodes that had
//! not heard of each other are ordered by their clocks, ties by node name.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use common::proto::lbd::{AdminEntry, AdminState};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

type Key = (String, String);

/// What the state file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    /// The highest stamp this node has issued or seen.
    clock: u64,
    entries: Vec<AdminEntry>,
}

#[derive(Debug)]
pub struct Book {
    me: String,
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    clock: u64,
    entries: BTreeMap<Key, AdminEntry>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Book {
    /// An empty book that keeps nothing on disk (tests, `--state-dir` unusable).
    pub fn in_memory(me: &str) -> Book {
        Book {
            me: me.to_owned(),
            path: None,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The book in `dir/admin.json`. A missing file is an empty book; an unreadable or
    /// corrupt one is set aside (`admin.json.bad`), said in the journal, and the book
    /// starts empty: the peers still know the cluster's states and bring them back.
    pub fn load(me: &str, dir: &Path) -> Book {
        let path = dir.join("admin.json");
        let mut inner = Inner::default();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(f) => {
                    inner.clock = f.clock;
                    for e in f.entries {
                        inner.clock = inner.clock.max(e.stamp);
                        inner
                            .entries
                            .insert((e.service.clone(), e.server.clone()), e);
                    }
                    info!(path = %path.display(), entries = inner.entries.len(), "admin states loaded");
                }
                Err(e) => {
                    let bad = path.with_extension("json.bad");
                    let _ = std::fs::rename(&path, &bad);
                    warn!(path = %path.display(), error = %e, set_aside = %bad.display(), "admin state file is not valid: starting without it (the peers bring the cluster's states back)");
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read the admin state file: starting without it");
            }
        }
        Book {
            me: me.to_owned(),
            path: Some(path),
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A change made here: stamped past everything seen, stored, written out.
    pub fn set(
        &self,
        service: &str,
        server: &str,
        state: AdminState,
        weight: Option<u32>,
    ) -> AdminEntry {
        let mut g = self.lock();
        g.clock = now_ms().max(g.clock + 1);
        let e = AdminEntry {
            service: service.to_owned(),
            server: server.to_owned(),
            state,
            weight,
            stamp: g.clock,
            by: self.me.clone(),
        };
        g.entries
            .insert((service.to_owned(), server.to_owned()), e.clone());
        self.persist(&g);
        e
    }

    /// The entry for one server, if any operator ever set it.
    #[cfg(test)]
    fn get(&self, service: &str, server: &str) -> Option<AdminEntry> {
        self.lock()
            .entries
            .get(&(service.to_owned(), server.to_owned()))
            .cloned()
    }

    /// Merge a peer's entries; returns those that won (to apply to the engine).
    pub fn merge(&self, theirs: Vec<AdminEntry>) -> Vec<AdminEntry> {
        let mut g = self.lock();
        let mut won = Vec::new();
        for e in theirs {
            g.clock = g.clock.max(e.stamp);
            let key = (e.service.clone(), e.server.clone());
            let newer = g.entries.get(&key).is_none_or(|mine| e.newer_than(mine));
            if newer {
                g.entries.insert(key, e.clone());
                won.push(e);
            }
        }
        if !won.is_empty() {
            self.persist(&g);
        }
        won
    }

    pub fn all(&self) -> Vec<AdminEntry> {
        self.lock().entries.values().cloned().collect()
    }

    /// Write the book atomically (a temporary file, fsync, rename). A failure is logged:
    /// the states still hold in memory and at the peers.
    fn persist(&self, g: &Inner) {
        let Some(path) = &self.path else { return };
        let file = File {
            clock: g.clock,
            entries: g.entries.values().cloned().collect(),
        };
        let tmp = path.with_extension("json.tmp");
        let r = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = r {
            warn!(path = %path.display(), error = %e, "cannot write the admin state file: the states hold until lbd restarts (and at the peers)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(server: &str, state: AdminState, stamp: u64, by: &str) -> AdminEntry {
        AdminEntry {
            service: "api".into(),
            server: server.into(),
            state,
            weight: None,
            stamp,
            by: by.into(),
        }
    }

    #[test]
    fn the_newer_stamp_wins_and_ties_go_by_node_name() {
        let b = Book::in_memory("s1");
        assert_eq!(
            b.merge(vec![entry("x", AdminState::Drain, 10, "s2")]).len(),
            1
        );
        // Older: loses.
        assert!(b
            .merge(vec![entry("x", AdminState::Ready, 9, "s3")])
            .is_empty());
        // Same stamp, higher name: wins; lower: loses.
        assert_eq!(
            b.merge(vec![entry("x", AdminState::Maint, 10, "s3")]).len(),
            1
        );
        assert!(b
            .merge(vec![entry("x", AdminState::Ready, 10, "s1")])
            .is_empty());
        assert_eq!(b.get("api", "x").unwrap().state, AdminState::Maint);
    }

    #[test]
    fn a_local_change_after_seeing_a_future_stamp_still_wins() {
        // A peer whose clock runs an hour ahead drained x; the operator here enables it
        // a moment later. The enable must win although this clock is behind.
        let b = Book::in_memory("s1");
        let ahead = now_ms() + 3_600_000;
        b.merge(vec![entry("x", AdminState::Drain, ahead, "s2")]);
        let e = b.set("api", "x", AdminState::Ready, None);
        assert!(e.stamp > ahead);
        let other = Book::in_memory("s2");
        other.merge(vec![entry("x", AdminState::Drain, ahead, "s2")]);
        assert_eq!(other.merge(vec![e]).len(), 1);
        assert_eq!(other.get("api", "x").unwrap().state, AdminState::Ready);
    }

    #[test]
    fn the_file_survives_a_restart_and_a_corrupt_one_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let b = Book::load("s1", dir.path());
        b.set("api", "x", AdminState::Drain, None);
        b.set("api", "y", AdminState::Ready, Some(3));
        let again = Book::load("s1", dir.path());
        assert_eq!(again.all(), b.all());
        // The clock survives too: a new stamp is past the old ones.
        let e = again.set("api", "z", AdminState::Maint, None);
        assert!(b.all().iter().all(|o| e.stamp > o.stamp));

        std::fs::write(dir.path().join("admin.json"), b"{ not json").unwrap();
        let fresh = Book::load("s1", dir.path());
        assert!(fresh.all().is_empty());
        assert!(dir.path().join("admin.json.bad").exists());
    }
}
