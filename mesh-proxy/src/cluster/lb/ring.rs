//! RING_HASH: Envoy's ketama ring (`ring_hash_lb.cc`).
//!
//! Construction, as Envoy does it:
//! - `scale = min(ceil(min_w × minimum_ring_size) / min_w, maximum_ring_size)`, where `min_w` is
//!   the smallest normalized host weight (weights sum to 1), so the lightest host gets a whole
//!   number of tokens.
//! - Hosts are walked in order with two running sums, `target += scale × w` and one token per
//!   `current += 1` while `current < target`; host tokens are the hash of `"<key>_<i>"` for
//!   `i = 0, 1, …` (xxHash64 seed 0, or libstdc++'s MurmurHash2-64 with its seed).
//! - Tokens are sorted by hash.
//!
//! Lookup: the first token `≥ hash`, wrapping to the first; retry attempt `a > 0` takes the
//! token `a` places further (Envoy's "behave as if this host was not in the ring").

use std::fmt::Write as _;
use std::sync::Arc;

use xxhash_rust::xxh64::xxh64;

use crate::cluster::host::Host;

/// libstdc++'s `std::hash<std::string>` seed, which Envoy's MURMUR_HASH_2 uses.
const STD_HASH_SEED: u64 = 0xc70f_6907;

/// A built ring.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    /// `(token, index into hosts)`, sorted by token.
    tokens: Vec<(u64, u32)>,
    hosts: Vec<Arc<Host>>,
}

impl Ring {
    /// Builds the ring over `(host, normalized weight)` pairs, in the given order (the order
    /// matters where running sums round). `min_weight` is the smallest weight.
    pub(crate) fn build(
        weights: &[(Arc<Host>, f64)],
        min_weight: f64,
        min_ring_size: u64,
        max_ring_size: u64,
        murmur: bool,
    ) -> Ring {
        if weights.is_empty() {
            return Ring::default();
        }
        let scale =
            ((min_weight * min_ring_size as f64).ceil() / min_weight).min(max_ring_size as f64);
        // Envoy reserves `ceil(scale)`; the capacity is a hint only.
        let capacity = (scale.ceil() as usize).min(max_ring_size as usize);
        let mut tokens = Vec::with_capacity(capacity);
        let mut hosts = Vec::with_capacity(weights.len());
        let mut key = String::new();
        let mut current = 0.0_f64;
        let mut target = 0.0_f64;
        for (index, (host, weight)) in weights.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            hosts.push(host.clone());
            key.clear();
            key.push_str(host.hash_key());
            key.push('_');
            let prefix = key.len();
            target += scale * weight;
            let mut i: u64 = 0;
            while current < target {
                key.truncate(prefix);
                let _ = write!(key, "{i}");
                let token = if murmur {
                    murmur_hash2_64(key.as_bytes(), STD_HASH_SEED)
                } else {
                    xxh64(key.as_bytes(), 0)
                };
                tokens.push((token, index));
                i += 1;
                current += 1.0;
            }
        }
        // Stable, so equal tokens (practically never) keep insertion order.
        tokens.sort_by_key(|t| t.0);
        Ring { tokens, hosts }
    }

    /// Number of tokens.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Tokens per host, in build order (for tests and stats).
    #[cfg(test)]
    pub(crate) fn tokens_per_host(&self) -> Vec<usize> {
        let mut counts = vec![0; self.hosts.len()];
        for (_, h) in &self.tokens {
            counts[*h as usize] += 1;
        }
        counts
    }

    /// Share of the hash space each host owns (the gaps that end at its tokens; the first
    /// token also owns the wrap-around gap), in build order.
    #[cfg(test)]
    pub(crate) fn shares(&self) -> Vec<f64> {
        let mut shares = vec![0.0; self.hosts.len()];
        let Some(last) = self.tokens.last() else {
            return shares;
        };
        let mut prev = last.0;
        for (token, h) in &self.tokens {
            shares[*h as usize] += token.wrapping_sub(prev) as f64 / 2f64.powi(64);
            prev = *token;
        }
        shares
    }

    /// The host for `hash` on retry attempt `attempt` (0 = first try).
    pub(crate) fn choose(&self, hash: u64, attempt: u32) -> Option<&Arc<Host>> {
        if self.tokens.is_empty() {
            return None;
        }
        let mut at = self.tokens.partition_point(|(token, _)| *token < hash);
        if at == self.tokens.len() {
            at = 0;
        }
        if attempt > 0 {
            at = (at + attempt as usize) % self.tokens.len();
        }
        self.hosts.get(self.tokens[at].1 as usize)
    }
}

/// MurmurHash2, 64-bit, as libstdc++'s `_Hash_bytes` computes it on a little-endian 64-bit
/// platform (Envoy's `MurmurHash::murmurHash2`).
pub(crate) fn murmur_hash2_64(key: &[u8], seed: u64) -> u64 {
    const MUL: u64 = 0xc6a4_a793_5bd1_e995;
    fn shift_mix(v: u64) -> u64 {
        v ^ (v >> 47)
    }
    let mut hash = seed ^ (key.len() as u64).wrapping_mul(MUL);
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let data = shift_mix(u64::from_le_bytes(word).wrapping_mul(MUL)).wrapping_mul(MUL);
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let data = tail
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8).wrapping_add(u64::from(*b)));
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    hash = shift_mix(hash).wrapping_mul(MUL);
    shift_mix(hash)
}
