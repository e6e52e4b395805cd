//! Who does what across ranks: a pure function of (shape, units, parameter
//! count, ranks), so every rank derives the same plan without talking.

use std::ops::Range;

use crate::exec::leaf_block_units;
use cllm_core::reduce::Segments;
use cllm_core::tree::Shape;

/// The split of one step over `ranks` ranks.
///
/// * Leaves: the ranks split the `n = b^ℓ` subtrees of the *split level*
///   `ℓ` (the shallowest level with at least `R` spheres, at most the
///   leaves' level): rank `r` executes the whole subtrees
///   `[r·n/R, (r+1)·n/R)` of that level — a contiguous block of leaves
///   (`[r·L/R, (r+1)·L/R)` when `R` divides the branching); its local
///   threads split that block again. Whole subtrees, so that f32 partial
///   sums can be combined across ranks in the tree's canonical order.
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
        let k = self.subtrees(r);
        self.subtree_leaves(k.start).start..self.subtree_leaves(k.end).start
    }

    /// Children per sphere.
    pub fn branching(&self) -> usize {
        self.shape.branching() as usize
    }

    /// The split level `ℓ` (see the type's documentation).
    pub fn split_level(&self) -> u32 {
        let (b, d) = (self.shape.branching() as u128, self.shape.depth());
        (0..=d)
            .find(|&l| b.pow(l) >= self.ranks as u128)
            .unwrap_or(d)
    }

    /// Spheres of the split level.
    pub fn split_spheres(&self) -> usize {
        (self.shape.branching() as usize).pow(self.split_level())
    }

    /// The split-level subtrees rank `r` executes.
    pub fn subtrees(&self, r: usize) -> Range<usize> {
        let n = self.split_spheres() as u128;
        let at = |r: usize| (r as u128 * n / self.ranks as u128) as usize;
        at(r)..at(r + 1)
    }

    /// The leaves of split-level subtree `k`.
    pub fn subtree_leaves(&self, k: usize) -> Range<u32> {
        let per = self.shape.leaf_count() / self.split_spheres() as u32;
        k as u32 * per..(k as u32 + 1) * per
    }

    /// The units of split-level subtree `k` (possibly none).
    pub fn subtree_units(&self, k: usize) -> Range<usize> {
        leaf_block_units(self.shape, self.units, self.subtree_leaves(k))
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
    fn ranks_take_whole_subtrees_of_the_split_level() {
        let shape = Shape::new(3, 12).unwrap();
        for (ranks, level) in [(1, 0), (2, 1), (5, 1), (12, 1), (13, 2), (144, 2), (145, 3)] {
            let l = RankLayout::new(shape, 1000, 10, ranks);
            assert_eq!(l.split_level(), level, "{ranks} ranks");
            let per = 12u32.pow(3 - level);
            for r in 0..ranks {
                let leaves = l.leaves(r);
                assert_eq!(leaves.start % per, 0);
                assert_eq!(leaves.end % per, 0);
                assert_eq!(leaves.len(), l.subtrees(r).len() * per as usize);
            }
            assert_eq!(l.leaves(ranks - 1).end, shape.leaf_count());
        }
        // More ranks than leaves: leaves are the split level's spheres.
        let l = RankLayout::new(Shape::new(1, 4).unwrap(), 4, 10, 6);
        assert_eq!(l.split_level(), 1);
        assert_eq!((0..6).map(|r| l.leaves(r).len()).sum::<usize>(), 4);
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
