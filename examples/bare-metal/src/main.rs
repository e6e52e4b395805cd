//! cllm-core on a microcontroller: trains a tiny GPT on a text embedded in
//! the firmware, on QEMU's `lm3s6965evb` (Cortex-M4F, 64 KiB SRAM), with every
//! buffer in one static arena sized at compile time — no allocator.
//!
//! Each step computes `UNITS` units (one sequence each) into their own
//! gradient buffers, reduces them over a depth-1 tree of `LEAVES` leaves with
//! an [`Accumulator`], clips by global norm and applies AdamW. The run exits
//! with success (semihosting `EXIT_SUCCESS`, so QEMU exits 0) only if the
//! evaluation loss fell to at most `MAX_LOSS_RATIO` of its initial value and
//! the stack stayed within the reserve that memory.x sets aside.
#![no_std]
#![no_main]

mod corpus;
mod kernels;
mod log;
mod stack;

use core::fmt;
use core::mem::MaybeUninit;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use cllm_core::accumulate::{AccError, Accumulator, ExactAcc};
use cllm_core::model::{self, GptConfig, ModelError};
use cllm_core::optim::{self, AdamW, LrSchedule, OptimError};
use cllm_core::rng::Rng;
use cllm_core::tree::Shape;
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::debug;

use crate::log::{say, Dec4, Hex, Shown};

// Links in the global defmt logger (semihosting transport).
#[cfg(feature = "defmt")]
use defmt_semihosting as _;

// ------------------------------------------------------------ configuration

/// Context length, and the length of every training sequence.
const SEQ: usize = 16;

/// The model. With AdamW every parameter costs 16 bytes (value, gradient,
/// m, v) plus 4 per extra unit buffer, so `n_embd` 16 (≈4 k parameters, so
/// 64 KiB for those four buffers alone) cannot fit; 8 leaves room to spare.
const CFG: GptConfig = GptConfig {
    vocab_size: corpus::VOCAB,
    n_positions: SEQ,
    n_embd: 8,
    n_layer: 1,
    n_head: 2,
    untied_head: false,
};

/// Sequences per unit (the model's `batch`).
const BATCH: usize = 1;
/// Leaves of the depth-1 sphere tree; they run one after another on this core.
const LEAVES: usize = 2;
/// Units per step; leaf `j` computes units `[j·U/L, (j+1)·U/L)`.
const UNITS: usize = 2;

const STEPS: u64 = 3000;
const EVAL_EVERY: u64 = 500;
const INIT_SEED: u64 = 42;
const DATA_SEED: u64 = 7;

const ADAMW: AdamW = AdamW {
    lr: 2e-2,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    // Memorising one short text: nothing to regularise towards.
    weight_decay: 0.0,
};
const SCHEDULE: LrSchedule = LrSchedule {
    max_lr: ADAMW.lr,
    min_lr: ADAMW.lr / 10.0,
    warmup_steps: 10,
    total_steps: STEPS,
};
const MAX_GRAD_NORM: f32 = 1.0;

/// The run succeeds only if the final evaluation loss is at most this
/// fraction of the initial one (which is ≈ ln(vocab) for a fresh model).
const MAX_LOSS_RATIO: f32 = 0.25;

/// The gradient accumulator that sums the leaves' unit gradients. Any
/// [`Accumulator`] works: cells are built in place and reduced in
/// `CHUNK`-element passes, so a wide cell (an exact register) costs
/// `2·CHUNK` cells of RAM, not one per parameter.
///
/// The exact (Kulisch) accumulator makes the sum independent of the tree's
/// shape and of the order of the leaves, as on the desktop.
type Acc = ExactAcc;
const ACC: Acc = ExactAcc;
type Cell = <Acc as Accumulator>::Cell;

/// Elements per reduction pass. Accumulators are elementwise, so the chunk
/// size does not change any result, only the RAM the cells take.
const CHUNK: usize = 64;
/// Fixed segment length for the global-norm partial sums (added in segment
/// order, as the segment protocol does; stands in for `reduce::SEGMENT_LEN`).
const SEGMENT_LEN: usize = 256;

// ------------------------------------------------------------ buffer sizes

/// `GptConfig::num_params`, as a const fn so it can size arrays; `train`
/// checks it against the core's own count.
const fn num_params(cfg: &GptConfig) -> usize {
    let c = cfg.n_embd;
    (cfg.vocab_size + cfg.n_positions) * c + cfg.n_layer * (12 * c * c + 13 * c) + 2 * c
}

/// `GptConfig::activation_len`, as a const fn (checked likewise).
const fn activation_len(cfg: &GptConfig, b: usize, t: usize) -> usize {
    let (c, bt) = (cfg.n_embd, b * t);
    cfg.n_layer * (10 * c * bt + 4 * bt) + (cfg.vocab_size + 11 * c + 3) * bt + 2 * t * t + 1
}

