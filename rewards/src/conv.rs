//! A 3×3, stride-2, padding-1 convolution on channel-last images as an im2col custom op
//! followed by the fused linear layer of `rft-policies`. candle's CPU convolution computes its
//! backward pass with a transposed convolution that is several times slower than the forward
//! pass; here the backward pass is a col2im scatter and two matrix products.

use candle_core::{CpuStorage, CustomOp1, D, Layout, Shape, Storage, Tensor};

fn err(m: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(m.into())
}

/// Output size of a stride-2, padding-1, 3×3 convolution.
pub fn out_size(n: usize) -> usize {
    n.div_ceil(2)
}

struct Im2Col {
    dims: [usize; 4],
}

impl Im2Col {
    /// Visits every (column row, column offset, source index or None for padding).
    #[inline]
    fn for_each(&self, mut f: impl FnMut(usize, usize, Option<usize>)) {
        let [b, h, w, c] = self.dims;
        let (ho, wo) = (out_size(h), out_size(w));
        for bi in 0..b {
            for i in 0..ho {
                for j in 0..wo {
                    let row = (bi * ho + i) * wo + j;
                    for ky in 0..3 {
                        let y = (2 * i + ky) as isize - 1;
                        for kx in 0..3 {
                            let x = (2 * j + kx) as isize - 1;
                            let off = (ky * 3 + kx) * c;
                            let src = (y >= 0 && y < h as isize && x >= 0 && x < w as isize)
                                .then(|| ((bi * h + y as usize) * w + x as usize) * c);
                            f(row * 9 * c + off, c, src);
                        }
                    }
                }
            }
        }
    }
}

fn host<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => Err(err("im2col: expected a contiguous f32 tensor")),
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col3x3s2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = host(s, l)?;
        let [b, h, w, c] = self.dims;
        let rows = b * out_size(h) * out_size(w);
        let mut out = vec![0f32; rows * 9 * c];
        self.for_each(|dst, n, src| {
            if let Some(src) = src {
                out[dst..dst + n].copy_from_slice(&x[src..src + n]);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, 9 * c))))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = grad.contiguous()?;
        let (s, l) = g.storage_and_layout();
        let Storage::Cpu(cs) = &*s else {
            return Err(err("im2col: backward on a non-CPU tensor"));
        };
        let gs = host(cs, l)?;
        let [b, h, w, c] = self.dims;
        let mut dx = vec![0f32; b * h * w * c];
        self.for_each(|dst, n, src| {
            if let Some(src) = src {
                for (d, v) in dx[src..src + n].iter_mut().zip(&gs[dst..dst + n]) {
                    *d += v;
                }
            }
        });
        Ok(Some(Tensor::from_vec(dx, (b, h, w, c), grad.device())?))
    }
}

/// `[B, H, W, C]` → `[B·Ho·Wo, 9·C]`, columns ordered (ky, kx, c).
pub fn im2col(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    if x.device().is_cpu() {
        return x.contiguous()?.apply_op1(Im2Col { dims: [b, h, w, c] });
    }
    // Elsewhere: the same columns from views of the zero-padded image.
    let (ho, wo) = (out_size(h), out_size(w));
    let xp = x
        .pad_with_zeros(1, 1, 2 * ho + 1 - h)?
        .pad_with_zeros(2, 1, 2 * wo + 1 - w)?;
    let xr = xp.reshape((b, ho + 1, 2, wo + 1, 2, c))?;
    let mut parts = Vec::with_capacity(9);
    for ky in 0..3 {
        let rows = xr.narrow(1, ky / 2, ho)?.narrow(2, ky % 2, 1)?;
        for kx in 0..3 {
            parts.push(
                rows.narrow(3, kx / 2, wo)?
                    .narrow(4, kx % 2, 1)?
                    .reshape((b, ho, wo, c))?,
            );
        }
    }
    Tensor::cat(&parts, D::Minus1)?.reshape((b * ho * wo, 9 * c))
}

/// `relu(conv3x3_s2(x) + b)` for channel-last `x` `[B, H, W, C]`, weights `[9·C, out]`.
pub fn conv_relu(x: &Tensor, w: &Tensor, b: &Tensor) -> crate::Result<Tensor> {
    let (bs, h, wd, _) = x.dims4()?;
    let y = rft_policies::fused::linear(&im2col(x)?, w, b, true)?;
    Ok(y.reshape((bs, out_size(h), out_size(wd), w.dim(1)?))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The custom op and the view-based path agree, forward and backward, on odd sizes too.
    #[test]
    fn im2col_matches_views_and_its_gradient_is_the_adjoint() {
        let dev = Device::Cpu;
        for (h, w) in [(8, 8), (7, 5)] {
            let x = Var::randn(0f32, 1.0, (2, h, w, 3), &dev).unwrap();
            let a = im2col(x.as_tensor()).unwrap();
            let (b, ho, wo, c) = (2, out_size(h), out_size(w), 3);
            let xp = x
                .as_tensor()
                .pad_with_zeros(1, 1, 2 * ho + 1 - h)
                .unwrap()
                .pad_with_zeros(2, 1, 2 * wo + 1 - w)
                .unwrap();
            // Column (ky, kx, c) of output (i, j) is padded pixel (2i + ky, 2j + kx).
            let a3 = a.reshape((b, ho, wo, 9 * c)).unwrap();
            for (i, j, ky, kx) in [(0, 0, 0, 0), (1, 2, 2, 1), (ho - 1, wo - 1, 2, 2)] {
                let want = xp
                    .narrow(1, 2 * i + ky, 1)
                    .unwrap()
                    .narrow(2, 2 * j + kx, 1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let got = a3
                    .narrow(1, i, 1)
                    .unwrap()
                    .narrow(2, j, 1)
                    .unwrap()
                    .narrow(3, (ky * 3 + kx) * c, c)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert_eq!(got, want);
            }
            // <im2col(x), g> = <x, im2col^T(g)> for a random g.
            let g = Tensor::randn(0f32, 1.0, a.shape(), &dev).unwrap();
            let lhs = (&a * &g).unwrap().sum_all().unwrap();
            let grads = lhs.backward().unwrap();
            let dx = grads.get(x.as_tensor()).unwrap();
            let rhs = (x.as_tensor() * dx).unwrap().sum_all().unwrap();
            let (l, r) = (
                lhs.to_scalar::<f32>().unwrap(),
                rhs.to_scalar::<f32>().unwrap(),
            );
            assert!((l - r).abs() < 1e-3 * l.abs().max(1.0), "{l} vs {r}");
        }
    }
}
