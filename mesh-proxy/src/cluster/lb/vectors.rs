//! Reference values for the hash and EDF tests, computed by following Envoy's code.
//!
//! How they were derived: a throw-away C++17 program (not kept in this repository) transcribes,
//! statement by statement, Envoy's `RingHashLoadBalancer::Ring` constructor and `chooseHost`
//! (the signed ketama binary search included), `OriginalMaglevTable`'s build loop and
//! `chooseHost`, `normalizeHostWeights`, `EdfScheduler` (`add`, `pickAndAdd`,
//! `createWithPicks`) and `MurmurHash::murmurHash2`, linked against the system libxxhash 0.8.1
//! for `XXH64` (the library Envoy vendors) and compiled with g++ on x86-64; its MurmurHash2 was
//! checked equal to libstdc++'s `std::hash<std::string>` on the strings below. Host ids are
//! indices in the input order; query hashes are `XXH64("user-<i>")` for i in 0..12, then
//! 0, 1, u64::MAX, 2^63 and 12345678901234567. Nothing here is computed by the code under test.
//! The locality case normalizes as `normalizeLocalityWeights`: X (weight 1: hosts 0, 1 of
//! weights 1, 3) and Y (weight 2: hosts 2, 3 of weight 1).

pub(super) const RING_LOCALITY_SIZE: usize = 1032;
pub(super) const RING_LOCALITY_COUNTS: [usize; 4] = [86, 258, 344, 344];
pub(super) const RING_LOCALITY_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 2),
    (0xa173746b114c6be8, 2),
    (0x7395dd9943ab55e9, 3),
    (0xae654a4bf3937dde, 1),
    (0x3227a16a6007f168, 3),
    (0x76af3591662752eb, 1),
    (0x517193542a78cb38, 3),
    (0x216dec03713b4cfd, 0),
    (0xc873a0d981bb3a72, 3),
    (0x02accffe0373e668, 2),
    (0x9ecd5846ff91a8bc, 3),
    (0xc162b44ddd90143e, 2),
    (0x0000000000000000, 3),
    (0x0000000000000001, 3),
    (0xffffffffffffffff, 3),
    (0x8000000000000000, 3),
    (0x002bdc545d6b4b87, 0),
];
pub(super) const MAGLEV_LOCALITY_COUNTS: [usize; 4] = [5462, 16385, 21845, 21845];
pub(super) const MAGLEV_LOCALITY_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 1),
    (0xa173746b114c6be8, 1),
    (0x7395dd9943ab55e9, 2),
    (0xae654a4bf3937dde, 1),
    (0x3227a16a6007f168, 3),
    (0x76af3591662752eb, 3),
    (0x517193542a78cb38, 2),
    (0x216dec03713b4cfd, 2),
    (0xc873a0d981bb3a72, 3),
    (0x02accffe0373e668, 0),
    (0x9ecd5846ff91a8bc, 3),
    (0xc162b44ddd90143e, 2),
    (0x0000000000000000, 0),
    (0x0000000000000001, 3),
    (0xffffffffffffffff, 0),
    (0x8000000000000000, 3),
    (0x002bdc545d6b4b87, 3),
];
pub(super) const RING_FOUR_SIZE: usize = 1024;
pub(super) const RING_FOUR_COUNTS: [usize; 4] = [256, 256, 256, 256];
pub(super) const RING_FOUR_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 2),
    (0xa173746b114c6be8, 3),
    (0x7395dd9943ab55e9, 2),
    (0xae654a4bf3937dde, 1),
    (0x3227a16a6007f168, 0),
    (0x76af3591662752eb, 1),
    (0x517193542a78cb38, 3),
    (0x216dec03713b4cfd, 2),
    (0xc873a0d981bb3a72, 0),
    (0x02accffe0373e668, 0),
    (0x9ecd5846ff91a8bc, 1),
    (0xc162b44ddd90143e, 3),
    (0x0000000000000000, 3),
    (0x0000000000000001, 3),
    (0xffffffffffffffff, 3),
    (0x8000000000000000, 2),
    (0x002bdc545d6b4b87, 3),
];
pub(super) const RING_FOUR_RETRIES: [[usize; 3]; 17] = [
    [2, 3, 1],
    [3, 3, 3],
    [2, 1, 3],
    [1, 1, 3],
    [0, 0, 3],
    [1, 2, 2],
    [3, 2, 3],
    [2, 1, 1],
    [0, 1, 1],
    [0, 1, 2],
    [1, 1, 0],
    [3, 3, 1],
    [3, 1, 0],
    [3, 1, 0],
    [3, 1, 0],
    [2, 2, 2],
    [3, 1, 0],
];
pub(super) const RING_FOUR_BOUNDARIES: [(u64, usize, usize, usize); 4] = [
    (0x005c2955d06e278e, 3, 3, 1),
    (0x006454b72c961e0a, 1, 1, 0),
    (0x7ffe4a148d931f03, 1, 1, 2),
    (0xfff01552c7f55dea, 1, 1, 3),
];
pub(super) const RING_WEIGHTED_SIZE: usize = 1030;
pub(super) const RING_WEIGHTED_COUNTS: [usize; 4] = [103, 206, 309, 412];
pub(super) const RING_WEIGHTED_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 2),
    (0xa173746b114c6be8, 3),
    (0x7395dd9943ab55e9, 2),
    (0xae654a4bf3937dde, 1),
    (0x3227a16a6007f168, 0),
    (0x76af3591662752eb, 2),
    (0x517193542a78cb38, 3),
    (0x216dec03713b4cfd, 2),
    (0xc873a0d981bb3a72, 1),
    (0x02accffe0373e668, 1),
    (0x9ecd5846ff91a8bc, 1),
    (0xc162b44ddd90143e, 2),
    (0x0000000000000000, 3),
    (0x0000000000000001, 3),
    (0xffffffffffffffff, 3),
    (0x8000000000000000, 2),
    (0x002bdc545d6b4b87, 3),
];
pub(super) const RING_WEIGHTED_RETRIES: [[usize; 3]; 17] = [
    [2, 3, 3],
    [3, 2, 3],
    [2, 3, 2],
    [1, 1, 3],
    [0, 3, 0],
    [2, 2, 2],
    [3, 2, 3],
    [2, 2, 1],
    [1, 1, 2],
    [1, 2, 2],
    [1, 3, 1],
    [2, 3, 3],
    [3, 1, 1],
    [3, 1, 1],
    [3, 1, 1],
    [2, 2, 2],
    [3, 1, 1],
];
pub(super) const RING_WEIGHTED_BOUNDARIES: [(u64, usize, usize, usize); 4] = [
    (0x005c2955d06e278e, 3, 3, 1),
    (0x006454b72c961e0a, 1, 1, 1),
    (0x7ce3f48ea35ca604, 0, 0, 2),
    (0xfff01552c7f55dea, 1, 1, 3),
];
pub(super) const RING_MURMUR_SIZE: usize = 1024;
pub(super) const RING_MURMUR_COUNTS: [usize; 4] = [256, 256, 256, 256];
pub(super) const RING_MURMUR_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 1),
    (0xa173746b114c6be8, 2),
    (0x7395dd9943ab55e9, 1),
    (0xae654a4bf3937dde, 2),
    (0x3227a16a6007f168, 0),
    (0x76af3591662752eb, 3),
    (0x517193542a78cb38, 1),
    (0x216dec03713b4cfd, 1),
    (0xc873a0d981bb3a72, 3),
    (0x02accffe0373e668, 2),
    (0x9ecd5846ff91a8bc, 1),
    (0xc162b44ddd90143e, 2),
    (0x0000000000000000, 0),
    (0x0000000000000001, 0),
    (0xffffffffffffffff, 0),
    (0x8000000000000000, 0),
    (0x002bdc545d6b4b87, 0),
];
pub(super) const RING_MURMUR_RETRIES: [[usize; 3]; 17] = [
    [1, 0, 0],
    [2, 0, 0],
    [1, 0, 1],
    [2, 3, 3],
    [0, 0, 3],
    [3, 3, 1],
    [1, 3, 2],
    [1, 1, 0],
    [3, 0, 2],
    [2, 1, 2],
    [1, 1, 0],
    [2, 0, 1],
    [0, 1, 1],
    [0, 1, 1],
    [0, 1, 1],
    [0, 2, 0],
    [0, 1, 1],
];
pub(super) const RING_MURMUR_BOUNDARIES: [(u64, usize, usize, usize); 4] = [
    (0x00476830aa96b783, 0, 0, 1),
    (0x004eab43fe99226e, 1, 1, 1),
    (0x7ba9e262547471aa, 3, 3, 3),
    (0xffc91b3dcdf70da9, 2, 2, 0),
];
pub(super) const RING_THREE_SMALL_SIZE: usize = 9;
pub(super) const RING_THREE_SMALL_COUNTS: [usize; 3] = [3, 3, 3];
pub(super) const RING_THREE_SMALL_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 2),
    (0xa173746b114c6be8, 2),
    (0x7395dd9943ab55e9, 2),
    (0xae654a4bf3937dde, 2),
    (0x3227a16a6007f168, 0),
    (0x76af3591662752eb, 2),
    (0x517193542a78cb38, 1),
    (0x216dec03713b4cfd, 0),
    (0xc873a0d981bb3a72, 2),
    (0x02accffe0373e668, 0),
    (0x9ecd5846ff91a8bc, 2),
    (0xc162b44ddd90143e, 2),
    (0x0000000000000000, 0),
    (0x0000000000000001, 0),
    (0xffffffffffffffff, 0),
    (0x8000000000000000, 2),
    (0x002bdc545d6b4b87, 0),
];
pub(super) const RING_THREE_SMALL_RETRIES: [[usize; 3]; 17] = [
    [2, 0, 0],
    [2, 0, 0],
    [2, 0, 0],
    [2, 0, 0],
    [0, 1, 2],
    [2, 0, 0],
    [1, 0, 2],
    [0, 1, 2],
    [2, 0, 0],
    [0, 1, 2],
    [2, 0, 0],
    [2, 0, 0],
    [0, 1, 2],
    [0, 1, 2],
    [0, 1, 2],
    [2, 0, 0],
    [0, 1, 2],
];
pub(super) const RING_THREE_SMALL_BOUNDARIES: [(u64, usize, usize, usize); 4] = [
    (0x3991a6824c7153a5, 0, 0, 1),
    (0x3a24988080def0d8, 1, 1, 2),
    (0x5b0cfd75da0157cc, 1, 1, 0),
    (0xfa0cc5004b3d4c53, 0, 0, 0),
];
pub(super) const RING_ODD_CAPPED_SIZE: usize = 50;
pub(super) const RING_ODD_CAPPED_COUNTS: [usize; 3] = [14, 5, 31];
pub(super) const RING_ODD_CAPPED_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 2),
    (0xa173746b114c6be8, 2),
    (0x7395dd9943ab55e9, 2),
    (0xae654a4bf3937dde, 2),
    (0x3227a16a6007f168, 2),
    (0x76af3591662752eb, 2),
    (0x517193542a78cb38, 0),
    (0x216dec03713b4cfd, 1),
    (0xc873a0d981bb3a72, 0),
    (0x02accffe0373e668, 2),
    (0x9ecd5846ff91a8bc, 2),
    (0xc162b44ddd90143e, 0),
    (0x0000000000000000, 0),
    (0x0000000000000001, 0),
    (0xffffffffffffffff, 0),
    (0x8000000000000000, 2),
    (0x002bdc545d6b4b87, 0),
];
pub(super) const RING_ODD_CAPPED_RETRIES: [[usize; 3]; 17] = [
    [2, 2, 2],
    [2, 2, 2],
    [2, 2, 2],
    [2, 2, 0],
    [2, 2, 0],
    [2, 2, 2],
    [0, 2, 0],
    [1, 2, 2],
    [0, 0, 2],
    [2, 2, 0],
    [2, 2, 2],
    [0, 0, 2],
    [0, 2, 2],
    [0, 2, 2],
    [0, 2, 2],
    [2, 2, 2],
    [0, 2, 2],
];
pub(super) const RING_ODD_CAPPED_BOUNDARIES: [(u64, usize, usize, usize); 4] = [
    (0x01ea4bd5b496999a, 0, 0, 2),
    (0x030cc3bc946a850d, 2, 2, 2),
    (0x85b441c4a2185e3d, 2, 2, 2),
    (0xfeac4c20533df2b4, 0, 0, 0),
];
pub(super) const MAGLEV_FOUR_COUNTS: [usize; 4] = [16385, 16384, 16384, 16384];
pub(super) const MAGLEV_FOUR_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 2),
    (0xa173746b114c6be8, 1),
    (0x7395dd9943ab55e9, 0),
    (0xae654a4bf3937dde, 3),
    (0x3227a16a6007f168, 3),
    (0x76af3591662752eb, 2),
    (0x517193542a78cb38, 0),
    (0x216dec03713b4cfd, 2),
    (0xc873a0d981bb3a72, 3),
    (0x02accffe0373e668, 2),
    (0x9ecd5846ff91a8bc, 0),
    (0xc162b44ddd90143e, 3),
    (0x0000000000000000, 2),
    (0x0000000000000001, 2),
    (0xffffffffffffffff, 2),
    (0x8000000000000000, 1),
    (0x002bdc545d6b4b87, 2),
];
pub(super) const MAGLEV_FOUR_RETRIES: [[usize; 3]; 17] = [
    [2, 3, 0],
    [1, 0, 0],
    [0, 0, 3],
    [3, 3, 0],
    [3, 2, 2],
    [2, 2, 2],
    [0, 0, 3],
    [2, 1, 0],
    [3, 2, 3],
    [2, 1, 1],
    [0, 1, 1],
    [3, 2, 0],
    [2, 2, 0],
    [2, 0, 2],
    [2, 2, 2],
    [1, 3, 0],
    [2, 0, 0],
];
pub(super) const MAGLEV_WEIGHTED_COUNTS: [usize; 4] = [6554, 13108, 19661, 26214];
pub(super) const MAGLEV_WEIGHTED_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 2),
    (0xa173746b114c6be8, 3),
    (0x7395dd9943ab55e9, 0),
    (0xae654a4bf3937dde, 3),
    (0x3227a16a6007f168, 3),
    (0x76af3591662752eb, 2),
    (0x517193542a78cb38, 1),
    (0x216dec03713b4cfd, 2),
    (0xc873a0d981bb3a72, 3),
    (0x02accffe0373e668, 2),
    (0x9ecd5846ff91a8bc, 3),
    (0xc162b44ddd90143e, 3),
    (0x0000000000000000, 2),
    (0x0000000000000001, 2),
    (0xffffffffffffffff, 2),
    (0x8000000000000000, 3),
    (0x002bdc545d6b4b87, 2),
];
pub(super) const MAGLEV_WEIGHTED_RETRIES: [[usize; 3]; 17] = [
    [2, 3, 3],
    [3, 3, 3],
    [0, 0, 3],
    [3, 3, 0],
    [3, 2, 2],
    [2, 2, 2],
    [1, 0, 3],
    [2, 1, 3],
    [3, 2, 3],
    [2, 3, 1],
    [3, 1, 1],
    [3, 2, 3],
    [2, 2, 3],
    [2, 3, 2],
    [2, 2, 2],
    [3, 3, 3],
    [2, 2, 3],
];
pub(super) const MAGLEV_SMALL_COUNTS: [usize; 4] = [2, 3, 4, 4];
pub(super) const MAGLEV_SMALL_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 2),
    (0xa173746b114c6be8, 2),
    (0x7395dd9943ab55e9, 1),
    (0xae654a4bf3937dde, 2),
    (0x3227a16a6007f168, 3),
    (0x76af3591662752eb, 2),
    (0x517193542a78cb38, 0),
    (0x216dec03713b4cfd, 1),
    (0xc873a0d981bb3a72, 2),
    (0x02accffe0373e668, 3),
    (0x9ecd5846ff91a8bc, 2),
    (0xc162b44ddd90143e, 2),
    (0x0000000000000000, 3),
    (0x0000000000000001, 3),
    (0xffffffffffffffff, 1),
    (0x8000000000000000, 0),
    (0x002bdc545d6b4b87, 1),
];
pub(super) const MAGLEV_SMALL_RETRIES: [[usize; 3]; 17] = [
    [2, 1, 0],
    [2, 3, 1],
    [1, 2, 2],
    [2, 1, 0],
    [3, 1, 3],
    [2, 1, 2],
    [0, 3, 2],
    [1, 3, 3],
    [2, 1, 0],
    [3, 2, 2],
    [2, 1, 0],
    [2, 0, 3],
    [3, 1, 3],
    [3, 3, 1],
    [1, 3, 3],
    [0, 3, 2],
    [1, 2, 2],
];
pub(super) const MAGLEV_SMALL_TABLE: [usize; 13] = [3, 3, 1, 3, 0, 1, 2, 3, 0, 1, 2, 2, 2];
pub(super) const MAGLEV_ODD_COUNTS: [usize; 3] = [5, 2, 10];
pub(super) const MAGLEV_ODD_PICKS: [(u64, usize); 17] = [
    (0x7c1b2034a0684560, 2),
    (0xa173746b114c6be8, 2),
    (0x7395dd9943ab55e9, 0),
    (0xae654a4bf3937dde, 2),
    (0x3227a16a6007f168, 2),
    (0x76af3591662752eb, 2),
    (0x517193542a78cb38, 2),
    (0x216dec03713b4cfd, 0),
    (0xc873a0d981bb3a72, 2),
    (0x02accffe0373e668, 2),
    (0x9ecd5846ff91a8bc, 2),
    (0xc162b44ddd90143e, 2),
    (0x0000000000000000, 1),
    (0x0000000000000001, 2),
    (0xffffffffffffffff, 1),
    (0x8000000000000000, 2),
    (0x002bdc545d6b4b87, 2),
];
pub(super) const MAGLEV_ODD_RETRIES: [[usize; 3]; 17] = [
    [2, 2, 0],
    [2, 0, 0],
    [0, 2, 2],
    [2, 0, 0],
    [2, 0, 0],
    [2, 0, 0],
    [2, 0, 0],
    [0, 2, 0],
    [2, 1, 2],
    [2, 2, 1],
    [2, 0, 2],
    [2, 2, 2],
    [1, 1, 2],
    [2, 2, 1],
    [1, 1, 2],
    [2, 2, 2],
    [2, 2, 2],
];
pub(super) const MAGLEV_ODD_TABLE: [usize; 17] =
    [1, 2, 2, 0, 0, 2, 2, 2, 2, 2, 1, 0, 0, 2, 2, 0, 2];
