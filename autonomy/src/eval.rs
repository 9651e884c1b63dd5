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
    /// Each episode's outcome, in order (`rft eval --episodes-csv` writes them).
    #[serde(skip)]
    pub episodes: Vec<EvalEpisode>,
}

/// One evaluation episode: where the cube started and ended, and how close it came.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalEpisode {
    /// Scene seed (`rft eval --seed` + episode index).
    pub seed: u64,
    pub success: bool,
    /// Simulated seconds until success or the end of the episode.
    pub time_s: f64,
    pub start_xy: [f64; 2],
    pub final_xy: [f64; 2],
    /// Distance from the cube to the goal's resting point at the end, and the least on the way.
    pub final_distance_m: f64,
    pub min_distance_m: f64,
}

impl EvalEpisode {
    pub const CSV_HEADER: &'static str = "direction,seed,success,time_s,start_x,start_y,final_x,final_y,moved_m,final_distance_m,min_distance_m";

    /// How far the cube travelled from its start (straight line), metres.
    pub fn moved_m(&self) -> f64 {
        (self.final_xy[0] - self.start_xy[0]).hypot(self.final_xy[1] - self.start_xy[1])
    }

    pub fn csv_row(&self, direction: &str) -> String {
        format!(
            "{direction},{},{},{:.2},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}",
            self.seed,
            self.success,
            self.time_s,
            self.start_xy[0],
            self.start_xy[1],
            self.final_xy[0],
            self.final_xy[1],
            self.moved_m(),
            self.final_distance_m,
            self.min_distance_m
        )
    }
}

/// The failed episodes of an evaluation in two kinds: the cube barely moved (< 2 cm: the
/// arm stalled or missed it), or it was pushed but not into the goal, with the median of how
/// close those came to the goal's resting point and where they ended. A line for the
/// console; empty when nothing failed.
pub fn failure_summary(episodes: &[EvalEpisode]) -> String {
    let failed: Vec<&EvalEpisode> = episodes.iter().filter(|e| !e.success).collect();
    if failed.is_empty() {
        return String::new();
    }
    let moved: Vec<&&EvalEpisode> = failed.iter().filter(|e| e.moved_m() >= 0.02).collect();
    let still = failed.len() - moved.len();
    let median_cm = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        100.0 * v[v.len() / 2]
    };
    let mut s = format!(
        "{} failed: {still} left the cube within 2 cm of its start, {} moved it",
        failed.len(),
        moved.len()
    );
    if !moved.is_empty() {
        s += &format!(
            " (median closest approach to the goal point {:.1} cm, final distance {:.1} cm)",
            median_cm(moved.iter().map(|e| e.min_distance_m).collect()),
            median_cm(moved.iter().map(|e| e.final_distance_m).collect())
        );
    }
    s
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
) -> crate::Result<EvalResult> {
    let steps = (max_s * plant.config().control_hz).round().max(1.0) as usize;
    let (mut obs, mut img) = (Vec::new(), Vec::new());
    let mut a = [0.0f32; ACTION_DIM];
    let mut records = Vec::with_capacity(episodes);
    let xy = |p: &SimPlant| {
        let v = p.object().translation.vector;
        [v.x, v.y]
    };
    for i in 0..episodes {
        let ep_seed = seed + i as u64;
        plant.reset_for(ep_seed, dir);
        let t0 = plant.time_s();
        let start_xy = xy(plant);
        let mut truth = plant.truth(dir);
        let mut min_distance_m = truth.distance_m;
        for _ in 0..steps {
            plant.observe(&mut obs, &mut img);
            let image = (!img.is_empty()).then_some(img.as_slice());
            policy.act(&obs, task_id(dir), image, ActMode::Deterministic, &mut a)?;
            plant.apply(&a);
            truth = plant.truth(dir);
            min_distance_m = min_distance_m.min(truth.distance_m);
            if truth.success {
                break;
            }
        }
        records.push(EvalEpisode {
            seed: ep_seed,
            success: truth.success,
            time_s: plant.time_s() - t0,
            start_xy,
            final_xy: xy(plant),
            final_distance_m: truth.distance_m,
            min_distance_m,
        });
    }
    let won: Vec<f64> = records
        .iter()
        .filter(|e| e.success)
        .map(|e| e.time_s)
        .collect();
    Ok(EvalResult {
        direction: dir.name().into(),
        rate: Rate::new(won.len(), episodes),
        mean_time_s: (!won.is_empty()).then(|| won.iter().sum::<f64>() / won.len() as f64),
        episodes: records,
    })
}

/// The `q` quantile of `v` (nearest rank; NaN when empty).
pub fn pct(v: &[f32], q: f64) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
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

    fn ep(success: bool, start: [f64; 2], end: [f64; 2], final_d: f64, min_d: f64) -> EvalEpisode {
        EvalEpisode {
            seed: 0,
            success,
            time_s: 1.0,
            start_xy: start,
            final_xy: end,
            final_distance_m: final_d,
            min_distance_m: min_d,
        }
    }

    #[test]
    fn failures_are_sorted_into_unmoved_and_pushed_astray() {
        assert_eq!(
            failure_summary(&[ep(true, [0.5, 0.0], [0.5, 0.2], 0.0, 0.0)]),
            ""
        );
        let eps = [
            ep(true, [0.5, 0.0], [0.5, 0.2], 0.0, 0.0),
            // Moved 1 cm: unmoved, however close it started.
            ep(false, [0.5, 0.0], [0.5, 0.01], 0.19, 0.04),
            // Moved 15 cm and passed 3 cm from the goal.
            ep(false, [0.5, 0.0], [0.5, 0.15], 0.06, 0.03),
            // Moved 10 cm sideways.
            ep(false, [0.5, 0.0], [0.4, 0.0], 0.30, 0.28),
            // Moved 10 cm the wrong way.
            ep(false, [0.5, 0.0], [0.6, 0.0], 0.25, 0.2),
        ];
        assert_eq!(
            failure_summary(&eps),
            "4 failed: 1 left the cube within 2 cm of its start, 3 moved it \
             (median closest approach to the goal point 20.0 cm, final distance 25.0 cm)"
        );
        assert_eq!(
            failure_summary(&eps[..2]),
            "1 failed: 1 left the cube within 2 cm of its start, 0 moved it"
        );
        let row = eps[2].csv_row("forward");
        assert_eq!(
            row.split(',').count(),
            EvalEpisode::CSV_HEADER.split(',').count()
        );
        assert!(
            row.starts_with("forward,0,false,1.00,0.5000,0.0000,0.5000,0.1500,0.1500,"),
            "{row}"
        );
    }
}
