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
    /// Backward (reset) demos, when they differ from `episodes_per_direction`: the reset task
    /// is often the cheaper one to demonstrate broadly.
    pub backward_episodes: Option<usize>,
    /// Share of demos with Gaussian noise on the expert's actions.
    pub noisy_fraction: f64,
    /// Standard deviation of that noise (actions are in [−1, 1]).
    pub noise_std: f64,
    /// Share of demos whose cube starts anywhere on the task area (the box between and around
    /// the two regions) instead of in the direction's start region: the pre-trained policy
    /// then knows how to bring the cube back from where a failed reset-free episode left it.
    pub scattered_fraction: f64,
    /// The forward demos' share, when it differs from `scattered_fraction`: reset demos from
    /// anywhere, forward demos from where the forward task begins.
    pub forward_scattered_fraction: Option<f64>,
    /// How far around the two regions scattered starts reach (x, y metres): the area the
    /// reset-free loop can leave the cube in.
    pub scatter_margin: [f64; 2],
    /// Longest demo, simulated seconds.
    pub max_s: f64,
    /// After the task is done the demonstrator goes on (backing off, holding still) for this
    /// long, every step rewarded: the policy learns where to stop, not only how to push.
    pub hold_s: f64,
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            episodes_per_direction: 20,
            backward_episodes: None,
            noisy_fraction: 0.25,
            noise_std: 0.3,
            scattered_fraction: 0.0,
            forward_scattered_fraction: None,
            scatter_margin: [0.2, 0.25],
            max_s: 20.0,
            hold_s: 1.0,
            seed: 1_000,
        }
    }
}

impl DemoConfig {
    /// Demos of `dir`.
    pub fn episodes(&self, dir: Direction) -> usize {
        match dir {
            Direction::Forward => self.episodes_per_direction,
            Direction::Backward => self
                .backward_episodes
                .unwrap_or(self.episodes_per_direction),
        }
    }

