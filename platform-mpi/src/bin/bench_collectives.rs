//! Times the collectives a distributed step uses, over a range of message
//! sizes, for fitting the alpha-beta cost model (platform-mpi/README.md):
//!
//! ```text
//! mpirun -np 4 --oversubscribe --mca btl self,tcp target/release/bench_collectives
//! ```
//!
//! Prints one CSV line per (collective, size) on rank 0:
//! `op,ranks,bytes,min_s,median_s,reps`, where `bytes` is the size of the
//! whole vector (the reduce-scatter's input, the all-gather's output, the
//! all-reduce's buffer). `reduce_scatter` is `MPI_Reduce_scatter` (what the
//! trainer uses), `reduce_scatter_block` OpenMPI's block variant.

use std::time::Instant;

use mpi::collective::SystemOperation;
use mpi::topology::Communicator;
use mpi::traits::*;

fn main() {
    let Some(universe) = mpi::initialize() else {
        eprintln!("bench_collectives: MPI was already initialized");
        std::process::exit(2);
    };
    let world = universe.world();
    let (rank, ranks) = (world.rank() as usize, world.size() as usize);
    let max_bytes: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(16 << 20);
    if rank == 0 {
        println!("op,ranks,bytes,min_s,median_s,reps");
    }
    let mut bytes = 8 * ranks;
    while bytes <= max_bytes {
        let n = bytes / 8 / ranks * ranks; // i64 elements, a multiple of ranks
        let send: Vec<i64> = (0..n as i64).collect();
        let mut full = vec![0i64; n];
        let mut part = vec![0i64; n / ranks];
        let counts = vec![(n / ranks) as mpi::Count; ranks];
        for op in [
            "reduce_scatter",
            "reduce_scatter_block",
            "all_gather",
            "all_reduce",
        ] {
            let mut times = Vec::new();
            let start = Instant::now();
            // At least 5 repetitions, at most 200 or about half a second.
            loop {
                world.barrier();
                let t = Instant::now();
                match op {
                    // SAFETY: send holds sum(counts) = n i64s, part n/ranks,
                    // one count per rank; blocking call on valid handles.
                    "reduce_scatter" => unsafe {
                        mpi::ffi::MPI_Reduce_scatter(
                            send.as_ptr() as *const std::ffi::c_void,
                            part.as_mut_ptr() as *mut std::ffi::c_void,
                            counts.as_ptr(),
                            i64::equivalent_datatype().as_raw(),
                            SystemOperation::sum().as_raw(),
                            world.as_raw(),
                        );
                    },
                    "reduce_scatter_block" => world.reduce_scatter_block_into(
                        &send[..],
                        &mut part[..],
                        SystemOperation::sum(),
                    ),
                    "all_gather" => world.all_gather_into(&send[..n / ranks], &mut full[..]),
                    _ => world.all_reduce_into(&send[..], &mut full[..], SystemOperation::sum()),
                }
                // The slowest rank defines the collective's time.
                let mut dt = [t.elapsed().as_secs_f64()];
                let mut max = [0.0f64];
                world.all_reduce_into(&dt[..], &mut max[..], SystemOperation::max());
                dt[0] = max[0];
                times.push(dt[0]);
                // Every rank decides on the same count (rank 0's clock).
                let mut go = [(times.len() < 5
                    || (times.len() < 200 && start.elapsed().as_secs_f64() < 0.5))
                    as i32];
                world.process_at_rank(0).broadcast_into(&mut go[..]);
                if go[0] == 0 {
                    break;
                }
            }
            times.sort_by(f64::total_cmp);
            if rank == 0 {
                println!(
                    "{op},{ranks},{},{:.9},{:.9},{}",
                    n * 8,
                    times[0],
                    times[times.len() / 2],
                    times.len()
                );
            }
        }
        bytes *= 4;
    }
}
