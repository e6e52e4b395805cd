//! The sphere tree: shape arithmetic, sphere records in a caller-supplied
//! arena, and the split of a step's units over the leaves.
//!
//! Spheres are numbered breadth-first, so everything about a sphere follows
//! from its id and the [`Shape`] (depth `d`, branching `b`): no pointers, no
//! allocation.
//!
//! ```text
//! level 0            0                      root
//! level 1     1      2  ...  b              level l starts at (b^l - 1)/(b - 1)
//! level 2   b+1 .. 2b  ...                  children of i: b*i+1 ..= b*i+b
//!                                           parent of i:   (i - 1)/b
//! ```
//!
//! Leaves (level `d`) are the workers, internal spheres are control spheres.
//! A step's `U` units are split over the `L = b^d` leaves in contiguous,
//! balanced ranges: leaf `j` gets `[j*U/L, (j+1)*U/L)` (see
//! [`Shape::leaf_units`]). Unit order is therefore also the depth-first order
//! of leaves, which is what the canonical reduction in [`crate::reduce`]
//! relies on.
//!
//! With `d = 0` the root is the only sphere and also the only worker: its
//! [`SphereKind`] is [`SphereKind::Root`] and [`Shape::is_leaf`] is `true`.

use core::fmt;
use core::ops::Range;

/// The kissing number in three dimensions: the default (and largest)
/// branching factor.
pub const KISSING_NUMBER: u32 = 12;

/// The largest supported branching factor.
pub const MAX_BRANCHING: u32 = KISSING_NUMBER;

/// Why a tree could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeError {
    /// The branching factor is not in `1..=MAX_BRANCHING`.
    BadBranching {
        /// The branching factor that was asked for.
        branching: u32,
    },
    /// The sphere count of this shape does not fit in `u32` (or `usize`).
    TooManySpheres {
        /// Levels below the root that were asked for.
        depth: u32,
        /// Children per internal sphere that were asked for.
        branching: u32,
    },
    /// The arena given to [`SphereTree::new`] is shorter than the sphere count.
    ArenaTooSmall {
        /// The shape's sphere count ([`Shape::sphere_count`]).
        needed: usize,
        /// Length of the arena that was given.
        got: usize,
    },
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TreeError::BadBranching { branching } => {
                write!(f, "branching {branching} is not in 1..={MAX_BRANCHING}")
            }
            TreeError::TooManySpheres { depth, branching } => write!(
                f,
                "a tree of depth {depth} and branching {branching} has more than {} spheres",
                u32::MAX
            ),
            TreeError::ArenaTooSmall { needed, got } => {
                write!(
                    f,
                    "sphere arena holds {got} spheres, the tree needs {needed}"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TreeError {}

/// What a sphere does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SphereKind {
    /// Sphere 0. At depth 0 it is also the only worker ([`Shape::is_leaf`]).
    Root,
    /// An internal sphere other than the root: it reduces its children.
    Control,
    /// A leaf that is not the root: it computes units.
    Worker,
}

/// Depth and branching of a complete tree, with its sphere and leaf counts.
///
/// Built only through [`Shape::new`], so the counts always fit in `u32` and
/// `usize`, and all id arithmetic below is overflow-free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    depth: u32,
    branching: u32,
    spheres: u32,
    leaves: u32,
}

impl Shape {
    /// A complete tree with `depth` levels below the root and `branching`
    /// children per internal sphere.
    pub const fn new(depth: u32, branching: u32) -> Result<Shape, TreeError> {
        if branching == 0 || branching > MAX_BRANCHING {
            return Err(TreeError::BadBranching { branching });
        }
        let too_many = TreeError::TooManySpheres { depth, branching };
        let (spheres, leaves) = if branching == 1 {
            // A chain: the loop below would run `depth` times for nothing.
            match depth.checked_add(1) {
                Some(n) => (n, 1),
                None => return Err(too_many),
            }
        } else {
            // b >= 2 overflows u32 after at most 32 levels, so this loop is short.
            let mut level_len: u32 = 1;
            let mut total: u32 = 1;
            let mut l = 0;
            while l < depth {
                level_len = match level_len.checked_mul(branching) {
                    Some(v) => v,
                    None => return Err(too_many),
                };
                total = match total.checked_add(level_len) {
                    Some(v) => v,
                    None => return Err(too_many),
                };
                l += 1;
            }
            (total, level_len)
        };
        if spheres as u64 > usize::MAX as u64 {
            return Err(too_many);
        }
        Ok(Shape {
            depth,
            branching,
            spheres,
            leaves,
        })
    }

