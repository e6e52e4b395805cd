//! Tensors of GPT-2 checkpoints written by others (Hugging Face
//! `save_pretrained`, conversions from nanoGPT), brought to the names cllm
//! writes: `transformer.` prefixed, no attention-mask buffers, and
//! `lm_head.weight` only for an untied head (a tied copy of `wte` is
//! dropped).

use std::path::Path;

use super::{CkptError, NamedTensor};

/// The non-parameter buffers older `transformers` versions stored per block
/// (the causal mask `h.N.attn.bias` and `h.N.attn.masked_bias`).
fn is_mask_buffer(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("transformer.h.") else {
        return false;
    };
    let mut parts = rest.splitn(2, '.');
    let layer = parts.next().unwrap_or("");
    let field = parts.next().unwrap_or("");
    !layer.is_empty()
        && layer.bytes().all(|b| b.is_ascii_digit())
        && matches!(field, "attn.bias" | "attn.masked_bias")
}

/// Brings `tensors` (read from `path`) to cllm's names. With `tied` (the
/// config's `tie_word_embeddings`, GPT-2's default) a stored
/// `lm_head.weight` must equal `wte` bit for bit and is dropped: a head that
/// differs is an error rather than silently replaced. Untied, it is kept.
pub fn canonical_gpt2_tensors(
    path: &Path,
    tensors: Vec<NamedTensor>,
    tied: bool,
) -> Result<Vec<NamedTensor>, CkptError> {
    let mut out = Vec::with_capacity(tensors.len());
    let mut head = None;
    for mut t in tensors {
        if t.name == "lm_head.weight" {
            head = Some(t);
            continue;
        }
        if !t.name.starts_with("transformer.") {
            t.name = format!("transformer.{}", t.name);
        }
        if is_mask_buffer(&t.name) {
            continue;
        }
        out.push(t);
    }
    let Some(head) = head else { return Ok(out) };
    if !tied {
        out.push(head);
        return Ok(out);
    }
    let wte = out.iter().find(|t| t.name == "transformer.wte.weight");
    let copy = wte.is_some_and(|w| {
        w.shape == head.shape
            && w.data
                .iter()
                .zip(&head.data)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    });
    if wte.is_some() && !copy {
        return Err(CkptError::Tensor {
            path: path.to_path_buf(),
            name: head.name,
            reason: "differs from transformer.wte.weight, but config.json ties the \
                         embeddings (an untied head needs \"tie_word_embeddings\": false)"
                .to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, data: Vec<f32>) -> NamedTensor {
        NamedTensor {
            name: name.to_string(),
            shape: vec![data.len()],
            data,
        }
    }

    #[test]
    fn prefixes_names_and_drops_buffers_and_a_tied_head() {
        let p = Path::new("model.safetensors");
        let got = canonical_gpt2_tensors(
            p,
            vec![
                t("wte.weight", vec![1.0, 2.0]),
                t("h.0.attn.bias", vec![1.0]),
                t("h.0.attn.masked_bias", vec![1.0]),
                t("h.0.attn.c_attn.bias", vec![3.0]),
                t("lm_head.weight", vec![1.0, 2.0]),
                t("transformer.ln_f.bias", vec![0.0]),
            ],
            true,
        )
        .unwrap();
        let names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "transformer.wte.weight",
                "transformer.h.0.attn.c_attn.bias",
                "transformer.ln_f.bias"
            ]
        );
        let e = canonical_gpt2_tensors(
            p,
            vec![
                t("wte.weight", vec![1.0, 2.0]),
                t("lm_head.weight", vec![1.0, 2.5]),
            ],
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("tie_word_embeddings"), "{e}");
        // Untied, the head is kept as it is.
        let got = canonical_gpt2_tensors(
            p,
            vec![
                t("wte.weight", vec![1.0, 2.0]),
                t("lm_head.weight", vec![1.0, 2.5]),
            ],
            false,
        )
        .unwrap();
        assert_eq!(got[1].name, "lm_head.weight");
        assert_eq!(got[1].data, [1.0, 2.5]);
    }
}
