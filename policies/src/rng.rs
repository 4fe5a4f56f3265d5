//! A tiny deterministic RNG (SplitMix64). Sampling and adapter init draw from it instead of
//! libtorch's global generator, so results depend only on the seed, never on thread timing or
//! on what else shares the batch.

#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// A stream for one sequence: `seed` mixed with the sequence's index.
    pub fn for_stream(seed: u64, stream: u64) -> SplitMix {
        let mut base = SplitMix(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        SplitMix(base.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
