//! Training throughput benchmark: trains a fixed number of steps on tiny
//! shakespeare (byte tokens) and prints tokens/s, ms/step, model FLOP/s, its
//! fraction of the measured matmul peak, and peak RSS.
//!
//! ```sh
//! cargo run --release --example bench_train -- --config small --threads 1,2 --depth 1
//! cargo run --release --example bench_train -- --config small --threads 2 --depth 0,1,2,3
//! cargo run --release --example bench_train -- --config medium --threads 2 --steps 5
//! cargo run --release --example bench_train -- --config medium --threads 2 --micro-batch 1,2,4 --steps 3 --warmup 1
//! ```
//! Without `--micro-batch`, each of `T > 1` threads gets two units of the
//! batch (`batch / 2T` sequences each) where that divides, else one.
//! Every combination of the comma-separated lists runs in the same process,
//! one after the other, so rows are comparable; compare ratios, not absolute
//! figures, on a noisy machine. `--rounds N` runs the whole list N times,
//! interleaved, and reports each row's median round (best step and RSS over
//! all rounds): the way to compare rows on a machine whose speed drifts:
//!
//! ```sh
//! cargo run --release --example bench_train -- --config small --threads 2 --depth 0,1,2,3 --rounds 5 --steps 20
//! ``` Peak RSS is the process's high-water mark
//! while the row ran: on Linux it is reset before each row (through
//! `/proc/self/clear_refs`; where that fails the column is the peak since
//! the process started, and the header says so). "est. MiB" is what the
//! hierarchy's buffers take (`Hierarchy::memory_bytes`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use cllm_core::accumulate::{Accumulator, ExactAcc, F32Acc, FixedAcc};
use cllm_core::kernels::{Kernels, Mat, MatMut};
use cllm_core::model::{self, GptConfig};
use cllm_core::optim::AdamW;
use cllm_core::tree::Shape;
use cllm_std::exec::{ExecConfig, Hierarchy, Optimizer, PhaseTimes, UnitSource, UpdateSettings};
use cllm_std::kernels::{fma_peak_gflops, KernelChoice, SimdKernels};

struct Bytes {
    data: Vec<u8>,
    micro_batch: usize,
    seq: usize,
}

impl UnitSource for Bytes {
    fn fill_train(&self, step: u64, unit: usize, tokens: &mut [u32], targets: &mut [u32]) {
        for s in 0..self.micro_batch {
            let start = cllm_std::data::sequence_start(
                1,
                step,
                (unit * self.micro_batch + s) as u64,
                self.data.len(),
                self.seq,
            );
            for i in 0..self.seq {
                tokens[s * self.seq + i] = self.data[start + i] as u32;
                targets[s * self.seq + i] = self.data[start + i + 1] as u32;
            }
        }
    }
}

struct Args {
    config: String,
    threads: Vec<usize>,
    depths: Vec<u32>,
    branching: u32,
    steps: usize,
    warmup: usize,
    micro_batches: Option<Vec<usize>>,
    accumulators: Vec<String>,
    kernels: Vec<String>,
    data: String,
    pin: bool,
    rounds: usize,
    phases: bool,
    /// Reduce while backward runs (true) or after it.
    streams: Vec<bool>,
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .map(|x| x.trim().parse().map_err(|_| format!("bad {what}: {x}")))
        .collect()
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        config: "small".into(),
        threads: vec![std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)],
        depths: vec![1],
        branching: 12,
        steps: 20,
        warmup: 2,
        micro_batches: None,
        accumulators: vec!["f32".into()],
        kernels: vec!["auto".into()],
        data: format!(
            "{}/../shared/data/tinyshakespeare/input.txt",
            env!("CARGO_MANIFEST_DIR")
        ),
        pin: false,
        rounds: 1,
        phases: false,
        streams: vec![true],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => a.config = val()?,
            "--threads" => a.threads = list(&val()?, "thread count")?,
            "--depth" => a.depths = list(&val()?, "depth")?,
            "--branching" => a.branching = val()?.parse().map_err(|_| "bad branching")?,
            "--steps" => a.steps = val()?.parse().map_err(|_| "bad steps")?,
            "--warmup" => a.warmup = val()?.parse().map_err(|_| "bad warmup")?,
            "--micro-batch" => a.micro_batches = Some(list(&val()?, "micro-batch")?),
            "--accumulator" => a.accumulators = list(&val()?, "accumulator")?,
            "--kernels" => a.kernels = list(&val()?, "kernels")?,
            "--data" => a.data = val()?,
            "--pin" => a.pin = true,
            "--phases" => a.phases = true,
            "--stream" => {
                a.streams = val()?
                    .split(',')
                    .map(|x| match x.trim() {
                        "on" => Ok(true),
                        "off" => Ok(false),
                        x => Err(format!("bad --stream value {x} (on or off)")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--rounds" => {
                a.rounds = val()?.parse().map_err(|_| "bad rounds")?;
                if a.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--help" | "-h" => {
                println!("flags: --config small|medium --threads LIST --depth LIST --branching B --steps N --warmup N --micro-batch LIST --accumulator f32,fixed,exact --kernels auto,portable,avx2,avx512,amx --data FILE --pin (worker i on core i) --rounds N (all rows N times, interleaved; each row reports its median) --phases (per worker: ms per step in compute, reduction, update and at barriers) --stream on,off (reduce segments while backward runs, or after it)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (see --help)")),
        }
    }
    Ok(a)
}

