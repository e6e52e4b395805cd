//! Bad input to the model functions is an error value carrying the numbers,
//! never a panic, and leaves the caller's buffers usable.

use cllm_core::kernels::Portable;
use cllm_core::model::{self, Buffer, ConfigError, GptConfig, ModelError};

const CFG: GptConfig = GptConfig {
    vocab_size: 7,
    n_positions: 4,
    n_embd: 4,
    n_layer: 1,
    n_head: 2,
    untied_head: false,
};

#[test]
fn forward_and_backward_validate_their_input() {
    let (b, t) = (2, 3);
    let k = Portable;
    let p = vec![0.0f32; CFG.num_params()];
    let mut g = vec![0.0f32; CFG.num_params()];
    let mut w = vec![0.0f32; CFG.activation_len(b, t)];
    let toks = [0u32, 1, 2, 3, 4, 5];
    let f = |w: &mut [f32], toks: &[u32], tg: Option<&[u32]>, b, t| {
        model::forward(&k, &CFG, &p, w, toks, tg, b, t)
    };

    assert_eq!(
        f(&mut w, &[0, 1, 7, 3, 4, 5], None, b, t),
        Err(ModelError::TokenOutOfRange {
            index: 2,
            token: 7,
            vocab_size: 7
        })
    );
    assert_eq!(
        f(&mut w, &toks, Some(&[0, 1, 2, 3, 4, 99]), b, t),
        Err(ModelError::TargetOutOfRange {
            index: 5,
            target: 99,
            vocab_size: 7
        })
    );
    assert_eq!(
        f(&mut w, &toks[..5], None, b, t),
        Err(ModelError::BufferLength {
            buffer: Buffer::Tokens,
            expected: 6,
            actual: 5
        })
    );
    assert_eq!(
        f(&mut w, &toks, None, 1, 6),
        Err(ModelError::SeqTooLong {
            seq: 6,
            n_positions: 4
        })
    );
    assert_eq!(
        f(&mut w, &[], None, 0, 3),
        Err(ModelError::EmptyBatch { batch: 0, seq: 3 })
    );
    let short = w.len() - 1;
    assert_eq!(
        f(&mut w[..short], &toks, None, b, t),
        Err(ModelError::BufferTooSmall {
            buffer: Buffer::Work,
            needed: short + 1,
            actual: short
        })
    );
    assert_eq!(
        f(&mut w, &toks, None, usize::MAX, 2),
        Err(ModelError::SizeOverflow {
            batch: usize::MAX,
            seq: 2
        })
    );
    let bad = GptConfig { n_head: 3, ..CFG };
    assert_eq!(
        model::forward(&k, &bad, &p, &mut w, &toks, None, b, t),
        Err(ModelError::Config(ConfigError::HeadsDoNotDivide {
            n_embd: 4,
            n_head: 3
        }))
    );
    assert_eq!(
        model::forward(&k, &CFG, &p[1..], &mut w, &toks, None, b, t),
        Err(ModelError::BufferLength {
            buffer: Buffer::Params,
            expected: p.len(),
            actual: p.len() - 1
        })
    );

    // A forward without targets cannot be differentiated.
    f(&mut w, &toks, None, b, t).unwrap();
    assert_eq!(
        model::backward(&k, &CFG, &p, &mut g, &mut w, &toks, &toks, b, t),
        Err(ModelError::NoForward)
    );
    // Wrong gradient length.
    f(&mut w, &toks, Some(&toks), b, t).unwrap();
    assert_eq!(
        model::backward(&k, &CFG, &p, &mut g[1..], &mut w, &toks, &toks, b, t),
        Err(ModelError::BufferLength {
            buffer: Buffer::Grads,
            expected: p.len(),
            actual: p.len() - 1
        })
    );
    // ... which left the forward state intact.
    model::backward(&k, &CFG, &p, &mut g, &mut w, &toks, &toks, b, t).unwrap();

    // Messages carry the numbers.
    let msg = ModelError::TokenOutOfRange {
        index: 2,
        token: 7,
        vocab_size: 7,
    }
    .to_string();
    assert!(msg.contains('7') && msg.contains('2'), "{msg}");
}

#[test]
fn larger_workspace_is_fine_and_logits_are_where_the_accessor_says() {
    let (b, t) = (1, 4);
    let mut p = vec![0.0f64; CFG.num_params()];
    model::init_params(&CFG, &mut p, 3).unwrap();
    let toks = [1u32, 2, 3, 4];
    let mut w1 = vec![0.0f64; CFG.activation_len(b, t)];
    let mut w2 = vec![7.0f64; CFG.activation_len(b, t) + 100];
    model::forward(&Portable, &CFG, &p, &mut w1, &toks, None, b, t).unwrap();
    model::forward(&Portable, &CFG, &p, &mut w2, &toks, None, b, t).unwrap();
    let (l1, l2) = (
        model::logits(&CFG, &w1, b, t).unwrap(),
        model::logits(&CFG, &w2, b, t).unwrap(),
    );
    assert_eq!(l1, l2);
    assert_eq!(l1.len(), t * CFG.vocab_size);
    // Cross-check the accessor against the KV-cache path at the last position.
    let mut cache = vec![0.0f64; CFG.kv_cache_len()];
    let mut iw = vec![0.0f64; CFG.infer_work_len()];
    let mut out = vec![0.0f64; CFG.vocab_size];
    for (pos, &tok) in toks.iter().enumerate() {
        model::forward_cached(&Portable, &CFG, &p, &mut cache, &mut iw, tok, pos, &mut out)
            .unwrap();
    }
    assert_eq!(&l1[3 * CFG.vocab_size..], &out[..]);
}
