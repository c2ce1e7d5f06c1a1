//! Nodes: names from host names, and unique VRRP priorities from keepalived's.

use std::net::IpAddr;

/// A host name usable as a node name (one DNS label), if `s` gives one.
pub(super) fn host_label(s: &str) -> Option<String> {
    let first = s.split('.').next().unwrap_or("");
    let l: String = first
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let l = l.trim_matches('-').to_owned();
    (!l.is_empty()).then_some(l)
}

/// One node's claim to a VRRP priority: keepalived's (or, for a node without a file, a
/// value below the known ones), its `state MASTER`, its address.
#[derive(Debug, Clone, Copy)]
pub(super) struct Claim {
    pub(super) prio: i32,
    pub(super) master: bool,
    pub(super) addr: IpAddr,
}

/// Unique priorities from 1 to 254 for vrrpd, from keepalived's, which may be equal:
/// - every strict order between two claims is kept;
/// - equal claims are ranked as keepalived elects among them: a `state MASTER` node first
///   (it starts as master and backups do not preempt at equal priority), then by the higher
///   address (VRRP's tie-break);
/// - as few values as possible change: in that ranking, the values kept form the longest
///   run that can stay (a non-increasing `prio + rank`, room above and below each), the
///   highest ranks preferred; the others take the value nearest their own that fits.
///
/// `None` only for more than 254 claims.
pub(super) fn unique_priorities(claims: &[Claim]) -> Option<Vec<u8>> {
    let n = claims.len();
    if n > 254 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| {
        let (a, b) = (&claims[x], &claims[y]);
        b.prio
            .cmp(&a.prio)
            .then(b.master.cmp(&a.master))
            .then(b.addr.cmp(&a.addr))
            .then(x.cmp(&y))
    });
    let p: Vec<i32> = order.iter().map(|&i| claims[i].prio).collect();
    let n32 = n as i32;
    let rank = |k: usize| k as i32;
    // Can rank k keep its value: k values above it up to 254, n-1-k below it down to 1.
    let keepable = |k: usize| p[k] + rank(k) <= 254 && p[k] >= n32 - rank(k);
    let a = |k: usize| p[k] + rank(k);
    // longest[k]: the longest run of kept values starting at k.
    let mut longest = vec![0usize; n];
    for k in (0..n).rev() {
        if !keepable(k) {
            continue;
        }
        let tail = (k + 1..n)
            .filter(|&j| longest[j] > 0 && a(j) <= a(k))
            .map(|j| longest[j])
            .max()
            .unwrap_or(0);
        longest[k] = 1 + tail;
    }
    let mut kept = vec![false; n];
    let mut want = longest.iter().copied().max().unwrap_or(0);
    let mut prev: Option<usize> = None;
    for k in 0..n {
        if want == 0 {
            break;
        }
        if longest[k] == want && prev.is_none_or(|i| a(k) <= a(i)) {
            kept[k] = true;
            prev = Some(k);
            want -= 1;
        }
    }
    // The others, top down: below the previous value, above what the next kept value and
    // the floor of 1 need, as near their own value as that allows.
    let mut q = vec![0i32; n];
    for k in 0..n {
        if kept[k] {
            q[k] = p[k];
            continue;
        }
        let hi = if k == 0 { 254 } else { q[k - 1] - 1 };
        let lo = match (k + 1..n).find(|&j| kept[j]) {
            Some(j) => p[j] + (rank(j) - rank(k)),
            None => n32 - rank(k),
        };
        q[k] = p[k].min(hi).max(lo);
    }
    let mut out = vec![0u8; n];
    for (k, &i) in order.iter().enumerate() {
        out[i] = u8::try_from(q[k].clamp(1, 254)).unwrap_or(1);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use std::collections::BTreeSet;

    use super::*;

    fn claims(spec: &[(i32, bool, &str)]) -> Vec<Claim> {
        spec.iter()
            .map(|&(prio, master, addr)| Claim {
                prio,
                master,
                addr: addr.parse().unwrap(),
            })
            .collect()
    }

    /// Unique, 1 to 254, and every strict order of the input kept.
    fn assert_sound(c: &[Claim], q: &[u8]) {
        let set: BTreeSet<u8> = q.iter().copied().collect();
        assert_eq!(set.len(), q.len(), "not unique: {q:?}");
        assert!(q.iter().all(|&p| (1..=254).contains(&p)), "{q:?}");
        for i in 0..c.len() {
            for j in 0..c.len() {
                if c[i].prio > c[j].prio {
                    assert!(q[i] > q[j], "order {i} > {j} lost: {q:?}");
                }
            }
        }
    }

    fn run(spec: &[(i32, bool, &str)]) -> Vec<u8> {
        let c = claims(spec);
        let q = unique_priorities(&c).unwrap();
        assert_sound(&c, &q);
        q
    }

    #[test]
    fn kubeadm_101_100_100_lowers_the_lower_address() {
        let q = run(&[
            (101, true, "10.0.0.11"),
            (100, false, "10.0.0.12"),
            (100, false, "10.0.0.13"),
        ]);
        assert_eq!(q, [101, 99, 100]);
    }

    #[test]
    fn ties_at_the_floor_move_up_instead_of_sharing_1() {
        // The old bug: 1 and 1, or 2, 2, 1, wrote two nodes at priority 1.
        assert_eq!(
            run(&[(1, false, "10.0.0.1"), (1, false, "10.0.0.2")]),
            [1, 2]
        );
        assert_eq!(
            run(&[
                (2, false, "10.0.0.1"),
                (2, false, "10.0.0.2"),
                (1, false, "10.0.0.3")
            ]),
            [2, 3, 1]
        );
        let q = run(&[(1, false, "10.0.0.1"); 1]);
        assert_eq!(q, [1]);
        let q = run(&[
            (1, false, "10.0.0.1"),
            (1, false, "10.0.0.2"),
            (1, false, "10.0.0.3"),
            (1, false, "10.0.0.4"),
        ]);
        assert_eq!(q, [1, 2, 3, 4]);
    }

    #[test]
    fn state_master_ranks_first_among_equals() {
        // Lower address, but state MASTER: keepalived keeps it master.
        let q = run(&[(100, true, "10.0.0.1"), (100, false, "10.0.0.2")]);
        assert!(q[0] > q[1], "{q:?}");
        assert_eq!(q, [100, 99]);
    }

    #[test]
    fn equal_priorities_follow_the_higher_address() {
        let q = run(&[
            (100, false, "10.0.0.2"),
            (100, false, "10.0.0.10"),
            (100, false, "10.0.0.3"),
        ]);
        assert_eq!(q, [98, 100, 99]);
        let q = run(&[(50, false, "fd00::1"), (50, false, "fd00::2")]);
        assert_eq!(q, [49, 50]);
    }

    #[test]
    fn as_few_values_as_possible_change() {
        // Raising the top one keeps two values; lowering the tie would change two.
        assert_eq!(
            run(&[
                (5, false, "10.0.0.2"),
                (5, false, "10.0.0.1"),
                (4, false, "10.0.0.3")
            ]),
            [6, 5, 4]
        );
        // Nothing to change.
        assert_eq!(
            run(&[
                (150, false, "10.0.0.1"),
                (120, false, "10.0.0.2"),
                (254, false, "10.0.0.3")
            ]),
            [150, 120, 254]
        );
        // A tie at the ceiling moves down.
        assert_eq!(
            run(&[(254, false, "10.0.0.1"), (254, false, "10.0.0.2")]),
            [253, 254]
        );
    }

    #[test]
    fn any_claims_give_unique_priorities_of_1_or_more() {
        // Every combination of 1 to 5 claims from a few values (ties, floor, ceiling,
        // below 1 for nodes without a file), every master flag pattern.
        let values = [-2, 1, 2, 3, 100, 253, 254];
        let mut count = 0;
        for len in 1..=5u32 {
            let total = (values.len() as u32).pow(len);
            for code in 0..total {
                let mut c = code;
                let spec: Vec<(i32, bool, String)> = (0..len)
                    .map(|i| {
                        let v = values[(c % values.len() as u32) as usize];
                        c /= values.len() as u32;
                        (v, (code + i) % 3 == 0, format!("10.0.0.{}", i + 1))
                    })
                    .collect();
                let cl: Vec<Claim> = spec
                    .iter()
                    .map(|(p, m, a)| Claim {
                        prio: *p,
                        master: *m,
                        addr: a.parse().unwrap(),
                    })
                    .collect();
                let q = unique_priorities(&cl).unwrap();
                assert_sound(&cl, &q);
                count += 1;
            }
        }
        assert!(count > 10_000);
    }
}
