//! Property tests of the sphere tree on random shapes, including deep ones
//! far beyond what the exhaustive test covers.
#![cfg(not(loom))]

use cllm_core::tree::{optimal_depth, Shape};
use proptest::prelude::*;

/// Any valid shape (chains capped at depth 200).
fn shape() -> impl Strategy<Value = Shape> {
    (1u32..=12)
        .prop_flat_map(|b| (0..=Shape::max_depth(b).unwrap().min(200), Just(b)))
        .prop_map(|(d, b)| Shape::new(d, b).unwrap())
}

proptest! {
    #[test]
    fn parent_child_and_bfs_order(s in shape(), r in any::<u32>()) {
        let id = r % s.sphere_count();
        let l = s.level_of(id).unwrap();
        prop_assert!(s.level_range(l).contains(&id));
        for (k, c) in s.children(id).enumerate() {
            prop_assert_eq!(s.parent(c), Some(id));
            prop_assert_eq!(s.index_among_siblings(c), Some(k as u32));
            prop_assert_eq!(s.level_of(c), Some(l + 1));
        }
        if let Some(p) = s.parent(id) {
            prop_assert!(s.children(p).contains(&id));
        }
        // Breadth-first: levels never decrease with the id, and consecutive
        // internal spheres have consecutive children.
        if id + 1 < s.sphere_count() {
            prop_assert!(s.level_of(id + 1).unwrap() >= l);
            if !s.is_leaf(id + 1) {
                prop_assert_eq!(s.children(id).end, s.children(id + 1).start);
            }
        }
        prop_assert_eq!(s.is_leaf(id), l == s.depth());
        if let Some(j) = s.leaf_index(id) {
            prop_assert_eq!(s.leaf_id(j), Some(id));
        }
    }

    #[test]
    fn leaf_units_are_contiguous_and_balanced(s in shape(), units in 0usize..=1 << 40, r in any::<u32>()) {
        let l = s.leaf_count() as usize;
        let (lo, hi) = (units / l, units.div_ceil(l));
        let j = r % s.leaf_count();
        let a = s.leaf_units(j, units);
        prop_assert!(a.len() == lo || a.len() == hi, "{:?} not in {}..={}", a, lo, hi);
        if j + 1 < s.leaf_count() {
            prop_assert_eq!(a.end, s.leaf_units(j + 1, units).start);
        }
        prop_assert_eq!(s.leaf_units(0, units).start, 0);
        prop_assert_eq!(s.leaf_units(s.leaf_count() - 1, units).end, units);
        if !a.is_empty() {
            prop_assert_eq!(s.unit_leaf(a.start, units), Some(j));
            prop_assert_eq!(s.unit_leaf(a.end - 1, units), Some(j));
        }
    }

    #[test]
    fn leaf_units_partition_small_trees(d in 0u32..=4, b in 1u32..=12, units in 0usize..5000) {
        let s = Shape::new(d, b).unwrap();
        let mut next = 0;
        let mut sizes = (usize::MAX, 0);
        for j in 0..s.leaf_count() {
            let r = s.leaf_units(j, units);
            prop_assert_eq!(r.start, next);
            next = r.end;
            sizes = (sizes.0.min(r.len()), sizes.1.max(r.len()));
        }
        prop_assert_eq!(next, units);
        prop_assert!(sizes.1 - sizes.0 <= 1);
    }

    #[test]
    fn unit_leaf_inverts(
        s in shape(),
        units in prop_oneof![1usize..2000, 1usize..=usize::MAX],
        r in any::<usize>(),
    ) {
        let u = r % units;
        let j = s.unit_leaf(u, units).unwrap();
        prop_assert!(s.leaf_units(j, units).contains(&u));
        prop_assert_eq!(s.unit_leaf(units, units), None);
        // Boundary units, where an off-by-one in the inverse would show.
        prop_assert_eq!(s.unit_leaf(units - 1, units), Some(s.leaf_count() - 1));
        let r = s.leaf_units(j, units);
        prop_assert_eq!(s.unit_leaf(r.start, units), Some(j));
        prop_assert_eq!(s.unit_leaf(r.end - 1, units), Some(j));
        if r.end < units {
            prop_assert!(s.unit_leaf(r.end, units).unwrap() > j);
        }
    }

    #[test]
    fn sphere_units_are_the_union_of_children(s in shape(), units in 0usize..100_000, r in any::<u32>()) {
        let id = r % s.sphere_count();
        let own = s.sphere_units(id, units);
        let ch = s.children(id);
        if !ch.is_empty() {
            prop_assert_eq!(s.sphere_units(ch.start, units).start, own.start);
            prop_assert_eq!(s.sphere_units(ch.end - 1, units).end, own.end);
        }
    }

    #[test]
    fn optimal_depth_is_minimal(units in 0usize..=usize::MAX, b in 1u32..=12, cap in 0u32..40) {
        let d = optimal_depth(units, b, cap).unwrap();
        let limit = cap.min(Shape::max_depth(b).unwrap());
        prop_assert!(d <= limit);
        let leaves = |d: u32| Shape::new(d, b).unwrap().leaf_count() as usize;
        if b == 1 {
            prop_assert_eq!(d, 0);
        } else {
            prop_assert!(leaves(d) >= units || d == limit);
            if d > 0 {
                prop_assert!(leaves(d - 1) < units);
            }
        }
    }
}