    /// The deepest valid tree for `branching` (its sphere count fits `u32`).
    pub const fn max_depth(branching: u32) -> Result<u32, TreeError> {
        if branching == 0 || branching > MAX_BRANCHING {
            return Err(TreeError::BadBranching { branching });
        }
        if branching == 1 {
            let max = if (u32::MAX as u64) <= usize::MAX as u64 {
                u32::MAX - 1
            } else {
                (usize::MAX - 1) as u32
            };
            return Ok(max);
        }
        let mut d = 0;
        while Shape::new(d + 1, branching).is_ok() {
            d += 1;
        }
        Ok(d)
    }

    /// Levels below the root (leaves are at level `depth`).
    pub const fn depth(&self) -> u32 {
        self.depth
    }

    /// Children per internal sphere.
    pub const fn branching(&self) -> u32 {
        self.branching
    }

    /// Total number of spheres, `(b^(d+1) - 1)/(b - 1)` (or `d + 1` for `b = 1`).
    pub const fn sphere_count(&self) -> u32 {
        self.spheres
    }

    /// Number of leaves (workers), `b^d`.
    pub const fn leaf_count(&self) -> u32 {
        self.leaves
    }

    /// Id of the first sphere of level `l`; `sphere_count()` for `l > depth`,
    /// so `level_start(l)..level_start(l + 1)` is always the level's id range.
    pub const fn level_start(&self, l: u32) -> u32 {
        if l > self.depth {
            return self.spheres;
        }
        if self.branching == 1 {
            return l;
        }
        // b^l <= b^depth = leaves fits u32.
        (self.branching.pow(l) - 1) / (self.branching - 1)
    }

    /// Number of spheres on level `l` (`b^l`, 0 for `l > depth`).
    pub const fn level_len(&self, l: u32) -> u32 {
        if l > self.depth {
            0
        } else {
            self.branching.pow(l)
        }
    }

    /// Ids of level `l` (empty for `l > depth`).
    pub const fn level_range(&self, l: u32) -> Range<u32> {
        let start = self.level_start(l);
        start..start + self.level_len(l)
    }

    /// Whether `id` names a sphere of this shape.
    pub const fn contains(&self, id: u32) -> bool {
        id < self.spheres
    }

    /// Level of sphere `id`, `None` if there is no such sphere.
    pub const fn level_of(&self, id: u32) -> Option<u32> {
        if id >= self.spheres {
            return None;
        }
        if self.branching == 1 {
            return Some(id);
        }
        let mut l = 0;
        while id >= self.level_start(l + 1) {
            l += 1;
        }
        Some(l)
    }

    /// Parent of `id`; `None` for the root and for ids outside the tree.
    pub const fn parent(&self, id: u32) -> Option<u32> {
        if id == 0 || id >= self.spheres {
            None
        } else {
            Some((id - 1) / self.branching)
        }
    }

    /// Children of `id`; empty for leaves and for ids outside the tree.
    pub const fn children(&self, id: u32) -> Range<u32> {
        if self.is_leaf(id) || id >= self.spheres {
            return 0..0;
        }
        // id is internal, so its children exist and their ids fit u32.
        let first = self.branching * id + 1;
        first..first + self.branching
    }

    /// Position of `id` among its siblings (0 for the root), `None` outside the tree.
    pub const fn index_among_siblings(&self, id: u32) -> Option<u32> {
        if id >= self.spheres {
            None
        } else if id == 0 {
            Some(0)
        } else {
            Some((id - 1) % self.branching)
        }
    }

    /// Whether `id` is a leaf (a worker). True for the root at depth 0.
    pub const fn is_leaf(&self, id: u32) -> bool {
        id < self.spheres && id >= self.level_start(self.depth)
    }

    /// Kind of `id`, `None` outside the tree. The root is always
    /// [`SphereKind::Root`], even at depth 0 where it is also the only leaf.
    pub const fn kind(&self, id: u32) -> Option<SphereKind> {
        if id >= self.spheres {
            None
        } else if id == 0 {
            Some(SphereKind::Root)
        } else if self.is_leaf(id) {
            Some(SphereKind::Worker)
        } else {
            Some(SphereKind::Control)
        }
    }

    /// Sphere id of leaf number `leaf` (leaves are numbered left to right).
    pub const fn leaf_id(&self, leaf: u32) -> Option<u32> {
        if leaf >= self.leaves {
            None
        } else {
            Some(self.level_start(self.depth) + leaf)
        }
    }

