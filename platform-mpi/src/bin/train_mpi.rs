//! Train a GPT on a text corpus with the sphere hierarchy spread over MPI
//! ranks.
//!
//! ```text
//! mpirun -np 4 --oversubscribe target/release/train_mpi DATA --steps 100 --out runs/mpi
//! ```
//!
//! Every rank reads the same corpus and derives the same batches; rank `r`
//! computes the units of its block of leaves with `--threads` local threads.
//! Rank 0 writes the checkpoints (Hugging Face layout, via
//! `cllm_std::checkpoint`). `--resume` works with any number of ranks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use cllm_core::accumulate::{Accumulator, ExactAcc, F32Acc, FixedAcc};
use cllm_core::kernels::Portable;
use cllm_core::model::{self, GptConfig};
use cllm_core::optim::{AdamW, LrSchedule};
use cllm_core::tree::{optimal_depth, Shape};
use cllm_mpi::{
    gather_optimizer_state, train_step, CrossRank, DistError, Net, RankLayout, Reduction, Scratch,
};
use cllm_std::checkpoint::{
    self, Checkpoint, CkptError, HfGpt2Config, NamedTensor, TensorRef, TrainerState,
};
use cllm_std::data::{self, LoadOptions, Split, TokenStore};
use cllm_std::exec::{ExecConfig, Hierarchy, Optimizer, UnitSource, UpdateSettings};
use cllm_std::tokenizer::{Tokenizer, TokenizerKind};
use mpi::Threading;
use serde_json::{json, Value};

const USAGE: &str = "\
usage: train_mpi DATA [options]            (under mpirun -np N, or alone)

model     --layers N (2)  --embd N (64)  --heads N (4)  --seq-len N (64)
          --tokenizer char|byte (char)
batch     --batch-size N sequences per step (16)  --micro-batch N per unit (1)
          --steps N total (10)  --seed N (1337)  --val-fraction F (0.1)
optimizer --lr F (1e-3)  --min-lr F (lr/10)  --warmup N (0)
          --weight-decay F (0.1)  --grad-clip F (1.0, 0 = off)
hierarchy --threads N per rank (1)  --branching N (12)  --depth N (auto)
          --accumulator exact|fixed|f32 (exact)  --frac-bits N (32, fixed)
          --reduce scatter-gather|allreduce (scatter-gather)
run       --out DIR (runs/mpi)  --resume DIR  --save-every N (0 = at the end)
          --log-every N (1)  --eval-windows N (64, rank 0 at the end)
          --local   single process, the executor's own train_step (reference)
          --sync-timing  barrier before the exchange, to time waiting apart

Test hook: CLLM_MPI_FAIL=RANK:STEP[:abort] makes rank RANK exit(1) (or
abort) when it reaches step STEP.";

