//! Scripted demonstrations for policy pre-training, collected through the same plant (safety
//! filter, action mapping, observation builder) the policy will run on. Each episode starts
//! from a reset scene; a share of them have noise on the expert's actions, so the data hold
//! recoveries and failures as teleoperated data do. The demonstrator labels each demo: reward 1
//! on the step the task is done (a true terminal), else 0.

use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};
use rft_policies::dataset::Episode;
use rft_sim::{Direction, ExpertObs, expert::expert_for};
use serde::{Deserialize, Serialize};

use super::action::ACTION_DIM;
use super::plant::{PlantConfig, SimPlant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Demos per direction (forward is task 0, backward task 1).
    pub episodes_per_direction: usize,
    /// Share of demos with Gaussian noise on the expert's actions.
    pub noisy_fraction: f64,
    /// Standard deviation of that noise (actions are in [−1, 1]).
    pub noise_std: f64,
    /// Longest demo, simulated seconds.
    pub max_s: f64,
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            episodes_per_direction: 20,
            noisy_fraction: 0.5,
            noise_std: 0.5,
            max_s: 20.0,
            seed: 1_000,
        }
    }
}

/// Task id of a direction in the multi-task policy.
pub fn task_id(dir: Direction) -> u8 {
    match dir {
        Direction::Forward => 0,
        Direction::Backward => 1,
    }
}

/// Demos for both directions, forward ones first. `progress(i, n)` after each.
pub fn collect(
    plant_cfg: &PlantConfig,
    cfg: &DemoConfig,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<Vec<Episode>> {
    if cfg.episodes_per_direction == 0 {
        anyhow::bail!("demos.episodes_per_direction must be at least 1");
    }
    if !(0.0..=1.0).contains(&cfg.noisy_fraction) || cfg.noise_std.is_nan() || cfg.noise_std < 0.0 {
        anyhow::bail!("demos: noisy_fraction must be in [0, 1] and noise_std ≥ 0");
    }
    let mut plant = SimPlant::new(plant_cfg, cfg.seed)?;
    let map = plant_cfg.action.clone();
    let steps = (cfg.max_s * plant_cfg.control_hz).round() as usize;
    let n = 2 * cfg.episodes_per_direction;
    let mut out = Vec::with_capacity(n);
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xde305);
    let noise = Normal::new(0.0, cfg.noise_std.max(1e-12))?;
    for (di, dir) in Direction::ALL.into_iter().enumerate() {
        for i in 0..cfg.episodes_per_direction {
            let seed = cfg.seed + (di * cfg.episodes_per_direction + i) as u64;
            plant.reset_for(seed, dir);
            let noisy = (i as f64 + 0.5) / cfg.episodes_per_direction as f64 <= cfg.noisy_fraction;
            let mut expert = expert_for(plant_cfg.task, dir);
            let mut ep = Episode {
                task_id: task_id(dir),
                ..Default::default()
            };
            let (mut o, mut img) = (Vec::new(), Vec::new());
            plant.observe(&mut o, &mut img);
            ep.obs.push(o.clone());
            if !img.is_empty() {
                ep.images.push(img.clone());
            }
            for _ in 0..steps {
                let e = expert.act(&ExpertObs::from_sim(&plant.sim));
                let mut a = map.action_of(&e.linear, e.angular.z);
                if noisy {
                    for v in a.iter_mut() {
                        *v = (*v + noise.sample(&mut rng) as f32).clamp(-1.0, 1.0);
                    }
                }
                let info = plant.apply(&a);
                plant.observe(&mut o, &mut img);
                let done = plant.truth(dir).success;
                ep.obs.push(o.clone());
                if !img.is_empty() {
                    ep.images.push(img.clone());
                }
                ep.actions.push(a.to_vec());
                ep.rewards.push(if done { 1.0 } else { 0.0 });
                ep.interventions.push(false);
                ep.safety_overrides.push(info.safety_override);
                if done {
                    ep.terminated = true;
                    break;
                }
            }
            debug_assert_eq!(ep.actions[0].len(), ACTION_DIM);
            out.push(ep);
            progress(out.len(), n);
            // Keep the random stream independent of episode lengths.
            let _ = rng.random::<u64>();
        }
    }
    Ok(out)
}

/// Successful demos per task id.
pub fn successes(eps: &[Episode]) -> [usize; 2] {
    let mut s = [0; 2];
    for e in eps {
        if e.terminated && (e.task_id as usize) < 2 {
            s[e.task_id as usize] += 1;
        }
    }
    s
}