    /// Leaf number of sphere `id`, `None` if it is not a leaf.
    pub const fn leaf_index(&self, id: u32) -> Option<u32> {
        if self.is_leaf(id) {
            Some(id - self.level_start(self.depth))
        } else {
            None
        }
    }

    /// Leaf numbers under sphere `id` (a contiguous range; empty outside the tree).
    pub const fn leaf_span(&self, id: u32) -> Range<u32> {
        let level = match self.level_of(id) {
            Some(l) => l,
            None => return 0..0,
        };
        let span = self.branching.pow(self.depth - level);
        let first = (id - self.level_start(level)) * span;
        first..first + span
    }

    /// The full record of sphere `id`, `None` outside the tree.
    pub const fn sphere(&self, id: u32) -> Option<Sphere> {
        let (level, index, kind) = match (
            self.level_of(id),
            self.index_among_siblings(id),
            self.kind(id),
        ) {
            (Some(l), Some(i), Some(k)) => (l, i, k),
            _ => return None,
        };
        let children = self.children(id);
        Some(Sphere {
            id,
            level,
            index,
            kind,
            is_leaf: self.is_leaf(id),
            parent: self.parent(id),
            first_child: children.start,
            child_count: children.end - children.start,
        })
    }

    /// First unit of leaf boundary `a` (`0..=L`): `floor(a*U/L)`. u128 keeps
    /// `a*U` exact for any `usize` unit count.
    const fn boundary(&self, a: u32, units: usize) -> usize {
        ((a as u128 * units as u128) / self.leaves as u128) as usize
    }

    /// Units of leaf number `leaf` when the step has `units` units:
    /// `[leaf*U/L, (leaf+1)*U/L)`. Consecutive leaves get contiguous ranges
    /// whose sizes differ by at most one; some are empty when `U < L`.
    /// Leaves outside the tree get the empty range `U..U`.
    pub const fn leaf_units(&self, leaf: u32, units: usize) -> Range<usize> {
        if leaf >= self.leaves {
            return units..units;
        }
        self.boundary(leaf, units)..self.boundary(leaf + 1, units)
    }

    /// Units computed in the subtree of sphere `id` (contiguous; empty
    /// outside the tree).
    pub const fn sphere_units(&self, id: u32, units: usize) -> Range<usize> {
        let span = self.leaf_span(id);
        if span.start == span.end {
            return 0..0;
        }
        self.boundary(span.start, units)..self.boundary(span.end, units)
    }

    /// The leaf that computes `unit` (inverse of [`Shape::leaf_units`]),
    /// `None` when `unit >= units`.
    pub const fn unit_leaf(&self, unit: usize, units: usize) -> Option<u32> {
        if unit >= units {
            return None;
        }
        // The largest j with floor(j*U/L) <= unit is the largest j with
        // j*U < (unit+1)*L, i.e. floor(((unit+1)*L - 1)/U).
        let j = ((unit as u128 + 1) * self.leaves as u128 - 1) / units as u128;
        Some(j as u32)
    }
}

impl Default for Shape {
    /// A single root (depth 0) with the kissing-number branching.
    fn default() -> Self {
        Shape {
            depth: 0,
            branching: KISSING_NUMBER,
            spheres: 1,
            leaves: 1,
        }
    }
}

/// The smallest depth whose leaf count reaches `units`, capped at
/// `max_depth` and at [`Shape::max_depth`]. When even the cap does not reach
/// `units`, the cap is returned; for `branching == 1` (one leaf at every
/// depth) deeper trees add nothing, so the answer is 0.
pub const fn optimal_depth(units: usize, branching: u32, max_depth: u32) -> Result<u32, TreeError> {
    let cap = match Shape::max_depth(branching) {
        Ok(d) if d < max_depth => d,
        Ok(_) => max_depth,
        Err(e) => return Err(e),
    };
    if branching == 1 {
        return Ok(0);
    }
    let mut d = 0;
    let mut leaves: u64 = 1;
    while d < cap && leaves < units as u64 {
        leaves *= branching as u64;
        d += 1;
    }
    Ok(d)
}

/// One sphere's record, as stored in a [`SphereTree`] arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sphere {
    /// Breadth-first id (the sphere's index in the arena).
    pub id: u32,
    /// Depth in the tree (root 0, leaves `depth`).
    pub level: u32,
    /// Position among its siblings (0 for the root).
    pub index: u32,
    /// Root, control or worker.
    pub kind: SphereKind,
    /// Whether it computes units (true for every worker, and for the root at depth 0).
    pub is_leaf: bool,
    /// Parent id, `None` for the root.
    pub parent: Option<u32>,
    /// Id of the first child (0 when `child_count == 0`).
    pub first_child: u32,
    /// Number of children (0 for leaves, `branching` otherwise).
    pub child_count: u32,
}

