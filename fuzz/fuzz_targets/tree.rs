//! Tree construction and the fold plan under arbitrary depth, branching,
//! unit and thread counts.
//!
//! Every `Shape::new` either fails with the right error or gives a shape
//! whose counts match a `u128` recount; id arithmetic (levels, parents,
//! children, leaves, spans, records) is checked for consistency on sampled
//! ids (all ids for small trees), the unit split on sampled leaves and
//! units (all leaves for small trees), `optimal_depth` for minimality, the
//! arena tree against the shape, `Segments` ownership for the thread
//! count, and `FoldPlan` by replaying it symbolically: the expression its
//! additions build must be exactly the canonical fold of the tree.

#![no_main]

use arbitrary::Arbitrary;
use cllm_core::reduce::{FoldPlan, ReduceError, Segments, MAX_DEPTH, MAX_WIDTH};
use cllm_core::tree::{
    optimal_depth, Shape, Sphere, SphereKind, SphereTree, TreeError, MAX_BRANCHING,
};
use libfuzzer_sys::fuzz_target;
use std::num::NonZeroUsize;

/// Trees up to this many spheres are checked id by id and built in an arena.
const EXHAUSTIVE_SPHERES: u32 = 512;
/// Leaf counts up to this are checked leaf by leaf.
const EXHAUSTIVE_LEAVES: u32 = 2048;
/// Fold plans up to this many units are replayed symbolically.
const REPLAY_UNITS: usize = 128;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Small values are the interesting ones; `big_*` reach the limits.
    depth: u8,
    big_depth: Option<u32>,
    branching: u8,
    big_branching: Option<u32>,
    units: u16,
    big_units: Option<u64>,
    width: u16,
    max_depth: u8,
    big_max_depth: Option<u32>,
    ids: [u32; 4],
    leaves: [u32; 4],
    unit_samples: [u64; 4],
    segment_len: u16,
    segment_params: u16,
}

/// `(spheres, leaves)` of a complete tree, or `None` when the sphere count
/// exceeds `u32::MAX`; `b >= 1`.
fn recount(depth: u32, b: u32) -> Option<(u32, u32)> {
    if b == 1 {
        return u32::try_from(u64::from(depth) + 1).ok().map(|n| (n, 1));
    }
    let (mut level, mut total) = (1u128, 1u128);
    for _ in 0..depth {
        level *= u128::from(b);
        total += level;
        if total > u128::from(u32::MAX) {
            return None;
        }
    }
    Some((total as u32, level as u32))
}

/// `b^e`, saturating (only compared against unit counts below 2^64).
fn pow_sat(b: u32, e: u32) -> u128 {
    if b <= 1 {
        // A chain can be four billion levels deep: no loop.
        return if e == 0 { 1 } else { u128::from(b) };
    }
    let mut p = 1u128;
    for _ in 0..e {
        p = p.saturating_mul(u128::from(b));
        if p > u128::from(u64::MAX) {
            return p;
        }
    }
    p
}

fn check_new(depth: u32, b: u32) -> Option<Shape> {
    let got = Shape::new(depth, b);
    if b == 0 || b > MAX_BRANCHING {
        assert_eq!(got, Err(TreeError::BadBranching { branching: b }));
        assert_eq!(
            Shape::max_depth(b),
            Err(TreeError::BadBranching { branching: b })
        );
        return None;
    }
    let max = Shape::max_depth(b).expect("valid branching");
    assert!(
        Shape::new(max, b).is_ok(),
        "max_depth({b}) = {max} is not valid"
    );
    if let Some(next) = max.checked_add(1) {
        assert!(
            Shape::new(next, b).is_err(),
            "max_depth({b}) = {max} is not the deepest"
        );
    }
    match (recount(depth, b), got) {
        (None, Err(e)) => {
            assert_eq!(
                e,
                TreeError::TooManySpheres {
                    depth,
                    branching: b
                }
            );
            assert!(depth > max);
            None
        }
        (Some((spheres, leaves)), Ok(s)) => {
            assert_eq!((s.depth(), s.branching()), (depth, b));
            assert_eq!((s.sphere_count(), s.leaf_count()), (spheres, leaves));
            assert!(depth <= max);
            Some(s)
        }
        (want, got) => panic!("Shape::new({depth}, {b}) = {got:?}, recount {want:?}"),
    }
}

