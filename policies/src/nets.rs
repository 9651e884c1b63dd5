//! Networks in candle: MLPs (optionally an ensemble evaluated as one batched matmul per layer),
//! LayerNorm, the tanh-Gaussian actor and a small ResNet-style image encoder.
//!
//! Weights of a linear layer are stored `[in, out]` (`[n, in, out]` for an ensemble) so a
//! forward pass is `x · W + b` with no transpose. Parameters live in a [`Params`] set with
//! stable, dotted names (`actor.l0.w`), which is what checkpoints and policy bytes carry.

use candle_core::{D, DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fused::{linear, ln_act};

/// An ordered set of named trainable tensors.
#[derive(Clone, Default)]
pub struct Params {
    vars: Vec<(String, Var)>,
}

impl Params {
    pub fn new() -> Self {
        Params::default()
    }
    pub fn add(&mut self, name: String, t: Tensor) -> Result<Var> {
        let v = Var::from_tensor(&t)?;
        self.vars.push((name, v.clone()));
        Ok(v)
    }
    pub fn extend(&mut self, other: &Params) {
        self.vars.extend(other.vars.iter().cloned());
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v))
    }
    pub fn len(&self) -> usize {
        self.vars.len()
    }
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
    pub fn num_scalars(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }
    /// Copies values in by name; every parameter must be present with its exact shape.
    pub fn load(&self, tensors: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in &self.vars {
            let t = tensors
                .get(name)
                .ok_or_else(|| Error::Spec(format!("missing tensor {name:?}")))?;
            if t.dims() != var.dims() {
                return Err(Error::Spec(format!(
                    "tensor {name:?} has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(DType::F32)?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

/// Seeded random tensors (candle's CPU generator cannot be seeded, and runs must repeat).
pub struct TensorRng {
    pub rng: StdRng,
    scratch: Vec<f32>,
}

impl TensorRng {
    pub fn new(seed: u64) -> Self {
        TensorRng {
            rng: StdRng::seed_from_u64(seed),
            scratch: Vec::new(),
        }
    }
    pub fn normal(&mut self, dims: &[usize], dev: &Device) -> Result<Tensor> {
        let n = dims.iter().product();
        self.scratch.clear();
        self.scratch
            .extend((0..n).map(|_| self.rng.sample::<f32, _>(StandardNormal)));
        Ok(Tensor::from_slice(&self.scratch, dims, dev)?)
    }
    pub fn uniform(&mut self, lo: f32, hi: f32, dims: &[usize], dev: &Device) -> Result<Tensor> {
        let n = dims.iter().product();
        self.scratch.clear();
        self.scratch
            .extend((0..n).map(|_| self.rng.random_range(lo..hi)));
        Ok(Tensor::from_slice(&self.scratch, dims, dev)?)
    }
}

/// A linear layer, or `n` of them evaluated together.
#[derive(Clone)]
pub struct Linear {
    pub w: Var,
    pub b: Var,
}

impl Linear {
    /// PyTorch's default initialisation: U(−1/√in, 1/√in) for weight and bias.
    pub fn new(
        p: &mut Params,
        name: &str,
        ensemble: Option<usize>,
        din: usize,
        dout: usize,
        rng: &mut TensorRng,
        dev: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (din as f32).sqrt();
        let (wd, bd): (Vec<usize>, Vec<usize>) = match ensemble {
            Some(n) => (vec![n, din, dout], vec![n, 1, dout]),
            None => (vec![din, dout], vec![dout]),
        };
        let w = p.add(format!("{name}.w"), rng.uniform(-bound, bound, &wd, dev)?)?;
        let b = p.add(format!("{name}.b"), rng.uniform(-bound, bound, &bd, dev)?)?;
        Ok(Linear { w, b })
    }

    pub fn forward(&self, x: &Tensor, detach: bool) -> Result<Tensor> {
        self.forward_act(x, detach, false)
    }

    /// `act(x · W + b)` with the bias and the optional ReLU fused.
    pub fn forward_act(&self, x: &Tensor, detach: bool, relu: bool) -> Result<Tensor> {
        let (w, b) = pick(&self.w, &self.b, detach);
        linear(x, &w, &b, relu)
    }
}

fn pick(a: &Var, b: &Var, detach: bool) -> (Tensor, Tensor) {
    if detach {
        (a.as_tensor().detach(), b.as_tensor().detach())
    } else {
        (a.as_tensor().clone(), b.as_tensor().clone())
    }
}

/// LayerNorm over the last dimension with a learned scale and shift (eps 1e-5).
#[derive(Clone)]
pub struct LayerNorm {
    pub g: Var,
    pub b: Var,
}

pub use crate::fused::LN_EPS;

impl LayerNorm {
    pub fn new(
        p: &mut Params,
        name: &str,
        ensemble: Option<usize>,
        dim: usize,
        dev: &Device,
    ) -> Result<Self> {
        let d: Vec<usize> = match ensemble {
            Some(n) => vec![n, 1, dim],
            None => vec![dim],
        };
        let g = p.add(
            format!("{name}.g"),
            Tensor::ones(d.as_slice(), DType::F32, dev)?,
        )?;
        let b = p.add(
            format!("{name}.b"),
            Tensor::zeros(d.as_slice(), DType::F32, dev)?,
        )?;
        Ok(LayerNorm { g, b })
    }

    pub fn forward(&self, x: &Tensor, detach: bool) -> Result<Tensor> {
        self.forward_act(x, detach, false)
    }

    /// `act(LayerNorm(x) ⊙ g + b)`, fused.
    pub fn forward_act(&self, x: &Tensor, detach: bool, relu: bool) -> Result<Tensor> {
        let (g, b) = pick(&self.g, &self.b, detach);
        ln_act(x, &g, &b, relu)
    }
}

/// `Dense → [LayerNorm] → ReLU` hidden layers and a linear output, optionally as an ensemble
/// of `n` independent networks (weights `[n, in, out]`, output `[n, batch, out]`).
#[derive(Clone)]
pub struct Mlp {
    pub layers: Vec<Linear>,
    pub norms: Vec<Option<LayerNorm>>,
    pub ensemble: Option<usize>,
}

impl Mlp {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: &mut Params,
        name: &str,
        ensemble: Option<usize>,
        din: usize,
        hidden: &[usize],
        dout: usize,
        layer_norm: bool,
        rng: &mut TensorRng,
        dev: &Device,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        let mut norms = Vec::new();
        let mut d = din;
        for (i, &h) in hidden.iter().enumerate() {
            layers.push(Linear::new(
                p,
                &format!("{name}.l{i}"),
                ensemble,
                d,
                h,
                rng,
                dev,
            )?);
            norms.push(if layer_norm {
                Some(LayerNorm::new(
                    p,
                    &format!("{name}.ln{i}"),
                    ensemble,
                    h,
                    dev,
                )?)
            } else {
                None
            });
            d = h;
        }
        layers.push(Linear::new(
            p,
            &format!("{name}.l{}", hidden.len()),
            ensemble,
            d,
            dout,
            rng,
            dev,
        )?);
        Ok(Mlp {
            layers,
            norms,
            ensemble,
        })
    }

    /// `x` is `[batch, in]` (shared by all members of an ensemble) or `[n, batch, in]`.
    pub fn forward(&self, x: &Tensor, detach: bool) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = match self.norms.get(i) {
                Some(Some(ln)) if i < last => {
                    ln.forward_act(&layer.forward(&h, detach)?, detach, true)?
                }
                _ => layer.forward_act(&h, detach, i < last)?,
            };
        }
        Ok(h)
    }
}

/// Bounds of the actor's log standard deviation (squashed smoothly into this range).
pub const LOG_STD_MIN: f64 = -5.0;
pub const LOG_STD_MAX: f64 = 2.0;
/// Data actions are kept this far inside (−1, 1) before `atanh`, so saturated demonstrations
/// (exactly ±1) do not dominate the likelihood with `atanh(±1) = ±∞`.
pub const BC_ACTION_MARGIN: f64 = 1e-3;
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_7;

/// The tanh-Gaussian policy: an MLP giving mean and log-std, actions `tanh(μ + σ ε)`.
#[derive(Clone)]
pub struct Actor {
    pub mlp: Mlp,
    pub act_dim: usize,
}

impl Actor {
    pub fn new(
        p: &mut Params,
        din: usize,
        hidden: &[usize],
        act_dim: usize,
        layer_norm: bool,
        rng: &mut TensorRng,
        dev: &Device,
    ) -> Result<Self> {
        let mlp = Mlp::new(
            p,
            "actor",
            None,
            din,
            hidden,
            2 * act_dim,
            layer_norm,
            rng,
            dev,
        )?;
        Ok(Actor { mlp, act_dim })
    }

    /// Mean and log-std, each `[batch, act_dim]`.
    pub fn dist(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.mlp.forward(x, false)?;
        let mean = h.narrow(1, 0, self.act_dim)?;
        let raw = h.narrow(1, self.act_dim, self.act_dim)?.tanh()?;
        let log_std = raw.affine(
            0.5 * (LOG_STD_MAX - LOG_STD_MIN),
            LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN),
        )?;
        Ok((mean, log_std))
    }

    /// A reparameterised sample with standard-normal noise `eps` (`[batch, act_dim]`):
    /// the action and its log-probability `[batch]` under the squashed Gaussian.
    pub fn sample(&self, x: &Tensor, eps: &Tensor) -> Result<(Tensor, Tensor)> {
        let (mean, log_std) = self.dist(x)?;
        let u = (&mean + (log_std.exp()? * eps)?)?;
        let a = u.tanh()?;
        let gauss = ((eps.sqr()? * -0.5)? - &log_std)?.affine(1.0, -HALF_LOG_2PI)?;
        let logp = (gauss - log1m_tanh_sq(&u)?)?.sum(1)?;
        Ok((a, logp))
    }

    /// Log-probability `[batch]` of given actions in (−1, 1) (behaviour cloning).
    pub fn log_prob(&self, x: &Tensor, a: &Tensor) -> Result<Tensor> {
        let (mean, log_std) = self.dist(x)?;
        let a = a.clamp(-1.0 + BC_ACTION_MARGIN, 1.0 - BC_ACTION_MARGIN)?;
        // atanh(a) = 0.5 ln((1 + a) / (1 − a))
        let u = ((a.affine(1.0, 1.0)?.log()? - a.affine(-1.0, 1.0)?.log()?)? * 0.5)?;
        let eps = ((&u - &mean)? / log_std.exp()?)?;
        let gauss = ((eps.sqr()? * -0.5)? - &log_std)?.affine(1.0, -HALF_LOG_2PI)?;
        Ok((gauss - log1m_tanh_sq(&u)?)?.sum(1)?)
    }

    /// The deterministic action `tanh(μ)`.
    pub fn mode(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.dist(x)?.0.tanh()?)
    }
}

/// `log(1 − tanh(u)²) = 2 (ln 2 − u − softplus(−2u))`, stable for large |u|.
fn log1m_tanh_sq(u: &Tensor) -> Result<Tensor> {
    let sp = softplus(&(u * -2.0)?)?;
    Ok((((u.neg()? - sp)? + std::f64::consts::LN_2)? * 2.0)?)
}

/// `softplus(x) = max(x, 0) + ln(1 + e^{−|x|})`.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?)
}

