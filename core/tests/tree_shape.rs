//! Exhaustive checks of the sphere tree for every branching 1..=12 and
//! every depth whose sphere count is at most ~30,000.
#![cfg(not(loom))]

use cllm_core::tree::{
    optimal_depth, Shape, Sphere, SphereArena, SphereKind, SphereTree, TreeError, KISSING_NUMBER,
};

const MAX_SPHERES: u32 = 30_000;

/// Every shape with at most MAX_SPHERES spheres (chains capped at depth 64).
fn small_shapes() -> Vec<Shape> {
    let mut v = Vec::new();
    for b in 1..=12 {
        for d in 0.. {
            match Shape::new(d, b) {
                Ok(s) if s.sphere_count() <= MAX_SPHERES && (b > 1 || d <= 64) => v.push(s),
                _ => break,
            }
        }
    }
    v
}

#[test]
fn kissing_numbers_match_the_design() {
    assert_eq!(KISSING_NUMBER, 12);
    let counts: Vec<u32> = (0..=4)
        .map(|d| Shape::new(d, KISSING_NUMBER).unwrap().sphere_count())
        .collect();
    assert_eq!(counts, [1, 13, 157, 1_885, 22_621]);
    let leaves: Vec<u32> = (0..=4)
        .map(|d| Shape::new(d, KISSING_NUMBER).unwrap().leaf_count())
        .collect();
    assert_eq!(leaves, [1, 12, 144, 1_728, 20_736]);
    assert_eq!(Shape::default(), Shape::new(0, 12).unwrap());
}

#[test]
fn counts_follow_the_closed_form() {
    for b in 1..=12u32 {
        let max = Shape::max_depth(b).unwrap();
        for d in 0..=max.min(40) {
            let s = Shape::new(d, b).unwrap();
            let expected: u64 = if b == 1 {
                d as u64 + 1
            } else {
                ((b as u64).pow(d + 1) - 1) / (b as u64 - 1)
            };
            assert_eq!(s.sphere_count() as u64, expected, "d={d} b={b}");
            assert_eq!(s.leaf_count() as u64, (b as u64).pow(d));
        }
    }
}

#[test]
fn id_arithmetic_is_consistent_for_all_small_shapes() {
    let shapes = small_shapes();
    assert!(shapes.len() > 100);
    for s in shapes {
        let (d, b) = (s.depth(), s.branching());
        let ctx = format!("d={d} b={b}");
        // Levels tile 0..count.
        assert_eq!(s.level_start(0), 0);
        for l in 0..=d {
            assert_eq!(
                s.level_start(l + 1),
                s.level_start(l) + s.level_len(l),
                "{ctx}"
            );
            assert_eq!(s.level_len(l), b.pow(l), "{ctx}");
        }
        assert_eq!(s.level_start(d + 1), s.sphere_count());
        assert_eq!(s.level_len(d + 1), 0);
        assert_eq!(s.level_range(d + 5), s.sphere_count()..s.sphere_count());

        let mut next_child = 1; // BFS: internal spheres' children are consecutive
        for id in 0..s.sphere_count() {
            let l = s.level_of(id).unwrap();
            assert!(s.level_range(l).contains(&id), "{ctx} id={id}");
            let leaf = l == d;
            assert_eq!(s.is_leaf(id), leaf);
            match s.parent(id) {
                None => assert_eq!(id, 0),
                Some(p) => {
                    assert!(s.children(p).contains(&id), "{ctx} id={id}");
                    assert_eq!(s.level_of(p), Some(l - 1));
                    assert_eq!(s.index_among_siblings(id), Some(id - s.children(p).start));
                }
            }
            let kind = s.kind(id).unwrap();
            match (id, leaf) {
                (0, _) => assert_eq!(kind, SphereKind::Root),
                (_, true) => assert_eq!(kind, SphereKind::Worker),
                (_, false) => assert_eq!(kind, SphereKind::Control),
            }
            let ch = s.children(id);
            if leaf {
                assert!(ch.is_empty());
                let j = s.leaf_index(id).unwrap();
                assert_eq!(s.leaf_id(j), Some(id));
                assert_eq!(s.leaf_span(id), j..j + 1);
            } else {
                assert_eq!(ch.start, next_child, "{ctx} id={id}");
                assert_eq!(ch.len() as u32, b);
                next_child = ch.end;
                for c in ch.clone() {
                    assert_eq!(s.parent(c), Some(id));
                }
                assert_eq!(s.leaf_index(id), None);
                // A sphere's leaves are its children's leaves, in order.
                let span = s.leaf_span(id);
                assert_eq!(s.leaf_span(ch.start).start, span.start);
                assert_eq!(s.leaf_span(ch.end - 1).end, span.end);
            }
        }
        assert_eq!(next_child, s.sphere_count());
        assert_eq!(s.leaf_span(0), 0..s.leaf_count());

        // The arena holds the same records.
        let mut arena = vec![Sphere::EMPTY; s.sphere_count() as usize + 3];
        let tree = SphereTree::new(s, &mut arena).unwrap();
        assert_eq!(tree.spheres().len(), s.sphere_count() as usize);
        for (i, rec) in tree.spheres().iter().enumerate() {
            assert_eq!(Some(*rec), s.sphere(i as u32), "{ctx} id={i}");
            assert_eq!(rec.children(), s.children(rec.id));
            assert!(tree
                .children(rec.id)
                .iter()
                .all(|c| c.parent == Some(rec.id)));
            assert_eq!(tree.parent(rec.id).map(|p| p.id), rec.parent);
        }
        assert_eq!(tree.leaves().len() as u32, s.leaf_count());
        assert!(tree.leaves().iter().all(|x| x.is_leaf));
        assert_eq!(tree.root().kind, SphereKind::Root);
        assert_eq!(tree.level(d + 1).len(), 0);
    }
}