fn check_levels(s: Shape) {
    let d = s.depth();
    // All levels of shallow trees; the ends of a long chain (b = 1).
    let levels: Vec<u32> = if d <= 64 {
        (0..=d + 1).collect()
    } else {
        [0, 1, 2, d - 2, d - 1, d, d + 1].to_vec()
    };
    assert_eq!(s.level_start(0), 0);
    for l in levels {
        let (start, len) = (s.level_start(l), s.level_len(l));
        if l > d {
            assert_eq!((start, len), (s.sphere_count(), 0));
            assert!(s.level_range(l).is_empty());
            continue;
        }
        assert_eq!(u128::from(len), pow_sat(s.branching(), l), "level_len({l})");
        assert_eq!(
            u64::from(s.level_start(l + 1)),
            u64::from(start) + u64::from(len),
            "levels {l} and {} are not contiguous",
            l + 1
        );
        assert_eq!(s.level_range(l), start..start + len);
    }
    assert_eq!(s.level_len(u32::MAX), 0);
    assert_eq!(s.level_start(u32::MAX), s.sphere_count());
}

fn check_id(s: Shape, id: u32, units: usize) {
    let (d, b) = (s.depth(), s.branching());
    if !s.contains(id) {
        assert!(id >= s.sphere_count());
        assert_eq!(s.level_of(id), None);
        assert_eq!(s.parent(id), None);
        assert!(s.children(id).is_empty());
        assert_eq!(s.index_among_siblings(id), None);
        assert!(!s.is_leaf(id));
        assert_eq!(s.kind(id), None);
        assert_eq!(s.leaf_index(id), None);
        assert!(s.leaf_span(id).is_empty());
        assert_eq!(s.sphere(id), None);
        assert!(s.sphere_units(id, units).is_empty());
        return;
    }
    let l = s.level_of(id).expect("id in the tree");
    assert!(s.level_range(l).contains(&id), "level_of({id}) = {l}");
    let leaf = l == d;
    assert_eq!(s.is_leaf(id), leaf, "is_leaf({id})");
    let kind = match (id, leaf) {
        (0, _) => SphereKind::Root,
        (_, true) => SphereKind::Worker,
        (_, false) => SphereKind::Control,
    };
    assert_eq!(s.kind(id), Some(kind));
    match s.parent(id) {
        None => assert_eq!(id, 0, "only the root has no parent"),
        Some(p) => {
            assert_ne!(id, 0);
            assert_eq!(s.level_of(p), Some(l - 1));
            let siblings = s.children(p);
            assert!(
                siblings.contains(&id),
                "{id} is not a child of its parent {p}"
            );
            assert_eq!(s.index_among_siblings(id), Some(id - siblings.start));
        }
    }
    if id == 0 {
        assert_eq!(s.index_among_siblings(0), Some(0));
    }
    let children = s.children(id);
    let span = s.leaf_span(id);
    assert_eq!(u128::from(span.end - span.start), pow_sat(b, d - l));
    if leaf {
        assert!(children.is_empty());
        let j = s.leaf_index(id).expect("a leaf has a leaf number");
        assert_eq!(s.leaf_id(j), Some(id));
        assert_eq!(span, j..j + 1);
    } else {
        assert_eq!(children.end - children.start, b);
        assert_eq!(s.leaf_index(id), None);
        // The first and last child bound the span; the middle ones are
        // covered when they are sampled themselves.
        for c in [children.start, children.end - 1] {
            assert_eq!(s.parent(c), Some(id), "parent of child {c} of {id}");
            assert_eq!(s.level_of(c), Some(l + 1));
        }
        assert_eq!(s.leaf_span(children.start).start, span.start);
        assert_eq!(s.leaf_span(children.end - 1).end, span.end);
    }
    let rec = s.sphere(id).expect("record");
    let want = Sphere {
        id,
        level: l,
        index: s.index_among_siblings(id).unwrap(),
        kind,
        is_leaf: leaf,
        parent: s.parent(id),
        first_child: if leaf { 0 } else { children.start },
        child_count: children.end - children.start,
    };
    assert_eq!(rec, want);
    assert_eq!(rec.children(), if leaf { 0..0 } else { children });
    let su = s.sphere_units(id, units);
    assert_eq!(su.start, s.leaf_units(span.start, units).start);
    assert_eq!(su.end, s.leaf_units(span.end - 1, units).end);
}

