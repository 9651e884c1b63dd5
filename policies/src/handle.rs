//! What the policy runner holds: [`PolicyHandle`], an allocation-free actor (plain Rust
//! inference over weights exported from candle) behind a lock-free, validated hot swap.
//!
//! Weights travel as safetensors bytes (`/rft/policy`, exported policy files) whose metadata
//! key `rft_policy` holds the [`PolicySpec`] as JSON.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, Algorithm};
use crate::error::{Error, Result};
use crate::nets::{EncoderConfig, LN_EPS, LOG_STD_MAX, LOG_STD_MIN};
use crate::normalize::ObsNorm;
use crate::store::{RawTensor, from_bytes, raw_from_named, to_bytes};

/// Version of the policy-bytes layout.
pub const POLICY_FORMAT: u32 = 1;
const META_KEY: &str = "rft_policy";

/// Everything needed to run a policy, besides its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub format: u32,
    pub algorithm: Algorithm,
    pub obs_dim: usize,
    pub act_dim: usize,
    pub num_tasks: usize,
    pub hidden: Vec<usize>,
    pub layer_norm: bool,
    pub encoder: Option<EncoderConfig>,
    pub norm: ObsNorm,
    /// Increases with every published update.
    pub version: u64,
    /// The learner's gradient steps when exported.
    pub grad_steps: u64,
}

impl PolicySpec {
    pub fn of(agent: &Agent, version: u64) -> Self {
        PolicySpec {
            format: POLICY_FORMAT,
            algorithm: agent.cfg.algorithm,
            obs_dim: agent.cfg.obs_dim,
            act_dim: agent.cfg.act_dim,
            num_tasks: agent.cfg.num_tasks,
            hidden: agent.cfg.hidden.clone(),
            layer_norm: agent.cfg.actor_layer_norm,
            encoder: agent.cfg.encoder.clone(),
            norm: agent.norm.clone(),
            version,
            grad_steps: agent.steps,
        }
    }

    fn state_in(&self) -> usize {
        self.obs_dim
            + if self.num_tasks > 1 {
                self.num_tasks
            } else {
                0
            }
    }

    /// Whether weights for `other` can replace weights for `self` in a running policy.
    pub fn compatible(&self, other: &PolicySpec) -> Result<()> {
        let same = self.obs_dim == other.obs_dim
            && self.act_dim == other.act_dim
            && self.num_tasks == other.num_tasks
            && self.hidden == other.hidden
            && self.layer_norm == other.layer_norm
            && self.encoder == other.encoder;
        if same {
            Ok(())
        } else {
            Err(Error::Spec(format!(
                "policy shape differs: running obs {} act {} tasks {} hidden {:?} ln {}, \
                 offered obs {} act {} tasks {} hidden {:?} ln {}",
                self.obs_dim,
                self.act_dim,
                self.num_tasks,
                self.hidden,
                self.layer_norm,
                other.obs_dim,
                other.act_dim,
                other.num_tasks,
                other.hidden,
                other.layer_norm
            )))
        }
    }
}

/// The actor's weights as policy bytes (safetensors with the spec in its metadata).
pub fn policy_bytes(agent: &Agent, version: u64) -> Result<Vec<u8>> {
    policy_bytes_from(agent, &agent.policy_weights(), version)
}

/// Policy bytes for `agent`'s networks with other weights of the same shapes (named as
/// [`Agent::policy_weights`] names them), e.g. a moving average of the actor's.
pub fn policy_bytes_from(
    agent: &Agent,
    weights: &[(String, candle_core::Tensor)],
    version: u64,
) -> Result<Vec<u8>> {
    let spec = PolicySpec::of(agent, version);
    let named: HashMap<String, candle_core::Tensor> = weights.iter().cloned().collect();
    let raw = raw_from_named(&named)?;
    let mut md = HashMap::new();
    md.insert(
        META_KEY.to_string(),
        serde_json::to_string(&spec).map_err(|e| Error::Spec(e.to_string()))?,
    );
    to_bytes(&raw, md)
}