#[derive(Clone, Debug)]
struct Args {
    data: PathBuf,
    layers: usize,
    embd: usize,
    heads: usize,
    seq_len: usize,
    tokenizer: TokenizerKind,
    batch_size: usize,
    micro_batch: usize,
    steps: u64,
    seed: u64,
    val_fraction: f64,
    lr: f32,
    min_lr: Option<f32>,
    warmup: u64,
    weight_decay: f32,
    grad_clip: f32,
    threads: usize,
    branching: u32,
    depth: Option<u32>,
    accumulator: String,
    frac_bits: u32,
    reduce: Reduction,
    out: Option<PathBuf>,
    resume: Option<PathBuf>,
    save_every: u64,
    log_every: u64,
    eval_windows: usize,
    local: bool,
    sync_timing: bool,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        data: PathBuf::new(),
        layers: 2,
        embd: 64,
        heads: 4,
        seq_len: 64,
        tokenizer: TokenizerKind::Char,
        batch_size: 16,
        micro_batch: 1,
        steps: 10,
        seed: 1337,
        val_fraction: 0.1,
        lr: 1e-3,
        min_lr: None,
        warmup: 0,
        weight_decay: 0.1,
        grad_clip: 1.0,
        threads: 1,
        branching: 12,
        depth: None,
        accumulator: "exact".into(),
        frac_bits: 32,
        reduce: Reduction::ScatterGather,
        out: None,
        resume: None,
        save_every: 0,
        log_every: 1,
        eval_windows: 64,
        local: false,
        sync_timing: false,
    };
    let mut data = None;
    let mut it = argv.iter();
    fn num<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
    }
    while let Some(f) = it.next() {
        match f.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--layers" => a.layers = num(f, it.next())?,
            "--embd" => a.embd = num(f, it.next())?,
            "--heads" => a.heads = num(f, it.next())?,
            "--seq-len" => a.seq_len = num(f, it.next())?,
            "--tokenizer" => {
                a.tokenizer = match it.next().map(String::as_str) {
                    Some("char") => TokenizerKind::Char,
                    Some("byte") => TokenizerKind::Byte,
                    other => return Err(format!("--tokenizer: char or byte, not {other:?}")),
                }
            }
            "--batch-size" => a.batch_size = num(f, it.next())?,
            "--micro-batch" => a.micro_batch = num(f, it.next())?,
            "--steps" => a.steps = num(f, it.next())?,
            "--seed" => a.seed = num(f, it.next())?,
            "--val-fraction" => a.val_fraction = num(f, it.next())?,
            "--lr" => a.lr = num(f, it.next())?,
            "--min-lr" => a.min_lr = Some(num(f, it.next())?),
            "--warmup" => a.warmup = num(f, it.next())?,
            "--weight-decay" => a.weight_decay = num(f, it.next())?,
            "--grad-clip" => a.grad_clip = num(f, it.next())?,
            "--threads" => a.threads = num(f, it.next())?,
            "--branching" => a.branching = num(f, it.next())?,
            "--depth" => a.depth = Some(num(f, it.next())?),
            "--accumulator" => {
                a.accumulator = it.next().ok_or("--accumulator needs a value")?.clone();
                if !["exact", "fixed", "f32"].contains(&a.accumulator.as_str()) {
                    return Err(format!(
                        "--accumulator: exact, fixed or f32, not {:?}",
                        a.accumulator
                    ));
                }
            }
            "--frac-bits" => a.frac_bits = num(f, it.next())?,
            "--reduce" => {
                a.reduce = match it.next().map(String::as_str) {
                    Some("scatter-gather") | Some("sg") => Reduction::ScatterGather,
                    Some("allreduce") => Reduction::AllReduce,
                    other => {
                        return Err(format!(
                            "--reduce: scatter-gather or allreduce, not {other:?}"
                        ))
                    }
                }
            }
            "--out" => a.out = Some(PathBuf::from(num::<String>(f, it.next())?)),
            "--resume" => a.resume = Some(PathBuf::from(num::<String>(f, it.next())?)),
            "--save-every" => a.save_every = num(f, it.next())?,
            "--log-every" => a.log_every = num(f, it.next())?,
            "--eval-windows" => a.eval_windows = num(f, it.next())?,
            "--local" => a.local = true,
            "--sync-timing" => a.sync_timing = true,
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => {
                if data.replace(PathBuf::from(s)).is_some() {
                    return Err(format!("more than one DATA path ({s})"));
                }
            }
        }
    }
    a.data = data.ok_or("no DATA path given")?;
    if a.batch_size == 0 || a.micro_batch == 0 || a.batch_size % a.micro_batch != 0 {
        return Err(format!(
            "--batch-size ({}) must be a positive multiple of --micro-batch ({})",
            a.batch_size, a.micro_batch
        ));
    }
    if let Err(e) = FixedAcc::new(a.frac_bits) {
        return Err(format!("--frac-bits: {e}"));
    }
    if a.threads == 0 || a.seq_len == 0 || a.steps == 0 {
        return Err("--threads, --seq-len and --steps must be positive".into());
    }
    Ok(a)
}

/// The units of a step over the token store (same windows on every rank:
/// a pure function of seed, step and sequence index).
struct Source {
    store: TokenStore,
    train: Split,
    eval_starts: Vec<usize>,
    seed: u64,
    micro_batch: usize,
    seq_len: usize,
}