const P: usize = num_params(&CFG);
const ACT: usize = activation_len(&CFG, BATCH, SEQ);
const BT: usize = BATCH * SEQ;
/// Evaluation windows: consecutive, non-overlapping, covering the text.
const EVAL_WINDOWS: usize = (corpus::LEN - 1) / SEQ;

const _: () = assert!(
    corpus::LEN > SEQ + 1,
    "the text must be longer than a window"
);
const _: () = assert!(UNITS >= 1 && LEAVES >= 1 && EVAL_WINDOWS >= 1);

/// Every buffer the run uses besides the stack, sized from the config.
/// Zero-initialised (so it costs no flash) except the cells, which are built
/// at start.
#[repr(C)]
struct Arena {
    params: [f32; P],
    adam_m: [f32; P],
    adam_v: [f32; P],
    /// One gradient per unit; after the reduction, unit 0's buffer holds the
    /// step's summed gradient (its own values were consumed chunk by chunk
    /// before being overwritten), which saves a separate `P`-long buffer.
    unit_grads: [[f32; P]; UNITS],
    work: [f32; ACT],
    root: MaybeUninit<[Cell; CHUNK]>,
    leaf: MaybeUninit<[Cell; CHUNK]>,
}

static mut ARENA: Arena = Arena {
    params: [0.0; P],
    adam_m: [0.0; P],
    adam_v: [0.0; P],
    unit_grads: [[0.0; P]; UNITS],
    work: [0.0; ACT],
    root: MaybeUninit::uninit(),
    leaf: MaybeUninit::uninit(),
};

/// The only reference to [`ARENA`], handed out once.
fn take_arena() -> &'static mut Arena {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    assert!(!TAKEN.swap(true, Ordering::Relaxed), "arena taken twice");
    // SAFETY: the flag makes this the only reference ever created, and no
    // interrupt handler touches ARENA.
    unsafe { &mut *core::ptr::addr_of_mut!(ARENA) }
}

/// Fills `slot` with zero cells in place: cells need be neither `Copy` nor
/// const-constructible, and building the array on the stack first would
/// cost its size in stack.
fn zeroed_cells<'a, A: Accumulator, const N: usize>(
    slot: &'a mut MaybeUninit<[A::Cell; N]>,
    acc: &A,
) -> &'a mut [A::Cell] {
    let first = slot.as_mut_ptr().cast::<A::Cell>();
    for i in 0..N {
        // SAFETY: `i < N`, inside the array; every element is written
        // before `assume_init_mut`.
        unsafe { first.add(i).write(acc.zero_cell()) };
    }
    // SAFETY: all N elements were initialised above.
    unsafe { slot.assume_init_mut() }
}

// ------------------------------------------------------------ errors

/// Anything that stops the run; each carries the core's own error.
enum Error {
    Model(ModelError),
    Optim(OptimError),
    Acc(AccError),
    /// A const-computed buffer length disagrees with the core's.
    Size {
        what: &'static str,
        ours: usize,
        core: usize,
    },
}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Self {
        Error::Model(e)
    }
}
impl From<OptimError> for Error {
    fn from(e: OptimError) -> Self {
        Error::Optim(e)
    }
}
impl From<AccError> for Error {
    fn from(e: AccError) -> Self {
        Error::Acc(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Model(e) => write!(f, "model: {e}"),
            Error::Optim(e) => write!(f, "optimizer: {e}"),
            Error::Acc(e) => write!(f, "gradient reduction: {e}"),
            Error::Size { what, ours, core } => write!(
                f,
                "{what}: the firmware sized {ours} elements, cllm-core needs {core}"
            ),
        }
    }
}

fn check_size(what: &'static str, ours: usize, core: usize) -> Result<(), Error> {
    if ours == core {
        Ok(())
    } else {
        Err(Error::Size { what, ours, core })
    }
}

// ------------------------------------------------------------ training

/// Tokens and next-token targets of the window starting at `start`.
fn window(start: usize, tokens: &mut [u32], targets: &mut [u32]) {
    let src = &corpus::TOKENS[start..start + SEQ + 1];
    for (i, (t, g)) in tokens.iter_mut().zip(targets.iter_mut()).enumerate() {
        *t = u32::from(src[i]);
        *g = u32::from(src[i + 1]);
    }
}

/// The depth-1 sphere tree the units are spread over.
const TREE: Shape = match Shape::new(1, LEAVES as u32) {
    Ok(s) => s,
    Err(_) => panic!("LEAVES must be in 1..=12"),
};

/// Leaf `leaf`'s units: the tree's contiguous, balanced split (possibly
/// empty when there are more leaves than units).
fn leaf_units(leaf: usize) -> Range<usize> {
    TREE.leaf_units(leaf as u32, UNITS)
}

