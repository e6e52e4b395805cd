//! Portable, cache-blocked GEMM with a fixed summation order.
//!
//! Every element is computed as
//! `C[i][j] ← (((C[i][j] + A[i][0]·B[0][j]) + A[i][1]·B[1][j]) + …)`,
//! one rounding per `*` and `+` (Rust never contracts into FMA), in
//! increasing order of the shared index, whatever the strides, sizes or block
//! boundaries. So the result is bit-identical on every platform, does not
//! depend on `m` (row `i` of `C` is a function of row `i` of `A` only), and
//! equals a naive triple loop bit for bit (tested below).
//!
//! Speed comes from the loop nest, not from reordering: the shared dimension
//! is cut into `KC`-deep slabs and the columns into `NC`-wide panels that stay
//! in L1; within a panel, a 4-row × 4-deep micro-kernel updates four
//! contiguous rows of `C` per pass over four contiguous rows of `B`, so each
//! lane `j` is an independent chain that LLVM vectorises. When `B`'s rows are
//! not contiguous (`b.cs != 1`, e.g. a transposed weight), the panel is first
//! packed into a small stack buffer.

use super::{product_dims, Mat, MatMut};
use crate::real::Real;

/// Columns of `C` (and of the packed `B` panel) per block.
pub const NC: usize = 64;
/// Depth of the shared dimension per block.
pub const KC: usize = 32;

/// Length a strided `rows × cols` matrix needs: `(rows−1)·rs + (cols−1)·cs + 1`
/// (0 when empty), or `None` on overflow.
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

/// `C = A·B` or `C += A·B`; see [`crate::kernels::Kernels::gemm`] for the
/// views and the module docs for the summation order.
///
/// # Panics
/// If the shapes do not agree, if a slice is shorter than its view needs, or
/// if `C`'s rows overlap (`m > 1`, `c.cs == 1`, `c.rs < n`).
pub fn gemm<R: Real>(a: Mat<'_, R>, b: Mat<'_, R>, c: MatMut<'_, R>, accumulate: bool) {
    let (m, k, n) = product_dims("gemm", &a, &b, &c);
    let (rsc, csc) = (c.rs, c.cs);
    let (na, nb, nc) = (
        span(m, k, a.rs, a.cs),
        span(k, n, b.rs, b.cs),
        span(m, n, rsc, csc),
    );
    assert!(
        na.is_some_and(|x| x <= a.data.len()) && nb.is_some_and(|x| x <= b.data.len()) && nc.is_some_and(|x| x <= c.data.len()),
        "gemm {m}x{k}x{n}: A needs {na:?} (has {}), B needs {nb:?} (has {}), C needs {nc:?} (has {})",
        a.data.len(),
        b.data.len(),
        c.data.len()
    );
    assert!(
        !(m > 1 && csc == 1 && rsc < n),
        "gemm: rows of C overlap (rsc {rsc} < n {n})"
    );
    if m == 0 || n == 0 {
        return;
    }
    if !accumulate {
        for i in 0..m {
            if csc == 1 {
                c.data[i * rsc..i * rsc + n].fill(R::ZERO);
            } else {
                for j in 0..n {
                    c.data[i * rsc + j * csc] = R::ZERO;
                }
            }
        }
    }
    if k == 0 {
        return;
    }
    if csc != 1 {
        strided(a, b, c);
        return;
    }
    let mut jc = 0;
    while jc < n {
        let nbk = (n - jc).min(NC);
        let mut pc = 0;
        while pc < k {
            let kb = (k - pc).min(KC);
            let blk = Block {
                m,
                kb,
                nb: nbk,
                pc,
                jc,
            };
            if b.cs == 1 {
                panel(&blk, a, &b.data[pc * b.rs + jc..], b.rs, c.data, rsc);
            } else {
                packed_panel(&blk, a, b, c.data, rsc);
            }
            pc += kb;
        }
        jc += nbk;
    }
}

/// One block of the loop nest: all `m` rows, shared indices `pc..pc+kb`,
/// columns `jc..jc+nb`.
struct Block {
    m: usize,
    kb: usize,
    nb: usize,
    pc: usize,
    jc: usize,
}

/// Packs the `kb × nb` block of a non-contiguous `B` into a stack buffer
/// (row stride `nb`), then runs the panel. Kept out of line so callers with
/// contiguous `B` do not reserve the buffer's stack.
#[inline(never)]
fn packed_panel<R: Real>(blk: &Block, a: Mat<'_, R>, b: Mat<'_, R>, c: &mut [R], rsc: usize) {
    let Mat {
        data: b,
        rs: rsb,
        cs: csb,
        ..
    } = b;
    let mut buf = [R::ZERO; KC * NC];
    let (kb, nb) = (blk.kb, blk.nb);
    for j in 0..nb {
        let col = (blk.jc + j) * csb + blk.pc * rsb;
        for p in 0..kb {
            buf[p * nb + j] = b[col + p * rsb];
        }
    }
    panel(blk, a, &buf, nb, c, rsc);
}