/// Leaf `j` of `leaves` gets `[floor(jU/L), floor((j+1)U/L))`.
fn check_leaf(s: Shape, j: u32, units: usize) {
    let leaves = s.leaf_count();
    let r = s.leaf_units(j, units);
    if j >= leaves {
        assert_eq!(r, units..units);
        assert_eq!(s.leaf_id(j), None);
        return;
    }
    let floor = |a: u32| (u128::from(a) * units as u128 / u128::from(leaves)) as usize;
    assert_eq!(r, floor(j)..floor(j + 1), "leaf_units({j}, {units})");
    let lo = units / leaves as usize;
    let len = r.end - r.start;
    assert!(
        len == lo || len == lo + 1,
        "unbalanced leaf {j}: {len} units"
    );
    let id = s.leaf_id(j).expect("leaf");
    assert_eq!(s.leaf_index(id), Some(j));
    assert_eq!(s.sphere_units(id, units), r);
}

fn check_units(s: Shape, units: usize, input: &Input) {
    let leaves = s.leaf_count();
    let mut sample: Vec<u32> = vec![0, leaves - 1, leaves, u32::MAX];
    sample.extend(input.leaves.iter().map(|&j| j % (leaves.saturating_add(1))));
    for j in sample {
        check_leaf(s, j, units);
    }
    if leaves <= EXHAUSTIVE_LEAVES {
        let mut next = 0;
        for j in 0..leaves {
            let r = s.leaf_units(j, units);
            assert_eq!(
                r.start,
                next,
                "leaf {j} does not continue leaf {}",
                j.wrapping_sub(1)
            );
            next = r.end;
        }
        assert_eq!(next, units, "the leaves do not cover every unit");
    }
    assert_eq!(s.sphere_units(0, units), 0..units);
    let mut unit_sample: Vec<usize> = vec![0, units.wrapping_sub(1), units, usize::MAX];
    unit_sample.extend(
        input
            .unit_samples
            .iter()
            .map(|&u| (u as usize) % units.saturating_add(1)),
    );
    for u in unit_sample {
        match s.unit_leaf(u, units) {
            None => assert!(u >= units, "unit_leaf({u}, {units}) = None"),
            Some(j) => {
                assert!(u < units);
                assert!(
                    s.leaf_units(j, units).contains(&u),
                    "unit_leaf({u}, {units}) = {j}"
                );
            }
        }
    }
}

fn check_optimal_depth(units: usize, b: u32, max_depth: u32) {
    let got = optimal_depth(units, b, max_depth);
    if b == 0 || b > MAX_BRANCHING {
        assert_eq!(got, Err(TreeError::BadBranching { branching: b }));
        return;
    }
    let d = got.expect("valid branching");
    let cap = max_depth.min(Shape::max_depth(b).unwrap());
    assert!(
        d <= cap,
        "optimal_depth({units}, {b}, {max_depth}) = {d} above the cap {cap}"
    );
    if b == 1 {
        assert_eq!(d, 0, "a chain never gains leaves");
        return;
    }
    let u = units as u128;
    assert!(
        d == cap || pow_sat(b, d) >= u,
        "depth {d} has too few leaves for {units}"
    );
    assert!(
        d == 0 || pow_sat(b, d - 1) < u,
        "depth {d} is not minimal for {units}"
    );
}

