//! Fused CPU kernels with backward passes for the hot parts of the MLPs: bias + ReLU and
//! LayerNorm + affine + ReLU. candle's generic element-wise path walks broadcast layouts
//! one index at a time; these run one tight loop per row. On other devices the same maths
//! runs as ordinary candle ops.
//!
//! Parameters are either one vector `[out]` shared by every row, or one per ensemble member
//! (`[n, 1, out]` for inputs `[n, batch, out]`).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, Layout, Shape, Storage, Tensor};

use crate::error::Result;

/// LayerNorm's ε (added to the variance), as PyTorch's default.
pub const LN_EPS: f64 = 1e-5;

type CResult<T> = candle_core::Result<T>;

fn err(m: &str) -> candle_core::Error {
    candle_core::Error::Msg(m.to_string())
}

/// The f32 values of a contiguous CPU tensor.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> CResult<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => Err(err("fused op: expected a contiguous f32 tensor")),
    }
}

/// The f32 values of a contiguous CPU tensor, mutably.
pub(crate) fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> CResult<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => Err(err("in-place op: expected a contiguous f32 tensor")),
    }
}

fn with_host<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> CResult<R>) -> CResult<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(slice(c, l)?),
        _ => Err(err("fused op: backward on a non-CPU tensor")),
    }
}

/// Rows of `width` values, and how many consecutive rows share one parameter vector.
fn grouping(x_len: usize, width: usize, param_len: usize) -> CResult<(usize, usize)> {
    if width == 0
        || !x_len.is_multiple_of(width)
        || !param_len.is_multiple_of(width)
        || param_len == 0
    {
        return Err(err("fused op: parameter does not match the last dimension"));
    }
    let rows = x_len / width;
    let groups = param_len / width;
    if !rows.is_multiple_of(groups) {
        return Err(err(
            "fused op: rows do not split evenly over ensemble members",
        ));
    }
    Ok((rows, rows / groups))
}

/// `act(x + b)` with `act` ReLU or identity.
pub fn bias_act(x: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let y = x.broadcast_add(b)?;
        return Ok(if relu { y.relu()? } else { y });
    }
    Ok(x.contiguous()?
        .apply_op2(&b.contiguous()?, BiasAct { relu })?)
}

