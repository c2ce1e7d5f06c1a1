//! Server selection: pure, synchronous, no I/O and no clock.
//!
//! The proxy hands [`Balancer::pick`] a slice of [`Candidate`]s (one per configured server,
//! in config order) describing what it sees right now, the indices already tried for this
//! client (retries), and a hash of the client address. Rules shared by every algorithm:
//!
//! - a server is eligible when it is `usable` (health UP and admin READY), has a weight
//!   above zero, and was not tried yet for this client;
//! - backup servers are eligible only when no non-backup server is;
//! - a `suspect` server (vrrpd lost its node; its check is running now) is a last resort:
//!   eligible only when no other server is, so the connections that arrive while the check
//!   runs go to servers on live nodes.
//!
//! Algorithms:
//! - `roundrobin`: smooth weighted round robin (nginx's): each pick adds every eligible
//!   server's weight to its running score, takes the highest, and subtracts the total
//!   from it, so weights 5,1,1 give `a a b a c a a` rather than `a a a a a b c`.
//! - `leastconn`: fewest active connections per unit of weight; ties rotate.
//! - `source`: weighted rendezvous hashing of (client, server). A client keeps its server
//!   as long as that server stays eligible, whatever happens to the others; when a
//!   server leaves, only its own clients move.

use common::config::Balance;

/// What the balancer needs to know about one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub weight: u32,
    pub backup: bool,
    /// Health UP and administratively READY.
    pub usable: bool,
    /// Connections currently open to it (leastconn).
    pub active: u64,
    /// A stable identity of the server (hash of its address), for `source`.
    pub key: u64,
    /// vrrpd lost the server's node and its check has not answered yet.
    pub suspect: bool,
}

/// Per-frontend balancing state.
#[derive(Debug, Clone)]
pub struct Balancer {
    algo: Balance,
    /// Smooth round-robin running scores, one per server.
    current: Vec<i64>,
    /// Rotating start for leastconn ties.
    next: usize,
}

impl Balancer {
    pub fn new(algo: Balance) -> Self {
        Balancer {
            algo,
            current: Vec::new(),
            next: 0,
        }
    }

    pub fn algo(&self) -> Balance {
        self.algo
    }

    /// Choose a server, or `None` when no server is eligible.
    pub fn pick(&mut self, servers: &[Candidate], tried: &[usize], client: u64) -> Option<usize> {
        // Tiers, best first: (backup, suspect) = (no, no), (yes, no), (no, yes), (yes, yes).
        const TIERS: [(bool, bool); 4] =
            [(false, false), (true, false), (false, true), (true, true)];
        let eligible = |i: usize, c: &Candidate, (backup, suspect): (bool, bool)| {
            c.usable
                && c.weight > 0
                && c.backup == backup
                && c.suspect == suspect
                && !tried.contains(&i)
        };
        let tier = TIERS
            .into_iter()
            .find(|&t| servers.iter().enumerate().any(|(i, c)| eligible(i, c, t)))?;
        let is = |i: usize, c: &Candidate| eligible(i, c, tier);
        match self.algo {
            Balance::RoundRobin => self.pick_rr(servers, is),
            Balance::LeastConn => self.pick_leastconn(servers, is),
            Balance::Source => pick_source(servers, is, client),
        }
    }

    fn pick_rr(
        &mut self,
        servers: &[Candidate],
        is: impl Fn(usize, &Candidate) -> bool,
    ) -> Option<usize> {
        if self.current.len() != servers.len() {
            self.current = vec![0; servers.len()];
        }
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (i, c) in servers.iter().enumerate() {
            if !is(i, c) {
                continue;
            }
            let w = i64::from(c.weight);
            self.current[i] += w;
            total += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            self.current[b] -= total;
        }
        best
    }