/// Sums the unit gradients the way the sphere tree does: each leaf folds its
/// units in order, the root folds the non-empty leaves in order. Runs chunk
/// by chunk and leaves the rounded sum in `units[0]`. (Folds start from zero
/// cells; for `F32Acc` that differs from the canonical fold, which starts
/// from the first value, only in the sign of a zero sum.)
fn reduce<A: Accumulator>(
    acc: &A,
    units: &mut [[f32; P]; UNITS],
    root: &mut [A::Cell],
    leaf: &mut [A::Cell],
) -> Result<(), AccError> {
    let chunk = root.len().min(leaf.len());
    let mut start = 0;
    while start < P {
        let end = (start + chunk).min(P);
        let (root, leaf) = (&mut root[..end - start], &mut leaf[..end - start]);
        acc.zero(root);
        for j in 0..LEAVES {
            let mine = leaf_units(j);
            if mine.is_empty() {
                continue;
            }
            acc.zero(leaf);
            for u in mine {
                acc.add(leaf, &units[u][start..end])
                    .map_err(|e| e.offset(start))?;
            }
            acc.merge(root, leaf).map_err(|e| e.offset(start))?;
        }
        acc.round(root, &mut units[0][start..end])
            .map_err(|e| e.offset(start))?;
        start = end;
    }
    Ok(())
}

/// Mean loss over the fixed evaluation windows (forward only, one window
/// per call: the workspace for `BATCH` sequences also fits one).
fn eval_loss(params: &[f32], work: &mut [f32]) -> Result<f32, Error> {
    let k = kernels::Active::default();
    let (mut tokens, mut targets) = ([0u32; SEQ], [0u32; SEQ]);
    let mut sum = 0.0f32;
    for w in 0..EVAL_WINDOWS {
        window(w * SEQ, &mut tokens, &mut targets);
        sum += model::forward(&k, &CFG, params, work, &tokens, Some(&targets[..]), 1, SEQ)?;
    }
    Ok(sum / EVAL_WINDOWS as f32)
}

/// Centiseconds from semihosting SYS_CLOCK; QEMU answers with its own
/// process CPU time (`clock()`), which does not count time the host spent
/// on other work.
fn clock_cs() -> usize {
    // SAFETY: SYS_CLOCK takes no arguments and only returns a value.
    unsafe { cortex_m_semihosting::syscall!(CLOCK) }
}

struct Outcome {
    initial: f32,
    last: f32,
    train_cs: usize,
}

fn train(a: &mut Arena) -> Result<Outcome, Error> {
    CFG.validate().map_err(ModelError::from)?;
    check_size("parameters", P, CFG.num_params())?;
    check_size("activations", ACT, CFG.activation_len(BATCH, SEQ))?;
    check_size("AdamW state", P, AdamW::state_len(&CFG))?;
    model::init_params(&CFG, &mut a.params, INIT_SEED)?;

    let k = kernels::Active::default();
    let root = zeroed_cells(&mut a.root, &ACC);
    let leaf = zeroed_cells(&mut a.leaf, &ACC);

    let initial = eval_loss(&a.params, &mut a.work)?;
    say!("step 0: eval loss {}", Dec4(initial));

    let mut rng = Rng::new(DATA_SEED);
    let (mut tokens, mut targets) = ([0u32; BT], [0u32; BT]);
    let mut last = initial;
    let t0 = clock_cs();
    for step in 0..STEPS {
        let mut train_loss = 0.0f32;
        for u in 0..UNITS {
            for b in 0..BATCH {
                let start = rng.below((corpus::LEN - SEQ) as u64) as usize;
                let s = b * SEQ..(b + 1) * SEQ;
                window(start, &mut tokens[s.clone()], &mut targets[s]);
            }
            let g = &mut a.unit_grads[u];
            g.fill(0.0);
            train_loss += model::forward(
                &k,
                &CFG,
                &a.params,
                &mut a.work,
                &tokens,
                Some(&targets[..]),
                BATCH,
                SEQ,
            )?;
            model::backward(
                &k,
                &CFG,
                &a.params,
                g,
                &mut a.work,
                &tokens,
                &targets,
                BATCH,
                SEQ,
            )?;
        }
        reduce(&ACC, &mut a.unit_grads, root, leaf)?;
        let grads = &a.unit_grads[0];

        // The units' losses are means, so the step's gradient is the mean of
        // theirs: clip its norm, then scale the sum by 1/UNITS in the update.
        let mut sum_sq = 0.0f64;
        for seg in grads.chunks(SEGMENT_LEN) {
            sum_sq += optim::sum_squares(seg);
        }
        let norm = libm::sqrt(sum_sq) / UNITS as f64;
        let scale = optim::clip_scale(norm, MAX_GRAD_NORM) / UNITS as f32;
        ADAMW.update_segment(
            &CFG,
            0..P,
            &mut a.params,
            grads,
            &mut a.adam_m,
            &mut a.adam_v,
            step + 1,
            SCHEDULE.lr(step),
            scale,
        )?;

        if (step + 1) % EVAL_EVERY == 0 || step + 1 == STEPS {
            last = eval_loss(&a.params, &mut a.work)?;
            say!(
                "step {}: train loss {}, eval loss {}",
                step + 1,
                Dec4(train_loss / UNITS as f32),
                Dec4(last)
            );
        }
    }
    let train_cs = clock_cs().wrapping_sub(t0);
    Ok(Outcome {
        initial,
        last,
        train_cs,
    })
}