impl Sphere {
    /// A placeholder record to initialise arenas (`[Sphere::EMPTY; N]`).
    pub const EMPTY: Sphere = Sphere {
        id: 0,
        level: 0,
        index: 0,
        kind: SphereKind::Root,
        is_leaf: true,
        parent: None,
        first_child: 0,
        child_count: 0,
    };

    /// Ids of the children.
    pub const fn children(&self) -> Range<u32> {
        self.first_child..self.first_child + self.child_count
    }
}

/// The spheres of a [`Shape`], stored breadth-first in a caller-supplied arena.
#[derive(Clone, Copy, Debug)]
pub struct SphereTree<'a> {
    shape: Shape,
    spheres: &'a [Sphere],
}

impl<'a> SphereTree<'a> {
    /// Fills `arena[..shape.sphere_count()]` breadth-first; the rest of the
    /// arena is left untouched.
    pub fn new(shape: Shape, arena: &'a mut [Sphere]) -> Result<Self, TreeError> {
        let needed = shape.sphere_count() as usize;
        if arena.len() < needed {
            return Err(TreeError::ArenaTooSmall {
                needed,
                got: arena.len(),
            });
        }
        let spheres = &mut arena[..needed];
        let b = shape.branching;
        for level in 0..=shape.depth {
            let leaf = level == shape.depth;
            for id in shape.level_range(level) {
                let first_child = if leaf { 0 } else { b * id + 1 };
                spheres[id as usize] = Sphere {
                    id,
                    level,
                    index: if id == 0 { 0 } else { (id - 1) % b },
                    kind: if id == 0 {
                        SphereKind::Root
                    } else if leaf {
                        SphereKind::Worker
                    } else {
                        SphereKind::Control
                    },
                    is_leaf: leaf,
                    parent: if id == 0 { None } else { Some((id - 1) / b) },
                    first_child,
                    child_count: if leaf { 0 } else { b },
                };
            }
        }
        Ok(SphereTree { shape, spheres })
    }

    /// The shape this tree was built from.
    pub const fn shape(&self) -> Shape {
        self.shape
    }

    /// All spheres, breadth-first (index = id).
    pub const fn spheres(&self) -> &'a [Sphere] {
        self.spheres
    }

    /// Sphere `id`, `None` outside the tree.
    pub fn get(&self, id: u32) -> Option<&'a Sphere> {
        self.spheres.get(id as usize)
    }

    /// Sphere 0.
    pub fn root(&self) -> &'a Sphere {
        // A tree always has its root: sphere_count() >= 1.
        &self.spheres[0]
    }

    /// Parent record of `id`, `None` for the root and outside the tree.
    pub fn parent(&self, id: u32) -> Option<&'a Sphere> {
        self.get(id)?.parent.and_then(|p| self.get(p))
    }

    /// Child records of `id` (empty for leaves and outside the tree).
    pub fn children(&self, id: u32) -> &'a [Sphere] {
        match self.get(id) {
            Some(s) => &self.spheres[s.first_child as usize..][..s.child_count as usize],
            None => &[],
        }
    }

    /// Spheres of level `l` (empty for `l > depth`).
    pub fn level(&self, l: u32) -> &'a [Sphere] {
        let r = self.shape.level_range(l);
        &self.spheres[r.start as usize..r.end as usize]
    }

    /// The leaves (workers), left to right.
    pub fn leaves(&self) -> &'a [Sphere] {
        self.level(self.shape.depth)
    }
}

/// A fixed-capacity arena for up to `N` spheres, e.g. in a `static`.
#[derive(Clone, Debug)]
pub struct SphereArena<const N: usize> {
    spheres: [Sphere; N],
}

impl<const N: usize> SphereArena<N> {
    /// An arena of placeholder records.
    pub const fn new() -> Self {
        SphereArena {
            spheres: [Sphere::EMPTY; N],
        }
    }

    /// Builds `shape` in this arena.
    pub fn tree(&mut self, shape: Shape) -> Result<SphereTree<'_>, TreeError> {
        SphereTree::new(shape, &mut self.spheres)
    }
}

impl<const N: usize> Default for SphereArena<N> {
    fn default() -> Self {
        Self::new()
    }
}