/// Parses policy bytes (`what` names the source in errors) without building a policy.
pub fn parse_policy_bytes(
    bytes: &[u8],
    what: &Path,
) -> Result<(PolicySpec, HashMap<String, RawTensor>)> {
    let (tensors, md) = from_bytes(bytes, what)?;
    let spec: PolicySpec = md
        .get(META_KEY)
        .ok_or_else(|| Error::ckpt(what, format!("no {META_KEY:?} metadata: not an rft policy")))
        .and_then(|s| {
            serde_json::from_str(s)
                .map_err(|e| Error::ckpt(what, format!("bad policy metadata: {e}")))
        })?;
    if spec.format != POLICY_FORMAT {
        return Err(Error::ckpt(
            what,
            format!(
                "policy format {} (this build reads {POLICY_FORMAT})",
                spec.format
            ),
        ));
    }
    Ok((spec, tensors))
}

struct Dense {
    din: usize,
    dout: usize,
    w: Vec<f32>, // [in, out]
    b: Vec<f32>,
    ln: Option<(Vec<f32>, Vec<f32>)>,
}

impl Dense {
    /// `out = x · W + b`, then LayerNorm and ReLU when asked.
    fn apply(&self, x: &[f32], out: &mut [f32], relu: bool) {
        let out = &mut out[..self.dout];
        out.copy_from_slice(&self.b);
        for (i, xi) in x[..self.din].iter().enumerate() {
            let row = &self.w[i * self.dout..(i + 1) * self.dout];
            for (o, w) in out.iter_mut().zip(row) {
                *o += xi * w;
            }
        }
        if let Some((g, b)) = &self.ln {
            let n = self.dout as f32;
            let mean = out.iter().sum::<f32>() / n;
            let var = out.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let rstd = 1.0 / (var + LN_EPS as f32).sqrt();
            for ((o, g), b) in out.iter_mut().zip(g).zip(b) {
                *o = (*o - mean) * rstd * g + b;
            }
        }
        if relu {
            for o in out.iter_mut() {
                *o = o.max(0.0);
            }
        }
    }
}

struct ConvLayer {
    cin: usize,
    cout: usize,
    stride: usize,
    w: Vec<f32>, // [cout, cin*9]
    b: Vec<f32>,
}

/// Output size of a 3×3, padding-1 convolution.
fn conv_out(n: usize, stride: usize) -> usize {
    (n + 2 - 3) / stride + 1
}

