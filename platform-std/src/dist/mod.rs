//! The hierarchy spread over several processes ("ranks"), behind one small
//! trait: [`Collectives`] is the seam to whatever moves the bytes (MPI in
//! `cllm-mpi`, [`Solo`] for one process). Everything else — who computes
//! which units ([`RankLayout`]), how accumulator cells cross ranks as
//! integers ([`wire`]), the step itself ([`train_step`]) — is plain code
//! here, the same for every transport.
//!
//! Each rank runs a [`Hierarchy`](crate::exec::Hierarchy) over the whole
//! model but computes only the units of its block of leaves. Fixed and exact
//! accumulators cross ranks as integers, so a multi-rank step is
//! bit-identical to `Hierarchy::train_step` in one process for every rank
//! count, thread count and [`Reduction`].

mod layout;
mod step;
pub mod wire;

use std::fmt;

pub use layout::RankLayout;
pub use step::{
    gather_optimizer_state, train_step, CrossRank, DistError, DistSettings, DistStepStats,
    F32Order, Moments, Reduction, Scratch, OVERLAP_BUCKET,
};

/// Why a collective could not be issued (its element count does not fit
/// the transport's count type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountOverflow {
    /// The collective.
    pub what: &'static str,
    /// Elements it was asked to move.
    pub elements: usize,
}

impl fmt::Display for CountOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} elements exceed the transport's 32-bit count per call (a smaller model or \
             fewer exact lanes are needed; chunked collectives are not implemented)",
            self.what, self.elements
        )
    }
}

impl std::error::Error for CountOverflow {}

/// The collective operations a distributed step needs. Every rank calls the
/// same operations in the same order; `lens[q]` is rank `q`'s block length
/// (blocks are contiguous and in rank order).
///
/// Object-safe on purpose: the trainer holds a `&mut dyn Collectives`, so
/// the transport is chosen at run time and the loop is written once.
pub trait Collectives {
    /// This rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Elementwise maximum over ranks of `send` into `recv` (small vectors:
    /// agreement on wire formats and on failures).
    fn max_i64(&mut self, send: &[i64], recv: &mut [i64]);
    /// Reduce-scatter with integer sum: `send` (all blocks) is summed
    /// elementwise over ranks; this rank receives its block.
    fn sum_scatter_i64(
        &mut self,
        send: &[i64],
        lens: &[usize],
        recv: &mut [i64],
    ) -> Result<(), CountOverflow>;
    /// All-reduce with integer sum.
    fn sum_all_i64(&mut self, send: &[i64], recv: &mut [i64]) -> Result<(), CountOverflow>;
    /// All-to-all of equal blocks: block `r` of `send` goes to rank `r`,
    /// block `q` of `recv` comes from rank `q`.
    fn all_to_all_f32(&mut self, send: &[f32], recv: &mut [f32]) -> Result<(), CountOverflow>;
    /// All-gather of variable blocks (`send` is this rank's block).
    fn all_gather_f32(
        &mut self,
        send: &[f32],
        lens: &[usize],
        recv: &mut [f32],
    ) -> Result<(), CountOverflow>;
    /// [`all_gather_f32`](Self::all_gather_f32) for `f64`.
    fn all_gather_f64(
        &mut self,
        send: &[f64],
        lens: &[usize],
        recv: &mut [f64],
    ) -> Result<(), CountOverflow>;
    /// Gather of variable blocks to rank 0 (`recv` is ignored elsewhere).
    fn gather_root_f32(
        &mut self,
        send: &[f32],
        lens: &[usize],
        recv: &mut [f32],
    ) -> Result<(), CountOverflow>;
    /// Wait for every rank.
    fn barrier(&mut self);
    /// Bytes this rank has sent so far (the transport's own accounting).
    fn bytes_sent(&self) -> u64;
    /// Ends this process, and with a transport that can, the whole job:
    /// after a failure inside a step the other ranks may be waiting in a
    /// collective this one will never join.
    fn abort(&mut self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// One process: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Collectives for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn max_i64(&mut self, send: &[i64], recv: &mut [i64]) {
        recv.copy_from_slice(send);
    }
    fn sum_scatter_i64(
        &mut self,
        send: &[i64],
        _lens: &[usize],
        recv: &mut [i64],
    ) -> Result<(), CountOverflow> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn sum_all_i64(&mut self, send: &[i64], recv: &mut [i64]) -> Result<(), CountOverflow> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_to_all_f32(&mut self, send: &[f32], recv: &mut [f32]) -> Result<(), CountOverflow> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn all_gather_f32(
        &mut self,
        send: &[f32],
        _lens: &[usize],
        recv: &mut [f32],
    ) -> Result<(), CountOverflow> {
        recv[..send.len()].copy_from_slice(send);
        Ok(())
    }
    fn all_gather_f64(
        &mut self,
        send: &[f64],
        _lens: &[usize],
        recv: &mut [f64],
    ) -> Result<(), CountOverflow> {
        recv[..send.len()].copy_from_slice(send);
        Ok(())
    }
    fn gather_root_f32(
        &mut self,
        send: &[f32],
        _lens: &[usize],
        recv: &mut [f32],
    ) -> Result<(), CountOverflow> {
        recv[..send.len()].copy_from_slice(send);
        Ok(())
    }
    fn barrier(&mut self) {}
    fn bytes_sent(&self) -> u64 {
        0
    }
}

/// Did every rank get here without error? One max-reduction. The lowest
/// failing rank gets its own error back; every other rank gets
/// `Err(other(r))`, where `r` is the lowest failing rank.
pub fn all_ok<T, E>(
    comm: &mut dyn Collectives,
    r: Result<T, E>,
    other: impl FnOnce(usize) -> E,
) -> Result<T, E> {
    // Max of (failed, -rank): the lowest failing rank wins.
    let me = match &r {
        Ok(_) => [0, i64::MIN],
        Err(_) => [1, -(comm.rank() as i64)],
    };
    let mut agreed = [0i64; 2];
    comm.max_i64(&me, &mut agreed);
    match r {
        Ok(_) if agreed[0] != 0 => Err(other((-agreed[1]) as usize)),
        Err(e) if -agreed[1] == comm.rank() as i64 => Err(e),
        Err(_) => Err(other((-agreed[1]) as usize)),
        Ok(v) => Ok(v),
    }
}