struct BiasAct {
    relu: bool,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = slice(s1, l1)?;
        let b = slice(s2, l2)?;
        let w = l1.dims().last().copied().unwrap_or(0);
        let (_, per) = grouping(x.len(), w, b.len())?;
        let mut y = vec![0f32; x.len()];
        for (r, (yr, xr)) in y.chunks_exact_mut(w).zip(x.chunks_exact(w)).enumerate() {
            let br = &b[(r / per) * w..(r / per + 1) * w];
            if self.relu {
                for ((y, x), b) in yr.iter_mut().zip(xr).zip(br) {
                    *y = (x + b).max(0.0);
                }
            } else {
                for ((y, x), b) in yr.iter_mut().zip(xr).zip(br) {
                    *y = x + b;
                }
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let gx = if self.relu {
            grad.contiguous()?
                .apply_op2_no_bwd(&res.contiguous()?, &ReluMask)?
        } else {
            grad.clone()
        };
        let w = grad.dims().last().copied().unwrap_or(0);
        let gb = with_host(&gx, |g| {
            let (_, per) = grouping(g.len(), w, b.elem_count())?;
            let mut out = vec![0f32; b.elem_count()];
            for (r, gr) in g.chunks_exact(w).enumerate() {
                let o = &mut out[(r / per) * w..(r / per + 1) * w];
                for (o, g) in o.iter_mut().zip(gr) {
                    *o += g;
                }
            }
            Tensor::from_vec(out, b.shape(), b.device())
        })?;
        Ok((Some(gx), Some(gb)))
    }
}

/// `g ⊙ [y > 0]` (the ReLU's backward, from its output).
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "relu-mask"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let g = slice(s1, l1)?;
        let y = slice(s2, l2)?;
        let out = g
            .iter()
            .zip(y)
            .map(|(g, y)| if *y > 0.0 { *g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `act(LayerNorm(x) ⊙ g + b)` over the last dimension.
pub fn ln_act(x: &Tensor, g: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc
            .broadcast_div(&(var + LN_EPS)?.sqrt()?)?
            .broadcast_mul(g)?
            .broadcast_add(b)?;
        return Ok(if relu { y.relu()? } else { y });
    }
    Ok(x.contiguous()?
        .apply_op3(&g.contiguous()?, &b.contiguous()?, LnAct { relu })?)
}

struct LnAct {
    relu: bool,
}

/// Mean and 1/σ of one row.
fn row_stats(x: &[f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + LN_EPS as f32).sqrt())
}

impl CustomOp3 for LnAct {
    fn name(&self) -> &'static str {
        "layer-norm-act"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = slice(s1, l1)?;
        let g = slice(s2, l2)?;
        let b = slice(s3, l3)?;
        let w = l1.dims().last().copied().unwrap_or(0);
        let (_, per) = grouping(x.len(), w, g.len())?;
        if b.len() != g.len() {
            return Err(err("layer norm: scale and shift differ in size"));
        }
        let mut y = vec![0f32; x.len()];
        for (r, (yr, xr)) in y.chunks_exact_mut(w).zip(x.chunks_exact(w)).enumerate() {
            let k = (r / per) * w;
            let (gr, br) = (&g[k..k + w], &b[k..k + w]);
            let (mean, rstd) = row_stats(xr);
            for (((y, x), g), b) in yr.iter_mut().zip(xr).zip(gr).zip(br) {
                let v = (x - mean) * rstd * g + b;
                *y = if self.relu { v.max(0.0) } else { v };
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let w = x.dims().last().copied().unwrap_or(0);
        let relu = self.relu;
        let (dx, dg, db) = with_host(x, |xs| {
            with_host(g, |gs| {
                with_host(res, |ys| {
                    with_host(grad, |dys| {
                        let (_, per) = grouping(xs.len(), w, gs.len())?;
                        let mut dx = vec![0f32; xs.len()];
                        let mut dg = vec![0f32; gs.len()];
                        let mut db = vec![0f32; gs.len()];
                        let mut dz = vec![0f32; w];
                        let mut xhat = vec![0f32; w];
                        for r in 0..xs.len() / w {
                            let span = r * w..(r + 1) * w;
                            let (xr, yr, dyr) =
                                (&xs[span.clone()], &ys[span.clone()], &dys[span.clone()]);
                            let k = (r / per) * w;
                            let gr = &gs[k..k + w];
                            let (mean, rstd) = row_stats(xr);
                            let (mut s1, mut s2) = (0f32, 0f32);
                            for j in 0..w {
                                xhat[j] = (xr[j] - mean) * rstd;
                                dz[j] = if relu && yr[j] <= 0.0 { 0.0 } else { dyr[j] };
                                dg[k + j] += dz[j] * xhat[j];
                                db[k + j] += dz[j];
                                let dxh = dz[j] * gr[j];
                                s1 += dxh;
                                s2 += dxh * xhat[j];
                            }
                            let (m1, m2) = (s1 / w as f32, s2 / w as f32);
                            for j in 0..w {
                                dx[span.start + j] = rstd * (dz[j] * gr[j] - m1 - xhat[j] * m2);
                            }
                        }
                        Ok((dx, dg, db))
                    })
                })
            })
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dg, g.shape(), g.device())?),
            Some(Tensor::from_vec(db, g.shape(), g.device())?),
        ))
    }
}

