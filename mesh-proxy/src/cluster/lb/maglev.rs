//! MAGLEV: Envoy's weighted Maglev table (`maglev_lb.cc`, pseudocode listing 1 of the paper).
//!
//! Construction, as Envoy does it:
//! - Hosts are sorted by hash key (byte order) so the table does not depend on input order.
//! - Per host: `offset = xxHash64(key, 0) % M`, `skip = xxHash64(key, 1) % (M − 1) + 1`, and its
//!   permutation is `(offset + skip × next) % M`.
//! - Rounds `iteration = 1, 2, …`: each host whose `iteration × w ≥ target` (target starts at 0
//!   and grows by the largest normalized weight on each fill) claims the next free slot of its
//!   permutation, until all `M` slots are taken.
//!
//! Lookup: `table[hash % M]`; retry attempt `a > 0` first XORs the hash with `2⁶⁴ − a`.

use std::sync::Arc;

use xxhash_rust::xxh64::xxh64;

use crate::cluster::host::Host;

/// Envoy's default `table_size` (prime).
pub(crate) const DEFAULT_TABLE_SIZE: u64 = 65537;
/// Envoy's largest accepted `table_size`.
pub(crate) const MAX_TABLE_SIZE: u64 = 5_000_011;

const EMPTY: u32 = u32::MAX;

/// A built table.
#[derive(Debug, Default)]
pub(crate) struct Maglev {
    /// Slot → index into `hosts`.
    table: Vec<u32>,
    hosts: Vec<Arc<Host>>,
}

struct BuildEntry {
    offset: u64,
    skip: u64,
    weight: f64,
    target: f64,
    next: u64,
}

impl Maglev {
    /// Builds a table of `table_size` (prime, ≥ 2) slots over `(host, normalized weight)`;
    /// `max_weight` is the largest weight.
    pub(crate) fn build(weights: &[(Arc<Host>, f64)], max_weight: f64, table_size: u64) -> Maglev {
        if weights.is_empty() || table_size < 2 {
            return Maglev::default();
        }
        let mut sorted: Vec<&(Arc<Host>, f64)> = weights.iter().collect();
        // Stable: hosts sharing a key keep input order (Envoy breaks that tie by pointer).
        sorted.sort_by(|a, b| a.0.hash_key().as_bytes().cmp(b.0.hash_key().as_bytes()));
        let hosts: Vec<Arc<Host>> = sorted.iter().map(|(h, _)| h.clone()).collect();
        let mut entries: Vec<BuildEntry> = sorted
            .iter()
            .map(|(host, weight)| {
                let key = host.hash_key().as_bytes();
                BuildEntry {
                    offset: xxh64(key, 0) % table_size,
                    skip: xxh64(key, 1) % (table_size - 1) + 1,
                    weight: *weight,
                    target: 0.0,
                    next: 0,
                }
            })
            .collect();
        let Ok(size) = usize::try_from(table_size) else {
            return Maglev::default();
        };
        let permutation = |e: &BuildEntry| {
            (e.offset.wrapping_add(e.skip.wrapping_mul(e.next)) % table_size) as usize
        };
        let mut table = vec![EMPTY; size];
        let mut filled = 0usize;
        let mut iteration: u32 = 1;
        while filled < size {
            for (index, entry) in entries.iter_mut().enumerate() {
                if filled >= size {
                    break;
                }
                if f64::from(iteration) * entry.weight < entry.target {
                    continue;
                }
                entry.target += max_weight;
                let mut slot = permutation(entry);
                while table[slot] != EMPTY {
                    entry.next += 1;
                    slot = permutation(entry);
                }
                table[slot] = u32::try_from(index).unwrap_or(EMPTY);
                entry.next += 1;
                filled += 1;
            }
            iteration = iteration.wrapping_add(1);
        }
        Maglev { table, hosts }
    }

    /// Table size (0 when there is no host).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Hosts in table order (sorted by key) and the slot owner of every slot (for tests).
    #[cfg(test)]
    pub(crate) fn slots(&self) -> Vec<&str> {
        self.table
            .iter()
            .map(|i| self.hosts[*i as usize].hash_key())
            .collect()
    }

    /// The host for `hash` on retry attempt `attempt` (0 = first try).
    pub(crate) fn choose(&self, mut hash: u64, attempt: u32) -> Option<&Arc<Host>> {
        if self.table.is_empty() {
            return None;
        }
        if attempt > 0 {
            hash ^= u64::from(attempt).wrapping_neg();
        }
        let slot = (hash % self.table.len() as u64) as usize;
        self.hosts.get(*self.table.get(slot)? as usize)
    }
}

/// Whether `n` is prime (Maglev table sizes must be).
pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}
