//! `HostSet` tests: Envoy's reference vectors for ring hash and maglev, priorities and panic,
//! localities, each algorithm, slow start and the retry predicate.
//!
//! Statistical checks draw N ≥ 2000 picks from a seeded generator and accept a count within
//! 3.29 standard deviations of the binomial mean (two-sided p ≈ 0.001), see [`assert_share`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::vectors as v;
use super::*;
use crate::cluster::host::{Host, HostSpec};
use crate::config::endpoint::{HealthStatus, Locality};

fn spec(addr: &str, weight: u32) -> HostSpec {
    HostSpec {
        address: addr.parse().expect("address"),
        hostname: String::new(),
        hash_key: None,
        locality: Locality::default(),
        priority: 0,
        transport_match: None,
        weight,
        health: HealthStatus::Healthy,
    }
}

fn host(addr: &str, weight: u32) -> Arc<Host> {
    Arc::new(Host::new(spec(addr, weight)))
}

fn keyed(key: &str, addr: &str, weight: u32) -> Arc<Host> {
    Arc::new(Host::new(HostSpec {
        hash_key: Some(key.to_string()),
        ..spec(addr, weight)
    }))
}

fn at(addr: &str, priority: u32, health: HealthStatus) -> Arc<Host> {
    Arc::new(Host::new(HostSpec {
        priority,
        health,
        ..spec(addr, 1)
    }))
}

fn in_zone(addr: &str, zone: &str, health: HealthStatus) -> Arc<Host> {
    Arc::new(Host::new(HostSpec {
        locality: zone_locality(zone),
        health,
        ..spec(addr, 1)
    }))
}

fn zone_locality(zone: &str) -> Locality {
    Locality {
        region: "r".into(),
        zone: zone.into(),
        sub_zone: String::new(),
    }
}

fn with(policy: LbPolicy) -> LbParams {
    LbParams {
        policy,
        ..LbParams::default()
    }
}

fn rr() -> LbParams {
    with(LbPolicy::RoundRobin { slow_start: None })
}

fn ring(min: u64, max: u64, murmur: bool) -> LbParams {
    with(LbPolicy::RingHash {
        minimum_ring_size: min,
        maximum_ring_size: max,
        murmur,
    })
}

fn maglev(table_size: u64) -> LbParams {
    with(LbPolicy::Maglev { table_size })
}

fn least_request(choice_count: u32, bias: f64) -> LbParams {
    with(LbPolicy::LeastRequest {
        choice_count,
        active_request_bias: bias,
        slow_start: None,
    })
}

fn four() -> Vec<Arc<Host>> {
    (1..=4)
        .map(|i| host(&format!("10.0.0.{i}:8080"), 1))
        .collect()
}

fn weighted_four() -> Vec<Arc<Host>> {
    (1..=4)
        .map(|i| host(&format!("10.0.0.{i}:8080"), i))
        .collect()
}

/// Index of `picked` in `hosts` (by address).
fn index_of(hosts: &[Arc<Host>], picked: &Host) -> usize {
    hosts
        .iter()
        .position(|h| h.address() == picked.address())
        .expect("picked host is one of the set")
}

fn pick(set: &HostSet) -> Option<Arc<Host>> {
    set.choose(&mut LbContext::default())
}

fn pick_hash(set: &HostSet, hash: u64) -> usize {
    let host = set
        .choose(&mut LbContext {
            hash: Some(hash),
            ..LbContext::default()
        })
        .expect("a host");
    index_of(set.hosts(), &host)
}

/// The pick after `attempts` rejections (a predicate that rejects every host).
fn pick_hash_rejecting(set: &HostSet, hash: u64, attempts: u32) -> usize {
    let reject_all = |_: &Host| true;
    let host = set
        .choose(&mut LbContext {
            hash: Some(hash),
            should_select_another: Some(&reject_all),
            host_selection_retry_max_attempts: attempts,
        })
        .expect("a host");
    index_of(set.hosts(), &host)
}

/// Picks per address over `n` picks.
fn tally(set: &HostSet, n: usize) -> HashMap<SocketAddr, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let h = pick(set).expect("a host");
        *counts.entry(h.address()).or_insert(0) += 1;
    }
    counts
}

fn count(counts: &HashMap<SocketAddr, usize>, addr: &str) -> usize {
    counts
        .get(&addr.parse::<SocketAddr>().expect("address"))
        .copied()
        .unwrap_or(0)
}