fn check_arena(s: Shape) {
    let n = s.sphere_count() as usize;
    let sentinel = Sphere {
        id: 0xdead,
        ..Sphere::EMPTY
    };
    let mut arena = vec![sentinel; n + 1];
    {
        let tree = SphereTree::new(s, &mut arena).expect("arena is large enough");
        assert_eq!(tree.shape(), s);
        assert_eq!(tree.spheres().len(), n);
        assert_eq!(tree.root().id, 0);
        for (i, rec) in tree.spheres().iter().enumerate() {
            let id = i as u32;
            assert_eq!(Some(*rec), s.sphere(id), "arena record {id}");
            let kids: Vec<u32> = tree.children(id).iter().map(|c| c.id).collect();
            assert_eq!(kids, s.children(id).collect::<Vec<_>>());
            assert_eq!(tree.parent(id).map(|p| p.id), s.parent(id));
        }
        let leaves: Vec<u32> = tree.leaves().iter().map(|c| c.id).collect();
        assert_eq!(leaves, s.level_range(s.depth()).collect::<Vec<_>>());
        assert!(tree.get(n as u32).is_none());
    }
    assert_eq!(arena[n], sentinel, "SphereTree::new wrote past the tree");
    let short = n - 1;
    assert_eq!(
        SphereTree::new(s, &mut arena[..short]).err(),
        Some(TreeError::ArenaTooSmall {
            needed: n,
            got: short
        })
    );
}

fn check_segments(params: usize, segment_len: usize, participants: usize) {
    let seg = Segments::with_segment_len(params, NonZeroUsize::new(segment_len).unwrap());
    assert_eq!(seg.count(), params.div_ceil(segment_len));
    let mut owner = vec![usize::MAX; params];
    for p in 0..participants {
        for s in seg.owned(p, participants) {
            assert_eq!(seg.owner(s, participants), Some(p));
            let r = seg.range(s);
            assert!(r.end <= params && r.end - r.start <= segment_len && !r.is_empty());
            for o in &mut owner[r] {
                assert_eq!(*o, usize::MAX, "element owned twice");
                *o = p;
            }
        }
    }
    assert!(
        owner.iter().all(|&o| o != usize::MAX),
        "element owned by nobody"
    );
    assert_eq!(seg.owned(participants, participants).count(), 0);
    assert!(seg.range(seg.count()).is_empty());
}

/// The canonical fold as an expression: a leaf folds its units left to
/// right, a sphere folds its non-empty children left to right.
fn canonical(s: Shape, id: u32, units: usize) -> Option<String> {
    let r = s.sphere_units(id, units);
    if r.is_empty() {
        return None;
    }
    let parts: Vec<String> = if s.is_leaf(id) {
        r.map(|u| u.to_string()).collect()
    } else {
        s.children(id)
            .filter_map(|c| canonical(s, c, units))
            .collect()
    };
    let mut it = parts.into_iter();
    let first = it.next().expect("non-empty");
    Some(it.fold(first, |acc, p| format!("({acc}+{p})")))
}

