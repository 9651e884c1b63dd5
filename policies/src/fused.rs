//! Fused CPU kernels with backward passes for the hot parts of the MLPs: bias + ReLU and
//! LayerNorm + affine + ReLU. candle's generic element-wise path walks broadcast layouts
//! one index at a time; these run one tight loop per row. On other devices the same maths
//! runs as ordinary candle ops.
//!
//! Parameters are either one vector `[out]` shared by every row, or one per ensemble member
//! (`[n, 1, out]` for inputs `[n, batch, out]`).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, Layout, Shape, Storage, Tensor};

use crate::error::Result;
use crate::nets::LN_EPS;

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
