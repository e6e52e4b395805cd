//! Who does what across ranks: a pure function of (shape, units, parameter
//! count, ranks), so every rank derives the same plan without talking.

use std::ops::Range;

use crate::exec::leaf_block_units;
use cllm_core::reduce::Segments;
use cllm_core::tree::Shape;

/// The split of one step over `ranks` ranks.
///
/// * Leaves: rank `r` executes the contiguous block
///   `[r·L/R, (r+1)·L/R)` — for `R` dividing the branching, whole top-level
///   subtrees; its local threads split that block again.
/// * Segments: rank `r` owns the contiguous block `[r·S/R, (r+1)·S/R)` of
///   the parameter vector's fixed segments: it reduces their gradient and
///   alone holds and updates their optimizer state. Contiguous (not
///   interleaved) so that a block is one `MPI_Reduce_scatter_block` slot.
#[derive(Clone, Debug)]
pub struct RankLayout {
    shape: Shape,
    units: usize,
    segments: Segments,
    ranks: usize,
    /// Per rank: units, owned segments, owned elements (the block lengths
    /// the collectives take, computed once).
    unit_lens: Vec<usize>,
    segment_lens: Vec<usize>,
    element_lens: Vec<usize>,
}

impl RankLayout {
    /// The layout of a step of `units` units over `shape`, for a parameter
    /// vector of `params` elements, on `ranks ≥ 1` ranks.
    pub fn new(shape: Shape, units: usize, params: usize, ranks: usize) -> RankLayout {
        let mut l = RankLayout {
            shape,
            units,
            segments: Segments::new(params),
            ranks: ranks.max(1),
            unit_lens: Vec::new(),
            segment_lens: Vec::new(),
            element_lens: Vec::new(),
        };
        let r = 0..l.ranks;
        l.unit_lens = r.clone().map(|r| l.units(r).len()).collect();
        l.segment_lens = r.clone().map(|r| l.owned_segments(r).len()).collect();
        l.element_lens = r.map(|r| l.owned_elements(r).len()).collect();
        l
    }

    /// Units per rank.
    pub fn unit_lens(&self) -> &[usize] {
        &self.unit_lens
    }

    /// Owned segments per rank.
    pub fn segment_lens(&self) -> &[usize] {
        &self.segment_lens
    }

    /// Owned elements per rank.
    pub fn element_lens(&self) -> &[usize] {
        &self.element_lens
    }

    /// Number of ranks.
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// The fixed segments of the parameter vector.
    pub fn segments(&self) -> Segments {
        self.segments
    }

    /// The leaves rank `r` executes.
    pub fn leaves(&self, r: usize) -> Range<u32> {
        let l = self.shape.leaf_count() as u128;
        let at = |r: usize| (r as u128 * l / self.ranks as u128) as u32;
        at(r)..at(r + 1)
    }

    /// The units rank `r` computes (contiguous; possibly empty).
    pub fn units(&self, r: usize) -> Range<usize> {
        leaf_block_units(self.shape, self.units, self.leaves(r))
    }

    /// The segments rank `r` owns.
    pub fn owned_segments(&self, r: usize) -> Range<usize> {
        let s = self.segments.count();
        r * s / self.ranks..(r + 1) * s / self.ranks
    }

    /// The elements of the segments rank `r` owns.
    pub fn owned_elements(&self, r: usize) -> Range<usize> {
        let segs = self.owned_segments(r);
        // range(count) is the empty range at the end of the buffer.
        self.segments.range(segs.start).start..self.segments.range(segs.end).start
    }

    /// The largest block of elements a rank owns (the padded slot size of
    /// the fixed-size collectives).
    pub fn max_block(&self) -> usize {
        self.element_lens.iter().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_everything_once() {
        let shape = Shape::new(2, 12).unwrap();
        for ranks in [1, 2, 3, 4, 12, 13, 200] {
            let l = RankLayout::new(shape, 100, 30_000, ranks);
            let mut next_unit = 0;
            let mut next_seg = 0;
            let mut next_el = 0;
            for r in 0..ranks {
                let u = l.units(r);
                assert_eq!(u.start, next_unit);
                next_unit = u.end;
                let s = l.owned_segments(r);
                assert_eq!(s.start, next_seg);
                next_seg = s.end;
                let e = l.owned_elements(r);
                assert_eq!(e.start, next_el);
                next_el = e.end;
            }
            assert_eq!(
                (next_unit, next_seg, next_el),
                (100, l.segments().count(), 30_000)
            );
        }
    }

    #[test]
    fn twelve_ranks_take_one_top_level_subtree_each() {
        let shape = Shape::new(2, 12).unwrap();
        let l = RankLayout::new(shape, 144, 10, 12);
        for r in 0..12 {
            assert_eq!(l.leaves(r), r as u32 * 12..(r as u32 + 1) * 12);
        }
    }
}