/// `C[:, jc..jc+nb] += A[:, pc..pc+kb] · Bblk` where row `p` of `Bblk` is
/// `bp[p*ldb .. p*ldb+nb]`.
#[inline(always)]
fn panel<R: Real>(blk: &Block, a: Mat<'_, R>, bp: &[R], ldb: usize, c: &mut [R], rsc: usize) {
    let Block { m, kb, nb, pc, jc } = *blk;
    let Mat {
        data: a,
        rs: rsa,
        cs: csa,
        ..
    } = a;
    let brow = |p: usize| &bp[p * ldb..p * ldb + nb];
    let mut i = 0;
    // Four rows at a time share each load of B; needs disjoint rows (m >= 4
    // implies rsc >= n >= nb, checked by the caller).
    while i + 4 <= m {
        let rest = &mut c[i * rsc + jc..];
        let (c0, rest) = rest.split_at_mut(rsc);
        let (c1, rest) = rest.split_at_mut(rsc);
        let (c2, rest) = rest.split_at_mut(rsc);
        let (c0, c1, c2, c3) = (&mut c0[..nb], &mut c1[..nb], &mut c2[..nb], &mut rest[..nb]);
        let ar = |r: usize, p: usize| a[(i + r) * rsa + (pc + p) * csa];
        let mut p = 0;
        while p + 4 <= kb {
            let (b0, b1, b2, b3) = (brow(p), brow(p + 1), brow(p + 2), brow(p + 3));
            let a0 = [ar(0, p), ar(0, p + 1), ar(0, p + 2), ar(0, p + 3)];
            let a1 = [ar(1, p), ar(1, p + 1), ar(1, p + 2), ar(1, p + 3)];
            let a2 = [ar(2, p), ar(2, p + 1), ar(2, p + 2), ar(2, p + 3)];
            let a3 = [ar(3, p), ar(3, p + 1), ar(3, p + 2), ar(3, p + 3)];
            for j in 0..nb {
                let (x0, x1, x2, x3) = (b0[j], b1[j], b2[j], b3[j]);
                c0[j] = c0[j] + a0[0] * x0 + a0[1] * x1 + a0[2] * x2 + a0[3] * x3;
                c1[j] = c1[j] + a1[0] * x0 + a1[1] * x1 + a1[2] * x2 + a1[3] * x3;
                c2[j] = c2[j] + a2[0] * x0 + a2[1] * x1 + a2[2] * x2 + a2[3] * x3;
                c3[j] = c3[j] + a3[0] * x0 + a3[1] * x1 + a3[2] * x2 + a3[3] * x3;
            }
            p += 4;
        }
        while p < kb {
            let b0 = brow(p);
            let (s0, s1, s2, s3) = (ar(0, p), ar(1, p), ar(2, p), ar(3, p));
            for j in 0..nb {
                let x = b0[j];
                c0[j] += s0 * x;
                c1[j] += s1 * x;
                c2[j] += s2 * x;
                c3[j] += s3 * x;
            }
            p += 1;
        }
        i += 4;
    }
    while i < m {
        let c0 = &mut c[i * rsc + jc..i * rsc + jc + nb];
        let ar = |p: usize| a[i * rsa + (pc + p) * csa];
        let mut p = 0;
        while p + 4 <= kb {
            let (b0, b1, b2, b3) = (brow(p), brow(p + 1), brow(p + 2), brow(p + 3));
            let (s0, s1, s2, s3) = (ar(p), ar(p + 1), ar(p + 2), ar(p + 3));
            for j in 0..nb {
                c0[j] = c0[j] + s0 * b0[j] + s1 * b1[j] + s2 * b2[j] + s3 * b3[j];
            }
            p += 4;
        }
        while p < kb {
            let b0 = brow(p);
            let s0 = ar(p);
            for j in 0..nb {
                c0[j] += s0 * b0[j];
            }
            p += 1;
        }
        i += 1;
    }
}

