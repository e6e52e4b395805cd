//! [`Collectives`] over MPI, with a count of the bytes each one sends from
//! this rank.
//!
//! MPI does not report traffic, so the count is the payload this rank sends
//! under the bandwidth-optimal algorithm of each collective (what the
//! alpha-beta model charges): `(R−1)/R · N` for reduce-scatter, all-gather
//! and all-to-all of an `N`-byte buffer, `2(R−1)/R · N` for all-reduce, the
//! rank's own part for a gather to the root. The README compares it with the
//! loopback interface's counters under `--mca btl self,tcp`.

use std::time::Instant;

use mpi::collective::SystemOperation;
use mpi::datatype::{Equivalence, PartitionMut};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Count;

use cllm_std::dist::{Collectives, CountOverflow};

/// Traffic and time spent in collectives.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetStats {
    /// Bytes sent by this rank (see the module documentation).
    pub bytes: u64,
    /// Collective calls.
    pub calls: u64,
    /// Seconds inside collectives (waiting for other ranks included).
    pub seconds: f64,
}

/// A communicator plus its traffic counters.
pub struct Net {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Totals since creation.
    pub stats: NetStats,
}

fn count(what: &'static str, n: usize) -> Result<Count, CountOverflow> {
    Count::try_from(n).map_err(|_| CountOverflow { what, elements: n })
}

/// Counts and displacements of contiguous blocks of the given lengths.
fn partition(
    what: &'static str,
    lens: impl Iterator<Item = usize>,
) -> Result<(Vec<Count>, Vec<Count>), CountOverflow> {
    let mut counts = Vec::new();
    let mut displs = Vec::new();
    let mut at = 0usize;
    for n in lens {
        counts.push(count(what, n)?);
        displs.push(count(what, at)?);
        at += n;
    }
    count(what, at)?;
    Ok((counts, displs))
}

impl Net {
    /// Wrap the world (or any) communicator.
    pub fn new(comm: SimpleCommunicator) -> Net {
        let rank = comm.rank() as usize;
        let size = comm.size() as usize;
        Net {
            comm,
            rank,
            size,
            stats: NetStats::default(),
        }
    }

    /// The communicator, for anything not wrapped here.
    pub fn comm(&self) -> &SimpleCommunicator {
        &self.comm
    }

    fn account(&mut self, bytes: f64, t0: Instant) {
        self.stats.bytes += bytes.round() as u64;
        self.stats.calls += 1;
        self.stats.seconds += t0.elapsed().as_secs_f64();
    }

    fn frac(&self) -> f64 {
        (self.size - 1) as f64 / self.size as f64
    }
}

impl Collectives for Net {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    /// Elementwise maximum over ranks (small vectors: agreement on wire
    /// formats).
    fn max_i64(&mut self, send: &[i64], recv: &mut [i64]) {
        let t0 = Instant::now();
        self.comm
            .all_reduce_into(send, recv, SystemOperation::max());
        self.account(2.0 * self.frac() * (8 * send.len()) as f64, t0);
    }

    /// `MPI_Reduce_scatter` with `MPI_SUM`: `send` is cut into contiguous
    /// blocks of `lens[q]` elements; this rank receives the elementwise sum
    /// over all ranks of its block (`recv.len() == lens[rank]`).
    ///
    /// The variable-count `MPI_Reduce_scatter`, not `_block`: OpenMPI 4.1
    /// implements the block variant by default as a reduce to one rank plus
    /// a scatter (each step moved 1.5× the optimal bytes here and ran
    /// slower than a whole all-reduce), while it runs this one with
    /// recursive halving or a ring. rsmpi does not wrap it, hence the FFI.
    fn sum_scatter_i64(
        &mut self,
        send: &[i64],
        lens: &[usize],
        recv: &mut [i64],
    ) -> Result<(), CountOverflow> {
        let (counts, _) = partition("reduce-scatter", lens.iter().copied())?;
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        // The FFI call trusts these; a mismatch is a caller bug.
        assert_eq!(counts.len(), self.size, "one block per rank");
        assert_eq!(total, send.len(), "blocks cover the send buffer");
        assert_eq!(counts[self.rank] as usize, recv.len(), "receive block");
        let t0 = Instant::now();
        // SAFETY: `send` holds sum(counts) i64s, `recv` counts[rank] i64s
        // (checked above), `counts` has one entry per rank of `comm`, and
        // the datatype, operation and communicator handles are valid for
        // the duration of this blocking call.
        unsafe {
            mpi::ffi::MPI_Reduce_scatter(
                send.as_ptr() as *const std::ffi::c_void,
                recv.as_mut_ptr() as *mut std::ffi::c_void,
                counts.as_ptr(),
                i64::equivalent_datatype().as_raw(),
                SystemOperation::sum().as_raw(),
                self.comm.as_raw(),
            );
        }
        self.account(self.frac() * (8 * send.len()) as f64, t0);
        Ok(())
    }

