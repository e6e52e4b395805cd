//! `FoldPlan`: the canonical f32 reduction order as buffer operations.
//!
//! The canonical value of a sphere is the fold, in child order, of its
//! non-empty children's values, starting from the first one (no initial
//! zero); a leaf's value is the fold of its units in unit order. Because
//! units are split over leaves in contiguous ranges, walking the units in
//! order visits the tree depth-first, so a stack of one partial value per
//! level suffices:
//!
//! * slots `Unit(k)`, `k < width`: the units of the current round;
//! * slots `Level(l)`, `l in 0..=depth`: the open sphere of level `l`.
//!
//! For each unit `u` (slot `Unit(k)`): if `u` is its leaf's first unit,
//! `Level(depth) := Unit(k)` (MOVE), else `Level(depth) += Unit(k)` (ADD).
//! If `u` is its leaf's last unit, the leaf closes and its value goes up:
//! at level `l` the closing sphere enters `Level(l-1)` by MOVE if it is its
//! parent's first non-empty child, by ADD otherwise, and the walk continues
//! only while the parent closes too (this was its last non-empty child).
//!
//! A MOVE never copies: it swaps which physical buffer the two slots name
//! (the destination is empty by construction). So `width + depth + 1`
//! physical buffers hold everything, and only ADDs touch memory. Units are
//! computed `width` at a time (a round); after each round the round's ADDs
//! are replayed, in order, on every segment. Any width gives the same bits,
//! because every element sees the same additions in the same order.

use core::ops::Range;

use super::ReduceError;
use crate::tree::Shape;

/// Deepest tree a plan supports.
pub const MAX_DEPTH: u32 = 16;
/// Most units per round (unit buffers) a plan supports.
pub const MAX_WIDTH: usize = 256;
const MAX_SLOTS: usize = MAX_WIDTH + MAX_DEPTH as usize + 1;

/// One physical buffer operation: `buffers[dst] += buffers[src]`, elementwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Add {
    /// Physical buffer read.
    pub src: usize,
    /// Physical buffer accumulated into.
    pub dst: usize,
}

/// What every participant needs to derive the plan: a pure function of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    shape: Shape,
    units: usize,
    width: usize,
}

impl Geometry {
    fn buffers(&self) -> usize {
        self.width + self.shape.depth() as usize + 1
    }

    fn level_slot(&self, l: u32) -> usize {
        self.width + l as usize
    }

    /// First unit of leaf boundary `a` (`0..=L`): `floor(a*U/L)`, which
    /// is `U` at `a = L`.
    fn boundary(&self, a: u32) -> usize {
        self.shape.leaf_units(a, self.units).start
    }
}

/// The slot → physical buffer map (a permutation of `0..buffers`).
type Map = [u16; MAX_SLOTS];

/// The canonical f32 fold of `units` units over `shape`, computed `width`
/// units per round, as a sequence of [`FoldRound`]s.
///
/// A pure function of `(shape, units, width)` with no allocation, so every
/// participant of an executor builds its own copy and they all agree.
///
/// ```
/// use cllm_core::reduce::FoldPlan;
/// use cllm_core::tree::Shape;
///
/// let shape = Shape::new(1, 2).unwrap(); // root + 2 leaves
/// let mut plan = FoldPlan::new(shape, 3, 1).unwrap(); // units: leaf 0 gets {0}, leaf 1 gets {1, 2}
/// let mut adds = 0;
/// while let Some(round) = plan.next_round() {
///     adds += round.ops().count();
/// }
/// assert_eq!(adds, 2); // n units always take n - 1 additions
/// assert!(plan.root().unwrap() < plan.buffers());
/// ```
#[derive(Clone, Debug)]
pub struct FoldPlan {
    geom: Geometry,
    map: Map,
    next_unit: usize,
}

impl FoldPlan {
    /// Physical buffers a plan for `depth` and `width` uses: `width + depth + 1`.
    pub const fn buffers_for(depth: u32, width: usize) -> usize {
        width + depth as usize + 1
    }

    /// The plan for `units` units over `shape`, `width` units per round.
    pub fn new(shape: Shape, units: usize, width: usize) -> Result<Self, ReduceError> {
        if width == 0 || width > MAX_WIDTH {
            return Err(ReduceError::Width {
                width,
                max: MAX_WIDTH,
            });
        }
        if shape.depth() > MAX_DEPTH {
            return Err(ReduceError::Depth {
                depth: shape.depth(),
                max: MAX_DEPTH,
            });
        }
        let geom = Geometry {
            shape,
            units,
            width,
        };
        let mut map = [0u16; MAX_SLOTS];
        for (i, m) in map.iter_mut().enumerate().take(geom.buffers()) {
            *m = i as u16; // < MAX_SLOTS < 2^16
        }
        Ok(FoldPlan {
            geom,
            map,
            next_unit: 0,
        })
    }

    /// Physical buffers this plan uses (indices in [`Add`] and
    /// [`FoldRound::unit_buffer`] are below this).
    pub fn buffers(&self) -> usize {
        self.geom.buffers()
    }

    /// Units per round.
    pub fn width(&self) -> usize {
        self.geom.width
    }

    /// Number of rounds, `ceil(units / width)`.
    pub fn rounds(&self) -> usize {
        self.geom.units.div_ceil(self.geom.width)
    }