impl UnitSource for Source {
    fn fill_train(&self, step: u64, unit: usize, tokens: &mut [u32], targets: &mut [u32]) {
        // Split and buffers were checked at setup, so failing is a bug; the
        // executor turns the panic into an error.
        data::fill_unit(
            &self.store,
            self.train,
            self.seed,
            step,
            (unit * self.micro_batch) as u64,
            self.micro_batch,
            self.seq_len,
            tokens,
            targets,
        )
        .expect("training unit within the checked split");
    }
    fn eval_units(&self) -> usize {
        self.eval_starts.len() / self.micro_batch
    }
    fn fill_eval(&self, unit: usize, tokens: &mut [u32], targets: &mut [u32]) {
        let s = &self.eval_starts[unit * self.micro_batch..(unit + 1) * self.micro_batch];
        data::fill_windows(&self.store, s, self.seq_len, tokens, targets)
            .expect("evaluation windows within the store");
    }
}

/// Everything a run needs, built identically on every rank.
struct Setup {
    args: Args,
    run_dir: PathBuf,
    model: GptConfig,
    hf: HfGpt2Config,
    tokenizer: Tokenizer,
    source: Arc<Source>,
    exec: ExecConfig,
    params: Vec<f32>,
    moments: Option<(Vec<f32>, Vec<f32>)>,
    start_step: u64,
    elapsed_before: f64,
    saved_config: Value,
}

/// The settings a resumed run must share with its checkpoint (anything that
/// changes the batches or the arithmetic).
fn pinned_config(a: &Args, units: usize, shape: Shape, corpus_bytes: usize) -> Value {
    json!({
        "seq_len": a.seq_len,
        "batch_size": a.batch_size,
        "micro_batch": a.micro_batch,
        "units": units,
        "seed": a.seed,
        "val_fraction": a.val_fraction,
        "depth": shape.depth(),
        "branching": shape.branching(),
        "accumulator": a.accumulator,
        "frac_bits": a.frac_bits,
        "corpus_bytes": corpus_bytes,
    })
}

fn tensor_names(model: &GptConfig) -> Vec<(String, Vec<usize>, std::ops::Range<usize>)> {
    model
        .tensors()
        .map(|t| (t.to_string(), t.shape().to_vec(), t.range()))
        .collect()
}

fn flatten(model: &GptConfig, path: &Path, tensors: &[NamedTensor]) -> Result<Vec<f32>, String> {
    let mut p = vec![0.0f32; model.num_params()];
    for (name, shape, range) in tensor_names(model) {
        let t = tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("{}: tensor {name} is missing", path.display()))?;
        if t.shape != shape {
            return Err(format!(
                "{}: tensor {name} has shape {:?}, expected {shape:?}",
                path.display(),
                t.shape
            ));
        }
        p[range].copy_from_slice(&t.data);
    }
    Ok(p)
}

fn optimizer_vector(
    path: &Path,
    tensors: &[NamedTensor],
    name: &str,
    len: usize,
) -> Result<Vec<f32>, String> {
    let t = tensors
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| format!("{}: optimizer tensor {name} is missing", path.display()))?;
    if t.shape != [len] {
        return Err(format!(
            "{}: optimizer tensor {name} has shape {:?}, the model needs [{len}]",
            path.display(),
            t.shape
        ));
    }
    Ok(t.data.clone())
}