    /// `MPI_Allreduce` with `MPI_SUM`.
    fn sum_all_i64(&mut self, send: &[i64], recv: &mut [i64]) -> Result<(), CountOverflow> {
        count("all-reduce", send.len())?;
        let t0 = Instant::now();
        self.comm
            .all_reduce_into(send, recv, SystemOperation::sum());
        self.account(2.0 * self.frac() * (8 * send.len()) as f64, t0);
        Ok(())
    }

    /// `MPI_Alltoall`: block `r` of `send` goes to rank `r`; block `q` of
    /// `recv` comes from rank `q`.
    fn all_to_all_f32(&mut self, send: &[f32], recv: &mut [f32]) -> Result<(), CountOverflow> {
        count("all-to-all", send.len())?;
        let t0 = Instant::now();
        self.comm.all_to_all_into(send, recv);
        self.account(self.frac() * std::mem::size_of_val(send) as f64, t0);
        Ok(())
    }

    fn all_gather_f32(
        &mut self,
        send: &[f32],
        lens: &[usize],
        recv: &mut [f32],
    ) -> Result<(), CountOverflow> {
        self.all_gather(send, lens, recv)
    }

    fn all_gather_f64(
        &mut self,
        send: &[f64],
        lens: &[usize],
        recv: &mut [f64],
    ) -> Result<(), CountOverflow> {
        self.all_gather(send, lens, recv)
    }

    /// `MPI_Gatherv` to rank 0.
    fn gather_root_f32(
        &mut self,
        send: &[f32],
        lens: &[usize],
        recv: &mut [f32],
    ) -> Result<(), CountOverflow> {
        let (counts, displs) = partition("gather", lens.iter().copied())?;
        let t0 = Instant::now();
        let root = self.comm.process_at_rank(0);
        if self.rank == 0 {
            let mut part = PartitionMut::new(recv, &counts[..], &displs[..]);
            root.gather_varcount_into_root(send, &mut part);
            self.account(0.0, t0);
        } else {
            root.gather_varcount_into(send);
            self.account(std::mem::size_of_val(send) as f64, t0);
        }
        Ok(())
    }

    fn barrier(&mut self) {
        let t0 = Instant::now();
        self.comm.barrier();
        self.account(0.0, t0);
    }

    fn bytes_sent(&self) -> u64 {
        self.stats.bytes
    }

    /// `MPI_Abort`: ends every rank of the job.
    fn abort(&mut self, code: i32) -> ! {
        self.comm.abort(code)
    }
}

impl Net {
    /// `MPI_Allgatherv` into contiguous blocks: rank `q` contributes
    /// `lens[q]` elements (`send`, on this rank `lens[rank]` long), placed in
    /// rank order in `recv`.
    fn all_gather<T: Equivalence>(
        &mut self,
        send: &[T],
        lens: &[usize],
        recv: &mut [T],
    ) -> Result<(), CountOverflow> {
        let (counts, displs) = partition("all-gather", lens.iter().copied())?;
        let t0 = Instant::now();
        let mut part = PartitionMut::new(recv, &counts[..], &displs[..]);
        self.comm.all_gather_varcount_into(send, &mut part);
        self.account(self.frac() * (std::mem::size_of_val(recv)) as f64, t0);
        Ok(())
    }
}