    /// The next round, or `None` when every unit has been planned.
    pub fn next_round(&mut self) -> Option<FoldRound> {
        if self.next_unit >= self.geom.units {
            return None;
        }
        let first = self.next_unit;
        let end = first + self.geom.width.min(self.geom.units - first);
        let round = FoldRound {
            geom: self.geom,
            units: first..end,
            map: self.map,
        };
        // Advance our own map past the round's moves.
        let mut ops = round.ops();
        for _ in ops.by_ref() {}
        self.map = ops.map;
        self.next_unit = end;
        Some(round)
    }

    /// The physical buffer holding the root's value once every round has
    /// been taken; `None` before that, and when there are no units (the
    /// reduced gradient is then zero).
    ///
    /// It is always buffer 0, the one unit 0 is computed into: the first
    /// unit starts every sphere that contains it, so its buffer only moves
    /// up (a MOVE renames, it never copies) and the later children are
    /// added into it. An executor can therefore keep the reduced gradient
    /// in buffer 0 without copying it out.
    pub fn root(&self) -> Option<usize> {
        if self.geom.units == 0 || self.next_unit < self.geom.units {
            None
        } else {
            Some(self.map[self.geom.level_slot(0)] as usize)
        }
    }
}

/// One round of a [`FoldPlan`]: which buffer each unit is computed into,
/// then the additions to replay (in order, on every segment).
#[derive(Clone, Debug)]
pub struct FoldRound {
    geom: Geometry,
    units: Range<usize>,
    map: Map,
}

impl FoldRound {
    /// The units of this round (at most `width`, consecutive).
    pub fn units(&self) -> Range<usize> {
        self.units.clone()
    }

    /// Number of units in this round.
    pub fn len(&self) -> usize {
        self.units.end - self.units.start
    }

    /// Whether the round has no unit (never true for rounds from a plan).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Physical buffers the plan uses.
    pub fn buffers(&self) -> usize {
        self.geom.buffers()
    }

    /// The physical buffer unit `units().start + k` must be computed into
    /// (overwriting it); `None` for `k >= len()`. Distinct for distinct `k`.
    pub fn unit_buffer(&self, k: usize) -> Option<usize> {
        if k < self.len() {
            Some(self.map[k] as usize)
        } else {
            None
        }
    }

    /// `(unit, buffer)` for every unit of the round, in unit order.
    pub fn unit_buffers(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.units()
            .zip(self.map[..self.len()].iter().map(|&b| b as usize))
    }

    /// The additions of this round, in replay order. Can be iterated any
    /// number of times (e.g. once per segment).
    pub fn ops(&self) -> RoundOps {
        RoundOps {
            geom: self.geom,
            map: self.map,
            first: self.units.start,
            next: self.units.start,
            end: self.units.end,
            walk: None,
        }
    }
}

/// A closing sphere on its way up: the sphere at `level` that contains leaf
/// `leaf` spans `span` leaves and has just received its last unit `unit`.
#[derive(Clone, Copy, Debug)]
struct Walk {
    level: u32,
    span: u32,
    leaf: u32,
    unit: usize,
}

/// Iterator over a round's [`Add`]s; applies the round's moves as it goes.
#[derive(Clone, Debug)]
pub struct RoundOps {
    geom: Geometry,
    map: Map,
    first: usize,
    next: usize,
    end: usize,
    walk: Option<Walk>,
}

impl RoundOps {
    /// MOVE (swap slot buffers, no data) or ADD (returned) from slot `src` into slot `dst`.
    fn transfer(&mut self, src: usize, dst: usize, mv: bool) -> Option<Add> {
        if mv {
            self.map.swap(src, dst);
            None
        } else {
            Some(Add {
                src: self.map[src] as usize,
                dst: self.map[dst] as usize,
            })
        }
    }
}

impl Iterator for RoundOps {
    type Item = Add;

    fn next(&mut self) -> Option<Add> {
        let g = self.geom;
        loop {
            if let Some(w) = self.walk {
                if w.level == 0 {
                    self.walk = None;
                    continue;
                }
                // The sphere at w.level closes; its parent spans span*b leaves.
                let parent_span = w.span * g.shape.branching();
                let own_first = w.leaf / w.span * w.span;
                let parent_first = w.leaf / parent_span * parent_span;
                let first_child = g.boundary(parent_first) == g.boundary(own_first);
                let parent_closes = g.boundary(parent_first + parent_span) == w.unit + 1;
                self.walk = parent_closes.then_some(Walk {
                    level: w.level - 1,
                    span: parent_span,
                    ..w
                });
                let (src, dst) = (g.level_slot(w.level), g.level_slot(w.level - 1));
                match self.transfer(src, dst, first_child) {
                    Some(add) => return Some(add),
                    None => continue,
                }
            }
            if self.next >= self.end {
                return None;
            }
            let unit = self.next;
            self.next += 1;
            // unit < units, so it has a leaf.
            let leaf = g.shape.unit_leaf(unit, g.units)?;
            let range = g.shape.leaf_units(leaf, g.units);
            if unit + 1 == range.end {
                self.walk = Some(Walk {
                    level: g.shape.depth(),
                    span: 1,
                    leaf,
                    unit,
                });
            }
            let depth_slot = g.level_slot(g.shape.depth());
            if let Some(add) = self.transfer(unit - self.first, depth_slot, unit == range.start) {
                return Some(add);
            }
        }
    }
}
