//! Choosing the next token from logits: greedy, temperature, top-k, top-p.
//!
//! Deterministic given the RNG state: candidates are ordered by a total order
//! (logit descending, then token id ascending), probabilities are computed in
//! a fixed order with `libm`, and one uniform draw picks the token. Nothing
//! allocates; the caller passes `scratch` with one [`Candidate`] per token.

use core::cmp::Ordering;
use core::fmt;

use crate::rng::Rng;

/// One scratch slot: a token and its (scaled) logit or weight.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Candidate {
    /// Scaled logit, then unnormalised probability.
    pub value: f32,
    /// Token id.
    pub token: u32,
}

/// A sampling call that cannot run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SampleError {
    /// No logits.
    Empty,
    /// More logits than `u32` token ids.
    TooManyLogits {
        /// Number of logits.
        len: usize,
    },
    /// `scratch` is shorter than `logits`.
    ScratchTooSmall {
        /// Slots needed (`logits.len()`).
        needed: usize,
        /// Slots given.
        actual: usize,
    },
    /// A logit is NaN or +∞ (−∞ is allowed: a banned token).
    NonFiniteLogit {
        /// Its token id.
        index: usize,
    },
    /// Every logit is −∞.
    AllMasked,
    /// Temperature is negative or NaN.
    BadTemperature {
        /// The value given.
        temperature: f32,
    },
    /// `top_p` is not in `(0, 1]`.
    BadTopP {
        /// The value given.
        top_p: f32,
    },
}

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SampleError::Empty => write!(f, "no logits to sample from"),
            SampleError::TooManyLogits { len } => {
                write!(f, "{len} logits exceed the u32 token range")
            }
            SampleError::ScratchTooSmall { needed, actual } => {
                write!(f, "scratch has {actual} slots, needs {needed}")
            }
            SampleError::NonFiniteLogit { index } => {
                write!(f, "logit of token {index} is NaN or +inf")
            }
            SampleError::AllMasked => write!(f, "every logit is -inf"),
            SampleError::BadTemperature { temperature } => {
                write!(f, "temperature {temperature} must be >= 0")
            }
            SampleError::BadTopP { top_p } => write!(f, "top_p {top_p} must be in (0, 1]"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SampleError {}

/// Total order: larger value first, then smaller token id.
fn by_rank(a: &Candidate, b: &Candidate) -> Ordering {
    b.value.total_cmp(&a.value).then(a.token.cmp(&b.token))
}

/// Picks the next token.
///
/// * `temperature == 0`: greedy, the first token with the largest logit (no
///   randomness consumed).
/// * otherwise logits are divided by `temperature`; `top_k > 0` keeps the
///   `k` most likely tokens (`0` = all); `top_p < 1` keeps the smallest
///   prefix (most likely first) whose probability reaches `top_p` (nucleus);
///   one `rng.next_f64()` draw then picks from what is left.
///
/// `scratch` must have at least `logits.len()` slots.
pub fn sample(
    logits: &[f32],
    temperature: f32,
    top_k: usize,
    top_p: f32,
    rng: &mut Rng,
    scratch: &mut [Candidate],
) -> Result<u32, SampleError> {
    let n = logits.len();
    if n == 0 {
        return Err(SampleError::Empty);
    }
    if n as u64 > u32::MAX as u64 + 1 {
        return Err(SampleError::TooManyLogits { len: n });
    }
    if scratch.len() < n {
        return Err(SampleError::ScratchTooSmall {
            needed: n,
            actual: scratch.len(),
        });
    }
    if temperature.is_nan() || temperature < 0.0 {
        return Err(SampleError::BadTemperature { temperature });
    }
    if top_p.is_nan() || top_p <= 0.0 || top_p > 1.0 {
        return Err(SampleError::BadTopP { top_p });
    }
    if let Some(index) = logits
        .iter()
        .position(|x| x.is_nan() || *x == f32::INFINITY)
    {
        return Err(SampleError::NonFiniteLogit { index });
    }
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    if logits[best] == f32::NEG_INFINITY {
        return Err(SampleError::AllMasked);
    }
    if temperature == 0.0 {
        return Ok(best as u32);
    }

    let cand = &mut scratch[..n];
    for (i, (c, &x)) in cand.iter_mut().zip(logits).enumerate() {
        *c = Candidate {
            value: x / temperature,
            token: i as u32,
        };
    }
    // Keep the top k (sorted), or sort everything when nucleus needs the order.
    let mut live = n;
    if top_k > 0 && top_k < n {
        cand.select_nth_unstable_by(top_k - 1, by_rank);
        live = top_k;
        cand[..live].sort_unstable_by(by_rank);
    } else if top_p < 1.0 {
        cand.sort_unstable_by(by_rank);
    }
    let cand = &mut cand[..live];
    let max = logits[best] / temperature;
    if !max.is_finite() {
        // A temperature so small that the scaled logits overflow: the limit is greedy.
        return Ok(best as u32);
    }
    let mut total = 0.0f64;
    for c in cand.iter_mut() {
        c.value = libm::expf(c.value - max);
        total += c.value as f64;
    }
    let mut keep = cand.len();
    if top_p < 1.0 {
        let target = top_p as f64 * total;
        let mut cum = 0.0f64;
        for (i, c) in cand.iter().enumerate() {
            cum += c.value as f64;
            if cum >= target {
                keep = i + 1;
                break;
            }
        }
        total = cum.min(total);
    }
    let cand = &cand[..keep];
    let u = rng.next_f64() * total;
    let mut cum = 0.0f64;
    for c in cand {
        cum += c.value as f64;
        if u < cum {
            return Ok(c.token);
        }
    }
    // Only reachable through rounding at the very top of the range: the last
    // candidate that has any weight (the best one has weight 1).
    Ok(cand
        .iter()
        .rev()
        .find(|c| c.value > 0.0)
        .map_or(best as u32, |c| c.token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_first_argmax_and_consumes_no_randomness() {
        let mut rng = Rng::new(1);
        let mut s = [Candidate::default(); 4];
        assert_eq!(
            sample(&[0.1, 3.0, 3.0, -1.0], 0.0, 0, 1.0, &mut rng, &mut s),
            Ok(1)
        );
        let mut fresh = Rng::new(1);
        assert_eq!(rng.next_u64(), fresh.next_u64());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut rng = Rng::new(1);
        let mut s = [Candidate::default(); 2];
        assert_eq!(
            sample(&[], 1.0, 0, 1.0, &mut rng, &mut s),
            Err(SampleError::Empty)
        );
        assert_eq!(
            sample(&[0.0; 3], 1.0, 0, 1.0, &mut rng, &mut s),
            Err(SampleError::ScratchTooSmall {
                needed: 3,
                actual: 2
            })
        );
        assert_eq!(
            sample(&[0.0, f32::NAN], 1.0, 0, 1.0, &mut rng, &mut s),
            Err(SampleError::NonFiniteLogit { index: 1 })
        );
        assert_eq!(
            sample(&[f32::NEG_INFINITY; 2], 1.0, 0, 1.0, &mut rng, &mut s),
            Err(SampleError::AllMasked)
        );
        assert_eq!(
            sample(&[0.0; 2], -1.0, 0, 1.0, &mut rng, &mut s),
            Err(SampleError::BadTemperature { temperature: -1.0 })
        );
        assert_eq!(
            sample(&[0.0; 2], 1.0, 0, 0.0, &mut rng, &mut s),
            Err(SampleError::BadTopP { top_p: 0.0 })
        );
    }
}