/// The image encoder's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderConfig {
    /// Channels, height and width of the input image (u8, channel-first in the buffer).
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Output channels of each stage; a stage is a stride-2 3×3 conv and a residual block.
    pub stages: Vec<usize>,
    /// Size of the feature vector appended to the state observation.
    pub feature_dim: usize,
    /// Train the encoder with the critic loss (false: frozen after initialisation/loading).
    pub trainable: bool,
    /// Random-shift augmentation: pad by this many pixels and crop back (DrQ); 0 turns it off.
    pub crop_pad: usize,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            channels: 3,
            height: 128,
            width: 128,
            stages: vec![16, 32, 64],
            feature_dim: 64,
            trainable: true,
            crop_pad: 4,
        }
    }
}

impl EncoderConfig {
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub fn validate(&self) -> Result<()> {
        if self.channels == 0 || self.height < 8 || self.width < 8 {
            return Err(Error::Config(format!(
                "encoder image {}x{}x{} is too small (at least 1x8x8)",
                self.channels, self.height, self.width
            )));
        }
        if self.stages.is_empty() || self.stages.contains(&0) || self.feature_dim == 0 {
            return Err(Error::Config(
                "encoder stages and feature_dim must be non-empty and positive".into(),
            ));
        }
        Ok(())
    }
}

