//! The one seeded random generator of the tests, the soak and the benchmark: proptest's ChaCha
//! `TestRng`, so that no test carries a hand-written generator. The same seed gives the same
//! sequence on every machine. Standalone (no crate imports) so that the library's unit tests can
//! include it too.

// Each includer uses a different subset of the methods.
#![allow(dead_code)]

use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};

pub struct SeededRng(TestRng);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&seed.to_le_bytes());
        }
        SeededRng(TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0.random_range(lo..=hi)
    }

    /// True `percent` times out of 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// True `per_million` times out of a million.
    pub fn per_million(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.random::<f64>()
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.0.random::<u8>()).collect()
    }
}