/// `count` successes out of `n` are consistent with probability `p`: within 3.29 σ of `n p`
/// (two-sided p ≈ 0.001 under the normal approximation of the binomial).
fn assert_share(count: usize, n: usize, p: f64, what: &str) {
    let mean = n as f64 * p;
    let bound = 3.29 * (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (count as f64 - mean).abs() <= bound,
        "{what}: {count} of {n}, expected {mean:.1} ± {bound:.1}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hashes and tables against Envoy's (see vectors.rs for how the values were derived).

#[test]
fn hashes_match_libxxhash_and_libstdcxx() {
    for (input, murmur, xx0, xx1) in v::HASHES {
        assert_eq!(
            ring::murmur_hash2_64(input.as_bytes(), 0xc70f_6907),
            murmur,
            "{input:?}"
        );
        assert_eq!(
            xxhash_rust::xxh64::xxh64(input.as_bytes(), 0),
            xx0,
            "{input:?}"
        );
        assert_eq!(
            xxhash_rust::xxh64::xxh64(input.as_bytes(), 1),
            xx1,
            "{input:?}"
        );
    }
}

struct HashCase {
    name: &'static str,
    hosts: Vec<Arc<Host>>,
    params: LbParams,
    picks: &'static [(u64, usize)],
    retries: &'static [[usize; 3]],
}

fn check_hash_case(case: &HashCase) {
    let set = HostSet::new(case.hosts.clone(), &case.params);
    for (i, (hash, want)) in case.picks.iter().enumerate() {
        assert_eq!(
            pick_hash(&set, *hash),
            *want,
            "{}: hash {hash:#x}",
            case.name
        );
        for attempts in 0..3 {
            assert_eq!(
                pick_hash_rejecting(&set, *hash, attempts),
                case.retries[i][attempts as usize],
                "{}: hash {hash:#x} after {attempts} rejections",
                case.name
            );
        }
    }
}

#[test]
fn ring_hash_picks_match_envoy() {
    let cases = [
        HashCase {
            name: "4 equal hosts, xxHash",
            hosts: four(),
            params: ring(1024, MAX_RING_SIZE, false),
            picks: &v::RING_FOUR_PICKS,
            retries: &v::RING_FOUR_RETRIES,
        },
        HashCase {
            name: "weights 1..4",
            hosts: weighted_four(),
            params: ring(1024, MAX_RING_SIZE, false),
            picks: &v::RING_WEIGHTED_PICKS,
            retries: &v::RING_WEIGHTED_RETRIES,
        },
        HashCase {
            name: "MurmurHash2",
            hosts: four(),
            params: ring(1024, MAX_RING_SIZE, true),
            picks: &v::RING_MURMUR_PICKS,
            retries: &v::RING_MURMUR_RETRIES,
        },
        HashCase {
            name: "hash_key metadata, ring of 9",
            hosts: vec![
                keyed("a", "10.9.0.1:1", 1),
                keyed("b", "10.9.0.2:1", 1),
                keyed("c", "10.9.0.3:1", 1),
            ],
            params: ring(7, 100, false),
            picks: &v::RING_THREE_SMALL_PICKS,
            retries: &v::RING_THREE_SMALL_RETRIES,
        },
        HashCase {
            name: "capped by maximum_ring_size",
            hosts: vec![
                host("10.0.0.3:8080", 3),
                host("10.0.0.1:8080", 1),
                keyed("host-b", "10.9.9.9:1", 7),
            ],
            params: ring(1024, 50, false),
            picks: &v::RING_ODD_CAPPED_PICKS,
            retries: &v::RING_ODD_CAPPED_RETRIES,
        },
    ];
    for case in &cases {
        check_hash_case(case);
    }
}

fn flat_weights(hosts: &[Arc<Host>]) -> (Vec<(Arc<Host>, f64)>, f64, f64) {
    let g = Grouped {
        hosts: hosts.to_vec(),
        healthy: hosts.to_vec(),
        degraded: Vec::new(),
        localities: Vec::new(),
    };
    normalize(&g, false, false)
}

#[test]
fn ring_sizes_and_tokens_per_host_match_envoy() {
    // (hosts, minimum and maximum ring size, murmur, Envoy's ring size and tokens per host)
    type Case = (Vec<Arc<Host>>, u64, u64, bool, usize, &'static [usize]);
    let cases: [Case; 5] = [
        (
            four(),
            1024,
            MAX_RING_SIZE,
            false,
            v::RING_FOUR_SIZE,
            &v::RING_FOUR_COUNTS,
        ),
        (
            weighted_four(),
            1024,
            MAX_RING_SIZE,
            false,
            v::RING_WEIGHTED_SIZE,
            &v::RING_WEIGHTED_COUNTS,
        ),
        (
            four(),
            1024,
            MAX_RING_SIZE,
            true,
            v::RING_MURMUR_SIZE,
            &v::RING_MURMUR_COUNTS,
        ),
        (
            vec![
                keyed("a", "10.9.0.1:1", 1),
                keyed("b", "10.9.0.2:1", 1),
                keyed("c", "10.9.0.3:1", 1),
            ],
            7,
            100,
            false,
            v::RING_THREE_SMALL_SIZE,
            &v::RING_THREE_SMALL_COUNTS,
        ),
        (
            vec![
                host("10.0.0.3:8080", 3),
                host("10.0.0.1:8080", 1),
                keyed("host-b", "10.9.9.9:1", 7),
            ],
            1024,
            50,
            false,
            v::RING_ODD_CAPPED_SIZE,
            &v::RING_ODD_CAPPED_COUNTS,
        ),
    ];
    for (hosts, min, max, murmur, size, counts) in cases {
        let (weights, min_w, _) = flat_weights(&hosts);
        let r = Ring::build(&weights, min_w, min, max, murmur);
        assert_eq!(r.len(), size);
        assert_eq!(r.tokens_per_host(), counts.to_vec());
    }
}

#[test]
fn ring_token_boundaries_match_envoy() {
    // (token, pick at token − 1, at token, at token + 1): a hash equal to a token maps to it.
    for (hosts, murmur, cases) in [
        (four(), false, &v::RING_FOUR_BOUNDARIES),
        (weighted_four(), false, &v::RING_WEIGHTED_BOUNDARIES),
        (four(), true, &v::RING_MURMUR_BOUNDARIES),
    ] {
        check_boundaries(
            HostSet::new(hosts, &ring(1024, MAX_RING_SIZE, murmur)),
            cases,
        );
    }
    check_boundaries(
        HostSet::new(
            vec![
                keyed("a", "10.9.0.1:1", 1),
                keyed("b", "10.9.0.2:1", 1),
                keyed("c", "10.9.0.3:1", 1),
            ],
            &ring(7, 100, false),
        ),
        &v::RING_THREE_SMALL_BOUNDARIES,
    );
    check_boundaries(
        HostSet::new(
            vec![
                host("10.0.0.3:8080", 3),
                host("10.0.0.1:8080", 1),
                keyed("host-b", "10.9.9.9:1", 7),
            ],
            &ring(1024, 50, false),
        ),
        &v::RING_ODD_CAPPED_BOUNDARIES,
    );
}

fn check_boundaries(set: HostSet, cases: &[(u64, usize, usize, usize)]) {
    for (token, below, exact, above) in cases {
        assert_eq!(pick_hash(&set, token - 1), *below, "{token:#x} - 1");
        assert_eq!(pick_hash(&set, *token), *exact, "{token:#x}");
        assert_eq!(pick_hash(&set, token + 1), *above, "{token:#x} + 1");
    }
}

#[test]
fn maglev_picks_match_envoy() {
    let cases = [
        HashCase {
            name: "4 equal hosts",
            hosts: four(),
            params: maglev(65537),
            picks: &v::MAGLEV_FOUR_PICKS,
            retries: &v::MAGLEV_FOUR_RETRIES,
        },
        HashCase {
            name: "weights 1..4",
            hosts: weighted_four(),
            params: maglev(65537),
            picks: &v::MAGLEV_WEIGHTED_PICKS,
            retries: &v::MAGLEV_WEIGHTED_RETRIES,
        },
        HashCase {
            name: "table of 13",
            hosts: weighted_four(),
            params: maglev(13),
            picks: &v::MAGLEV_SMALL_PICKS,
            retries: &v::MAGLEV_SMALL_RETRIES,
        },
        HashCase {
            name: "unsorted input, hash_key metadata, table of 17",
            hosts: vec![
                host("10.0.0.3:8080", 3),
                host("10.0.0.1:8080", 1),
                keyed("host-b", "10.9.9.9:1", 7),
            ],
            params: maglev(17),
            picks: &v::MAGLEV_ODD_PICKS,
            retries: &v::MAGLEV_ODD_RETRIES,
        },
    ];
    for case in &cases {
        check_hash_case(case);
    }
}

#[test]
fn maglev_tables_match_envoy() {
    // (hosts, table size, Envoy's slots per host, Envoy's whole table)
    type Case = (
        Vec<Arc<Host>>,
        u64,
        &'static [usize],
        Option<&'static [usize]>,
    );
    let cases: [Case; 4] = [
        (four(), 65537, &v::MAGLEV_FOUR_COUNTS, None),
        (weighted_four(), 65537, &v::MAGLEV_WEIGHTED_COUNTS, None),
        (
            weighted_four(),
            13,
            &v::MAGLEV_SMALL_COUNTS,
            Some(&v::MAGLEV_SMALL_TABLE),
        ),
        (
            vec![
                host("10.0.0.3:8080", 3),
                host("10.0.0.1:8080", 1),
                keyed("host-b", "10.9.9.9:1", 7),
            ],
            17,
            &v::MAGLEV_ODD_COUNTS,
            Some(&v::MAGLEV_ODD_TABLE),
        ),
    ];
    for (hosts, size, counts, table) in cases {
        let (weights, _, max_w) = flat_weights(&hosts);
        let m = Maglev::build(&weights, max_w, size);
        assert_eq!(m.len() as u64, size);
        let id = |key: &str| {
            hosts
                .iter()
                .position(|h| h.hash_key() == key)
                .expect("slot owner is a host")
        };
        let slots: Vec<usize> = m.slots().into_iter().map(id).collect();
        let mut got = vec![0; hosts.len()];
        for s in &slots {
            got[*s] += 1;
        }
        assert_eq!(got, counts.to_vec());
        if let Some(table) = table {
            assert_eq!(slots, table.to_vec());
        }
    }
}

#[test]
fn locality_weighted_hash_tables_match_envoy() {
    // X (zone a, weight 1): hosts of weight 1 and 3; Y (zone b, weight 2): two of weight 1.
    // Given Y first: localities are ordered lexicographically, as Envoy orders them.
    let mk = |addr: &str, zone: &str, weight: u32| {
        Arc::new(Host::new(HostSpec {
            locality: zone_locality(zone),
            ..spec(addr, weight)
        }))
    };
    let hosts = vec![
        mk("10.2.0.1:80", "b", 1),
        mk("10.2.0.2:80", "b", 1),
        mk("10.1.0.1:80", "a", 1),
        mk("10.1.0.2:80", "a", 3),
    ];
    // Reference ids: X's hosts 0, 1 then Y's 2, 3.
    let reference = ["10.1.0.1:80", "10.1.0.2:80", "10.2.0.1:80", "10.2.0.2:80"];
    let id = |h: &Host| {
        reference
            .iter()
            .position(|a| a.parse::<SocketAddr>().ok() == Some(h.address()))
            .expect("known host")
    };
    let locality_weights = vec![
        (0, zone_locality("a"), Some(1)),
        (0, zone_locality("b"), Some(2)),
    ];
    for (policy, picks) in [
        (
            ring(1024, MAX_RING_SIZE, false).policy,
            &v::RING_LOCALITY_PICKS,
        ),
        (maglev(65537).policy, &v::MAGLEV_LOCALITY_PICKS),
    ] {
        let params = LbParams {
            policy,
            locality_weighted: true,
            locality_weights: locality_weights.clone(),
            ..LbParams::default()
        };
        let set = HostSet::new(hosts.clone(), &params);
        for (hash, want) in picks.iter() {
            let got = set
                .choose(&mut LbContext {
                    hash: Some(*hash),
                    ..LbContext::default()
                })
                .expect("a host");
            assert_eq!(id(&got), *want, "{:?} hash {hash:#x}", params.policy);
        }
    }
    // Token counts: 1/12, 3/12, 1/3, 1/3 of a ring of 1032.
    let LevelPick::Ring(r) = &HostSet::new(
        hosts.clone(),
        &LbParams {
            locality_weights: locality_weights.clone(),
            locality_weighted: true,
            ..ring(1024, MAX_RING_SIZE, false)
        },
    )
    .inner
    .levels[0]
        .pick
    else {
        panic!("ring level expected");
    };
    assert_eq!(r.len(), v::RING_LOCALITY_SIZE);
    assert_eq!(r.tokens_per_host(), v::RING_LOCALITY_COUNTS.to_vec());
    let LevelPick::Maglev(m) = &HostSet::new(
        hosts,
        &LbParams {
            locality_weights,
            locality_weighted: true,
            ..maglev(65537)
        },
    )
    .inner
    .levels[0]
        .pick
    else {
        panic!("maglev level expected");
    };
    let mut counts = [0usize; 4];
    for key in m.slots() {
        counts[reference.iter().position(|a| *a == key).expect("known key")] += 1;
    }
    assert_eq!(counts, v::MAGLEV_LOCALITY_COUNTS);
}

// ---------------------------------------------------------------------------------------------
// Hash LB behaviour.

#[test]
fn ring_shares_follow_weights() {
    // A host with t tokens owns the sum of t gaps of a ring of T uniform tokens: mean t/T,
    // standard deviation ≈ sqrt(t)/T. Accept 3.29 σ.
    for (hosts, weights) in [(four(), [0.25; 4]), (weighted_four(), [0.1, 0.2, 0.3, 0.4])] {
        let (w, min_w, _) = flat_weights(&hosts);
        let r = Ring::build(&w, min_w, 1024, MAX_RING_SIZE, false);
        let total = r.len() as f64;
        for ((share, want), tokens) in r.shares().iter().zip(weights).zip(r.tokens_per_host()) {
            let sd = (tokens as f64).sqrt() / total;
            assert!(
                (share - want).abs() <= 3.29 * sd,
                "share {share} for weight {want}"
            );
        }
    }
}

/// Keys that map to a different host after `after` replaces `before`.
fn moved(before: &HostSet, after: &HostSet, keys: &[u64]) -> (usize, usize) {
    let mut moved = 0;
    let mut to_new = 0;
    for &k in keys {
        let a = before.choose(&mut LbContext {
            hash: Some(k),
            ..LbContext::default()
        });
        let b = after.choose(&mut LbContext {
            hash: Some(k),
            ..LbContext::default()
        });
        let (a, b) = (a.expect("host"), b.expect("host"));
        if a.address() != b.address() {
            moved += 1;
            if !before.hosts().iter().any(|h| h.address() == b.address()) {
                to_new += 1;
            }
        }
    }
    (moved, to_new)
}

#[test]
fn adding_a_host_moves_a_bounded_share_of_keys() {
    fastrand::seed(7);
    let keys: Vec<u64> = (0..20_000).map(|_| fastrand::u64(..)).collect();
    let mut five = four();
    five.push(host("10.0.0.5:8080", 1));
    // Ring: the new host takes ≈ 1/5. Every old host also goes from 256 to 205 tokens
    // (ceil(1024/5)), and the keys of its dropped tokens move to the next token: ≈ 20% of the
    // space, of which ≈ 3/5 lands on another old host. Expected moves ≈ 0.2 + 0.2·0.6 ≈ 0.32 of
    // keys; modulo hashing would move 4/5.
    let (before, after) = (
        HostSet::new(four(), &ring(1024, MAX_RING_SIZE, false)),
        HostSet::new(five.clone(), &ring(1024, MAX_RING_SIZE, false)),
    );
    let (m, to_new) = moved(&before, &after, &keys);
    let n = keys.len();
    assert!(m < n * 2 / 5, "ring moved {m} of {n}");
    // The new host's share: 205 tokens of 1025, sd ≈ sqrt(205)/1025 ≈ 1.4% plus sampling.
    assert!(
        (to_new as f64 / n as f64 - 0.2).abs() < 0.06,
        "ring new host got {to_new} of {n}"
    );

    // Maglev: the new host gets 13107 of 65537 slots; Envoy documents about twice the churn of
    // a ring, so accept up to one half.
    let (before, after) = (
        HostSet::new(four(), &maglev(65537)),
        HostSet::new(five, &maglev(65537)),
    );
    let (m, to_new) = moved(&before, &after, &keys);
    assert!(m < n / 2, "maglev moved {m} of {n}");
    assert_share(to_new, n, 13107.0 / 65537.0, "maglev keys to the new host");
}

#[test]
fn no_hash_picks_a_random_host() {
    fastrand::seed(11);
    for params in [ring(1024, MAX_RING_SIZE, false), maglev(65537)] {
        let set = HostSet::new(four(), &params);
        let n = 4000;
        let counts = tally(&set, n);
        for i in 1..=4 {
            // Maglev slots are within one of 1/4; ring arcs within a few percent (see above):
            // accept the binomial bound around the table's own share.
            let addr = format!("10.0.0.{i}:8080");
            let c = count(&counts, &addr);
            let share = match &set.inner.levels[0].pick {
                LevelPick::Ring(r) => r.shares()[i as usize - 1],
                _ => 0.25,
            };
            assert_share(c, n, share, &format!("{:?} {addr}", params.policy));
        }
    }
}

#[test]
fn hash_chooses_the_priority_too() {
    // P0 2 of 4 healthy → 70/30: `hash % 100 < 70` → P0, else P1 (Envoy's choosePriority).
    let hosts = vec![
        at("10.0.0.1:80", 0, HealthStatus::Healthy),
        at("10.0.0.2:80", 0, HealthStatus::Healthy),
        at("10.0.0.3:80", 0, HealthStatus::Unhealthy),
        at("10.0.0.4:80", 0, HealthStatus::Unhealthy),
        at("10.0.1.1:80", 1, HealthStatus::Healthy),
        at("10.0.1.2:80", 1, HealthStatus::Healthy),
    ];
    for params in [ring(1024, MAX_RING_SIZE, false), maglev(65537)] {
        let set = HostSet::new(hosts.clone(), &params);
        assert_eq!(set.priority_loads(), vec![(4, 2, 70), (2, 2, 30)]);
        for k in 0..1000u64 {
            let h = set
                .choose(&mut LbContext {
                    hash: Some(k),
                    ..LbContext::default()
                })
                .expect("host");
            let want = if k % 100 < 70 { 0 } else { 1 };
            assert_eq!(h.priority(), want, "hash {k}");
            assert!(h.is_healthy(), "unhealthy host picked for hash {k}");
        }
    }
}

#[test]
fn hash_tables_cover_all_hosts_in_panic() {
    // 1 of 4 healthy, one level: panic → the ring is built over all four hosts.
    let hosts = vec![
        at("10.0.0.1:80", 0, HealthStatus::Healthy),
        at("10.0.0.2:80", 0, HealthStatus::Unhealthy),
        at("10.0.0.3:80", 0, HealthStatus::Unhealthy),
        at("10.0.0.4:80", 0, HealthStatus::Unhealthy),
    ];
    for params in [ring(1024, MAX_RING_SIZE, false), maglev(65537)] {
        let set = HostSet::new(hosts.clone(), &params);
        assert!(set.is_panic(0));
        let mut seen = std::collections::HashSet::new();
        for k in 0..2000u64 {
            let h = set
                .choose(&mut LbContext {
                    hash: Some(k.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    ..LbContext::default()
                })
                .expect("host");
            seen.insert(h.address());
        }
        assert_eq!(seen.len(), 4, "{:?}", params.policy);
        // Not in panic (threshold 0): only the healthy host.
        let set = HostSet::new(
            hosts.clone(),
            &LbParams {
                healthy_panic_threshold: 0.0,
                ..params
            },
        );
        for k in 0..200u64 {
            let h = set
                .choose(&mut LbContext {
                    hash: Some(k.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    ..LbContext::default()
                })
                .expect("host");
            assert_eq!(h.address(), hosts[0].address());
        }
    }
}

#[test]
fn hash_lb_with_only_degraded_hosts_picks_nothing() {
    // Envoy builds the ring of a level from its healthy hosts only (degraded ones only in
    // panic): a level of degraded hosts gets the degraded load but an empty ring.
    let hosts: Vec<Arc<Host>> = (1..=2)
        .map(|i| at(&format!("10.0.0.{i}:80"), 0, HealthStatus::Degraded))
        .collect();
    let set = HostSet::new(hosts, &ring(1024, MAX_RING_SIZE, false));
    assert_eq!(set.priority_states()[0].degraded_load, 100);
    assert!(
        set.choose(&mut LbContext {
            hash: Some(1),
            ..LbContext::default()
        })
        .is_none()
    );
}

// ---------------------------------------------------------------------------------------------
// Priorities and panic through HostSet.

/// P0 of 4 hosts with `k` unhealthy, P1 of 4 healthy hosts (the C3 scenario).
fn p0_p1(k: usize) -> Vec<Arc<Host>> {
    let mut hosts = Vec::new();
    for i in 0..4 {
        let health = if i < k {
            HealthStatus::Unhealthy
        } else {
            HealthStatus::Healthy
        };
        hosts.push(at(&format!("10.0.0.{}:80", i + 1), 0, health));
    }
    for i in 0..4 {
        hosts.push(at(
            &format!("10.0.1.{}:80", i + 1),
            1,
            HealthStatus::Healthy,
        ));
    }
    hosts
}

#[test]
fn priority_loads_for_c3() {
    let want = [(100, 0), (100, 0), (70, 30), (35, 65), (0, 100)];
    for (k, (l0, l1)) in want.into_iter().enumerate() {
        let set = HostSet::new(p0_p1(k), &rr());
        assert_eq!(
            set.priority_loads(),
            vec![(4, 4 - k, l0), (4, 4, l1)],
            "k = {k}"
        );
        assert!(!set.is_panic(0) && !set.is_panic(1), "k = {k}");
        assert_eq!(set.healthy_count(), 8 - k);
    }
}

#[test]
fn picks_follow_priority_loads() {
    fastrand::seed(3);
    for policy in [
        LbPolicy::RoundRobin { slow_start: None },
        LbPolicy::LeastRequest {
            choice_count: 2,
            active_request_bias: 1.0,
            slow_start: None,
        },
        LbPolicy::Random,
    ] {
        let set = HostSet::new(p0_p1(2), &with(policy.clone()));
        let n = 4000;
        let mut p0 = 0;
        for _ in 0..n {
            let h = pick(&set).expect("host");
            assert!(h.is_healthy(), "{policy:?} picked an unhealthy host");
            if h.priority() == 0 {
                p0 += 1;
            }
        }
        assert_share(p0, n, 0.70, &format!("{policy:?} P0 share"));
    }
}

#[test]
fn both_levels_in_panic_split_by_hosts_and_use_unhealthy_hosts() {
    fastrand::seed(5);
    // P0 and P1 each 1 of 4 healthy: health 35 + 35 = 70, both under 50% → 50/50 over all
    // hosts of each level.
    let hosts = p0_p1(3);
    for h in hosts.iter().skip(4).take(3) {
        h.set_ejected(true);
    }
    let set = HostSet::new(hosts.clone(), &rr());
    assert_eq!(set.priority_loads(), vec![(4, 1, 50), (4, 1, 50)]);
    assert!(set.is_panic(0) && set.is_panic(1));
    let n = 8000;
    let counts = tally(&set, n);
    for h in &hosts {
        // Each level 1/2, each host 1/4 of its level: 1/8.
        let c = counts.get(&h.address()).copied().unwrap_or(0);
        assert_share(c, n, 1.0 / 8.0, &format!("{}", h.address()));
    }
}

#[test]
fn no_healthy_host_without_panic_is_none() {
    let hosts: Vec<Arc<Host>> = (1..=4)
        .map(|i| at(&format!("10.0.0.{i}:80"), 0, HealthStatus::Unhealthy))
        .collect();
    for policy in [
        LbPolicy::RoundRobin { slow_start: None },
        LbPolicy::Random,
        LbPolicy::LeastRequest {
            choice_count: 2,
            active_request_bias: 1.0,
            slow_start: None,
        },
        ring(1024, MAX_RING_SIZE, false).policy,
        maglev(65537).policy,
    ] {
        let params = LbParams {
            healthy_panic_threshold: 0.0,
            ..with(policy.clone())
        };
        let set = HostSet::new(hosts.clone(), &params);
        assert_eq!(set.priority_loads(), vec![(4, 0, 100)]);
        assert!(!set.is_panic(0));
        for _ in 0..20 {
            assert!(pick(&set).is_none(), "{policy:?}");
        }
        // With the default threshold: panic over all hosts.
        let set = HostSet::new(hosts.clone(), &with(policy.clone()));
        assert!(set.is_panic(0));
        assert!(pick(&set).is_some(), "{policy:?}");
    }
}

#[test]
fn everything_unhealthy_in_two_levels_splits_by_host_count() {
    // Envoy's recalculateLoadInTotalPanic: every level in panic → loads by host counts.
    let mut hosts = p0_p1(4);
    hosts.push(at("10.0.1.5:80", 1, HealthStatus::Healthy));
    hosts.push(at("10.0.1.6:80", 1, HealthStatus::Healthy));
    hosts.push(at("10.0.1.7:80", 1, HealthStatus::Healthy));
    hosts.push(at("10.0.1.8:80", 1, HealthStatus::Healthy));
    for h in hosts.iter().skip(4) {
        h.set_ejected(true);
    }
    let set = HostSet::new(hosts, &rr());
    // 100 × 4/12 = 33 and 100 × 8/12 = 66; the 1 left goes to the first non-empty level.
    assert_eq!(set.priority_loads(), vec![(4, 0, 34), (8, 0, 66)]);
    assert!(set.is_panic(0) && set.is_panic(1));
    assert!(pick(&set).is_some());
}

#[test]
fn empty_set_picks_nothing() {
    for params in [
        rr(),
        ring(1024, MAX_RING_SIZE, false),
        maglev(65537),
        least_request(2, 1.0),
    ] {
        let set = HostSet::new(Vec::new(), &params);
        assert!(pick(&set).is_none());
        assert_eq!(set.priority_loads(), vec![(0, 0, 100)]);
        assert!(set.hosts().is_empty());
    }
}

#[test]
fn degraded_hosts_take_the_degraded_load() {
    fastrand::seed(9);
    // 2 healthy + 2 degraded: healthy 70%, degraded 30%.
    let hosts = vec![
        at("10.0.0.1:80", 0, HealthStatus::Healthy),
        at("10.0.0.2:80", 0, HealthStatus::Healthy),
        at("10.0.0.3:80", 0, HealthStatus::Degraded),
        at("10.0.0.4:80", 0, HealthStatus::Degraded),
    ];
    let set = HostSet::new(hosts, &rr());
    let s = set.priority_states()[0];
    assert_eq!((s.healthy_load, s.degraded_load, s.panic), (70, 30, false));
    assert_eq!((set.healthy_count(), set.degraded_count()), (2, 2));
    let n = 4000;
    let counts = tally(&set, n);
    let degraded = count(&counts, "10.0.0.3:80") + count(&counts, "10.0.0.4:80");
    assert_share(degraded, n, 0.30, "degraded share");
}

// ---------------------------------------------------------------------------------------------
// Round robin, least request, random.

#[test]
fn round_robin_rotates_over_healthy_hosts() {
    let hosts = four();
    hosts[2].set_ejected(true); // 3 of 4: health 105 → no spill, no panic
    let set = HostSet::new(hosts.clone(), &rr());
    let picks: Vec<usize> = (0..300)
        .map(|_| index_of(&hosts, &pick(&set).expect("host")))
        .collect();
    let order = [0, 1, 3];
    let start = order.iter().position(|i| *i == picks[0]).expect("healthy");
    for (k, p) in picks.iter().enumerate() {
        assert_eq!(*p, order[(start + k) % 3], "pick {k}");
    }
}

#[test]
fn weighted_round_robin_follows_weights_exactly() {
    let hosts = vec![
        host("10.0.0.1:80", 1),
        host("10.0.0.2:80", 2),
        host("10.0.0.3:80", 3),
    ];
    let set = HostSet::new(hosts, &rr());
    let counts = tally(&set, 600);
    for (addr, want) in [
        ("10.0.0.1:80", 100i64),
        ("10.0.0.2:80", 200),
        ("10.0.0.3:80", 300),
    ] {
        let c = count(&counts, addr) as i64;
        assert!((c - want).abs() <= 1, "{addr}: {c}");
    }
}

#[test]
fn least_request_avoids_the_busy_host() {
    fastrand::seed(13);
    let hosts = four();
    let _busy: Vec<_> = (0..10).map(|_| hosts[0].start_request()).collect();
    let n = 4000;
    // P2C: the busy host wins only when both draws hit it: (1/4)².
    let set = HostSet::new(hosts.clone(), &least_request(2, 1.0));
    let counts = tally(&set, n);
    assert_share(
        count(&counts, "10.0.0.1:8080"),
        n,
        1.0 / 16.0,
        "busy host, 2 choices",
    );
    for i in 2..=4 {
        // Others: (1 − 1/16) / 3 each.
        assert_share(
            count(&counts, &format!("10.0.0.{i}:8080")),
            n,
            15.0 / 48.0,
            "idle host",
        );
    }
    // Five choices: (1/4)⁵ ≈ 0.001.
    let set = HostSet::new(hosts.clone(), &least_request(5, 1.0));
    let counts = tally(&set, n);
    assert!(count(&counts, "10.0.0.1:8080") <= 15, "{counts:?}");
}

#[test]
fn least_request_with_no_load_is_uniform() {
    fastrand::seed(17);
    let set = HostSet::new(four(), &least_request(2, 1.0));
    let n = 4000;
    let counts = tally(&set, n);
    for i in 1..=4 {
        assert_share(count(&counts, &format!("10.0.0.{i}:8080")), n, 0.25, "host");
    }
}

#[test]
fn weighted_least_request_scales_by_active_requests() {
    // Weights 1, 1, 2; the heavy host has 3 requests in flight: 2 / (3 + 1) = 0.5 → shares
    // 1 : 1 : 0.5 = 40/40/20 once each entry has been re-inserted.
    let hosts = vec![
        host("10.0.0.1:80", 1),
        host("10.0.0.2:80", 1),
        host("10.0.0.3:80", 2),
    ];
    let _inflight: Vec<_> = (0..3).map(|_| hosts[2].start_request()).collect();
    let set = HostSet::new(hosts.clone(), &least_request(2, 1.0));
    let counts = tally(&set, 1000);
    for (addr, want) in [
        ("10.0.0.1:80", 400i64),
        ("10.0.0.2:80", 400),
        ("10.0.0.3:80", 200),
    ] {
        let c = count(&counts, addr) as i64;
        assert!((c - want).abs() <= 3, "{addr}: {c} ({counts:?})");
    }
    // Bias 0: the weights alone (like round robin): 25/25/50.
    let set = HostSet::new(hosts.clone(), &least_request(2, 0.0));
    let counts = tally(&set, 1000);
    for (addr, want) in [
        ("10.0.0.1:80", 250i64),
        ("10.0.0.2:80", 250),
        ("10.0.0.3:80", 500),
    ] {
        let c = count(&counts, addr) as i64;
        assert!((c - want).abs() <= 2, "{addr}: {c} ({counts:?})");
    }
    // Bias 2: 2 / 4² = 0.125 → 1 : 1 : 0.125, heavy host 1/17 of picks.
    let set = HostSet::new(hosts, &least_request(2, 2.0));
    let counts = tally(&set, 1700);
    let c = count(&counts, "10.0.0.3:80") as i64;
    assert!((c - 100).abs() <= 3, "heavy host {c}");
}

#[test]
fn random_is_uniform_and_ignores_weights() {
    fastrand::seed(19);
    let hosts = vec![
        host("10.0.0.1:80", 1),
        host("10.0.0.2:80", 9),
        host("10.0.0.3:80", 1),
    ];
    hosts[2].set_ejected(true); // 2 of 3 healthy: 93% health → still all load, no panic
    let set = HostSet::new(hosts, &with(LbPolicy::Random));
    let n = 4000;
    let counts = tally(&set, n);
    assert_eq!(count(&counts, "10.0.0.3:80"), 0);
    assert_share(count(&counts, "10.0.0.1:80"), n, 0.5, "weight 1");
    assert_share(count(&counts, "10.0.0.2:80"), n, 0.5, "weight 9");
}

// ---------------------------------------------------------------------------------------------
// Localities.

fn localities(x_unhealthy: usize) -> (Vec<Arc<Host>>, LbParams) {
    let mut hosts = Vec::new();
    for i in 0..4 {
        let health = if i < x_unhealthy {
            HealthStatus::Unhealthy
        } else {
            HealthStatus::Healthy
        };
        hosts.push(in_zone(&format!("10.0.0.{}:80", i + 1), "x", health));
    }
    for i in 0..4 {
        hosts.push(in_zone(
            &format!("10.0.1.{}:80", i + 1),
            "y",
            HealthStatus::Healthy,
        ));
    }
    hosts.push(in_zone("10.0.2.1:80", "z", HealthStatus::Healthy));
    let params = LbParams {
        locality_weighted: true,
        locality_weights: vec![
            (0, zone_locality("x"), Some(1)),
            (0, zone_locality("y"), Some(2)),
            (0, zone_locality("z"), None),
        ],
        ..rr()
    };
    (hosts, params)
}

fn zone_share(set: &HostSet, n: usize) -> HashMap<String, usize> {
    let mut by_zone = HashMap::new();
    for _ in 0..n {
        let h = pick(set).expect("host");
        *by_zone.entry(h.locality().zone.clone()).or_insert(0) += 1;
    }
    by_zone
}

#[test]
fn locality_weights_split_traffic() {
    // X weight 1, Y weight 2, Z no weight: 1/3, 2/3, nothing. The locality schedule is EDF, so
    // over 3000 picks the split is exact to within one pick.
    let (hosts, params) = localities(0);
    let set = HostSet::new(hosts, &params);
    let by_zone = zone_share(&set, 3000);
    assert!(
        by_zone.get("x").copied().unwrap_or(0).abs_diff(1000) <= 1,
        "{by_zone:?}"
    );
    assert!(
        by_zone.get("y").copied().unwrap_or(0).abs_diff(2000) <= 1,
        "{by_zone:?}"
    );
    assert_eq!(by_zone.get("z"), None);
}

#[test]
fn locality_weight_shrinks_with_health() {
    // Half of X unhealthy: 1 × min(1, 1.4 × 0.5) = 0.7 against 2 → 0.7/2.7 ≈ 26%.
    let (hosts, params) = localities(2);
    let set = HostSet::new(hosts, &params);
    assert_eq!(set.priority_loads(), vec![(9, 7, 100)]);
    let by_zone = zone_share(&set, 2700);
    assert!(
        by_zone.get("x").copied().unwrap_or(0).abs_diff(700) <= 1,
        "{by_zone:?}"
    );
    assert!(
        by_zone.get("y").copied().unwrap_or(0).abs_diff(2000) <= 1,
        "{by_zone:?}"
    );
    // Unhealthy hosts of X are never picked.
    for _ in 0..200 {
        assert!(pick(&set).expect("host").is_healthy());
    }
}

#[test]
fn without_locality_weighting_localities_do_not_matter() {
    let (hosts, mut params) = localities(0);
    params.locality_weighted = false;
    let set = HostSet::new(hosts, &params);
    let by_zone = zone_share(&set, 900);
    // Plain rotation over 9 hosts: 4, 4, 1.
    assert_eq!(by_zone.get("x"), Some(&400));
    assert_eq!(by_zone.get("y"), Some(&400));
    assert_eq!(by_zone.get("z"), Some(&100));
}

// ---------------------------------------------------------------------------------------------
// Slow start.

fn slow_start_rr(window: Duration, aggression: f64) -> LbParams {
    with(LbPolicy::RoundRobin {
        slow_start: Some(SlowStart {
            window,
            aggression,
            min_weight_percent: 10.0,
        }),
    })
}

#[test]
fn slow_start_factor() {
    let s = SlowStartState {
        window_ms: 10_000,
        aggression: 1.0,
        min_weight: 0.1,
        until: Instant::now() + Duration::from_secs(100),
    };
    let h = host("10.0.0.1:80", 4);
    let start = h.created();
    let at = |ms: u64| start + Duration::from_millis(ms);
    // Linear: 25% of the window → 0.25; at 0.5 s the 10% floor applies.
    assert_eq!(apply_slow_start(4.0, &h, &s, at(2500)), 1.0);
    assert_eq!(apply_slow_start(4.0, &h, &s, at(500)), 0.4);
    assert_eq!(apply_slow_start(4.0, &h, &s, at(0)), 0.4);
    assert_eq!(apply_slow_start(4.0, &h, &s, at(10_000)), 4.0);
    // Aggression 2: 0.25^(1/2) = 0.5.
    let s2 = SlowStartState {
        aggression: 2.0,
        ..s
    };
    assert_eq!(apply_slow_start(4.0, &h, &s2, at(2500)), 2.0);
    // A degraded host does not warm up.
    let d = at_degraded();
    assert_eq!(apply_slow_start(4.0, &d, &s, d.created()), 4.0);
}

fn at_degraded() -> Arc<Host> {
    at("10.0.0.9:80", 0, HealthStatus::Degraded)
}

/// Share of `addr` over `n` picks.
fn share_of(set: &HostSet, addr: &str, n: usize) -> f64 {
    count(&tally(set, n), addr) as f64 / n as f64
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_new_host() {
    let old = vec![host("10.0.0.1:80", 1), host("10.0.0.2:80", 1)];
    tokio::time::advance(Duration::from_secs(60)).await;
    let mut hosts = old.clone();
    hosts.push(host("10.0.0.3:80", 1));
    let params = slow_start_rr(Duration::from_secs(10), 1.0);
    // Before the new host: equal weights and nobody warming → plain rotation.
    let set = HostSet::new(old, &params);
    assert!(matches!(&set.inner.levels[0].pick, LevelPick::Sources(s) if s.healthy.edf.is_none()));

    let set = HostSet::new(hosts, &params);
    // t = 0 s: the new host at the 10% floor: 0.1 / 2.1.
    let first = share_of(&set, "10.0.0.3:80", 4200);
    assert!((first - 0.1 / 2.1).abs() < 0.01, "at 0 s: {first}");
    tokio::time::advance(Duration::from_secs(5)).await;
    // t = 5 s: weight 0.5 → 0.5 / 2.5 = 20%.
    let mid = share_of(&set, "10.0.0.3:80", 5000);
    assert!((mid - 0.2).abs() < 0.01, "at 5 s: {mid}");
    tokio::time::advance(Duration::from_secs(6)).await;
    // t = 11 s: the window is over, full weight.
    let done = share_of(&set, "10.0.0.3:80", 3000);
    assert!((done - 1.0 / 3.0).abs() < 0.01, "at 11 s: {done}");
}

#[tokio::test(start_paused = true)]
async fn slow_start_applies_to_least_request() {
    let old = vec![host("10.0.0.1:80", 1), host("10.0.0.2:80", 1)];
    tokio::time::advance(Duration::from_secs(60)).await;
    let mut hosts = old;
    hosts.push(host("10.0.0.3:80", 1));
    let params = with(LbPolicy::LeastRequest {
        choice_count: 2,
        active_request_bias: 1.0,
        slow_start: Some(SlowStart {
            window: Duration::from_secs(10),
            aggression: 1.0,
            min_weight_percent: 10.0,
        }),
    });
    let set = HostSet::new(hosts, &params);
    tokio::time::advance(Duration::from_millis(2500)).await;
    // 0.25 / 2.25 ≈ 11%.
    let s = share_of(&set, "10.0.0.3:80", 4500);
    assert!((s - 0.25 / 2.25).abs() < 0.01, "{s}");
}

// ---------------------------------------------------------------------------------------------
// Retry host predicate.

#[test]
fn round_robin_retry_skips_a_rejected_host() {
    let hosts = vec![
        host("10.0.0.1:80", 1),
        host("10.0.0.2:80", 1),
        host("10.0.0.3:80", 1),
    ];
    let set = HostSet::new(hosts.clone(), &rr());
    let rejected = hosts[0].address();
    let reject = |h: &Host| h.address() == rejected;
    for _ in 0..30 {
        let h = set
            .choose(&mut LbContext {
                should_select_another: Some(&reject),
                host_selection_retry_max_attempts: 1,
                ..LbContext::default()
            })
            .expect("host");
        assert_ne!(h.address(), rejected);
    }
    // Without retries the predicate does not apply: three picks in a row cover the rotation.
    let mut seen_rejected = false;
    for _ in 0..3 {
        let h = set
            .choose(&mut LbContext {
                should_select_another: Some(&reject),
                host_selection_retry_max_attempts: 0,
                ..LbContext::default()
            })
            .expect("host");
        seen_rejected |= h.address() == rejected;
    }
    assert!(seen_rejected);
}

#[test]
fn random_retry_rates() {
    fastrand::seed(23);
    let hosts = vec![
        host("10.0.0.1:80", 1),
        host("10.0.0.2:80", 1),
        host("10.0.0.3:80", 1),
    ];
    let set = HostSet::new(hosts.clone(), &with(LbPolicy::Random));
    let rejected = hosts[0].address();
    let reject = |h: &Host| h.address() == rejected;
    let n = 9000;
    for (attempts, p) in [(0u32, 1.0 / 3.0), (1, 1.0 / 9.0), (2, 1.0 / 27.0)] {
        let mut got = 0;
        for _ in 0..n {
            let h = set
                .choose(&mut LbContext {
                    should_select_another: Some(&reject),
                    host_selection_retry_max_attempts: attempts,
                    ..LbContext::default()
                })
                .expect("host");
            if h.address() == rejected {
                got += 1;
            }
        }
        assert_share(
            got,
            n,
            p,
            &format!("rejected host after {attempts} retries"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Sharing across threads.

#[test]
fn host_set_is_shared_across_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<HostSet>();
    // Four threads share one rotation: 4 × 1000 picks over 4 hosts are exactly 1000 each.
    let set = HostSet::new(four(), &rr());
    let counts: Vec<HashMap<SocketAddr, usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| tally(&set, 1000))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for i in 1..=4 {
        let addr = format!("10.0.0.{i}:8080");
        let total: usize = counts.iter().map(|c| count(c, &addr)).sum();
        assert_eq!(total, 1000, "{addr}");
    }
    // Weighted (EDF behind a mutex): 1:3 exactly over 4000 picks.
    let set = HostSet::new(vec![host("10.0.0.1:80", 1), host("10.0.0.2:80", 3)], &rr());
    let counts: Vec<HashMap<SocketAddr, usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| tally(&set, 1000))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let light: usize = counts.iter().map(|c| count(c, "10.0.0.1:80")).sum();
    assert!(light.abs_diff(1000) <= 1, "{light}");
}

#[test]
fn is_panic_out_of_range_is_false() {
    let set = HostSet::new(four(), &rr());
    assert!(!set.is_panic(0));
    assert!(!set.is_panic(7));
}

#[test]
fn hosts_above_the_largest_priority_are_ignored() {
    let hosts = vec![
        at("10.0.0.1:80", 0, HealthStatus::Healthy),
        at("10.0.0.2:80", MAX_PRIORITY + 1, HealthStatus::Healthy),
    ];
    let set = HostSet::new(hosts, &rr());
    assert_eq!(set.priority_loads(), vec![(1, 1, 100)]);
    assert_eq!(set.hosts().len(), 2);
    for _ in 0..10 {
        assert_eq!(pick(&set).expect("host").priority(), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Config.

#[test]
fn validate_rejects_what_envoy_rejects() {
    assert!(validate(&maglev(65537).policy).is_ok());
    assert!(validate(&maglev(65536).policy).is_err());
    assert!(validate(&maglev(5_000_011).policy).is_ok());
    assert!(validate(&maglev(5_000_077).policy).is_err());
    assert!(validate(&ring(1024, MAX_RING_SIZE, false).policy).is_ok());
    assert!(validate(&ring(2048, 1024, false).policy).is_err());
    assert!(validate(&ring(1024, MAX_RING_SIZE + 1, false).policy).is_err());
    assert!(validate(&least_request(1, 1.0).policy).is_err());
    assert!(validate(&least_request(2, 1.0).policy).is_ok());
    assert!(validate(&rr().policy).is_ok());
}

#[test]
fn non_prime_maglev_size_falls_back_to_the_default() {
    let set = HostSet::new(four(), &maglev(1000));
    let LevelPick::Maglev(m) = &set.inner.levels[0].pick else {
        panic!("maglev level expected");
    };
    assert_eq!(m.len(), 65537);
}

#[test]
fn params_from_an_assignment() {
    use crate::config::endpoint::{LoadAssignment, LocalityEndpoints};
    let cla = LoadAssignment {
        cluster_name: "c".into(),
        localities: vec![
            LocalityEndpoints {
                locality: zone_locality("x"),
                endpoints: Vec::new(),
                weight: Some(3),
                priority: 1,
            },
            LocalityEndpoints {
                locality: zone_locality("y"),
                endpoints: Vec::new(),
                weight: None,
                priority: 0,
            },
        ],
        overprovisioning_factor: 200,
        weighted_priority_health: true,
    };
    let params = with(LbPolicy::Random).with_assignment(&cla);
    assert_eq!(params.policy, LbPolicy::Random);
    assert_eq!(params.overprovisioning_factor, 200);
    assert!(params.weighted_priority_health);
    assert_eq!(
        params.locality_weights,
        vec![
            (1, zone_locality("x"), Some(3)),
            (0, zone_locality("y"), None)
        ]
    );
}

#[test]
fn overprovisioning_zero_is_the_default() {
    let hosts = p0_p1(2);
    let set = HostSet::new(
        hosts,
        &LbParams {
            overprovisioning_factor: 0,
            ..rr()
        },
    );
    assert_eq!(set.priority_loads(), vec![(4, 2, 70), (4, 4, 30)]);
}