/// Greedy continuation of the text's first half-window, to show what the
/// model learned (the output is not part of the pass/fail check).
fn generate(a: &mut Arena) -> Result<(), Error> {
    const PROMPT: usize = SEQ / 2;
    const NEW: usize = 48;
    let k = kernels::Active::default();
    let mut text = [0u32; PROMPT + NEW];
    for (t, &id) in text.iter_mut().zip(&corpus::TOKENS[..PROMPT]) {
        *t = u32::from(id);
    }
    for n in PROMPT..PROMPT + NEW {
        let ctx = &text[n.saturating_sub(SEQ)..n];
        model::forward(&k, &CFG, &a.params, &mut a.work, ctx, None, 1, ctx.len())?;
        let logits = model::logits(&CFG, &a.work, 1, ctx.len())?;
        let last = &logits[(ctx.len() - 1) * CFG.vocab_size..];
        let mut best = 0;
        for (i, &x) in last.iter().enumerate() {
            if x > last[best] {
                best = i;
            }
        }
        text[n] = best as u32;
    }
    let mut bytes = [0u8; PROMPT + NEW];
    for (b, &id) in bytes.iter_mut().zip(&text) {
        // The log is line based: show newlines as '|'.
        *b = match corpus::byte_of(id) {
            b'\n' => b'|',
            c => c,
        };
    }
    // Every vocabulary byte comes from an ASCII text.
    let s = core::str::from_utf8(&bytes).unwrap_or("<non-UTF-8>");
    say!("sample: {}", s);
    Ok(())
}

/// FNV-1a over the parameters' bits: a cheap fingerprint to compare runs
/// (e.g. the `portable-gemm` build against the default one).
fn checksum(xs: &[f32]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for x in xs {
        for b in x.to_bits().to_le_bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    h
}

fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a semihosting host; a CI timeout then fails the run.
    loop {
        cortex_m::asm::wfi();
    }
}

#[entry]
fn main() -> ! {
    stack::paint();
    let a = take_arena();
    say!(
        "cllm bare-metal: vocab {}, ctx {}, n_embd {}, n_layer {}, n_head {}; {} params; {} units/step over {} leaves; {} steps",
        CFG.vocab_size,
        CFG.n_positions,
        CFG.n_embd,
        CFG.n_layer,
        CFG.n_head,
        P,
        UNITS,
        LEAVES,
        STEPS
    );

    let loss_ok = match train(a) {
        Ok(o) => {
            let bound = MAX_LOSS_RATIO * o.initial;
            let ok = o.last.is_finite() && o.last <= bound;
            say!(
                "loss {} -> {} (pass needs <= {}: {} x initial); loss bits {}; params fnv {}",
                Dec4(o.initial),
                Dec4(o.last),
                Dec4(bound),
                Dec4(MAX_LOSS_RATIO),
                Hex(o.last.to_bits()),
                Hex(checksum(&a.params))
            );
            say!(
                "training took {} ms of emulator CPU time ({} steps)",
                o.train_cs * 10,
                STEPS
            );
            if let Err(e) = generate(a) {
                say!("error: {}", Shown(&e));
            }
            ok
        }
        Err(e) => {
            say!("error: {}", Shown(&e));
            false
        }
    };

    let u = stack::usage();
    let stack_ok = !u.overflowed && u.stack_peak <= u.stack_reserve;
    say!(
        "RAM: statics {} B + stack peak {} B = {} B of 65536 (stack reserve {} B{})",
        u.statics,
        u.stack_peak,
        u.statics + u.stack_peak,
        u.stack_reserve,
        if u.overflowed {
            ", OVERFLOWED"
        } else if stack_ok {
            ""
        } else {
            ", EXCEEDED"
        }
    );
    let success = loss_ok && stack_ok;
    say!("{}", if success { "PASS" } else { "FAIL" });
    exit(success)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!("panic: {}", Shown(info));
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    say!("hard fault at pc {}", Hex(frame.pc()));
    exit(false)
}