fn setup(args: Args, ranks: usize) -> Result<Setup, String> {
    let resumed = match &args.resume {
        Some(p) => {
            let dir = checkpoint::resolve_resume(p).map_err(|e| e.to_string())?;
            Some(checkpoint::load_checkpoint(&dir).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let run_dir = match (&args.out, &resumed) {
        (Some(o), _) => o.clone(),
        (None, Some(ck)) => ck.dir.parent().map(Path::to_path_buf).unwrap_or_default(),
        (None, None) => PathBuf::from("runs/mpi"),
    };
    if resumed.is_none() {
        if let Some(ck) = checkpoint::latest_checkpoint(&run_dir).map_err(|e| e.to_string())? {
            return Err(format!(
                "{} already holds checkpoints ({}); continue with --resume {} or choose another --out",
                run_dir.display(),
                ck.display(),
                run_dir.display()
            ));
        }
    }

    let corpus =
        data::load_corpus(&args.data, &LoadOptions::default()).map_err(|e| e.to_string())?;
    let corpus_bytes = corpus.bytes().len();
    let tokenizer = match &resumed {
        Some(ck) => ck.model.tokenizer.clone(),
        None => Tokenizer::train(args.tokenizer, corpus.bytes(), 0).map_err(|e| e.to_string())?,
    };
    let store = corpus.into_tokens(&tokenizer).map_err(|e| e.to_string())?;
    data::check_len(store.len(), args.seq_len).map_err(|e| e.to_string())?;
    let (train, val) =
        data::split_train_val(store.len(), args.val_fraction).map_err(|e| e.to_string())?;
    train
        .check(args.seq_len, "training split")
        .map_err(|e| e.to_string())?;
    let eval_starts = match val {
        Some(v) if args.eval_windows > 0 && v.check(args.seq_len, "validation split").is_ok() => {
            let mut s = data::eval_window_starts(v, args.seq_len, args.eval_windows);
            s.truncate(s.len() / args.micro_batch * args.micro_batch);
            s
        }
        _ => Vec::new(),
    };

    let model = match &resumed {
        Some(ck) => {
            let c = &ck.model.config;
            GptConfig {
                vocab_size: c.vocab_size,
                n_positions: c.n_positions,
                n_embd: c.n_embd,
                n_layer: c.n_layer,
                n_head: c.n_head,
            }
        }
        None => GptConfig {
            vocab_size: tokenizer.vocab_size(),
            n_positions: args.seq_len,
            n_embd: args.embd,
            n_layer: args.layers,
            n_head: args.heads,
        },
    };
    model
        .validate()
        .map_err(|e| format!("invalid model: {e}"))?;
    let hf = HfGpt2Config {
        vocab_size: model.vocab_size,
        n_positions: model.n_positions,
        n_embd: model.n_embd,
        n_layer: model.n_layer,
        n_head: model.n_head,
        bos_token_id: tokenizer.bos_id(),
        eos_token_id: tokenizer.eos_id(),
    };
    let units = args.batch_size / args.micro_batch;
    let depth = match args.depth {
        Some(d) => d,
        None => optimal_depth(units, args.branching, 4).map_err(|e| format!("{e:?}"))?,
    };
    let shape = Shape::new(depth, args.branching).map_err(|e| format!("tree shape: {e:?}"))?;
    let exec = ExecConfig {
        shape,
        threads: args.threads,
        units,
        micro_batch: args.micro_batch,
        seq_len: args.seq_len,
        pin_threads: false,
        max_retries: 1,
    };
    let pinned = pinned_config(&args, units, shape, corpus_bytes);
    let (params, moments, start_step, elapsed_before) = match &resumed {
        Some(ck) => {
            let saved = ck.state.config.get("pinned");
            if saved != Some(&pinned) {
                return Err(format!(
                    "checkpoint {} was trained with {} but this run has {}; resume with the same \
                     data, batch, seed, tree shape and accumulator",
                    ck.dir.display(),
                    saved.map_or("no recorded settings".to_string(), Value::to_string),
                    pinned
                ));
            }
            let path = ck.dir.join(checkpoint::MODEL_FILE);
            let p = flatten(&model, &path, &ck.model.model)?;
            let opath = ck.dir.join(checkpoint::OPTIMIZER_FILE);
            let n = model.num_params();
            let m = optimizer_vector(&opath, &ck.optimizer, "exp_avg", n)?;
            let v = optimizer_vector(&opath, &ck.optimizer, "exp_avg_sq", n)?;
            (p, Some((m, v)), ck.state.step, ck.state.elapsed_s)
        }
        None => {
            let mut p = vec![0.0f32; model.num_params()];
            model::init_params(&model, &mut p, args.seed).map_err(|e| e.to_string())?;
            (p, None, 0, 0.0)
        }
    };
    if start_step >= args.steps {
        return Err(format!(
            "the checkpoint is at step {start_step}; --steps {} leaves nothing to train",
            args.steps
        ));
    }
    let saved_config = json!({
        "pinned": pinned,
        "trainer": "train_mpi",
        "ranks": ranks,
        "threads_per_rank": args.threads,
        "reduce": args.reduce.name(),
        "layers": model.n_layer,
        "embd": model.n_embd,
        "heads": model.n_head,
        "lr": args.lr,
        "min_lr": args.min_lr.unwrap_or(args.lr / 10.0),
        "warmup": args.warmup,
        "weight_decay": args.weight_decay,
        "grad_clip": args.grad_clip,
        "steps": args.steps,
        "tokenizer": tokenizer.kind().name(),
    });
    let source = Arc::new(Source {
        store,
        train,
        eval_starts,
        seed: args.seed,
        micro_batch: args.micro_batch,
        seq_len: args.seq_len,
    });
    Ok(Setup {
        args,
        run_dir,
        model,
        hf,
        tokenizer,
        source,
        exec,
        params,
        moments,
        start_step,
        elapsed_before,
        saved_config,
    })
}

/// Did every rank get here without error? One MAX-reduction; a rank that
/// failed returns its own message, the others a pointer to it.
fn all_ok<T>(net: &mut Net, r: Result<T, String>) -> Result<T, String> {
    let failed = net.max_i64(&[
        r.is_err() as i64,
        if r.is_err() { net.rank() as i64 } else { -1 },
    ]);
    match r {
        Err(e) => Err(e),
        Ok(_) if failed[0] != 0 => Err(format!("rank {} failed (see its message)", failed[1])),
        Ok(v) => Ok(v),
    }
}

fn save<A, K>(
    s: &Setup,
    h: &Hierarchy<A, K>,
    net: &mut Net,
    layout: &RankLayout,
    step: u64,
    elapsed: f64,
) -> Result<Option<PathBuf>, String>
where
    A: Accumulator + Send + 'static,
    A::Cell: 'static,
    K: cllm_core::kernels::Kernels<f32> + Send + 'static,
{
    let moments = if s.args.local {
        let (m, v) = h.optimizer_state();
        Some((m.to_vec(), v.to_vec()))
    } else {
        gather_optimizer_state(h, net, layout, s.args.reduce).map_err(|e| e.to_string())?
    };
    let Some((m, v)) = moments else {
        return Ok(None);
    };
    let names = tensor_names(&s.model);
    let params = h.params();
    let model: Vec<TensorRef> = names
        .iter()
        .map(|(n, shape, r)| TensorRef::new(n, shape, &params[r.clone()]))
        .collect();
    let len = [m.len()];
    let optimizer = [
        TensorRef::new("exp_avg", &len, &m),
        TensorRef::new("exp_avg_sq", &len, &v),
    ];
    let state = TrainerState {
        step,
        rng_state: vec![s.args.seed],
        data_position: step * s.args.batch_size as u64,
        elapsed_s: elapsed,
        config: s.saved_config.clone(),
    };
    let path = checkpoint::save_checkpoint(
        &s.run_dir,
        &Checkpoint {
            model: &model,
            config: &s.hf,
            tokenizer: &s.tokenizer,
            optimizer: &optimizer,
            state: &state,
        },
    )
    .map_err(|e: CkptError| e.to_string())?;
    Ok(Some(path))
}

/// The failure test hook: `CLLM_MPI_FAIL=RANK:STEP[:abort]`.
fn injected_failure(rank: usize, step: u64) {
    let Ok(spec) = std::env::var("CLLM_MPI_FAIL") else {
        return;
    };
    let mut it = spec.split(':');
    let r: Option<usize> = it.next().and_then(|x| x.parse().ok());
    let s: Option<u64> = it.next().and_then(|x| x.parse().ok());
    if r == Some(rank) && s == Some(step) {
        eprintln!("train_mpi: rank {rank}: CLLM_MPI_FAIL: dying at step {step}");
        if it.next() == Some("abort") {
            std::process::abort();
        }
        std::process::exit(1);
    }
}

struct Totals {
    steps: u64,
    compute: f64,
    reduce: f64,
    update: f64,
    bytes: u64,
    wall: f64,
    /// Wall time of each timed step, for the median (the machine may be
    /// shared, so the mean alone says little).
    step_walls: Vec<f64>,
    /// Per timed step: (compute, reduce, update, wait) seconds.
    phases: Vec<[f64; 4]>,
}

fn run<A: CrossRank>(acc: A, s: Setup, net: &mut Net) -> Result<(), String>
where
    A::Cell: 'static,
{
    let rank = net.rank();
    let ranks = net.size();
    let args = s.args.clone();
    let layout = RankLayout::new(s.exec.shape, s.exec.units, s.model.num_params(), ranks);
    let mut h = Hierarchy::new(
        s.model,
        s.params.clone(),
        acc,
        Portable,
        s.source.clone() as Arc<dyn UnitSource>,
        s.exec,
    )
    .map_err(|e| e.to_string())?;
    if let Some((m, v)) = &s.moments {
        let (hm, hv) = h.optimizer_state_mut();
        hm.copy_from_slice(m);
        hv.copy_from_slice(v);
    }
    if rank == 0 {
        let us = (0..ranks)
            .map(|r| layout.units(r).len())
            .collect::<Vec<_>>();
        println!(
            "train_mpi: {ranks} rank(s) x {} thread(s), {} accumulator, {}, tree depth {} \
             branching {} ({} leaves), {} units/step (per rank {us:?}), {} params, {} segments",
            args.threads,
            h_name(&args),
            if args.local {
                "local train_step"
            } else {
                args.reduce.name()
            },
            s.exec.shape.depth(),
            s.exec.shape.branching(),
            s.exec.shape.leaf_count(),
            s.exec.units,
            s.model.num_params(),
            layout.segments().count(),
        );
        if s.start_step > 0 {
            println!("train_mpi: resuming at step {}", s.start_step);
        }
    }
    let sched = LrSchedule {
        max_lr: args.lr,
        min_lr: args.min_lr.unwrap_or(args.lr / 10.0),
        warmup_steps: args.warmup,
        total_steps: args.steps,
    };
    let opt = Optimizer::AdamW(AdamW {
        lr: args.lr,
        weight_decay: args.weight_decay,
        ..AdamW::default()
    });
    let mut sc = Scratch::default();
    net.sync_timing = args.sync_timing;
    let start = Instant::now();
    let mut tot = Totals {
        steps: 0,
        compute: 0.0,
        reduce: 0.0,
        update: 0.0,
        bytes: 0,
        wall: 0.0,
        step_walls: Vec::new(),
        phases: Vec::new(),
    };
    let tokens_per_step = (args.batch_size * args.seq_len) as f64;
    if rank == 0 {
        // Leftovers of a checkpoint whose writer died (e.g. a killed job).
        checkpoint::clean_stale_temp(&s.run_dir).map_err(|e| e.to_string())?;
    }
    let mut wire_bytes = 0;
    for step in s.start_step..args.steps {
        injected_failure(rank, step);
        let t0 = Instant::now();
        let update = UpdateSettings {
            optimizer: opt,
            lr: sched.lr(step),
            grad_clip: args.grad_clip,
            t: step + 1,
        };
        let (loss, norm, phases) = if args.local {
            let st = h.train_step(step, update).map_err(|e| e.to_string())?;
            (st.loss, st.grad_norm, None)
        } else {
            let st = train_step(&mut h, net, &layout, args.reduce, step, update, &mut sc)
                .map_err(|e: DistError| e.to_string())?;
            (st.loss, st.grad_norm, Some(st))
        };
        let dt = t0.elapsed().as_secs_f64();
        // The first step warms caches and page-faults buffers in: keep it
        // out of the per-step figures when there are others.
        if step > s.start_step || args.steps - s.start_step == 1 {
            tot.steps += 1;
            tot.wall += dt;
            tot.step_walls.push(dt);
            if let Some(p) = phases {
                tot.phases
                    .push([p.compute_s, p.reduce_s, p.update_s, p.wait_s]);
                wire_bytes = p.wire_bytes;
                tot.compute += p.compute_s;
                tot.reduce += p.reduce_s;
                tot.update += p.update_s;
                tot.bytes += p.bytes;
            }
        }
        if !loss.is_finite() {
            return Err(format!("step {step}: loss is {loss}"));
        }
        if rank == 0 && (step % args.log_every.max(1) == 0 || step + 1 == args.steps) {
            let extra = phases.map_or(String::new(), |p| {
                format!(
                    " | compute {:.1} ms reduce {:.1} ms update {:.1} ms, {} B sent",
                    p.compute_s * 1e3,
                    p.reduce_s * 1e3,
                    p.update_s * 1e3,
                    p.bytes
                )
            });
            println!(
                "step {step:>5} loss {loss:.4} |g| {norm:.4} lr {:.2e} {:.0} tok/s{extra}",
                update.lr,
                tokens_per_step / dt
            );
        }
        let done = step + 1;
        if (args.save_every > 0 && done % args.save_every == 0) || done == args.steps {
            let elapsed = s.elapsed_before + start.elapsed().as_secs_f64();
            if let Some(p) = save(&s, &h, net, &layout, done, elapsed)? {
                println!("train_mpi: saved {}", p.display());
            }
        }
    }
    if rank == 0 {
        let names = tensor_names(&s.model);
        let params = h.params();
        let model: Vec<TensorRef> = names
            .iter()
            .map(|(n, shape, r)| TensorRef::new(n, shape, &params[r.clone()]))
            .collect();
        checkpoint::write_model_dir(&s.run_dir, &model, &s.hf, &s.tokenizer)
            .map_err(|e| e.to_string())?;
        if let Some(v) = h.evaluate().map_err(|e| e.to_string())? {
            println!("train_mpi: validation loss {v:.4}");
        }
    }
    let n = tot.steps.max(1) as f64;
    // Every rank's traffic, for the README's figures.
    let all_bytes = net.max_i64(&[tot.bytes as i64]);
    if rank == 0 {
        println!(
            "summary {}",
            json!({
                "ranks": ranks,
                "threads": args.threads,
                "accumulator": h_name(&args),
                "reduce": if args.local { "local" } else { args.reduce.name() },
                "params": s.model.num_params(),
                "units": s.exec.units,
                "timed_steps": tot.steps,
                "step_s": tot.wall / n,
                "step_s_median": median(&tot.step_walls),
                "compute_s_median": median(&tot.phases.iter().map(|p| p[0]).collect::<Vec<_>>()),
                "reduce_s_median": median(&tot.phases.iter().map(|p| p[1]).collect::<Vec<_>>()),
                "update_s_median": median(&tot.phases.iter().map(|p| p[2]).collect::<Vec<_>>()),
                "wait_s_median": median(&tot.phases.iter().map(|p| p[3]).collect::<Vec<_>>()),
                "compute_s": tot.compute / n,
                "reduce_s": tot.reduce / n,
                "update_s": tot.update / n,
                "bytes_per_step_rank0": tot.bytes as f64 / n,
                "wire_bytes_per_param": wire_bytes,
                "bytes_per_step_max_rank": all_bytes[0] as f64 / n,
            })
        );
    }
    Ok(())
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn h_name(a: &Args) -> &str {
    &a.accumulator
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // Only the main thread calls MPI; the executor's workers never do.
    let Some((universe, _)) = mpi::initialize_with_threading(Threading::Funneled) else {
        eprintln!("train_mpi: MPI was already initialized");
        return ExitCode::from(2);
    };
    let mut net = Net::new(universe.world());
    let rank = net.rank();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            if rank == 0 {
                if !e.is_empty() {
                    eprintln!("train_mpi: {e}\n");
                }
                eprintln!("{USAGE}");
            }
            return ExitCode::from(if e.is_empty() { 0 } else { 2 });
        }
    };
    if args.local && net.size() > 1 {
        if rank == 0 {
            eprintln!(
                "train_mpi: --local runs a single process, not {} ranks",
                net.size()
            );
        }
        return ExitCode::from(2);
    }
    // Setup is deterministic, but one rank may still fail alone (a file it
    // cannot read): agree before anyone enters the step's collectives.
    let prepared = setup(args.clone(), net.size());
    let setup = all_ok(&mut net, prepared);
    let setup = match setup {
        Ok(s) => s,
        Err(e) => {
            if rank == 0 || !e.starts_with("rank ") {
                eprintln!("train_mpi: rank {rank}: error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let r = match args.accumulator.as_str() {
        "exact" => run(ExactAcc, setup, &mut net),
        "fixed" => run(
            FixedAcc::new(args.frac_bits).expect("checked by parse_args"),
            setup,
            &mut net,
        ),
        _ => run(F32Acc, setup, &mut net),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train_mpi: rank {rank}: error: {e}");
            // The other ranks may be waiting in a collective this rank will
            // never join: end the whole job rather than leave them hanging.
            if net.size() > 1 {
                net.abort(1);
            }
            ExitCode::from(1)
        }
    }
}
