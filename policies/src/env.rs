//! Built-in benchmark environments for the learner (`rft train --env NAME`).

use crate::error::{Error, Result};

/// What an environment looks like to the learner.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvSpec {
    pub name: String,
    pub obs_dim: usize,
    /// Actions are in [−1, 1]; the environment scales them.
    pub act_dim: usize,
    pub max_episode_steps: u32,
}

/// The result of one environment step.
#[derive(Clone, Debug)]
pub struct Step {
    pub obs: Vec<f32>,
    pub reward: f32,
    /// A true terminal state: no bootstrapping past it.
    pub terminated: bool,
    /// The episode was cut (time limit): bootstrapping continues through it.
    pub truncated: bool,
}

/// A Gymnasium-style episodic environment with actions in [−1, 1].
pub trait Env: Send {
    fn spec(&self) -> EnvSpec;
    fn reset(&mut self) -> Vec<f32>;
    fn step(&mut self, action: &[f32]) -> Step;
}

/// Names accepted by [`make_env`].
pub const ENV_NAMES: &[&str] = &["pendulum"];

/// Builds a built-in environment by name.
pub fn make_env(name: &str, seed: u64) -> Result<Box<dyn Env>> {
    match name {
        "pendulum" | "Pendulum-v1" => Ok(Box::new(crate::pendulum::Pendulum::new(seed))),
        other => Err(Error::Config(format!(
            "unknown environment {other:?}; built in: {}",
            ENV_NAMES.join(", ")
        ))),
    }
}