    fn pick_leastconn(
        &mut self,
        servers: &[Candidate],
        is: impl Fn(usize, &Candidate) -> bool,
    ) -> Option<usize> {
        let n = servers.len();
        if n == 0 {
            return None;
        }
        let start = self.next % n;
        self.next = self.next.wrapping_add(1);
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let c = &servers[i];
            if !is(i, c) {
                continue;
            }
            let better = match best {
                None => true,
                // c.active / c.weight < b.active / b.weight, without division.
                Some(b) => {
                    let b = &servers[b];
                    u128::from(c.active) * u128::from(b.weight)
                        < u128::from(b.active) * u128::from(c.weight)
                }
            };
            if better {
                best = Some(i);
            }
        }
        best
    }
}

fn pick_source(
    servers: &[Candidate],
    is: impl Fn(usize, &Candidate) -> bool,
    client: u64,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in servers.iter().enumerate() {
        if !is(i, c) {
            continue;
        }
        // Weighted rendezvous: score = w / -ln(u), u uniform in (0, 1) from the pair hash.
        let h = mix(client ^ mix(c.key));
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = f64::from(c.weight) / -u.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// splitmix64's finaliser: a fast, well-mixed, deterministic 64-bit hash step.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic hash of bytes (same on every node and across restarts, so every lbd in
/// the cluster sends a given client to the same server).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| mix(h ^ u64::from(*b)))
}

/// Hash of a client address for `source` balancing (IPv4-mapped IPv6 counts as IPv4).
pub fn client_hash(ip: std::net::IpAddr) -> u64 {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        std::net::IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}

/// Stable identity of a server address.
pub fn server_key(addr: std::net::SocketAddr) -> u64 {
    let mut b = match addr.ip().to_canonical() {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    b.extend_from_slice(&addr.port().to_be_bytes());
    hash_bytes(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(weight: u32) -> Candidate {
        Candidate {
            weight,
            backup: false,
            usable: true,
            active: 0,
            key: 0,
            suspect: false,
        }
    }

    fn servers(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate {
                key: mix(i as u64 + 1),
                ..cand(*w)
            })
            .collect()
    }

    #[test]
    fn smooth_roundrobin_interleaves_by_weight() {
        let s = servers(&[5, 1, 1]);
        let mut b = Balancer::new(Balance::RoundRobin);
        let seq: Vec<usize> = (0..7).map(|_| b.pick(&s, &[], 0).unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn roundrobin_equal_weights_cycles() {
        let s = servers(&[1, 1, 1]);
        let mut b = Balancer::new(Balance::RoundRobin);
        let seq: Vec<usize> = (0..6).map(|_| b.pick(&s, &[], 0).unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn roundrobin_weighted_counts_over_many() {
        let s = servers(&[1, 2, 3]);
        let mut b = Balancer::new(Balance::RoundRobin);
        let mut n = [0; 3];
        for _ in 0..600 {
            n[b.pick(&s, &[], 0).unwrap()] += 1;
        }
        assert_eq!(n, [100, 200, 300]);
    }

    #[test]
    fn unusable_zero_weight_and_tried_are_skipped() {
        let mut s = servers(&[1, 0, 1, 1]);
        s[2].usable = false;
        for algo in [Balance::RoundRobin, Balance::LeastConn, Balance::Source] {
            let mut b = Balancer::new(algo);
            for c in 0..50 {
                let p = b.pick(&s, &[], mix(c)).unwrap();
                assert!(p == 0 || p == 3, "{algo:?} picked {p}");
                let p = b.pick(&s, &[0], mix(c)).unwrap();
                assert_eq!(p, 3, "{algo:?}");
            }
            assert_eq!(b.pick(&s, &[0, 3], 1), None, "{algo:?}");
        }
    }

    #[test]
    fn backups_only_when_all_primaries_are_out() {
        let mut s = servers(&[1, 1, 1]);
        s[2].backup = true;
        for algo in [Balance::RoundRobin, Balance::LeastConn, Balance::Source] {
            let mut b = Balancer::new(algo);
            for c in 0..30 {
                assert_ne!(b.pick(&s, &[], mix(c)), Some(2), "{algo:?}");
            }
            let mut down = s.clone();
            down[0].usable = false;
            for c in 0..30 {
                assert_eq!(b.pick(&down, &[], mix(c)), Some(1), "{algo:?}");
            }
            down[1].usable = false;
            for c in 0..30 {
                assert_eq!(b.pick(&down, &[], mix(c)), Some(2), "{algo:?}");
            }
            // A primary that failed to connect for this client: the backup is next.
            assert_eq!(b.pick(&s, &[0, 1], 7), Some(2), "{algo:?}");
        }
    }

    #[test]
    fn suspects_only_when_nothing_else_is_left() {
        let mut s = servers(&[1, 1, 1]);
        s[0].suspect = true;
        s[2].backup = true;
        for algo in [Balance::RoundRobin, Balance::LeastConn, Balance::Source] {
            let mut b = Balancer::new(algo);
            for c in 0..30 {
                assert_eq!(b.pick(&s, &[], mix(c)), Some(1), "{algo:?}");
            }
            // A healthy backup comes before a suspect primary...
            assert_eq!(b.pick(&s, &[1], 7), Some(2), "{algo:?}");
            // ...and the suspect is still better than nothing (its check may yet pass).
            assert_eq!(b.pick(&s, &[1, 2], 7), Some(0), "{algo:?}");
            assert_eq!(b.pick(&s, &[0, 1, 2], 7), None, "{algo:?}");
        }
    }

    #[test]
    fn leastconn_prefers_fewest_per_weight_and_rotates_ties() {
        let mut s = servers(&[1, 1, 2]);
        s[0].active = 3;
        s[1].active = 1;
        s[2].active = 3; // 1.5 per weight unit
        let mut b = Balancer::new(Balance::LeastConn);
        assert_eq!(b.pick(&s, &[], 0), Some(1));
        s[1].active = 2; // 2 > 1.5
        assert_eq!(b.pick(&s, &[], 0), Some(2));
        let t = servers(&[1, 1, 1]);
        let mut seen = [0; 3];
        for _ in 0..30 {
            seen[b.pick(&t, &[], 0).unwrap()] += 1;
        }
        assert_eq!(seen, [10, 10, 10]);
    }

    #[test]
    fn source_is_sticky_and_spreads_by_weight() {
        let s = servers(&[1, 1, 2]);
        let mut b = Balancer::new(Balance::Source);
        let mut n = [0u32; 3];
        for c in 0..8000u64 {
            let h = client_hash(std::net::IpAddr::from((c as u32).to_be_bytes()));
            let p = b.pick(&s, &[], h).unwrap();
            assert_eq!(b.pick(&s, &[], h), Some(p));
            n[p] += 1;
        }
        // Expect 2000, 2000, 4000 within 5 %.
        assert!((1900..2100).contains(&n[0]), "{n:?}");
        assert!((1900..2100).contains(&n[1]), "{n:?}");
        assert!((3800..4200).contains(&n[2]), "{n:?}");
    }

    #[test]
    fn source_moves_only_the_clients_of_a_server_that_changes() {
        let s = servers(&[1, 1, 1, 1]);
        let mut b = Balancer::new(Balance::Source);
        let before: Vec<usize> = (0..2000u64)
            .map(|c| b.pick(&s, &[], mix(c)).unwrap())
            .collect();
        let mut down = s.clone();
        down[1].usable = false;
        for (c, was) in before.iter().enumerate() {
            let now = b.pick(&down, &[], mix(c as u64)).unwrap();
            if *was != 1 {
                assert_eq!(now, *was, "client {c} moved although its server stayed up");
            }
        }
        // And back: everyone returns to where they were.
        for (c, was) in before.iter().enumerate() {
            assert_eq!(b.pick(&s, &[], mix(c as u64)), Some(*was));
        }
    }

    #[test]
    fn client_hash_treats_mapped_v4_as_v4() {
        let v4: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_hash(v4), client_hash(mapped));
    }
}
