//! Every node kind a launch file can name, with its parameters.

mod episode_manager;
mod joint_sine;
mod kinematic_arm;
mod learner;
mod policy_runner;
mod recorder;
mod reward;
mod robot_state;
mod safety_filter;
mod sim_robot;
mod test_camera;

use std::path::PathBuf;
use std::time::Duration;

use rft_config::ConfigError;
use serde::de::DeserializeOwned;

pub(crate) use rft_config::check;

pub use episode_manager::{EpisodeLog, EpisodeManager, EpisodeManagerParams};
pub use joint_sine::{JointSine, JointSineParams};
pub use kinematic_arm::{KinematicArm, KinematicArmParams};
pub use learner::{Learner, LearnerParams, LearnerStats};
pub use policy_runner::{PolicyRunner, PolicyRunnerParams, RunnerStats, in_run_dir, load_policy};
pub use recorder::{Recorder, RecorderParams};
pub use reward::{
    ClassifierSpec, KeypointSpec, RewardCounts, RewardNode, RewardParams, WaypointSpec,
};
pub use rft_safety::SafetyConfig as SafetyFilterParams;
pub use safety_filter::{SafetyCounts, SafetyFilter};
pub use sim_robot::{SimRobot, SimRobotCounts, SimRobotParams};
pub use test_camera::{TestCamera, TestCameraParams};

use crate::bus::NodeHandle;
use crate::error::Result;
use crate::launch::NodeSpec;
use crate::runtime::Node;

/// Parameters of a node, by kind.
#[derive(Debug, Clone)]
pub enum NodeParams {
    KinematicArm(KinematicArmParams),
    JointSine(JointSineParams),
    TestCamera(TestCameraParams),
    Recorder(RecorderParams),
    SafetyFilter(Box<SafetyFilterParams>),
    SimRobot(Box<SimRobotParams>),
    Reward(Box<RewardParams>),
    PolicyRunner(Box<PolicyRunnerParams>),
    Learner(Box<LearnerParams>),
    EpisodeManager(Box<EpisodeManagerParams>),
}

/// Node kinds, for error messages and `rft --help`.
pub const KINDS: &[&str] = &[
    "kinematic_arm",
    "joint_sine",
    "test_camera",
    "recorder",
    "safety_filter",
    "sim_robot",
    "reward",
    "policy_runner",
    "learner",
    "episode_manager",
];

fn de<T: DeserializeOwned>(t: &toml::Table) -> rft_config::Result<T> {
    rft_config::from_table(t).map_err(|e| {
        if e.key.is_empty() {
            ConfigError::new("(params)", e.reason)
        } else {
            e
        }
    })
}

impl NodeParams {
    /// Parses the `params` table of a node of `kind`. Errors are `(key, reason)`; an empty key
    /// means the kind itself is wrong.
    pub fn parse(kind: &str, params: &toml::Table) -> rft_config::Result<Self> {
        Ok(match kind {
            "kinematic_arm" => Self::KinematicArm(de(params)?),
            "joint_sine" => Self::JointSine(de(params)?),
            "test_camera" => Self::TestCamera(de(params)?),
            "recorder" => Self::Recorder(de(params)?),
            "safety_filter" => Self::SafetyFilter(Box::new(de(params)?)),
            "sim_robot" => Self::SimRobot(Box::new(de(params)?)),
            "reward" => Self::Reward(Box::new(de(params)?)),
            "policy_runner" => Self::PolicyRunner(Box::new(de(params)?)),
            "learner" => Self::Learner(Box::new(de(params)?)),
            "episode_manager" => Self::EpisodeManager(Box::new(de(params)?)),
            other => {
                return Err(ConfigError::new(
                    String::new(),
                    format!(
                        "unknown node kind `{other}`; known kinds: {}",
                        KINDS.join(", ")
                    ),
                ));
            }
        })
    }

    /// Checks values that the types alone cannot.
    pub fn validate(&self) -> rft_config::Result<()> {
        match self {
            Self::KinematicArm(p) => p.validate(),
            Self::JointSine(p) => p.validate(),
            Self::TestCamera(p) => p.validate(),
            Self::Recorder(p) => p.validate(),
            Self::SafetyFilter(p) => p.validate(),
            Self::SimRobot(p) => p.validate(),
            Self::Reward(p) => p.validate(),
            Self::PolicyRunner(p) => p.validate(),
            Self::Learner(p) => p.validate(),
            Self::EpisodeManager(p) => p.validate(),
        }
    }