/// A 3×3 convolution (weights `[out, in, 3, 3]`, padding 1).
#[derive(Clone)]
pub struct Conv {
    pub w: Var,
    pub b: Var,
    pub stride: usize,
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: &mut Params,
        name: &str,
        cin: usize,
        cout: usize,
        stride: usize,
        rng: &mut TensorRng,
        dev: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / ((cin * 9) as f32).sqrt();
        let w = p.add(
            format!("{name}.w"),
            rng.uniform(-bound, bound, &[cout, cin, 3, 3], dev)?,
        )?;
        let b = p.add(
            format!("{name}.b"),
            rng.uniform(-bound, bound, &[cout], dev)?,
        )?;
        Ok(Conv { w, b, stride })
    }
    fn forward(&self, x: &Tensor, detach: bool) -> Result<Tensor> {
        let (w, b) = pick(&self.w, &self.b, detach);
        let y = x.conv2d(&w, 1, self.stride, 1, 1)?;
        Ok(y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?)
    }
}

/// A small ResNet-style CNN: per stage a stride-2 conv then a pre-activation residual block
/// (`x + conv(relu(conv(relu(x))))`), global average pooling, a linear projection, LayerNorm
/// and tanh (the DrQ/SERL feature head).
#[derive(Clone)]
pub struct Encoder {
    pub cfg: EncoderConfig,
    pub stages: Vec<(Conv, Conv, Conv)>,
    pub proj: Linear,
    pub ln: LayerNorm,
}