/// A row-major view for [`mm`]: values, row stride, column stride.
type View<'a> = (&'a [f32], usize, usize);

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` on strided views, bounds-checked, through `gemm`.
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    lhs: View,
    rhs: View,
    accumulate: bool,
    parallel: bool,
) -> CResult<()> {
    let fits = |len: usize, rows: usize, cols: usize, rs: usize, cs: usize| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
    };
    if !(fits(dst.len(), m, n, dst_rs, 1)
        && fits(lhs.0.len(), m, k, lhs.1, lhs.2)
        && fits(rhs.0.len(), k, n, rhs.1, rhs.2))
    {
        return Err(err("linear: matrix view out of bounds"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return Ok(());
    }
    let par = if parallel {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index the views can reach was checked to lie inside its slice above, the
    // destination is a unique borrow and does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// `act(x · W + b)`: a linear layer (W `[in, out]`, b `[out]`, x `[batch, in]`) or an ensemble
/// of them (W `[n, in, out]`, b `[n, 1, out]`, x `[batch, in]` shared or `[n, batch, in]`),
/// in one fused CPU op. Ensemble members run in parallel, one core each; the backward pass
/// computes only the gradients of inputs that need one (candle's matmul computes both sides
/// always, which wastes the critic's weight gradients in the actor loss).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return bias_act(&x.broadcast_matmul(w)?, b, relu);
    }
    Ok(x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear { relu })?)
}

struct Linear {
    relu: bool,
}

/// (members, batch, in, out, x shared by all members)
fn linear_dims(x: &[usize], w: &[usize]) -> CResult<(usize, usize, usize, usize, bool)> {
    match (x, w) {
        ([bsz, din], [din2, dout]) if din == din2 => Ok((1, *bsz, *din, *dout, true)),
        ([bsz, din], [n, din2, dout]) if din == din2 => Ok((*n, *bsz, *din, *dout, true)),
        ([n1, bsz, din], [n, din2, dout]) if din == din2 && n1 == n => {
            Ok((*n, *bsz, *din, *dout, false))
        }
        _ => Err(err(&format!(
            "linear: input {x:?} does not fit weights {w:?}"
        ))),
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (x, w, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (n, bsz, din, dout, shared) = linear_dims(l1.dims(), l2.dims())?;
        if b.len() != n * dout {
            return Err(err("linear: bias size"));
        }
        let mut y = vec![0f32; n * bsz * dout];
        let member = |i: usize, yi: &mut [f32], parallel: bool| -> CResult<()> {
            let xi = if shared {
                x
            } else {
                &x[i * bsz * din..(i + 1) * bsz * din]
            };
            let wi = &w[i * din * dout..(i + 1) * din * dout];
            mm(
                bsz,
                dout,
                din,
                yi,
                dout,
                (xi, din, 1),
                (wi, dout, 1),
                false,
                parallel,
            )?;
            let bi = &b[i * dout..(i + 1) * dout];
            for row in yi.chunks_exact_mut(dout) {
                for (v, bb) in row.iter_mut().zip(bi) {
                    *v += bb;
                    if self.relu {
                        *v = v.max(0.0);
                    }
                }
            }
            Ok(())
        };
        if n == 1 {
            member(0, &mut y, true)?;
        } else {
            y.par_chunks_mut(bsz * dout)
                .enumerate()
                .try_for_each(|(i, yi)| member(i, yi, false))?;
        }
        let shape: Shape = if l2.dims().len() == 3 {
            (n, bsz, dout).into()
        } else {
            (bsz, dout).into()
        };
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        use rayon::prelude::*;
        let (n, bsz, din, dout, shared) = linear_dims(x.dims(), w.dims())?;
        let (need_x, need_w, need_b) = (x.track_op(), w.track_op(), b.track_op());
        let relu = self.relu;
        let (dx, dw, db) = with_host(grad, |g| {
            with_host(res, |y| {
                with_host(x, |xs| {
                    with_host(w, |ws| {
                        let gp: Vec<f32> = if relu {
                            g.iter()
                                .zip(y)
                                .map(|(g, y)| if *y > 0.0 { *g } else { 0.0 })
                                .collect()
                        } else {
                            g.to_vec()
                        };
                        let parallel = n == 1;
                        let dw = if need_w {
                            let mut dw = vec![0f32; n * din * dout];
                            let f = |i: usize, dwi: &mut [f32]| -> CResult<()> {
                                let xi = if shared {
                                    xs
                                } else {
                                    &xs[i * bsz * din..(i + 1) * bsz * din]
                                };
                                let gi = &gp[i * bsz * dout..(i + 1) * bsz * dout];
                                mm(
                                    din,
                                    dout,
                                    bsz,
                                    dwi,
                                    dout,
                                    (xi, 1, din),
                                    (gi, dout, 1),
                                    false,
                                    parallel,
                                )
                            };
                            if parallel {
                                f(0, &mut dw)?;
                            } else {
                                dw.par_chunks_mut(din * dout)
                                    .enumerate()
                                    .try_for_each(|(i, d)| f(i, d))?;
                            }
                            Some(dw)
                        } else {
                            None
                        };
                        let db = need_b.then(|| {
                            let mut db = vec![0f32; n * dout];
                            for (r, row) in gp.chunks_exact(dout).enumerate() {
                                let i = r / bsz;
                                for (d, v) in db[i * dout..(i + 1) * dout].iter_mut().zip(row) {
                                    *d += v;
                                }
                            }
                            db
                        });
                        let dx = if need_x {
                            let mut dx = vec![0f32; if shared { bsz * din } else { n * bsz * din }];
                            if shared {
                                for i in 0..n {
                                    let gi = &gp[i * bsz * dout..(i + 1) * bsz * dout];
                                    let wi = &ws[i * din * dout..(i + 1) * din * dout];
                                    mm(
                                        bsz,
                                        din,
                                        dout,
                                        &mut dx,
                                        din,
                                        (gi, dout, 1),
                                        (wi, 1, dout),
                                        i > 0,
                                        true,
                                    )?;
                                }
                            } else {
                                dx.par_chunks_mut(bsz * din).enumerate().try_for_each(
                                    |(i, d)| {
                                        let gi = &gp[i * bsz * dout..(i + 1) * bsz * dout];
                                        let wi = &ws[i * din * dout..(i + 1) * din * dout];
                                        mm(
                                            bsz,
                                            din,
                                            dout,
                                            d,
                                            din,
                                            (gi, dout, 1),
                                            (wi, 1, dout),
                                            false,
                                            false,
                                        )
                                    },
                                )?;
                            }
                            Some(dx)
                        } else {
                            None
                        };
                        Ok((dx, dw, db))
                    })
                })
            })
        })?;
        let mk = |v: Option<Vec<f32>>, like: &Tensor| -> CResult<Option<Tensor>> {
            v.map(|v| Tensor::from_vec(v, like.shape(), like.device()))
                .transpose()
        };
        Ok((mk(dx, x)?, mk(dw, w)?, mk(db, b)?))
    }
}
