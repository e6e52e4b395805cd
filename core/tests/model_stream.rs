//! `backward_streaming`: the gradient of `backward_into`, bit for bit, handed
//! out stage by stage with a suffix that only grows and is never touched
//! again, for tied and untied heads.

use core::ops::Range;

use cllm_core::kernels::Portable;
use cllm_core::model::{self, GptConfig, GradSink};

/// Records every stage range and finished offset, and poisons the finished
/// suffix (NaN) so a later write into it shows.
struct Recorder<'a> {
    grads: &'a mut [f32],
    stages: Vec<Range<usize>>,
    finished: Vec<usize>,
    copy: Vec<f32>,
}

impl GradSink<f32> for Recorder<'_> {
    fn stage(&mut self, range: Range<usize>) -> &mut [f32] {
        let from = self.finished.last().copied().unwrap_or(usize::MAX);
        assert!(
            range.end <= from,
            "stage {range:?} reaches into the finished {from}.."
        );
        self.stages.push(range.clone());
        &mut self.grads[range]
    }
    fn finished(&mut self, from: usize) {
        let last = self.finished.last().copied().unwrap_or(self.grads.len());
        assert!(from <= last, "finished went up: {from} after {last}");
        // What the caller takes: copy it out, then poison it in place.
        self.copy[from..last].copy_from_slice(&self.grads[from..last]);
        self.grads[from..last].fill(f32::NAN);
        self.finished.push(from);
    }
}

#[test]
fn streamed_gradient_equals_backward_into() {
    for untied_head in [false, true] {
        let cfg = GptConfig {
            vocab_size: 11,
            n_positions: 6,
            n_embd: 8,
            n_layer: 3,
            n_head: 2,
            untied_head,
        };
        let (b, t) = (2, 5);
        let n = cfg.num_params();
        let mut p = vec![0.0f32; n];
        model::init_params(&cfg, &mut p, 5).unwrap();
        let toks: Vec<u32> = (0..b * t).map(|i| (i * 7 % 11) as u32).collect();
        let tgts: Vec<u32> = (0..b * t).map(|i| (i * 3 % 11) as u32).collect();
        let mut w = vec![0.0f32; cfg.activation_len(b, t)];

        let mut want = vec![1.0f32; n];
        model::forward(&Portable, &cfg, &p, &mut w, &toks, Some(&tgts), b, t).unwrap();
        model::backward_into(&Portable, &cfg, &p, &mut want, &mut w, &toks, &tgts, b, t).unwrap();

        let mut grads = vec![1.0f32; n];
        let mut sink = Recorder {
            grads: &mut grads,
            stages: Vec::new(),
            finished: Vec::new(),
            copy: vec![0.0; n],
        };
        model::forward(&Portable, &cfg, &p, &mut w, &toks, Some(&tgts), b, t).unwrap();
        model::backward_streaming(&Portable, &cfg, &p, &mut sink, &mut w, &toks, &tgts, b, t)
            .unwrap();
        // Head, one stage per block, embeddings; the last says "all".
        assert_eq!(sink.finished.len(), cfg.n_layer + 2, "untied {untied_head}");
        assert_eq!(sink.finished.last(), Some(&0));
        let got: Vec<u32> = sink.copy.iter().map(|x| x.to_bits()).collect();
        let want: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
        assert!(
            got == want,
            "untied {untied_head}: streamed gradient differs"
        );
    }
}
