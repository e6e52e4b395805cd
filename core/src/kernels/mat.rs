//! Strided matrix views: the operands of [`Kernels::gemm`](super::Kernels::gemm).
//!
//! A view is a slice and a shape: element `(i, j)` of a `rows × cols` view
//! is `data[i*rs + j*cs]`, so a transpose ([`Mat::t`]) or a block of a
//! larger matrix is a view of the same memory, never a copy. Building a
//! view checks nothing; the GEMM checks once that the view fits its slice.

/// A read-only `rows × cols` matrix view: element `(i, j)` is `data[i*rs + j*cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a, R> {
    /// The elements (the slice may run past the view's last element).
    pub data: &'a [R],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance in `data` between vertically adjacent elements.
    pub rs: usize,
    /// Distance in `data` between horizontally adjacent elements.
    pub cs: usize,
}

/// A mutable `rows × cols` matrix view: element `(i, j)` is `data[i*rs + j*cs]`.
#[derive(Debug)]
pub struct MatMut<'a, R> {
    /// The elements (the slice may run past the view's last element).
    pub data: &'a mut [R],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance in `data` between vertically adjacent elements.
    pub rs: usize,
    /// Distance in `data` between horizontally adjacent elements.
    pub cs: usize,
}

impl<'a, R> Mat<'a, R> {
    /// A view with explicit row and column strides.
    pub fn new(data: &'a [R], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A dense row-major view (`rs = cols`, `cs = 1`).
    pub fn row_major(data: &'a [R], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A view of contiguous rows `rs` apart (`cs = 1`): a block of columns of
    /// a wider row-major matrix.
    pub fn rows_strided(data: &'a [R], rows: usize, cols: usize, rs: usize) -> Self {
        Self::new(data, rows, cols, rs, 1)
    }

    /// A single row of `cols` elements (`rs = 0`, `cs = 1`).
    pub fn row(data: &'a [R], cols: usize) -> Self {
        Self::new(data, 1, cols, 0, 1)
    }

    /// The transpose: the same memory with rows and columns swapped.
    pub fn t(self) -> Self {
        Self::new(self.data, self.cols, self.rows, self.cs, self.rs)
    }
}

impl<'a, R> MatMut<'a, R> {
    /// A view with explicit row and column strides.
    pub fn new(data: &'a mut [R], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A dense row-major view (`rs = cols`, `cs = 1`).
    pub fn row_major(data: &'a mut [R], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A view of contiguous rows `rs` apart (`cs = 1`): a block of columns of
    /// a wider row-major matrix.
    pub fn rows_strided(data: &'a mut [R], rows: usize, cols: usize, rs: usize) -> Self {
        Self::new(data, rows, cols, rs, 1)
    }

    /// A single row of `cols` elements (`rs = 0`, `cs = 1`).
    pub fn row(data: &'a mut [R], cols: usize) -> Self {
        Self::new(data, 1, cols, 0, 1)
    }

    /// The transpose: the same memory with rows and columns swapped.
    pub fn t(self) -> Self {
        Self::new(self.data, self.cols, self.rows, self.cs, self.rs)
    }

    /// The same view, read-only.
    pub fn as_mat(&self) -> Mat<'_, R> {
        Mat::new(self.data, self.rows, self.cols, self.rs, self.cs)
    }

    /// The same view, borrowed for a shorter time (to pass on and use again).
    pub fn reborrow(&mut self) -> MatMut<'_, R> {
        MatMut::new(self.data, self.rows, self.cols, self.rs, self.cs)
    }
}

/// `(m, k, n)` of the product `C[m×n] = A[m×k]·B[k×n]`, checking that the
/// three shapes agree (`op` names the caller in the message).
///
/// # Panics
/// If `a.cols != b.rows`, `c.rows != a.rows` or `c.cols != b.cols`.
#[track_caller]
pub fn product_dims<R>(
    op: &str,
    a: &Mat<'_, R>,
    b: &Mat<'_, R>,
    c: &MatMut<'_, R>,
) -> (usize, usize, usize) {
    assert!(
        a.cols == b.rows && c.rows == a.rows && c.cols == b.cols,
        "{op}: shapes do not agree: A {}×{} · B {}×{} into C {}×{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    (a.rows, a.cols, b.cols)
}

/// Checks that `c` is row-major (`cs = 1`), as the fused GEMMs
/// ([`Kernels::gemm_bias`](super::Kernels::gemm_bias),
/// [`Kernels::gemm_mul`](super::Kernels::gemm_mul)) require.
///
/// # Panics
/// If `c.cs != 1`.
#[track_caller]
pub fn assert_row_major<R>(op: &str, c: &MatMut<'_, R>) {
    assert!(
        c.cs == 1,
        "{op}: C must be row-major (column stride 1), not {}",
        c.cs
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_shape_and_strides() {
        let data = [0.0f32; 6];
        let a = Mat::row_major(&data, 2, 3).t();
        assert_eq!((a.rows, a.cols, a.rs, a.cs), (3, 2, 1, 3));
        let mut data = [0.0f32; 6];
        let c = MatMut::rows_strided(&mut data, 2, 2, 3).t();
        assert_eq!((c.rows, c.cols, c.rs, c.cs), (2, 2, 1, 3));
    }

    #[test]
    #[should_panic(expected = "gemm: shapes do not agree: A 2×3 · B 2×2 into C 2×2")]
    fn mismatched_shapes_panic_with_the_numbers() {
        let (a, b, mut c) = ([0.0f32; 6], [0.0f32; 4], [0.0f32; 4]);
        product_dims(
            "gemm",
            &Mat::row_major(&a, 2, 3),
            &Mat::row_major(&b, 2, 2),
            &MatMut::row_major(&mut c, 2, 2),
        );
    }
}