impl ConvLayer {
    /// `x` is `[cin, h, w]`; writes `[cout, ho, wo]` to `out` (using `cols` as im2col space).
    fn apply(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        cols: &mut [f32],
        out: &mut [f32],
    ) -> (usize, usize) {
        let (ho, wo) = (conv_out(h, self.stride), conv_out(w, self.stride));
        let n = ho * wo;
        let k = self.cin * 9;
        let cols = &mut cols[..k * n];
        for c in 0..self.cin {
            let plane = &x[c * h * w..(c + 1) * h * w];
            for ky in 0..3 {
                for kx in 0..3 {
                    let row =
                        &mut cols[((c * 9) + ky * 3 + kx) * n..((c * 9) + ky * 3 + kx + 1) * n];
                    for oy in 0..ho {
                        let iy = (oy * self.stride + ky) as isize - 1;
                        let dst = &mut row[oy * wo..(oy + 1) * wo];
                        if iy < 0 || iy >= h as isize {
                            dst.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                        for (ox, d) in dst.iter_mut().enumerate() {
                            let ix = (ox * self.stride + kx) as isize - 1;
                            *d = if ix < 0 || ix >= w as isize {
                                0.0
                            } else {
                                src[ix as usize]
                            };
                        }
                    }
                }
            }
        }
        let out = &mut out[..self.cout * n];
        // SAFETY: the pointers cover exactly m×k, k×n and m×n row-major f32 matrices
        // (lengths checked by the slicing above), and `out` does not alias the inputs.
        unsafe {
            gemm::gemm(
                self.cout,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                self.w.as_ptr(),
                1,
                k as isize,
                cols.as_ptr(),
                1,
                n as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (c, b) in self.b.iter().enumerate() {
            for v in &mut out[c * n..(c + 1) * n] {
                *v += b;
            }
        }
        (ho, wo)
    }
}

struct InferEncoder {
    cfg: EncoderConfig,
    stages: Vec<(ConvLayer, ConvLayer, ConvLayer)>,
    proj: Dense,
    ln: (Vec<f32>, Vec<f32>),
}

/// An actor (and encoder) ready for allocation-free inference.
pub struct InferencePolicy {
    pub spec: PolicySpec,
    layers: Vec<Dense>,
    encoder: Option<InferEncoder>,
}

fn take(t: &HashMap<String, RawTensor>, name: &str, dims: &[usize]) -> Result<Vec<f32>> {
    let r = t
        .get(name)
        .ok_or_else(|| Error::Spec(format!("policy weights lack {name:?}")))?;
    if r.shape != dims {
        return Err(Error::Spec(format!(
            "policy tensor {name:?} has shape {:?}, expected {dims:?}",
            r.shape
        )));
    }
    let v = r.to_f32_vec()?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Spec(format!(
            "policy tensor {name:?} has a non-finite value at {i}"
        )));
    }
    Ok(v)
}

impl InferencePolicy {
    /// Builds a policy from parsed bytes; every tensor is shape- and finiteness-checked.
    pub fn new(spec: PolicySpec, t: &HashMap<String, RawTensor>) -> Result<Self> {
        if !spec.norm.dim_ok(spec.obs_dim) {
            return Err(Error::Spec(
                "normalisation size differs from obs_dim".into(),
            ));
        }
        let mut din = spec.state_in() + spec.encoder.as_ref().map_or(0, |e| e.feature_dim);
        let mut layers = Vec::new();
        let n = spec.hidden.len();
        for i in 0..=n {
            let dout = if i < n {
                spec.hidden[i]
            } else {
                2 * spec.act_dim
            };
            let ln = if i < n && spec.layer_norm {
                Some((
                    take(t, &format!("actor.ln{i}.g"), &[dout])?,
                    take(t, &format!("actor.ln{i}.b"), &[dout])?,
                ))
            } else {
                None
            };
            layers.push(Dense {
                din,
                dout,
                w: take(t, &format!("actor.l{i}.w"), &[din, dout])?,
                b: take(t, &format!("actor.l{i}.b"), &[dout])?,
                ln,
            });
            din = dout;
        }
        let encoder = match &spec.encoder {
            Some(ec) => {
                let mut stages = Vec::new();
                let mut cin = ec.channels;
                let conv =
                    |name: String, cin: usize, cout: usize, stride: usize| -> Result<ConvLayer> {
                        Ok(ConvLayer {
                            cin,
                            cout,
                            stride,
                            w: take(t, &format!("{name}.w"), &[cout, cin, 3, 3])?,
                            b: take(t, &format!("{name}.b"), &[cout])?,
                        })
                    };
                for (i, &c) in ec.stages.iter().enumerate() {
                    stages.push((
                        conv(format!("encoder.s{i}.down"), cin, c, 2)?,
                        conv(format!("encoder.s{i}.c1"), c, c, 1)?,
                        conv(format!("encoder.s{i}.c2"), c, c, 1)?,
                    ));
                    cin = c;
                }
                let f = ec.feature_dim;
                Some(InferEncoder {
                    cfg: ec.clone(),
                    stages,
                    proj: Dense {
                        din: cin,
                        dout: f,
                        w: take(t, "encoder.proj.w", &[cin, f])?,
                        b: take(t, "encoder.proj.b", &[f])?,
                        ln: None,
                    },
                    ln: (
                        take(t, "encoder.ln.g", &[f])?,
                        take(t, "encoder.ln.b", &[f])?,
                    ),
                })
            }
            None => None,
        };
        Ok(InferencePolicy {
            spec,
            layers,
            encoder,
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (spec, t) = parse_policy_bytes(bytes, Path::new("<policy bytes>"))?;
        InferencePolicy::new(spec, &t)
    }

    pub fn from_agent(agent: &Agent, version: u64) -> Result<Self> {
        Self::from_bytes(&policy_bytes(agent, version)?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (spec, t) = parse_policy_bytes(&bytes, path)?;
        InferencePolicy::new(spec, &t)
    }
}

/// Preallocated buffers for one caller of `act`.
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    img: Vec<f32>,
    t1: Vec<f32>,
    t2: Vec<f32>,
    t3: Vec<f32>,
    cols: Vec<f32>,
}

impl Scratch {
    fn for_spec(spec: &PolicySpec) -> Self {
        let width = spec
            .hidden
            .iter()
            .copied()
            .chain([
                2 * spec.act_dim,
                spec.state_in() + spec.encoder.as_ref().map_or(0, |e| e.feature_dim),
            ])
            .max()
            .unwrap_or(0);
        let mut s = Scratch {
            a: vec![0.0; width],
            b: vec![0.0; width],
            ..Default::default()
        };
        if let Some(ec) = &spec.encoder {
            let (mut h, mut w, mut cin) = (ec.height, ec.width, ec.channels);
            let mut act = cin * h * w;
            let mut cols = 0;
            for &c in &ec.stages {
                let (ho, wo) = (conv_out(h, 2), conv_out(w, 2));
                cols = cols.max(cin * 9 * ho * wo).max(c * 9 * ho * wo);
                act = act.max(c * ho * wo);
                (h, w, cin) = (ho, wo, c);
            }
            s.img = vec![0.0; ec.image_len()];
            s.t1 = vec![0.0; act];
            s.t2 = vec![0.0; act];
            s.t3 = vec![0.0; act];
            s.cols = vec![0.0; cols];
        }
        s
    }
}

/// Deterministic (`tanh(μ)`) or sampled actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActMode {
    Deterministic,
    Stochastic,
}

/// The policy runner's view of the policy: `act` allocates nothing after construction;
/// `swap` replaces the weights lock-free after validating them. Clones share the weights
/// (one swap is seen by all) but each has its own scratch space and noise generator.
pub struct PolicyHandle {
    shared: Arc<ArcSwap<InferencePolicy>>,
    scratch: Scratch,
    rng: StdRng,
}

impl Clone for PolicyHandle {
    fn clone(&self) -> Self {
        let spec = &self.shared.load().spec;
        PolicyHandle {
            shared: self.shared.clone(),
            scratch: Scratch::for_spec(spec),
            rng: StdRng::seed_from_u64(rand::random()),
        }
    }
}

impl PolicyHandle {
    pub fn new(policy: InferencePolicy, seed: u64) -> Self {
        let scratch = Scratch::for_spec(&policy.spec);
        PolicyHandle {
            shared: Arc::new(ArcSwap::from_pointee(policy)),
            scratch,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn spec(&self) -> PolicySpec {
        self.shared.load().spec.clone()
    }

    pub fn version(&self) -> u64 {
        self.shared.load().spec.version
    }

    /// Replaces the weights with `bytes` (policy bytes) once they are parsed and checked:
    /// same shapes as the running policy, every value finite. On error nothing changes.
    /// Returns the new version.
    pub fn swap(&self, bytes: &[u8]) -> Result<u64> {
        let (spec, t) = parse_policy_bytes(bytes, Path::new("<policy update>"))?;
        self.shared.load().spec.compatible(&spec)?;
        let p = InferencePolicy::new(spec, &t)?;
        let v = p.spec.version;
        self.shared.store(Arc::new(p));
        Ok(v)
    }

    /// Writes the action for one observation into `out` (`act_dim` values in [−1, 1]) and
    /// returns the version of the weights used.
    pub fn act(
        &mut self,
        obs: &[f32],
        task_id: u8,
        image: Option<&[u8]>,
        mode: ActMode,
        out: &mut [f32],
    ) -> Result<u64> {
        let p = self.shared.load();
        let spec = &p.spec;
        if obs.len() != spec.obs_dim || out.len() != spec.act_dim {
            return Err(Error::Spec(format!(
                "act: observation {} / action {} values, the policy has {} / {}",
                obs.len(),
                out.len(),
                spec.obs_dim,
                spec.act_dim
            )));
        }
        if spec.num_tasks > 1 && task_id as usize >= spec.num_tasks {
            return Err(Error::Spec(format!(
                "task id {task_id} out of range (policy has {} tasks)",
                spec.num_tasks
            )));
        }
        let s = &mut self.scratch;
        let d = spec.state_in();
        s.a[..spec.obs_dim].copy_from_slice(obs);
        spec.norm.apply(&mut s.a[..spec.obs_dim]);
        for k in 0..spec.state_in() - spec.obs_dim {
            s.a[spec.obs_dim + k] = if k == task_id as usize { 1.0 } else { 0.0 };
        }
        let mut din = d;
        if let Some(enc) = &p.encoder {
            let Some(img) = image else {
                return Err(Error::Spec("this policy needs an image".into()));
            };
            if img.len() != enc.cfg.image_len() {
                return Err(Error::Spec(format!(
                    "image has {} bytes, the policy expects {} ({}x{}x{})",
                    img.len(),
                    enc.cfg.image_len(),
                    enc.cfg.channels,
                    enc.cfg.height,
                    enc.cfg.width
                )));
            }
            let f = enc.cfg.feature_dim;
            encode(enc, img, s);
            let (a, b) = (&mut s.a, &s.b);
            a[d..d + f].copy_from_slice(&b[..f]);
            din += f;
        }
        let (mut x, mut y) = (&mut s.a, &mut s.b);
        let last = p.layers.len() - 1;
        for (i, layer) in p.layers.iter().enumerate() {
            debug_assert_eq!(layer.din, din);
            layer.apply(&x[..din], y, i < last);
            din = layer.dout;
            std::mem::swap(&mut x, &mut y);
        }
        let a = spec.act_dim;
        for j in 0..a {
            let mean = x[j];
            let action = match mode {
                ActMode::Deterministic => mean,
                ActMode::Stochastic => {
                    let raw = x[a + j].tanh() as f64;
                    let log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (raw + 1.0);
                    let eps: f64 = StandardNormal.sample(&mut self.rng);
                    mean + (log_std.exp() * eps) as f32
                }
            };
            out[j] = action.tanh();
        }
        Ok(spec.version)
    }
}

/// Runs the encoder on a u8 image; the features land in `s.b[..feature_dim]`.
fn encode(enc: &InferEncoder, img: &[u8], s: &mut Scratch) {
    let c = &enc.cfg;
    for (d, v) in s.img.iter_mut().zip(img) {
        *d = *v as f32 / 255.0;
    }
    let (mut h, mut w) = (c.height, c.width);
    let mut first = true;
    for (down, c1, c2) in &enc.stages {
        let src: &[f32] = if first { &s.img } else { &s.t1 };
        let (ho, wo) = down.apply(src, h, w, &mut s.cols, &mut s.t2);
        first = false;
        let n = down.cout * ho * wo;
        // residual: t1 = t2 + c2(relu(c1(relu(t2))))
        for (d, v) in s.t3[..n].iter_mut().zip(&s.t2[..n]) {
            *d = v.max(0.0);
        }
        c1.apply(&s.t3[..n], ho, wo, &mut s.cols, &mut s.t1);
        for v in &mut s.t1[..n] {
            *v = v.max(0.0);
        }
        c2.apply(&s.t1[..n], ho, wo, &mut s.cols, &mut s.t3);
        for ((d, a), b) in s.t1[..n].iter_mut().zip(&s.t2[..n]).zip(&s.t3[..n]) {
            *d = a + b;
        }
        (h, w) = (ho, wo);
    }
    let cl = enc.proj.din;
    let hw = h * w;
    for ch in 0..cl {
        let plane = &s.t1[ch * hw..(ch + 1) * hw];
        s.t2[ch] = plane.iter().map(|v| v.max(0.0)).sum::<f32>() / hw as f32;
    }
    // projection into s.t3, LayerNorm and tanh into s.b
    let f = enc.proj.dout;
    enc.proj.apply(&s.t2[..cl], &mut s.t3, false);
    let out = &mut s.t3[..f];
    let n = f as f32;
    let mean = out.iter().sum::<f32>() / n;
    let var = out.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let rstd = 1.0 / (var + LN_EPS as f32).sqrt();
    for (j, o) in out.iter().enumerate() {
        s.b[j] = ((o - mean) * rstd * enc.ln.0[j] + enc.ln.1[j]).tanh();
    }
}