    /// Makes relative file paths in the parameters relative to `base` (the launch file's
    /// directory).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        match self {
            Self::SafetyFilter(p) => p.resolve_paths(base),
            Self::SimRobot(p) => p.resolve_paths(base),
            Self::Reward(p) => p.resolve_paths(base),
            Self::PolicyRunner(p) => p.resolve_paths(base),
            Self::Learner(p) => p.resolve_paths(base),
            Self::EpisodeManager(p) => p.resolve_paths(base),
            _ => {}
        }
    }

    pub fn default_rate_hz(&self) -> f64 {
        match self {
            Self::KinematicArm(_) => 100.0,
            Self::JointSine(_) => 50.0,
            Self::TestCamera(_) => 10.0,
            Self::Recorder(_) => 20.0,
            // Its timer only watches for joint states that stop; control runs on each state.
            Self::SafetyFilter(_) => 100.0,
            // The joint-state rate; physics runs at its own rate underneath.
            Self::SimRobot(_) => 100.0,
            // At most the camera's rate; each new frame is scored once.
            Self::Reward(_) => 10.0,
            // The control rate.
            Self::PolicyRunner(_) => 10.0,
            // Each tick joins what arrived and runs at most a few update rounds.
            Self::Learner(_) => 50.0,
            Self::EpisodeManager(_) => 10.0,
        }
    }

    /// Observers (recorders) stop after every other node, so they see final commands.
    pub fn is_observer(&self) -> bool {
        matches!(self, Self::Recorder(_))
    }
}

/// What nodes may need from the launch beyond their own parameters.
#[derive(Debug, Clone)]
pub struct LaunchCtx {
    /// `runs/<time>-<name>`.
    pub run_dir: PathBuf,
}

/// Builds the node described by `spec`.
pub fn create(spec: &NodeSpec, handle: &NodeHandle, ctx: &LaunchCtx) -> Result<Box<dyn Node>> {
    let rate = spec
        .entry
        .rate_hz
        .unwrap_or_else(|| spec.params.default_rate_hz());
    let period = Duration::from_secs_f64(1.0 / rate);
    let name = spec.entry.name.clone();
    Ok(match &spec.params {
        NodeParams::KinematicArm(p) => {
            Box::new(KinematicArm::new(name, p.clone(), period, handle)?)
        }
        NodeParams::JointSine(p) => Box::new(JointSine::new(name, p.clone(), period, handle)?),
        NodeParams::TestCamera(p) => Box::new(TestCamera::new(name, p.clone(), period, handle)?),
        NodeParams::Recorder(p) => Box::new(Recorder::new(name, p.clone(), period, handle, ctx)?),
        NodeParams::SafetyFilter(p) => {
            Box::new(SafetyFilter::new(name, (**p).clone(), period, handle)?)
        }
        NodeParams::SimRobot(p) => Box::new(SimRobot::new(name, (**p).clone(), period, handle)?),
        NodeParams::Reward(p) => {
            let mut p = (**p).clone();
            p.map_paths(|x| *x = in_run_dir(x, &ctx.run_dir));
            Box::new(RewardNode::new(name, p, period, handle)?)
        }
        NodeParams::PolicyRunner(p) => {
            let mut p = (**p).clone();
            p.policy = in_run_dir(&p.policy, &ctx.run_dir);
            Box::new(PolicyRunner::new(name, p, period, handle)?)
        }
        NodeParams::Learner(p) => {
            let mut p = (**p).clone();
            p.init = in_run_dir(&p.init, &ctx.run_dir);
            p.out = in_run_dir(&p.out, &ctx.run_dir);
            p.demos = p.demos.map(|d| in_run_dir(&d, &ctx.run_dir));
            Box::new(Learner::new(name, p, period, handle)?)
        }
        NodeParams::EpisodeManager(p) => {
            Box::new(EpisodeManager::new(name, (**p).clone(), period, handle)?)
        }
    })
}