#[test]
fn out_of_range_ids_are_none_or_empty() {
    for (d, b) in [(0, 12), (2, 3), (3, 1)] {
        let s = Shape::new(d, b).unwrap();
        let n = s.sphere_count();
        for id in [n, n + 1, u32::MAX] {
            assert!(!s.contains(id));
            assert_eq!(s.level_of(id), None);
            assert_eq!(s.parent(id), None);
            assert!(s.children(id).is_empty());
            assert_eq!(s.kind(id), None);
            assert_eq!(s.index_among_siblings(id), None);
            assert!(!s.is_leaf(id));
            assert_eq!(s.sphere(id), None);
            assert!(s.leaf_span(id).is_empty());
            assert!(s.sphere_units(id, 10).is_empty());
        }
        assert_eq!(s.leaf_id(s.leaf_count()), None);
        assert_eq!(s.leaf_units(s.leaf_count(), 10), 10..10);
        let mut arena = vec![Sphere::EMPTY; n as usize];
        let tree = SphereTree::new(s, &mut arena).unwrap();
        assert!(tree.get(n).is_none());
        assert!(tree.children(n).is_empty());
        assert!(tree.parent(0).is_none());
    }
}

#[test]
fn depth_zero_root_is_the_only_worker() {
    let s = Shape::new(0, 12).unwrap();
    assert_eq!(s.sphere_count(), 1);
    assert_eq!(s.kind(0), Some(SphereKind::Root));
    assert!(s.is_leaf(0));
    assert_eq!(s.leaf_index(0), Some(0));
    assert_eq!(s.leaf_units(0, 7), 0..7);
    let mut arena = SphereArena::<1>::new();
    let tree = arena.tree(s).unwrap();
    assert!(tree.root().is_leaf);
    assert_eq!(tree.leaves().len(), 1);
}

#[test]
fn overflowing_shapes_are_errors_with_their_numbers() {
    assert_eq!(Shape::new(8, 12).unwrap().sphere_count(), 469_070_941);
    assert_eq!(
        Shape::new(9, 12),
        Err(TreeError::TooManySpheres {
            depth: 9,
            branching: 12
        })
    );
    assert_eq!(Shape::new(31, 2).unwrap().sphere_count(), u32::MAX);
    assert_eq!(
        Shape::new(32, 2),
        Err(TreeError::TooManySpheres {
            depth: 32,
            branching: 2
        })
    );
    assert_eq!(
        Shape::new(u32::MAX - 1, 1).unwrap().sphere_count(),
        u32::MAX
    );
    assert_eq!(
        Shape::new(u32::MAX, 1),
        Err(TreeError::TooManySpheres {
            depth: u32::MAX,
            branching: 1
        })
    );
    assert_eq!(
        Shape::new(1000, 3),
        Err(TreeError::TooManySpheres {
            depth: 1000,
            branching: 3
        })
    );
    assert_eq!(
        Shape::new(0, 0),
        Err(TreeError::BadBranching { branching: 0 })
    );
    assert_eq!(
        Shape::new(2, 13),
        Err(TreeError::BadBranching { branching: 13 })
    );
    assert_eq!(Shape::max_depth(12), Ok(8));
    assert_eq!(Shape::max_depth(2), Ok(31));
    assert_eq!(Shape::max_depth(1), Ok(u32::MAX - 1));
    assert_eq!(
        Shape::max_depth(13),
        Err(TreeError::BadBranching { branching: 13 })
    );
    for b in 2..=12 {
        let m = Shape::max_depth(b).unwrap();
        assert!(Shape::new(m, b).is_ok() && Shape::new(m + 1, b).is_err());
    }
    let msg = Shape::new(9, 12).unwrap_err().to_string();
    assert!(
        msg.contains("depth 9") && msg.contains("branching 12"),
        "{msg}"
    );
    assert!(Shape::new(0, 13).unwrap_err().to_string().contains("13"));
}

