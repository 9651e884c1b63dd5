//! Evaluation against ground truth: the policy acts deterministically from reset scenes and
//! the simulator's task status says whether it succeeded. Success rates come with Wilson
//! score intervals.

use rft_policies::handle::{ActMode, PolicyHandle};
use rft_sim::Direction;
use serde::{Deserialize, Serialize};

use super::action::ACTION_DIM;
use super::demos::task_id;
use super::plant::SimPlant;

/// A success rate with its 95 % Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub successes: usize,
    pub trials: usize,
    pub rate: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Rate {
    pub fn new(successes: usize, trials: usize) -> Self {
        let (lo, hi) = wilson(successes, trials, 1.96);
        Self {
            successes,
            trials,
            rate: if trials == 0 {
                0.0
            } else {
                successes as f64 / trials as f64
            },
            lo,
            hi,
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1}% ({}/{}, 95% CI {:.1}–{:.1}%)",
            100.0 * self.rate,
            self.successes,
            self.trials,
            100.0 * self.lo,
            100.0 * self.hi
        )
    }
}

/// Wilson score interval for `s` successes in `n` trials at normal quantile `z`.
pub fn wilson(s: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (s, n) = (s as f64, n as f64);
    let p = s / n;
    let z2 = z * z;
    let d = 1.0 + z2 / n;
    let c = (p + z2 / (2.0 * n)) / d;
    let h = z * ((p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt()) / d;
    ((c - h).max(0.0), (c + h).min(1.0))
}

/// One direction's evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResult {
    pub direction: String,
    pub rate: Rate,
    /// Mean simulated seconds to success over the successful episodes.
    pub mean_time_s: Option<f64>,
}

/// Runs `episodes` deterministic episodes of `dir`, episode `i` from the scene `seed + i`,
/// each until ground-truth success or `max_s`.
pub fn evaluate(
    policy: &mut PolicyHandle,
    plant: &mut SimPlant,
    dir: Direction,
    episodes: usize,
    seed: u64,
    max_s: f64,
) -> anyhow::Result<EvalResult> {
    let steps = (max_s * plant.config().control_hz).round().max(1.0) as usize;
    let (mut obs, mut img) = (Vec::new(), Vec::new());
    let mut a = [0.0f32; ACTION_DIM];
    let (mut ok, mut time) = (0, 0.0);
    for i in 0..episodes {
        plant.reset_for(seed + i as u64, dir);
        let t0 = plant.time_s();
        for _ in 0..steps {
            plant.observe(&mut obs, &mut img);
            let image = (!img.is_empty()).then_some(img.as_slice());
            policy.act(&obs, task_id(dir), image, ActMode::Deterministic, &mut a)?;
            plant.apply(&a);
            if plant.truth(dir).success {
                ok += 1;
                time += plant.time_s() - t0;
                break;
            }
        }
    }
    Ok(EvalResult {
        direction: dir.name().into(),
        rate: Rate::new(ok, episodes),
        mean_time_s: (ok > 0).then(|| time / ok as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        // 8/10: the textbook interval (0.490, 0.943).
        let (lo, hi) = wilson(8, 10, 1.96);
        assert!(
            (lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 20, 1.96);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.1611).abs() < 1e-3);
        assert_eq!(wilson(0, 0, 1.96), (0.0, 1.0));
        let r = Rate::new(17, 20);
        assert!(r.lo < 0.85 && r.hi > 0.85 && (r.rate - 0.85).abs() < 1e-12);
    }
}
