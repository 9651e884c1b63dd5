//! Adam with state that checkpoints can carry, and the soft (Polyak) target update.
//!
//! On the CPU both run as fused in-place passes over each parameter (one loop, no temporary
//! tensors); on other devices they fall back to tensor ops.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor, Var, backprop::GradStore};

use crate::error::{Error, Result};
use crate::fused::{slice, slice_mut};
use crate::nets::Params;

/// Adam (Kingma & Ba) over a parameter set, bias-corrected, no weight decay.
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Number of steps taken (the bias correction's t).
    pub t: u64,
    params: Vec<(String, Var)>,
    state: Vec<Moments>,
}

enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

impl Adam {
    pub fn new(params: &Params, lr: f64) -> Result<Self> {
        let mut state = Vec::new();
        let mut ps = Vec::new();
        for (name, var) in params.iter() {
            let n = var.elem_count();
            state.push(if var.device().is_cpu() {
                Moments::Host {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                }
            } else {
                Moments::Device {
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                }
            });
            ps.push((name.to_string(), var.clone()));
        }
        Ok(Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 0,
            params: ps,
            state,
        })
    }

    /// One step with the gradients of this optimiser's parameters found in `grads`
    /// (parameters without a gradient are left alone).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let step_size = self.lr * bc2.sqrt() / bc1;
        let eps_hat = self.eps * bc2.sqrt();
        for ((_, var), st) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            match st {
                Moments::Host { m, v } => {
                    let g = g.contiguous()?;
                    let op = AdamOp {
                        moments: Mutex::new((m.as_mut_slice(), v.as_mut_slice())),
                        b1: self.beta1 as f32,
                        b2: self.beta2 as f32,
                        step_size: step_size as f32,
                        eps_hat: eps_hat as f32,
                    };
                    var.as_tensor().inplace_op2(&g, &op)?;
                }
                Moments::Device { m, v } => {
                    *m = ((&*m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
                    *v = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
                    let upd = ((&*m * step_size)? / (v.sqrt()? + eps_hat)?)?;
                    var.set(&(var.as_tensor() - upd)?)?;
                }
            }
        }
        Ok(())
    }

    /// The moments as named tensors (`<prefix>.<param>.m` / `.v`) for a checkpoint.
    pub fn state_tensors(&self, prefix: &str) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for ((name, var), st) in self.params.iter().zip(&self.state) {
            let (m, v) = match st {
                Moments::Host { m, v } => (
                    Tensor::from_slice(m, var.dims(), var.device())?,
                    Tensor::from_slice(v, var.dims(), var.device())?,
                ),
                Moments::Device { m, v } => (m.clone(), v.clone()),
            };
            out.insert(format!("{prefix}.{name}.m"), m);
            out.insert(format!("{prefix}.{name}.v"), v);
        }
        Ok(out)
    }

    /// Restores moments saved by [`Adam::state_tensors`] (the step count travels separately).
    pub fn load_state(&mut self, prefix: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for ((name, var), st) in self.params.iter().zip(self.state.iter_mut()) {
            let get = |k: &str| -> Result<Tensor> {
                let key = format!("{prefix}.{name}.{k}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| Error::Spec(format!("missing optimiser tensor {key:?}")))?;
                if t.dims() != var.dims() {
                    return Err(Error::Spec(format!(
                        "optimiser tensor {key:?} has shape {:?}, expected {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                Ok(t.clone())
            };
            let (tm, tv) = (get("m")?, get("v")?);
            match st {
                Moments::Host { m, v } => {
                    *m = tm.flatten_all()?.to_vec1::<f32>()?;
                    *v = tv.flatten_all()?.to_vec1::<f32>()?;
                }
                Moments::Device { m, v } => {
                    *m = tm.to_device(var.device())?;
                    *v = tv.to_device(var.device())?;
                }
            }
        }
        Ok(())
    }
}

struct AdamOp<'a> {
    moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
    b1: f32,
    b2: f32,
    step_size: f32,
    eps_hat: f32,
}

impl InplaceOp2 for AdamOp<'_> {
    fn name(&self) -> &'static str {
        "adam"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let p = slice_mut(s1, l1)?;
        let g = slice(s2, l2)?;
        let mut guard = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("adam state poisoned".into()))?;
        let (m, v) = &mut *guard;
        if p.len() != g.len() || m.len() != p.len() {
            return Err(candle_core::Error::Msg("adam: size mismatch".into()));
        }
        let (b1, b2) = (self.b1, self.b2);
        for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= self.step_size * *m / (v.sqrt() + self.eps_hat);
        }
        Ok(())
    }
}

/// `target ← target + τ (online − target)`, in place.
pub fn polyak(target: &Tensor, online: &Tensor, tau: f64) -> Result<()> {
    if target.device().is_cpu() {
        let online = online.contiguous()?;
        target.inplace_op2(&online, &PolyakOp { tau: tau as f32 })?;
        Ok(())
    } else {
        Err(Error::Spec(
            "polyak on a device tensor: use polyak_var".into(),
        ))
    }
}

struct PolyakOp {
    tau: f32,
}

impl InplaceOp2 for PolyakOp {
    fn name(&self) -> &'static str {
        "polyak"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let t = slice_mut(s1, l1)?;
        let o = slice(s2, l2)?;
        if t.len() != o.len() {
            return Err(candle_core::Error::Msg("polyak: size mismatch".into()));
        }
        for (t, o) in t.iter_mut().zip(o) {
            *t += self.tau * (o - *t);
        }
        Ok(())
    }
}

/// The soft update on a target held as a `Var` (works on every device).
pub fn polyak_var(target: &Var, online: &Tensor, tau: f64) -> Result<()> {
    if target.device().is_cpu() {
        polyak(target.as_tensor(), online, tau)
    } else {
        let t = (target.as_tensor() + ((online - target.as_tensor())? * tau)?)?;
        target.set(&t)?;
        Ok(())
    }
}

/// Adam on one scalar (the entropy temperature's and the CQL Lagrange multiplier's log).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ScalarAdam {
    pub value: f64,
    pub lr: f64,
    pub m: f64,
    pub v: f64,
    pub t: u64,
}

impl ScalarAdam {
    pub fn new(value: f64, lr: f64) -> Self {
        ScalarAdam {
            value,
            lr,
            ..Default::default()
        }
    }
    pub fn step(&mut self, grad: f64) {
        self.t += 1;
        let t = self.t as i32;
        self.m = 0.9 * self.m + 0.1 * grad;
        self.v = 0.999 * self.v + 0.001 * grad * grad;
        let mh = self.m / (1.0 - 0.9f64.powi(t));
        let vh = self.v / (1.0 - 0.999f64.powi(t));
        self.value -= self.lr * mh / (vh.sqrt() + 1e-8);
    }
}
