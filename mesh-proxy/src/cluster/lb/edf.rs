//! Envoy's earliest-deadline-first scheduler (`source/common/upstream/edf_scheduler.h`), the
//! weighted round robin behind weighted ROUND_ROBIN, weighted LEAST_REQUEST and locality picks.
//!
//! Each entry has a deadline `current_time + 1 / weight`; a pick takes the earliest deadline
//! (ties: the entry inserted first), moves the clock to it and re-inserts the entry with its
//! weight at that moment. Entries are indices into the caller's list.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Envoy bounds the emulated initial picks to `u32::MAX / 10`.
const MAX_INITIAL_PICKS: u32 = 429_496_729;

/// Envoy adds this to every weight while emulating initial picks, so that weights that are
/// multiples of each other do not land on equal deadlines by rounding.
const PICK_EPSILON: f64 = 1e-13;

#[derive(Clone, Copy, Debug)]
struct Entry {
    deadline: f64,
    order: u64,
    item: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// "Greater" is picked first (`BinaryHeap` is a max-heap): the earlier deadline, then the
    /// lower insertion order.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .partial_cmp(&self.deadline)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.order.cmp(&self.order))
    }
}

/// The scheduler.
#[derive(Debug, Default)]
pub(crate) struct Edf {
    heap: BinaryHeap<Entry>,
    current_time: f64,
    order: u64,
}

impl Edf {
    /// Inserts `item` with `weight` (> 0).
    pub(crate) fn add(&mut self, weight: f64, item: u32) {
        let deadline = self.current_time + 1.0 / weight;
        self.heap.push(Entry {
            deadline,
            order: self.order,
            item,
        });
        self.order += 1;
    }

    /// Picks the entry with the earliest deadline and re-inserts it with `weight(item)`.
    /// No allocation: the heap never grows past its size.
    pub(crate) fn pick_and_add(&mut self, weight: impl Fn(u32) -> f64) -> Option<u32> {
        let top = self.heap.pop()?;
        self.current_time = top.deadline;
        self.add(weight(top.item), top.item);
        Some(top.item)
    }

