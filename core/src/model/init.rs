//! GPT-2 weight initialisation from the core's seeded RNG.

use crate::real::Real;
use crate::rng::Rng;

use super::config::GptConfig;
use super::error::{exact, Buffer, ModelError};
use super::layout::TensorKind;

/// Standard deviation of GPT-2's normal init (`initializer_range`).
pub const INIT_STD: f64 = 0.02;

/// Fills `params` (`num_params` long) with GPT-2's initialisation, as Hugging
/// Face's `GPT2PreTrainedModel._init_weights` does: wte, wpe and the
/// `c_attn`/`c_fc` weights ~ N(0, 0.02²); the residual projections
/// (`attn.c_proj.weight`, `mlp.c_proj.weight`) ~ N(0, (0.02/√(2·n_layer))²);
/// biases 0; LayerNorm weight 1, bias 0.
///
/// Deviates are drawn from [`Rng::new`]`(seed)` in buffer order, one per
/// random element, in `f64` and rounded to `R`: the same seed gives the same
/// bits on every platform, and the `f32` init is the rounded `f64` init.
pub fn init_params<R: Real>(
    cfg: &GptConfig,
    params: &mut [R],
    seed: u64,
) -> Result<(), ModelError> {
    cfg.validate()?;
    exact(Buffer::Params, cfg.num_params(), params.len())?;
    let mut rng = Rng::new(seed);
    let proj_std = INIT_STD / libm::sqrt(2.0 * cfg.n_layer as f64);
    for t in cfg.tensors() {
        let s = &mut params[t.range()];
        let std = match t.kind {
            TensorKind::Wte
            | TensorKind::LmHead
            | TensorKind::Wpe
            | TensorKind::AttnWeight
            | TensorKind::FcWeight => INIT_STD,
            TensorKind::AttnProjWeight | TensorKind::MlpProjWeight => proj_std,
            TensorKind::Ln1Weight | TensorKind::Ln2Weight | TensorKind::LnfWeight => {
                s.fill(R::ONE);
                continue;
            }
            _ => {
                s.fill(R::ZERO);
                continue;
            }
        };
        for x in s.iter_mut() {
            *x = R::from_f64(rng.normal() * std);
        }
    }
    Ok(())
}
