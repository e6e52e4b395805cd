//! Seeded, platform-independent random numbers (weight init, sampling, batch
//! selection).
//!
//! The generator is xoshiro256** (Blackman & Vigna, 2018) with its 256-bit
//! state filled from the `u64` seed by SplitMix64, the seeding procedure the
//! authors recommend. Both are integer-only, and the floating-point helpers
//! use only exact conversions and `libm`, so a seed gives the same stream of
//! bits on every platform. `tests/model_init.rs` pins the first outputs.

/// SplitMix64 (Steele, Lea & Flood), used to expand a seed into a state.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output is derived from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// xoshiro256** seeded by SplitMix64, plus the conversions cllm needs.
///
/// Not cryptographic. Cheap to copy; its whole state is [`Rng::state`], so a
/// checkpoint can store and restore it.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
    /// Box–Muller makes normals in pairs; the second one waits here.
    spare: Option<f64>,
}

impl Rng {
    /// A generator seeded from `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        let mut sm = SplitMix64::new(seed);
        let s = [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()];
        Self { s, spare: None }
    }

    /// The raw xoshiro state and the pending normal, to save in a checkpoint.
    pub fn state(&self) -> ([u64; 4], Option<f64>) {
        (self.s, self.spare)
    }

    /// Restores a state returned by [`Rng::state`]. An all-zero xoshiro state
    /// (which would output zeros forever) is replaced by the seed-0 state.
    pub fn from_state(s: [u64; 4], spare: Option<f64>) -> Self {
        if s == [0; 4] {
            return Self::new(0);
        }
        Self { s, spare }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// The next 32 random bits (the high half, the better half of the output).
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `[0, 1)` with 53 random bits (exact conversion).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, 1)` with 24 random bits (exact conversion).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform integer in `[0, n)`, without modulo bias (Lemire's method).
    /// Returns 0 when `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            // Reject the few low products that would over-represent some values.
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// Standard normal deviate (Box–Muller with `libm`, so platform-independent).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let theta = 2.0 * core::f64::consts::PI * u2;
        self.spare = Some(r * libm::sin(theta));
        r * libm::cos(theta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(3);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            let x = r.below(7);
            assert!(x < 7);
            seen[x as usize] += 1;
        }
        // Each bucket expects 1000; 5 sigma is about 150.
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn uniform_floats_in_unit_interval() {
        let mut r = Rng::new(9);
        let mut sum = 0.0;
        for _ in 0..10000 {
            let x = r.next_f64();
            let y = r.next_f32();
            assert!((0.0..1.0).contains(&x) && (0.0..1.0).contains(&y));
            sum += x;
        }
        assert!((sum / 10000.0 - 0.5).abs() < 0.02);
    }

    #[test]
    fn normal_moments() {
        let mut r = Rng::new(5);
        let n = 20000;
        let (mut s1, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let z = r.normal();
            s1 += z;
            s2 += z * z;
        }
        let mean = s1 / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.04, "var {var}");
    }

    #[test]
    fn state_roundtrip_continues_the_stream() {
        let mut a = Rng::new(11);
        a.normal();
        let (s, spare) = a.state();
        let mut b = Rng::from_state(s, spare);
        for _ in 0..5 {
            assert_eq!(a.normal().to_bits(), b.normal().to_bits());
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }
}
