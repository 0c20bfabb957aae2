//! What the deterministic simulations of the distributed cores share (the
//! replication engine's and the cluster stack's): a small seedable generator,
//! so a run is a pure function of its seed, and the environment switches that
//! choose the seeds: `SIM_SEED=N` replays the one seed N (to reproduce a
//! failure), `SIM_SEEDS=N` sets how many seeds a test runs.

/// A small, fast, seedable generator (splitmix64). Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True `per_mille` times in a thousand.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// The seed `SIM_SEED` asks to replay, if any.
pub fn replay_seed() -> Option<u64> {
    std::env::var("SIM_SEED").ok().map(|s| {
        s.parse()
            .unwrap_or_else(|_| panic!("SIM_SEED is not a number: {s:?}"))
    })
}

/// How many seeds to run: `SIM_SEEDS`, else `debug` in debug builds and
/// `release` in release builds.
pub fn seed_count(debug: u64, release: u64) -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            debug
        } else {
            release
        })
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
        let mut r = Rng::new(1);
        assert!((0..1000).all(|_| r.below(10) < 10));
        assert_eq!(r.below(0), 0);
    }
}
