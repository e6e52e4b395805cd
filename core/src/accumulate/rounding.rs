//! Correct rounding of `±mag · 2^exp` to `f32`, shared by the integer-based
//! accumulators (fixed point and exact).
//!
//! Done entirely in integer arithmetic so that there is exactly one rounding,
//! also where the result is subnormal (a float multiply by a power of two
//! after an `as f32` conversion would round twice there).

/// The exponent of the last bit of an `f32` subnormal: `2^-149`.
pub(crate) const F32_MIN_EXP: i32 = -149;

/// `±mag · 2^exp` rounded to the nearest `f32`, ties to even.
///
/// Returns `None` when the rounded magnitude does not fit an `f32` (it would
/// be an infinity). `mag == 0` gives `+0.0` or `-0.0` according to `neg`.
pub(crate) fn round_scaled(neg: bool, mag: u128, exp: i32) -> Option<f32> {
    let sign = (neg as u32) << 31;
    if mag == 0 {
        return Some(f32::from_bits(sign));
    }
    let bitlen = 128 - mag.leading_zeros() as i32;
    // Exponent of the most significant bit, then of the result's last bit
    // (24 significant bits, but never below the subnormal quantum).
    let top = exp + bitlen - 1;
    let q = (top - 23).max(F32_MIN_EXP);
    let shift = q - exp; // how many low bits of `mag` are rounded away
    let m: u128 = if shift <= 0 {
        // Exact; `mag` has at most 24 bits here, so the shift cannot overflow.
        mag << (-shift) as u32
    } else if shift > bitlen {
        // Below half the last place of the result: rounds to zero.
        0
    } else {
        let shift = shift as u32; // 1..=128
        let kept = if shift == 128 { 0 } else { mag >> shift };
        let rem = if shift == 128 {
            mag
        } else {
            mag & ((1u128 << shift) - 1)
        };
        let half = 1u128 << (shift - 1);
        let up = rem > half || (rem == half && kept & 1 == 1);
        kept + up as u128
    };
    // `m` is at most 2^24 (a carry out of the rounding); the biased-exponent
    // formula below absorbs that carry and also encodes subnormals
    // (q == -149, m < 2^23 gives the subnormal bits directly).
    let bits = (((q - F32_MIN_EXP) as u64) << 23) + m as u64;
    if bits >= 0x7f80_0000 {
        None
    } else {
        Some(f32::from_bits(sign | bits as u32))
    }
}

/// `±window · 2^exp` rounded to the nearest `f32`, ties to even, for a
/// `window` whose top bit (bit 127) is set: the 104 bits below the kept 24
/// are rounded away with constant shifts, no searching or variable shifts.
///
/// The exact accumulator's former path, now the reference its fast path is
/// tested against; subnormal results take the general route.
#[cfg(test)]
pub(crate) fn round_normalized(neg: bool, window: u128, exp: i32) -> Option<f32> {
    let q = exp + 104; // exponent of the last kept bit
    if q < F32_MIN_EXP {
        // Fewer than 24 bits survive (a subnormal result).
        return round_scaled(neg, window, exp);
    }
    let kept = (window >> 104) as u64; // 2^23 <= kept < 2^24
    let rem = window & ((1u128 << 104) - 1);
    // Round half to even: carries into bit 104 iff rem > half, or rem == half
    // and the kept part is odd.
    let m = kept + ((rem + (1u128 << 103) - 1 + (kept & 1) as u128) >> 104) as u64;
    let bits = (((q - F32_MIN_EXP) as u64) << 23) + m;
    if bits >= 0x7f80_0000 {
        None
    } else {
        Some(f32::from_bits(((neg as u32) << 31) | bits as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_agrees_with_general() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut w = ((x as u128) << 64 | x.rotate_left(17) as u128) | 1 << 127;
            if i % 3 == 0 {
                // Exact ties and near-ties at the rounding point.
                w = (w >> 103 << 103) | (i as u128 & 1);
            }
            let exp = (x % 400) as i32 - 300;
            let neg = i % 2 == 0;
            let a = round_normalized(neg, w, exp).map(f32::to_bits);
            assert_eq!(
                a,
                round_scaled(neg, w, exp).map(f32::to_bits),
                "{w:x} {exp}"
            );
        }
    }

    #[test]
    fn small_cases() {
        assert_eq!(round_scaled(false, 1, 0), Some(1.0));
        assert_eq!(round_scaled(true, 3, -1), Some(-1.5));
        assert_eq!(round_scaled(false, 1, -149), Some(f32::from_bits(1)));
        // Half the smallest subnormal is a tie: rounds to even (zero).
        assert_eq!(round_scaled(false, 1, -150), Some(0.0));
        // Three halves of it rounds to two quanta (even).
        assert_eq!(round_scaled(false, 3, -150), Some(f32::from_bits(2)));
        // 2^24 + 1 is a tie between 2^24 and 2^24 + 2: even is 2^24.
        assert_eq!(round_scaled(false, (1 << 24) + 1, 0), Some(16_777_216.0));
        assert_eq!(round_scaled(false, (1 << 24) + 3, 0), Some(16_777_220.0));
        assert_eq!(round_scaled(false, u128::MAX, 0), None);
        assert_eq!(round_scaled(false, u128::MAX >> 1, 0), Some(2f32.powi(127)));
        assert_eq!(round_scaled(false, (1 << 24) - 1, 104), Some(f32::MAX));
        // Midpoint between f32::MAX and 2^128 ties to even, i.e. overflows ...
        assert_eq!(round_scaled(false, (1 << 25) - 1, 103), None);
        // ... and anything below it rounds to f32::MAX.
        assert_eq!(
            round_scaled(true, (((1 << 25) - 1) << 20) - 1, 83),
            Some(-f32::MAX)
        );
        // Largest subnormal plus a bit more than half a quantum crosses into normal.
        assert_eq!(
            round_scaled(false, (((1 << 23) - 1) << 1) + 1, -150),
            Some(f32::MIN_POSITIVE)
        );
        assert_eq!(round_scaled(false, 1, 128), None);
        assert_eq!(round_scaled(false, 1, 127), Some(2f32.powi(127)));
        assert_eq!(round_scaled(false, 1, -1000), Some(0.0));
    }
}
