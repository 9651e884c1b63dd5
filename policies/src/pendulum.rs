//! An exact port of Gymnasium's `Pendulum-v1` (classic_control/pendulum.py), the standard
//! continuous-control benchmark the learner is checked against.
//!
//! Dynamics (per step, dt = 0.05): the cost is taken on the pre-step state,
//! `cost = angle_normalize(θ)² + 0.1 θ̇² + 0.001 u²`;
//! `θ̇' = clip(θ̇ + (3g/(2l) sin θ + 3/(m l²) u) dt, −8, 8)`, `θ' = θ + θ̇' dt`.
//! Observation `[cos θ, sin θ, θ̇]`; reset `θ ~ U[−π, π]`, `θ̇ ~ U[−1, 1]`; episodes are
//! truncated after 200 steps (Gymnasium's `TimeLimit`). Arithmetic is f64 like NumPy's; the
//! observation is returned as f32 like Gymnasium's `float32` observation space.

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::env::{Env, EnvSpec, Step};

pub const MAX_SPEED: f64 = 8.0;
pub const MAX_TORQUE: f64 = 2.0;
pub const DT: f64 = 0.05;
pub const G: f64 = 10.0;
pub const M: f64 = 1.0;
pub const L: f64 = 1.0;
pub const MAX_EPISODE_STEPS: u32 = 200;

/// Gymnasium's `angle_normalize`: `((x + π) mod 2π) − π` with Python's floored modulo.
pub fn angle_normalize(x: f64) -> f64 {
    (x + std::f64::consts::PI).rem_euclid(2.0 * std::f64::consts::PI) - std::f64::consts::PI
}

/// One pendulum step on `(θ, θ̇)` with torque `u` (clipped to ±2): returns the new state and
/// the reward (minus the cost of the pre-step state).
pub fn dynamics(theta: f64, theta_dot: f64, u: f64) -> (f64, f64, f64) {
    let u = u.clamp(-MAX_TORQUE, MAX_TORQUE);
    let cost = angle_normalize(theta).powi(2) + 0.1 * theta_dot.powi(2) + 0.001 * u.powi(2);
    let new_theta_dot = (theta_dot
        + (3.0 * G / (2.0 * L) * theta.sin() + 3.0 / (M * L * L) * u) * DT)
        .clamp(-MAX_SPEED, MAX_SPEED);
    let new_theta = theta + new_theta_dot * DT;
    (new_theta, new_theta_dot, -cost)
}

/// `Pendulum-v1` with its 200-step time limit. The action is the torque in the policy's
/// normalised range [−1, 1], scaled by 2 (Gymnasium's action space is [−2, 2]; SB3 rescales
/// the same way).
#[derive(Clone, Debug)]
pub struct Pendulum {
    theta: f64,
    theta_dot: f64,
    steps: u32,
    rng: StdRng,
}

impl Pendulum {
    pub fn new(seed: u64) -> Self {
        let mut p = Pendulum {
            theta: 0.0,
            theta_dot: 0.0,
            steps: 0,
            rng: StdRng::seed_from_u64(seed),
        };
        p.reset();
        p
    }

    /// Sets the state exactly (for comparisons against the published equations).
    pub fn set_state(&mut self, theta: f64, theta_dot: f64) {
        self.theta = theta;
        self.theta_dot = theta_dot;
        self.steps = 0;
    }

    pub fn state(&self) -> (f64, f64) {
        (self.theta, self.theta_dot)
    }

    /// Applies a torque in N·m (clipped to ±2), as Gymnasium's `step`.
    pub fn step_torque(&mut self, u: f64) -> (f64, bool) {
        let (theta, theta_dot, reward) = dynamics(self.theta, self.theta_dot, u);
        self.theta = theta;
        self.theta_dot = theta_dot;
        self.steps += 1;
        (reward, self.steps >= MAX_EPISODE_STEPS)
    }

    fn write_obs(&self, obs: &mut [f32]) {
        obs[0] = self.theta.cos() as f32;
        obs[1] = self.theta.sin() as f32;
        obs[2] = self.theta_dot as f32;
    }
}

impl Env for Pendulum {
    fn spec(&self) -> EnvSpec {
        EnvSpec {
            name: "pendulum".into(),
            obs_dim: 3,
            act_dim: 1,
            max_episode_steps: MAX_EPISODE_STEPS,
        }
    }

    fn reset(&mut self) -> Vec<f32> {
        self.theta = self
            .rng
            .random_range(-std::f64::consts::PI..=std::f64::consts::PI);
        self.theta_dot = self.rng.random_range(-1.0..=1.0);
        self.steps = 0;
        let mut obs = vec![0.0; 3];
        self.write_obs(&mut obs);
        obs
    }

    fn step(&mut self, action: &[f32]) -> Step {
        let u = action.first().copied().unwrap_or(0.0) as f64 * MAX_TORQUE;
        let (reward, truncated) = self.step_torque(u);
        let mut obs = vec![0.0; 3];
        self.write_obs(&mut obs);
        Step {
            obs,
            reward: reward as f32,
            terminated: false,
            truncated,
        }
    }
}

/// A hand-written energy-pumping swing-up with a PD catch near the top, in the normalised
/// action range. Mixed with noise it produces the "mediocre" episodes offline pre-training
/// starts from (no learner involved).
pub fn swing_up_action(obs: &[f32]) -> f32 {
    let (c, s, w) = (obs[0] as f64, obs[1] as f64, obs[2] as f64);
    let theta = s.atan2(c); // 0 = upright
    let energy = 0.5 * w * w + 1.5 * G / L * (c - 1.0); // 0 at rest upright
    let u = if theta.abs() < 0.6 {
        -(12.0 * theta + 2.5 * w)
    } else {
        let dir = if w.abs() < 1e-3 { 1.0 } else { w.signum() };
        dir * (-energy).max(0.0) * 0.5
    };
    (u / MAX_TORQUE).clamp(-1.0, 1.0) as f32
}

/// Episodes from [`swing_up_action`] with probability `noise` of a uniformly random action at
/// each step instead.
pub fn heuristic_episodes(n: usize, noise: f64, seed: u64) -> Vec<crate::dataset::Episode> {
    let mut env = Pendulum::new(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4e15e);
    (0..n)
        .map(|_| {
            let mut ep = crate::dataset::Episode::default();
            let mut obs = env.reset();
            ep.obs.push(obs.clone());
            loop {
                let a = if rng.random_bool(noise.clamp(0.0, 1.0)) {
                    rng.random_range(-1.0f32..=1.0)
                } else {
                    swing_up_action(&obs)
                };
                let s = env.step(&[a]);
                ep.actions.push(vec![a]);
                ep.rewards.push(s.reward);
                ep.obs.push(s.obs.clone());
                obs = s.obs;
                if s.truncated || s.terminated {
                    ep.terminated = s.terminated;
                    break;
                }
            }
            ep
        })
        .collect()
}