#[test]
fn small_arenas_are_errors_with_their_numbers() {
    let s = Shape::new(2, 12).unwrap();
    let mut arena = vec![Sphere::EMPTY; 156];
    let err = SphereTree::new(s, &mut arena).unwrap_err();
    assert_eq!(
        err,
        TreeError::ArenaTooSmall {
            needed: 157,
            got: 156
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("157") && msg.contains("156"), "{msg}");
    let mut small = SphereArena::<13>::new();
    assert_eq!(
        small.tree(s).unwrap_err(),
        TreeError::ArenaTooSmall {
            needed: 157,
            got: 13
        }
    );
    let mut exact = SphereArena::<157>::default();
    assert_eq!(exact.tree(s).unwrap().spheres().len(), 157);
}

#[test]
fn leaf_units_examples() {
    let s = Shape::new(1, 3).unwrap(); // 3 leaves
    let ranges = |u| (0..3).map(|j| s.leaf_units(j, u)).collect::<Vec<_>>();
    assert_eq!(ranges(2), [0..0, 0..1, 1..2]);
    assert_eq!(ranges(7), [0..2, 2..4, 4..7]);
    assert_eq!(ranges(0), [0..0, 0..0, 0..0]);
    assert_eq!(ranges(3), [0..1, 1..2, 2..3]);
    assert_eq!(s.unit_leaf(0, 2), Some(1));
    assert_eq!(s.unit_leaf(1, 2), Some(2));
    assert_eq!(s.unit_leaf(2, 2), None);
    assert_eq!(s.sphere_units(0, 7), 0..7);
    // Huge unit counts do not overflow.
    let big = Shape::new(8, 12).unwrap();
    let last = big.leaf_count() - 1;
    assert_eq!(big.leaf_units(last, usize::MAX).end, usize::MAX);
    assert_eq!(big.unit_leaf(usize::MAX - 1, usize::MAX), Some(last));
    assert_eq!(big.unit_leaf(0, usize::MAX), Some(0));
}

#[test]
fn unit_leaf_inverts_leaf_units_exhaustively() {
    for s in small_shapes().into_iter().filter(|s| s.leaf_count() <= 200) {
        for units in 0..=250 {
            let mut next = 0;
            for j in 0..s.leaf_count() {
                let r = s.leaf_units(j, units);
                assert_eq!(r.start, next);
                next = r.end;
                for u in r {
                    assert_eq!(s.unit_leaf(u, units), Some(j));
                }
            }
            assert_eq!(next, units);
        }
    }
}

#[test]
fn optimal_depth_examples() {
    let od = |u, b, m| optimal_depth(u, b, m).unwrap();
    assert_eq!(od(0, 12, 8), 0);
    assert_eq!(od(1, 12, 8), 0);
    assert_eq!(od(2, 12, 8), 1);
    assert_eq!(od(12, 12, 8), 1);
    assert_eq!(od(13, 12, 8), 2);
    assert_eq!(od(144, 12, 8), 2);
    assert_eq!(od(145, 12, 8), 3);
    assert_eq!(od(1_000_000, 12, 2), 2); // capped by the caller
    assert_eq!(od(usize::MAX, 12, 100), 8); // capped by representability
    assert_eq!(od(usize::MAX, 2, 100), 31);
    assert_eq!(od(1000, 1, 100), 0); // chains never add leaves
    assert_eq!(od(5, 2, 8), 3);
    assert_eq!(
        optimal_depth(5, 0, 8),
        Err(TreeError::BadBranching { branching: 0 })
    );
}