    /// Share of `dir`'s demos with scattered starts.
    pub fn scattered(&self, dir: Direction) -> f64 {
        match dir {
            Direction::Forward => self
                .forward_scattered_fraction
                .unwrap_or(self.scattered_fraction),
            Direction::Backward => self.scattered_fraction,
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

/// The direction a task id names (0 forward, anything else backward), as `/rft/phase` and
/// `/rft/sim/reset` carry it.
pub fn direction_of(task_id: u8) -> Direction {
    if task_id == 0 {
        Direction::Forward
    } else {
        Direction::Backward
    }
}

/// Demos for both directions, forward ones first. `progress(i, n)` after each.
pub fn collect(
    plant_cfg: &PlantConfig,
    cfg: &DemoConfig,
    mut progress: impl FnMut(usize, usize),
) -> crate::Result<Vec<Episode>> {
    if cfg.episodes_per_direction == 0 || cfg.backward_episodes == Some(0) {
        return Err(crate::Error::Stage(
            "demos.episodes_per_direction and demos.backward_episodes must be at least 1"
                .to_string(),
        ));
    }
    if !(0.0..=1.0).contains(&cfg.noisy_fraction) || cfg.noise_std.is_nan() || cfg.noise_std < 0.0 {
        return Err(crate::Error::Stage(
            "demos: noisy_fraction must be in [0, 1] and noise_std ≥ 0".to_string(),
        ));
    }
    if !(cfg.hold_s.is_finite() && cfg.hold_s >= 0.0) {
        return Err(crate::Error::Stage(format!(
            "demos.hold_s must be ≥ 0 (got {})",
            cfg.hold_s
        )));
    }
    if cfg
        .scatter_margin
        .iter()
        .any(|m| !(m.is_finite() && *m >= 0.0))
    {
        return Err(crate::Error::Stage(format!(
            "demos.scatter_margin must be ≥ 0 (got {:?})",
            cfg.scatter_margin
        )));
    }
    for (k, v) in [
        ("scattered_fraction", cfg.scattered_fraction),
        (
            "forward_scattered_fraction",
            cfg.scattered(Direction::Forward),
        ),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(crate::Error::Stage(format!(
                "demos.{k} must be in [0, 1] (got {v})"
            )));
        }
    }
    let mut plant = SimPlant::new(plant_cfg, cfg.seed)?;
    let map = plant_cfg.action.clone();
    let steps = (cfg.max_s * plant_cfg.control_hz).round() as usize;
    let hold_steps = (cfg.hold_s * plant_cfg.control_hz).round() as usize;
    let n = cfg.episodes(Direction::Forward) + cfg.episodes(Direction::Backward);
    let mut out = Vec::with_capacity(n);
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xde305);
    let noise = Normal::new(0.0, cfg.noise_std.max(1e-12))
        .map_err(|e| rft_config::ConfigError::new("demos.noise_std", e.to_string()))?;
    for (di, dir) in Direction::ALL.into_iter().enumerate() {
        let per = cfg.episodes(dir);
        for i in 0..per {
            let seed = cfg.seed + (di * cfg.episodes_per_direction + i) as u64;
            plant.reset_for(seed, dir);
            let frac = (i as f64 + 0.5) / per as f64;
            let noisy = frac <= cfg.noisy_fraction;
            // Scattered starts are spread over noisy and clean demos alike.
            let scattered = 1.0 - frac < cfg.scattered(dir);
            if scattered {
                let mut r = StdRng::seed_from_u64(seed ^ 0x5ca7);
                let (from, to) = plant_cfg.task.regions(dir);
                let margin = nalgebra::Vector2::new(cfg.scatter_margin[0], cfg.scatter_margin[1]);
                let lo = from.center.inf(&to.center) - margin;
                let hi = from.center.sup(&to.center) + margin;
                let mut pose = plant.object();
                pose.translation.x = r.random_range(lo.x..=hi.x);
                pose.translation.y = r.random_range(lo.y..=hi.y);
                pose.rotation = nalgebra::UnitQuaternion::from_axis_angle(
                    &nalgebra::Vector3::z_axis(),
                    r.random_range(-std::f64::consts::PI..std::f64::consts::PI),
                );
                plant.sim.set_object_pose(&pose);
            }
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
            let mut done_for = None;
            for _ in 0..steps + hold_steps {
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
                if done && done_for.is_none() {
                    done_for = Some(0);
                }
                ep.obs.push(o.clone());
                if !img.is_empty() {
                    ep.images.push(img.clone());
                }
                ep.actions.push(a.to_vec());
                ep.rewards.push(if done { 1.0 } else { 0.0 });
                ep.interventions.push(false);
                ep.safety_overrides.push(info.safety_override);
                if let Some(k) = done_for.as_mut() {
                    if *k >= hold_steps {
                        ep.terminated = true;
                        break;
                    }
                    *k += 1;
                } else if ep.actions.len() >= steps {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn starts(scattered: f64) -> Vec<(u8, [f32; 2])> {
        starts_with(scattered, None)
    }

    fn starts_with(scattered: f64, forward: Option<f64>) -> Vec<(u8, [f32; 2])> {
        let cfg = DemoConfig {
            episodes_per_direction: 4,
            scattered_fraction: scattered,
            forward_scattered_fraction: forward,
            max_s: 0.2,
            ..DemoConfig::default()
        };
        collect(&PlantConfig::default(), &cfg, |_, _| {})
            .unwrap()
            .iter()
            .map(|e| (e.task_id, [e.obs[0][5], e.obs[0][6]]))
            .collect()
    }

    #[test]
    fn successful_demos_go_on_for_hold_s_with_every_step_rewarded() {
        let plant = PlantConfig::default();
        let run = |hold_s: f64| {
            let cfg = DemoConfig {
                episodes_per_direction: 1,
                backward_episodes: Some(1),
                noisy_fraction: 0.0,
                hold_s,
                ..DemoConfig::default()
            };
            collect(&plant, &cfg, |_, _| {}).unwrap()
        };
        let (short, long) = (run(0.0), run(1.0));
        for (a, b) in short.iter().zip(&long) {
            assert!(a.terminated && b.terminated, "the expert succeeds");
            // Without a hold the demo ends on its first success.
            assert_eq!(a.rewards.iter().filter(|r| **r > 0.0).count(), 1);
            assert_eq!(a.rewards.last(), Some(&1.0));
            // With one: ten more steps (10 Hz), the same up to the first success.
            assert_eq!(b.len(), a.len() + 10);
            for (x, y) in a.actions.iter().zip(&b.actions) {
                assert!(
                    x.iter().zip(y).all(|(x, y)| (x - y).abs() < 1e-3),
                    "{x:?} {y:?}"
                );
            }
            // Rewards follow ground truth step by step (the cube may rock as the tool backs
            // off): the first success and most of the hold.
            let hold = &b.rewards[a.len() - 1..];
            assert_eq!(hold[0], 1.0);
            assert!(hold.iter().filter(|r| **r == 1.0).count() >= 7, "{hold:?}");
        }
    }

    #[test]
    fn scattered_demos_start_the_cube_away_from_the_start_region() {
        let task = PlantConfig::default().task;
        let inside = |t: u8, p: [f32; 2]| {
            let dir = if t == 0 {
                Direction::Forward
            } else {
                Direction::Backward
            };
            let (from, _) = task.regions(dir);
            (f64::from(p[0]) - from.center.x).abs() <= from.half
                && (f64::from(p[1]) - from.center.y).abs() <= from.half
        };
        assert!(starts(0.0).iter().all(|(t, p)| inside(*t, *p)));
        let s = starts(1.0);
        let away = s.iter().filter(|(t, p)| !inside(*t, *p)).count();
        assert!(
            away >= 6,
            "{away} of 8 scattered starts left the start region: {s:?}"
        );
        // Still on the task area around the two regions.
        assert!(
            s.iter()
                .all(|(_, p)| (0.25..0.75).contains(&p[0]) && p[1].abs() < 0.41)
        );
        // Half of them: the later half of each direction.
        let half = starts(0.5);
        assert!(half.iter().filter(|(t, p)| !inside(*t, *p)).count() <= 4);
        // Forward demos from the start region, reset demos from anywhere.
        let s = starts_with(1.0, Some(0.0));
        assert!(
            s.iter()
                .filter(|(t, _)| *t == 0)
                .all(|(t, p)| inside(*t, *p))
        );
        let away = s.iter().filter(|(t, p)| *t == 1 && !inside(*t, *p)).count();
        assert!(away >= 3, "{away} of 4 scattered reset starts left: {s:?}");
        let bad = DemoConfig {
            forward_scattered_fraction: Some(1.5),
            ..DemoConfig::default()
        };
        let e = collect(&PlantConfig::default(), &bad, |_, _| {}).unwrap_err();
        assert!(
            e.to_string().contains("demos.forward_scattered_fraction"),
            "{e}"
        );
    }
}