fn check_fold_plan(s: Shape, units: usize, width: usize) {
    let plan = FoldPlan::new(s, units, width);
    if width == 0 || width > MAX_WIDTH {
        assert_eq!(
            plan.err(),
            Some(ReduceError::Width {
                width,
                max: MAX_WIDTH
            })
        );
        return;
    }
    if s.depth() > MAX_DEPTH {
        assert_eq!(
            plan.err(),
            Some(ReduceError::Depth {
                depth: s.depth(),
                max: MAX_DEPTH
            })
        );
        return;
    }
    let mut plan = plan.expect("valid width and depth");
    let n_bufs = plan.buffers();
    assert_eq!(n_bufs, FoldPlan::buffers_for(s.depth(), width));
    assert_eq!(n_bufs, width + s.depth() as usize + 1);
    assert_eq!(plan.width(), width);
    assert_eq!(plan.rounds(), units.div_ceil(width));
    if units > REPLAY_UNITS {
        return;
    }
    // Replay the plan on symbolic buffers: unit u is written as "u", an
    // addition dst += src becomes "(dst+src)". Reading a buffer nothing
    // was written to, or overwriting a live partial sum, shows up as a
    // missing value or a wrong final expression.
    if units > 0 {
        assert_eq!(plan.root(), None, "root before the rounds are taken");
    }
    let mut bufs: Vec<Option<String>> = vec![None; n_bufs];
    let (mut next, mut rounds, mut adds) = (0usize, 0usize, 0usize);
    while let Some(round) = plan.next_round() {
        rounds += 1;
        let r = round.units();
        assert_eq!(r.start, next, "rounds must be consecutive");
        assert!(!round.is_empty() && round.len() <= width && round.len() == r.len());
        assert_eq!(round.buffers(), n_bufs);
        next = r.end;
        let ub: Vec<(usize, usize)> = round.unit_buffers().collect();
        assert_eq!(ub.len(), round.len());
        for (k, &(u, b)) in ub.iter().enumerate() {
            assert_eq!(u, r.start + k);
            assert_eq!(round.unit_buffer(k), Some(b));
            assert!(b < n_bufs);
            assert!(
                ub[..k].iter().all(|&(_, o)| o != b),
                "two units share buffer {b}"
            );
            bufs[b] = Some(u.to_string());
        }
        assert_eq!(round.unit_buffer(round.len()), None);
        let ops: Vec<_> = round.ops().collect();
        assert_eq!(
            ops,
            round.ops().collect::<Vec<_>>(),
            "ops() must be repeatable"
        );
        for op in ops {
            assert!(
                op.src < n_bufs && op.dst < n_bufs && op.src != op.dst,
                "{op:?}"
            );
            let src = bufs[op.src]
                .take()
                .expect("addition reads an unwritten buffer");
            let dst = bufs[op.dst]
                .take()
                .expect("addition into an unwritten buffer");
            bufs[op.dst] = Some(format!("({dst}+{src})"));
            adds += 1;
        }
    }
    assert_eq!(next, units);
    assert_eq!(rounds, plan.rounds());
    assert_eq!(
        adds,
        units.saturating_sub(1),
        "n units take n - 1 additions"
    );
    match (plan.root(), canonical(s, 0, units)) {
        (None, None) => {}
        (Some(root), Some(want)) => {
            assert!(root < n_bufs);
            assert_eq!(
                bufs[root].as_deref(),
                Some(want.as_str()),
                "not the canonical fold"
            );
        }
        (root, want) => panic!("root {root:?} but canonical fold {want:?}"),
    }
}

fuzz_target!(|input: Input| {
    let depth = input.big_depth.unwrap_or(u32::from(input.depth));
    let b = input.big_branching.unwrap_or(u32::from(input.branching));
    let units = input
        .big_units
        .map_or(usize::from(input.units), |u| u as usize);
    let max_depth = input.big_max_depth.unwrap_or(u32::from(input.max_depth));
    let width = usize::from(input.width);

    check_optimal_depth(units, b, max_depth);
    check_segments(
        usize::from(input.segment_params % 1024),
        usize::from(input.segment_len % 512) + 1,
        width % 64 + 1,
    );
    let Some(s) = check_new(depth, b) else {
        return;
    };
    check_levels(s);
    let n = s.sphere_count();
    let mut ids: Vec<u32> = vec![0, 1, n - 1, n, u32::MAX, s.level_start(s.depth())];
    ids.push(s.level_start(s.depth()).saturating_sub(1));
    ids.extend(input.ids.iter().map(|&i| i % n.saturating_add(2)));
    if n <= EXHAUSTIVE_SPHERES {
        ids.extend(0..n);
    }
    for id in ids {
        check_id(s, id, units);
    }
    check_units(s, units, &input);
    if n <= EXHAUSTIVE_SPHERES {
        check_arena(s);
    }
    check_fold_plan(s, units, width);
});