impl Encoder {
    pub fn new(
        p: &mut Params,
        name: &str,
        cfg: &EncoderConfig,
        rng: &mut TensorRng,
        dev: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut stages = Vec::new();
        let mut cin = cfg.channels;
        for (i, &c) in cfg.stages.iter().enumerate() {
            let down = Conv::new(p, &format!("{name}.s{i}.down"), cin, c, 2, rng, dev)?;
            let c1 = Conv::new(p, &format!("{name}.s{i}.c1"), c, c, 1, rng, dev)?;
            let c2 = Conv::new(p, &format!("{name}.s{i}.c2"), c, c, 1, rng, dev)?;
            stages.push((down, c1, c2));
            cin = c;
        }
        let proj = Linear::new(
            p,
            &format!("{name}.proj"),
            None,
            cin,
            cfg.feature_dim,
            rng,
            dev,
        )?;
        let ln = LayerNorm::new(p, &format!("{name}.ln"), None, cfg.feature_dim, dev)?;
        Ok(Encoder {
            cfg: cfg.clone(),
            stages,
            proj,
            ln,
        })
    }

    /// `images` is `[batch, c, h, w]` f32 in [0, 1]; returns `[batch, feature_dim]`.
    pub fn forward(&self, images: &Tensor, detach: bool) -> Result<Tensor> {
        let mut h = images.clone();
        for (down, c1, c2) in &self.stages {
            h = down.forward(&h, detach)?;
            let r = c1.forward(&h.relu()?, detach)?;
            let r = c2.forward(&r.relu()?, detach)?;
            h = (h + r)?;
        }
        let pooled = h.relu()?.mean(D::Minus1)?.mean(D::Minus1)?;
        let f = self.proj.forward(&pooled, detach)?;
        Ok(self.ln.forward(&f, detach)?.tanh()?)
    }
}

/// Converts a batch of u8 images (channel-first, `[batch, c, h, w]`) to f32 in [0, 1].
pub fn images_to_tensor(bytes: &[u8], dims: [usize; 4], dev: &Device) -> Result<Tensor> {
    let t = Tensor::from_slice(bytes, dims.as_slice(), dev)?;
    Ok(t.to_dtype(DType::F32)?.affine(1.0 / 255.0, 0.0)?)
}