/// (n_layer, n_head, n_embd, seq_len, batch)
fn config(name: &str) -> Result<(usize, usize, usize, usize, usize), String> {
    match name {
        "small" => Ok((4, 4, 128, 64, 12)),
        "medium" => Ok((6, 6, 384, 256, 64)),
        _ => Err(format!("unknown config {name} (small or medium)")),
    }
}

/// Start a new high-water mark for the process's RSS (Linux 4.0+: writing 5
/// to `clear_refs` resets `VmHWM` to the current RSS). False if unsupported.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Best single-thread GFLOP/s of the chosen kernels on a large sgemm.
fn matmul_peak<K: Kernels<f32>>(k: &K) -> f64 {
    let n = 512;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let (a, b) = (Mat::row_major(&a, n, n), Mat::row_major(&b, n, n));
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        k.gemm(a, b, MatMut::row_major(&mut c, n, n), false);
        best = best.max(2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// The "reduction" column.
fn reduction(stream: bool) -> &'static str {
    if stream {
        "streamed"
    } else {
        "after backward"
    }
}

struct Row {
    memory_bytes: usize,
    tokens_per_s: f64,
    /// Tokens/s of the fastest step: robust to a machine busy in bursts.
    best_tokens_per_s: f64,
    ms_per_step: f64,
    gflops: f64,
    loss: f32,
    /// Per worker, summed over the timed steps.
    phases: Vec<PhaseTimes>,
}

/// One timed run of combination `c` with accumulator `acc`.
fn run<A: Accumulator + Send + 'static>(
    c: &Combo,
    acc: A,
    model: GptConfig,
    source: Arc<Bytes>,
    units: usize,
    args: &Args,
) -> Result<Row, String>
where
    A::Cell: 'static,
{
    let shape = Shape::new(c.depth, args.branching).map_err(|e| e.to_string())?;
    let (threads, kernels, stream) = (c.threads, c.kernels, c.stream);
    let (mb, seq) = (source.micro_batch, source.seq);
    let mut params = vec![0.0f32; model.num_params()];
    model::init_params(&model, &mut params, 1).map_err(|e| e.to_string())?;
    let cfg = ExecConfig {
        shape,
        threads,
        units,
        micro_batch: mb,
        seq_len: seq,
        pin_threads: args.pin,
        max_retries: 0,
        recompute_blocks: false,
    };
    let mut h =
        Hierarchy::new(model, params, acc, kernels, source, cfg).map_err(|e| e.to_string())?;
    h.set_streaming(stream);
    let opt = Optimizer::AdamW(AdamW {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
    });
    let step = |h: &mut Hierarchy<A, SimdKernels>, i: usize| {
        h.train_step(
            i as u64,
            UpdateSettings {
                optimizer: opt,
                lr: 1e-3,
                grad_clip: 1.0,
                t: i as u64 + 1,
            },
        )
        .map_err(|e| e.to_string())
    };
    for i in 0..args.warmup {
        step(&mut h, i)?;
    }
    let t = Instant::now();
    let mut loss = 0.0;
    let mut best = f64::INFINITY;
    let mut phases = vec![PhaseTimes::default(); threads];
    for i in 0..args.steps {
        let s = Instant::now();
        loss = step(&mut h, args.warmup + i)?.loss;
        best = best.min(s.elapsed().as_secs_f64());
        for (sum, p) in phases.iter_mut().zip(h.phase_times()) {
            sum.compute += p.compute;
            sum.reduce += p.reduce;
            sum.update += p.update;
            sum.wait += p.wait;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let tokens = (args.steps * units * mb * seq) as f64;
    // PaLM-style count: 6 FLOPs per parameter per token (forward + backward)
    // plus the attention score and value products.
    let per_token =
        6.0 * model.num_params() as f64 + 12.0 * (model.n_layer * seq * model.n_embd) as f64;
    Ok(Row {
        memory_bytes: h.memory_bytes(),
        tokens_per_s: tokens / secs,
        best_tokens_per_s: (units * mb * seq) as f64 / best,
        ms_per_step: 1000.0 * secs / args.steps as f64,
        gflops: tokens * per_token / secs / 1e9,
        loss,
        phases,
    })
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<(), String> {
    let args = parse()?;
    let (n_layer, n_head, n_embd, seq, batch) = config(&args.config)?;
    let data = std::fs::read(&args.data).map_err(|e| format!("{}: {e}", args.data))?;
    let model = GptConfig {
        vocab_size: 256,
        n_positions: seq,
        n_embd,
        n_layer,
        n_head,
        untied_head: false,
    };
    println!(
        "config {}: {} layers, {} heads, n_embd {}, seq {}, batch {}, {} parameters, byte tokens, AdamW",
        args.config,
        n_layer,
        n_head,
        n_embd,
        seq,
        batch,
        model.num_params()
    );
    let per_row = reset_peak_rss();
    println!(
        "| kernels | accumulator | threads | depth | branching | units×micro-batch | tokens/s | ms/step | model GFLOP/s | % of peak | % of FMA peak | {} MiB | est. MiB | loss | best-step tokens/s | reduction |",
        if per_row {
            "peak RSS"
        } else {
            "peak RSS since start"
        }
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let combos = combos(&args, batch)?;
    // Round after round over all combinations, so that a slow or fast
    // patch of the machine hits them alike; each row then reports its
    // median round (its highest RSS and best step over all rounds).
    let mut results: Vec<Vec<(Row, f64)>> = combos.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for (c, out) in combos.iter().zip(results.iter_mut()) {
            let units = batch / c.mb;
            if per_row {
                reset_peak_rss();
            }
            let row = run_combo(c, &args, model, &data, units, seq)?;
            if args.rounds > 1 {
                eprintln!(
                    "round {}: {} threads, depth {}, {}×{}, {}: {:.0} tokens/s",
                    round + 1,
                    c.threads,
                    c.depth,
                    units,
                    c.mb,
                    reduction(c.stream),
                    row.tokens_per_s
                );
            }
            out.push((row, peak_rss_mib()));
        }
    }
    for rows in results.iter_mut() {
        rows.sort_by(|a, b| a.0.tokens_per_s.total_cmp(&b.0.tokens_per_s));
    }
    let fma_peaks = fma_peaks(&combos);
    print_rows(&combos, &results, &fma_peaks, &args, batch);
    if args.phases {
        print_phases(&combos, &results, &args, batch);
    }
    print_peaks(&combos, &fma_peaks);
    Ok(())
}

/// One row of the table: a kernel path, accumulator, thread count, depth,
/// micro-batch and reduction mode.
struct Combo {
    kernels: SimdKernels,
    peak1: f64,
    acc: String,
    threads: usize,
    depth: u32,
    mb: usize,
    stream: bool,
}

/// Every combination of the flag lists, in the order the lists give them.
fn combos(args: &Args, batch: usize) -> Result<Vec<Combo>, String> {
    // Default: two units per worker with several threads (when the batch
    // divides), so a worker whose vCPU stalls has its second unit taken by
    // the other instead of holding up the step; one unit with one thread.
    let micro_batches = |threads: usize| {
        args.micro_batches.clone().unwrap_or_else(|| {
            let t = threads.max(1);
            let two = (t > 1 && batch.is_multiple_of(2 * t)).then(|| batch / (2 * t));
            vec![two.unwrap_or(batch / t).max(1)]
        })
    };
    let mut combos = Vec::new();
    for kname in &args.kernels {
        let choice = match kname.as_str() {
            "auto" => KernelChoice::Auto,
            "portable" => KernelChoice::Portable,
            "avx2" => KernelChoice::Avx2,
            "avx512" => KernelChoice::Avx512,
            "amx" => KernelChoice::Amx,
            k => return Err(format!("unknown kernels {k}")),
        };
        let kernels = SimdKernels::new(choice).map_err(|e| e.to_string())?;
        let peak1 = matmul_peak(&kernels);
        for acc in &args.accumulators {
            if !["f32", "fixed", "exact"].contains(&acc.as_str()) {
                return Err(format!("unknown accumulator {acc}"));
            }
            for &threads in &args.threads {
                for &depth in &args.depths {
                    for mb in micro_batches(threads) {
                        if mb == 0 || !batch.is_multiple_of(mb) {
                            return Err(format!(
                                "batch {batch} is not a multiple of micro-batch {mb}"
                            ));
                        }
                        for &stream in &args.streams {
                            combos.push(Combo {
                                kernels,
                                peak1,
                                acc: acc.clone(),
                                threads,
                                depth,
                                mb,
                                stream,
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(combos)
}

/// [`run`] with the accumulator `c` names.
fn run_combo(
    c: &Combo,
    args: &Args,
    model: GptConfig,
    data: &[u8],
    units: usize,
    seq: usize,
) -> Result<Row, String> {
    let source = Arc::new(Bytes {
        data: data.to_vec(),
        micro_batch: c.mb,
        seq,
    });
    match c.acc.as_str() {
        "f32" => run(c, F32Acc, model, source, units, args),
        "fixed" => run(c, FixedAcc::default(), model, source, units, args),
        _ => run(c, ExactAcc, model, source, units, args),
    }
}

/// The FMA peak of each (kernels, threads) pair, measured with that many
/// threads at once, after the runs so the rows are not disturbed.
fn fma_peaks(combos: &[Combo]) -> Vec<(String, usize, Option<f64>)> {
    let mut fma_peaks: Vec<(String, usize, Option<f64>)> = Vec::new();
    for c in combos {
        let name = c.kernels.describe();
        if !fma_peaks.iter().any(|p| p.0 == name && p.1 == c.threads) {
            let g = fma_peak_gflops(
                c.kernels.isa(),
                c.threads,
                std::time::Duration::from_millis(500),
            );
            fma_peaks.push((name, c.threads, g));
        }
    }
    fma_peaks
}

/// The main table: each row's median round (results are sorted), its best
/// step and highest RSS over all rounds.
fn print_rows(
    combos: &[Combo],
    results: &[Vec<(Row, f64)>],
    fma_peaks: &[(String, usize, Option<f64>)],
    args: &Args,
    batch: usize,
) {
    for (c, rows) in combos.iter().zip(results) {
        let fma = fma_peaks
            .iter()
            .find(|p| p.0 == c.kernels.describe() && p.1 == c.threads)
            .and_then(|p| p.2);
        let rss = rows.iter().map(|r| r.1).fold(0.0, f64::max);
        let best = rows
            .iter()
            .map(|r| r.0.best_tokens_per_s)
            .fold(0.0, f64::max);
        let row = &rows[rows.len() / 2].0;
        let peak = c.peak1
            * c.threads.min(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
            ) as f64;
        println!(
            "| {} | {} | {} | {} | {} | {}×{} | {:.0} | {:.1} | {:.1} | {:.0}% | {} | {:.0} | {:.0} | {:.3} | {:.0} | {} |",
            c.kernels.describe(),
            c.acc,
            c.threads,
            c.depth,
            args.branching,
            batch / c.mb,
            c.mb,
            row.tokens_per_s,
            row.ms_per_step,
            row.gflops,
            100.0 * row.gflops / peak,
            fma.map_or("-".into(), |f| format!("{:.0}%", 100.0 * row.gflops / f)),
            rss,
            row.memory_bytes as f64 / (1 << 20) as f64,
            row.loss,
            best,
            reduction(c.stream),
        );
    }
}

/// Per worker of each row's median round, in ms per step; the reduction's
/// share is of the whole step's wall time.
fn print_phases(combos: &[Combo], results: &[Vec<(Row, f64)>], args: &Args, batch: usize) {
    println!("\n| kernels | accumulator | threads | depth | units×micro-batch | worker | compute ms | reduce ms | update ms | wait ms | step ms | reduce share | wait share | reduction |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let per_step = |d: std::time::Duration| 1000.0 * d.as_secs_f64() / args.steps as f64;
    for (c, rows) in combos.iter().zip(results) {
        let row = &rows[rows.len() / 2].0;
        for (w, p) in row.phases.iter().enumerate() {
            println!(
                "| {} | {} | {} | {} | {}×{} | {w} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}% | {:.1}% | {} |",
                c.kernels.describe(),
                c.acc,
                c.threads,
                c.depth,
                batch / c.mb,
                c.mb,
                per_step(p.compute),
                per_step(p.reduce),
                per_step(p.update),
                per_step(p.wait),
                row.ms_per_step,
                100.0 * per_step(p.reduce) / row.ms_per_step,
                100.0 * per_step(p.wait) / row.ms_per_step,
                reduction(c.stream),
            );
        }
    }
}

/// The measured matmul and FMA peaks behind the "% of peak" columns.
fn print_peaks(combos: &[Combo], fma_peaks: &[(String, usize, Option<f64>)]) {
    let mut shown = Vec::new();
    for c in combos {
        let name = c.kernels.describe();
        if !shown.contains(&name) {
            println!(
                "measured single-thread matmul peak ({name}): {:.1} GFLOP/s (512³ sgemm)",
                c.peak1
            );
            shown.push(name);
        }
    }
    for (name, threads, g) in fma_peaks {
        if let Some(g) = g {
            println!("measured FMA peak ({name}, {threads} threads at once): {g:.1} GFLOP/s");
        }
    }
}