pub(super) const EDF_123_FRESH: [u32; 12] = [2, 1, 2, 0, 1, 2, 2, 1, 2, 2, 0, 1];
pub(super) const EDF_123_WITH_PICKS: [u32; 12] = [2, 1, 2, 0, 1, 2, 2, 1, 2, 0, 1, 2];
pub(super) const EDF_25_75_FRESH: [u32; 12] = [1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1];
pub(super) const EDF_25_75_WITH_PICKS: [u32; 12] = [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0];
pub(super) const EDF_MIXED_FRESH: [u32; 12] = [3, 0, 1, 2, 3, 0, 0, 3, 0, 3, 0, 0];
pub(super) const EDF_MIXED_WITH_PICKS: [u32; 12] = [3, 0, 1, 2, 3, 0, 0, 3, 0, 3, 0, 0];
pub(super) const EDF_FRAC_FRESH: [u32; 12] = [0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1];
pub(super) const EDF_FRAC_WITH_PICKS: [u32; 12] = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1];
/// (input, MurmurHash2-64 with libstdc++'s seed = `std::hash<std::string>`, XXH64 seed 0, XXH64 seed 1).
pub(super) const HASHES: [(&str, u64, u64, u64); 6] = [
    (
        "",
        0x553e93901e462a6e,
        0xef46db3751d8e999,
        0xd5afba1336a3be4b,
    ),
    (
        "a",
        0x454ddee488c1ed6b,
        0xd24ec4f1a98c6e5b,
        0xdec2bc81c3cd46c6,
    ),
    (
        "abcdefg",
        0xdeee6830a3af82af,
        0x1860940e2902822d,
        0x3a5719489f8358b9,
    ),
    (
        "abcdefgh",
        0x783db3e38db898bb,
        0x3ad351775b4634b7,
        0x8305125710212a61,
    ),
    (
        "10.0.0.1:8080_0",
        0x28125cc835986945,
        0x23a29ae775dfd4a3,
        0x129719cb86ba9503,
    ),
    (
        "hello world, longer key",
        0x295f4a1713d3d727,
        0xab5f5b6de78b2429,
        0xc70630c17044451a,
    ),
];