    /// A scheduler over items `0..n` in the state it would have after `picks` picks from a
    /// fresh one with those weights (Envoy's `createWithPicks`, which spreads the starting point
    /// of workers and proxies). `weight` must be positive.
    pub(crate) fn with_picks(n: usize, weight: impl Fn(u32) -> f64, picks: u32) -> Edf {
        let picks = picks % MAX_INITIAL_PICKS;
        if n == 0 {
            return Edf::default();
        }
        let count = u32::try_from(n).unwrap_or(u32::MAX);
        let aug = |i: u32| weight(i) + PICK_EPSILON;
        let weights_sum = (0..count).fold(0.0, |sum, i| sum + aug(i));
        let picks_f = f64::from(picks);
        let mut heap = Vec::with_capacity(n);
        let mut picks_so_far: u32 = 0;
        let mut max_pick_time: f64 = 0.0;
        for i in 0..count {
            let w = aug(i);
            // Truncation of a non-negative value is Envoy's floor here.
            let mut floor_picks = (aug(i) * picks_f / weights_sum) as u32;
            if floor_picks > 0 && f64::from(floor_picks) / w >= picks_f / weights_sum {
                floor_picks -= 1;
            }
            let pick_time = f64::from(floor_picks) / w;
            let deadline = f64::from(floor_picks + 1) / w;
            heap.push(Entry {
                deadline,
                order: u64::from(i),
                item: i,
            });
            max_pick_time = max_pick_time.max(pick_time);
            picks_so_far += floor_picks;
        }
        let mut edf = Edf {
            heap: BinaryHeap::from(heap),
            current_time: max_pick_time,
            order: u64::from(count),
        };
        while picks_so_far < picks {
            edf.pick_and_add(&weight);
            picks_so_far += 1;
        }
        edf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::lb::vectors;

    fn fresh(weights: &[f64]) -> Edf {
        let mut edf = Edf::default();
        for (i, w) in weights.iter().enumerate() {
            edf.add(*w, i as u32);
        }
        edf
    }

    fn picks(edf: &mut Edf, weights: &[f64], n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                edf.pick_and_add(|i| weights[i as usize])
                    .expect("non-empty")
            })
            .collect()
    }

    /// Deadlines by hand for weights 1, 2, 3: 1/3 C, 1/2 B, 2/3 C, then A, B, C all at 1 (ties
    /// by insertion order: A's entry is the oldest), 4/3 C, 3/2 B, 5/3 C, and C's next deadline
    /// rounds to 1.9999999999999998, just before A and B at 2. Envoy's scheduler (see
    /// `vectors.rs`) gives the same sequence.
    #[test]
    fn pick_order_and_tie_break_match_envoy() {
        let w = [1.0, 2.0, 3.0];
        let mut edf = fresh(&w);
        assert_eq!(picks(&mut edf, &w, 12), vectors::EDF_123_FRESH.to_vec());
        assert_eq!(
            vectors::EDF_123_FRESH.to_vec(),
            vec![2, 1, 2, 0, 1, 2, 2, 1, 2, 2, 0, 1]
        );
    }

    #[test]
    fn equal_weights_rotate_in_insertion_order() {
        let w = [5.0; 4];
        let mut edf = fresh(&w);
        assert_eq!(picks(&mut edf, &w, 8), vec![0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn shares_follow_weights() {
        let w = [1.0, 3.0, 6.0];
        let mut edf = fresh(&w);
        let mut counts = [0u32; 3];
        for p in picks(&mut edf, &w, 1000) {
            counts[p as usize] += 1;
        }
        assert_eq!(counts, [100, 300, 600]);
    }

    /// `createWithPicks` and picking from a fresh scheduler, against Envoy's (`vectors.rs`).
    /// The two differ slightly, in Envoy too: the emulation adds 1e-13 to every weight.
    #[test]
    fn with_picks_matches_envoy() {
        // (weights, initial picks, Envoy's fresh picks, Envoy's createWithPicks picks)
        type Case<'a> = (&'a [f64], u32, &'a [u32], &'a [u32]);
        let cases: [Case<'_>; 4] = [
            (
                &[1.0, 2.0, 3.0],
                0,
                &vectors::EDF_123_FRESH,
                &vectors::EDF_123_WITH_PICKS,
            ),
            (
                &[25.0, 75.0],
                23,
                &vectors::EDF_25_75_FRESH,
                &vectors::EDF_25_75_WITH_PICKS,
            ),
            (
                &[10.0, 1.0, 1.0, 7.0],
                1001,
                &vectors::EDF_MIXED_FRESH,
                &vectors::EDF_MIXED_WITH_PICKS,
            ),
            (
                &[0.3, 0.7],
                12345,
                &vectors::EDF_FRAC_FRESH,
                &vectors::EDF_FRAC_WITH_PICKS,
            ),
        ];
        for (weights, initial, want_fresh, want_with) in cases {
            let mut a = fresh(weights);
            picks(&mut a, weights, initial as usize);
            assert_eq!(picks(&mut a, weights, 12), want_fresh, "fresh {weights:?}");
            let mut b = Edf::with_picks(weights.len(), |i| weights[i as usize], initial);
            assert_eq!(
                picks(&mut b, weights, 12),
                want_with,
                "with_picks {weights:?}"
            );
        }
    }

    #[test]
    fn with_picks_keeps_shares() {
        let w = [1.0, 2.0, 7.0];
        let mut edf = Edf::with_picks(3, |i| w[i as usize], 987_654);
        let mut counts = [0i32; 3];
        for p in picks(&mut edf, &w, 1000) {
            counts[p as usize] += 1;
        }
        for (c, want) in counts.iter().zip([100, 200, 700]) {
            assert!((c - want).abs() <= 1, "{counts:?}");
        }
    }

    #[test]
    fn empty_scheduler_picks_nothing() {
        let mut edf = Edf::with_picks(0, |_| 1.0, 10);
        assert_eq!(edf.pick_and_add(|_| 1.0), None);
    }

    #[test]
    fn weight_changes_apply_at_reinsertion() {
        let mut edf = fresh(&[1.0, 1.0]);
        // Item 0 re-enters with a tiny weight: item 1 is picked many times before it.
        let w = |i: u32| if i == 0 { 0.01 } else { 1.0 };
        let seq: Vec<u32> = (0..20).map(|_| edf.pick_and_add(w).expect("x")).collect();
        assert_eq!(seq[0], 0);
        assert!(seq[1..].iter().all(|&i| i == 1), "{seq:?}");
    }
}
