//! Observation normalisation: `clip((o − μ) / σ, ±clip)`, fixed after it is fitted.

use serde::{Deserialize, Serialize};

/// Per-dimension mean and standard deviation; empty means identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObsNorm {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub clip: f32,
}

/// Standard deviations below this are treated as this (constant dimensions stay finite).
pub const MIN_STD: f32 = 1e-3;

impl ObsNorm {
    pub fn identity() -> Self {
        ObsNorm {
            mean: Vec::new(),
            std: Vec::new(),
            clip: 10.0,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.mean.is_empty()
    }

    /// Fits mean and standard deviation to observations (Welford, in f64).
    pub fn fit<'a>(dim: usize, obs: impl Iterator<Item = &'a [f32]>) -> Self {
        let mut n = 0f64;
        let mut mean = vec![0f64; dim];
        let mut m2 = vec![0f64; dim];
        for o in obs {
            n += 1.0;
            for ((x, m), s) in o.iter().zip(mean.iter_mut()).zip(m2.iter_mut()) {
                let d = *x as f64 - *m;
                *m += d / n;
                *s += d * (*x as f64 - *m);
            }
        }
        if n < 2.0 {
            return ObsNorm::identity();
        }
        ObsNorm {
            mean: mean.iter().map(|m| *m as f32).collect(),
            std: m2
                .iter()
                .map(|s| ((s / n).sqrt() as f32).max(MIN_STD))
                .collect(),
            clip: 10.0,
        }
    }

    /// Normalises in place (identity when not fitted).
    pub fn apply(&self, obs: &mut [f32]) {
        if self.is_identity() {
            return;
        }
        for ((x, m), s) in obs.iter_mut().zip(&self.mean).zip(&self.std) {
            *x = ((*x - m) / s).clamp(-self.clip, self.clip);
        }
    }

    pub fn dim_ok(&self, dim: usize) -> bool {
        self.is_identity() || (self.mean.len() == dim && self.std.len() == dim)
    }
}