/// Element-at-a-time fallback for a `C` with non-unit column stride (the
/// model never asks for one); same summation order.
fn strided<R: Real>(a: Mat<'_, R>, b: Mat<'_, R>, c: MatMut<'_, R>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let Mat {
        data: a,
        rs: rsa,
        cs: csa,
        ..
    } = a;
    let Mat {
        data: b,
        rs: rsb,
        cs: csb,
        ..
    } = b;
    let MatMut {
        data: c,
        rs: rsc,
        cs: csc,
        ..
    } = c;
    for i in 0..m {
        for j in 0..n {
            let mut acc = c[i * rsc + j * csc];
            for p in 0..k {
                acc += a[i * rsa + p * csa] * b[p * rsb + j * csb];
            }
            c[i * rsc + j * csc] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::rng::Rng;
    use std::vec::Vec;

    /// The defining loop: the portable gemm must equal it bit for bit.
    fn naive(a: Mat<f32>, b: Mat<f32>, c: MatMut<f32>, acc: bool) {
        let at = |i: usize, j: usize| i * c.rs + j * c.cs;
        for i in 0..a.rows {
            for j in 0..b.cols {
                let mut s = if acc { c.data[at(i, j)] } else { 0.0 };
                for p in 0..a.cols {
                    s += a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
                }
                c.data[at(i, j)] = s;
            }
        }
    }

    fn rand_vec(r: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.normal() as f32).collect()
    }

    #[test]
    fn equals_naive_loop_bitwise_for_all_layouts() {
        let mut r = Rng::new(1);
        // Sizes straddle the block edges (KC = 32, NC = 64) and the 4x4 micro-kernel.
        let sizes = [
            (1, 1, 1),
            (3, 5, 7),
            (4, 4, 4),
            (5, 33, 65),
            (9, 64, 130),
            (17, 70, 3),
            (2, 31, 64),
        ];
        for &(m, k, n) in &sizes {
            for ta in [false, true] {
                for tb in [false, true] {
                    for tc in [false, true] {
                        for acc in [false, true] {
                            let sa = if ta { (1, m) } else { (k, 1) };
                            let sb = if tb { (1, k) } else { (n, 1) };
                            let sc = if tc { (1, m) } else { (n, 1) };
                            let a = rand_vec(&mut r, m * k);
                            let b = rand_vec(&mut r, k * n);
                            let c0 = rand_vec(&mut r, m * n);
                            let (mut c1, mut c2) = (c0.clone(), c0.clone());
                            let av = Mat::new(&a, m, k, sa.0, sa.1);
                            let bv = Mat::new(&b, k, n, sb.0, sb.1);
                            gemm(av, bv, MatMut::new(&mut c1, m, n, sc.0, sc.1), acc);
                            naive(av, bv, MatMut::new(&mut c2, m, n, sc.0, sc.1), acc);
                            let same = c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits());
                            assert!(same, "m{m} k{k} n{n} ta{ta} tb{tb} tc{tc} acc{acc}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn row_result_does_not_depend_on_other_rows() {
        let mut r = Rng::new(2);
        let (m, k, n) = (9, 40, 70);
        let a = rand_vec(&mut r, m * k);
        let b = rand_vec(&mut r, k * n);
        let mut full = std::vec![0.0f32; m * n];
        let bv = Mat::row_major(&b, k, n);
        gemm(
            Mat::row_major(&a, m, k),
            bv,
            MatMut::row_major(&mut full, m, n),
            false,
        );
        for i in 0..m {
            let mut one = std::vec![0.0f32; n];
            let ai = Mat::row_major(&a[i * k..], 1, k);
            gemm(ai, bv, MatMut::row_major(&mut one, 1, n), false);
            assert!(one
                .iter()
                .zip(&full[i * n..])
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    fn degenerate_sizes() {
        let (a, b) = (Mat::new(&[], 2, 0, 0, 0), Mat::new(&[], 0, 2, 0, 0));
        let mut c = [5.0f32; 4];
        gemm(a, b, MatMut::row_major(&mut c, 2, 2), false);
        assert_eq!(c, [0.0; 4]);
        let mut c = [5.0f32; 4];
        gemm(a, b, MatMut::row_major(&mut c, 2, 2), true);
        assert_eq!(c, [5.0; 4]);
        let (a, b) = (
            Mat::new(&[], 0, 3, 0, 0),
            Mat::row_major(&[0.0f32; 6], 3, 2),
        );
        gemm(a, b, MatMut::new(&mut [], 0, 2, 0, 1), false);
    }

    #[test]
    #[should_panic(expected = "gemm 2x3x2")]
    fn short_slice_panics_with_sizes() {
        let mut c = [0.0f32; 4];
        let (a, b) = (
            Mat::row_major(&[1.0; 5], 2, 3),
            Mat::row_major(&[1.0; 6], 3, 2),
        );
        gemm(a, b, MatMut::row_major(&mut c, 2, 2), false);
    }
}
