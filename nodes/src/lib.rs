//! The node kinds a launch file can name, one file each, and [`registry()`], the table the
//! launch loader reads them through.
//!
//! A node is a plain struct implementing [`rft_runtime::Node`]; its parameters type implements
//! [`rft_runtime::launch::NodeKind`] (kind name, default rate, the file paths it holds,
//! validation, how to build the node). Adding a kind: a file here, its `NodeKind`, one line in
//! [`registry()`].

mod episode_manager;
mod evaluator;
mod joint_sine;
mod kinematic_arm;
mod learner;
mod policy_runner;
mod recorder;
mod reward;
mod robot_state;
mod safety_filter;
mod scripted_expert;
mod sim_robot;
mod sim_truth;
mod test_camera;

pub use episode_manager::{EpisodeLog, EpisodeManager, EpisodeManagerParams};
pub use evaluator::{EvalReport, EvaluatedEpisode, Evaluator, EvaluatorParams};
pub use joint_sine::{JointSine, JointSineParams};
pub use kinematic_arm::{KinematicArm, KinematicArmParams};
pub use learner::{Learner, LearnerParams, LearnerStats};
pub use policy_runner::{PolicyRunner, PolicyRunnerParams, RunnerStats, load_policy};
pub use recorder::{Recorder, RecorderParams};
pub use reward::{
    ClassifierSpec, KeypointSpec, RewardCounts, RewardNode, RewardParams, WaypointSpec,
};
pub use safety_filter::{SafetyCounts, SafetyFilter, SafetyFilterParams};
pub use scripted_expert::{ScriptedExpert, ScriptedExpertParams};
pub use sim_robot::{SimRobot, SimRobotCounts, SimRobotParams};
pub use test_camera::{TestCamera, TestCameraParams};

use rft_runtime::launch::Registry;

/// Every node kind, in the order `rft --help` lists them, and the sim pipeline's `[pipeline]`
/// table.
pub fn registry() -> Registry {
    Registry::new()
        .with_pipeline(rft_autonomy::pipeline::launch_section)
        .with::<KinematicArmParams>()
        .with::<JointSineParams>()
        .with::<TestCameraParams>()
        .with::<RecorderParams>()
        .with::<SafetyFilterParams>()
        .with::<SimRobotParams>()
        .with::<RewardParams>()
        .with::<PolicyRunnerParams>()
        .with::<LearnerParams>()
        .with::<EpisodeManagerParams>()
        .with::<ScriptedExpertParams>()
        .with::<EvaluatorParams>()
}
