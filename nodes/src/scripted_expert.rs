//! A scripted expert on the bus: the simulator's task experts driving the robot through the
//! safety filter, as a human at a teleop device would. At each tick it reads the tool pose
//! (forward kinematics of `/joint_states`), the object pose and `/rft/phase`, and publishes
//! the expert's tool twist (m/s, rad/s, base frame) and gripper on `/rft/teleop` with the
//! takeover flag set (or on `/rft/action`, `output = "action"`). A new episode (or task) on
//! `/rft/phase` starts a fresh expert for its direction; while the episode manager pauses or
//! stops, it sends nothing, so the safety filter brings the arm to rest.
//!
//! It is how demonstrations come through the node graph: the policy runner records the
//! transitions it drove (flagged as interventions), the reward node scores the frames, and the
//! recorder writes both to the run's MCAP, which the dataset loader reads like a teleop session.

use std::path::PathBuf;
use std::time::Duration;

use rft_autonomy::demos::direction_of;
use rft_msgs::{
    Action, EpisodePhase, Header, JointState, PHASE_RUNNING, PoseStamped, Twist, Vector3 as V3,
};
use rft_sim::TaskKind;
use rft_sim::expert::{Expert, ExpertObs, expert_for};
use serde::Deserialize;

use crate::policy_runner::{default_finger_max, default_fingers};
use crate::robot_state::{ToolFk, iso};
use rft_config::check;
use rft_runtime::bus::{NodeHandle, Publisher, QueueConfig, Subscription};
use rft_runtime::launch::{LaunchCtx, NodeKind};
use rft_runtime::{Node, Result, StepCtx};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedExpertParams {
    /// The task whose experts drive (`push`, `pick_place`).
    #[serde(default = "default_task")]
    pub task: TaskKind,
    /// Edge length of the cube, metres (the simulator's default).
    #[serde(default = "default_cube")]
    pub cube_size_m: f64,
    #[serde(default = "rft_sim::world::default_urdf")]
    pub urdf: PathBuf,
    #[serde(default = "crate::robot_state::default_base_link")]
    pub base_link: String,
    #[serde(default = "crate::robot_state::default_tcp_link")]
    pub tcp_link: String,
    #[serde(default = "default_fingers")]
    pub finger_joints: Vec<String>,
    #[serde(default = "default_finger_max")]
    pub finger_max_m: f64,
    #[serde(default = "default_object_topic")]
    pub object_topic: String,
    /// `teleop` (default): `/rft/teleop` with the takeover flag, as a person would; `action`:
    /// `/rft/action`, in the policy's place.
    #[serde(default = "default_output")]
    pub output: String,
    /// The joint state and the object pose must be at most this old (node clock).
    #[serde(default = "default_age")]
    pub max_obs_age_ms: f64,
}

fn default_task() -> TaskKind {
    TaskKind::Push
}
fn default_cube() -> f64 {
    rft_sim::SimConfig::default().cube_size_m
}
fn default_object_topic() -> String {
    "/rft/object_pose".into()
}
fn default_output() -> String {
    "teleop".into()
}
fn default_age() -> f64 {
    150.0
}

impl ScriptedExpertParams {
    pub fn validate(&self) -> rft_config::Result<()> {
        check(
            matches!(self.output.as_str(), "teleop" | "action"),
            "output",
            || format!("`{}`: use `teleop` or `action`", self.output),
        )?;
        check(
            self.cube_size_m.is_finite() && self.cube_size_m > 0.0,
            "cube_size_m",
            || format!("{} must be positive", self.cube_size_m),
        )?;
        check(
            self.finger_max_m.is_finite() && self.finger_max_m > 0.0,
            "finger_max_m",
            || format!("{} must be positive", self.finger_max_m),
        )?;
        check(
            self.max_obs_age_ms.is_finite() && self.max_obs_age_ms > 0.0,
            "max_obs_age_ms",
            || format!("{} must be positive", self.max_obs_age_ms),
        )
    }
}

pub struct ScriptedExpert {
    name: String,
    p: ScriptedExpertParams,
    period: Duration,
    fk: ToolFk,
    joints: Subscription<JointState>,
    object: Subscription<PoseStamped>,
    phase: Subscription<EpisodePhase>,
    out: Publisher<Action>,
    last_phase: Option<EpisodePhase>,
    last_js: Option<std::sync::Arc<JointState>>,
    last_obj: Option<std::sync::Arc<PoseStamped>>,
    /// The expert of the current episode: (episode id, task id, expert).
    expert: Option<(u64, u8, Box<dyn Expert>)>,
    commands: u64,
}

impl ScriptedExpert {
    pub fn new(
        name: String,
        p: ScriptedExpertParams,
        period: Duration,
        bus: &NodeHandle,
    ) -> Result<Self> {
        let fk = ToolFk::new(
            &name,
            &p.urdf,
            &p.base_link,
            &p.tcp_link,
            &p.finger_joints,
            p.finger_max_m,
        )?;
        let latest = QueueConfig::latest_only();
        let topic = if p.output == "action" {
            "/rft/action"
        } else {
            "/rft/teleop"
        };
        Ok(Self {
            fk,
            joints: bus.subscribe("/joint_states", latest)?,
            object: bus.subscribe_quiet(&p.object_topic, latest)?,
            phase: bus.subscribe_quiet("/rft/phase", latest)?,
            out: bus.publisher(topic)?,
            last_phase: None,
            last_js: None,
            last_obj: None,
            expert: None,
            commands: 0,
            name,
            p,
            period,
        })
    }
}

impl Node for ScriptedExpert {
    fn name(&self) -> &str {
        &self.name
    }
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }

    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        if let Some(ph) = self.phase.latest() {
            self.last_phase = Some((*ph).clone());
        }
        if let Some(m) = self.joints.latest() {
            self.last_js = Some(m);
        }
        if let Some(m) = self.object.latest() {
            self.last_obj = Some(m);
        }
        // Only while an episode runs: before the first phase, and while paused or stopped,
        // nobody is driving.
        let Some((episode, task)) = self
            .last_phase
            .as_ref()
            .filter(|p| p.phase == PHASE_RUNNING)
            .map(|p| (p.episode_id, p.task_id))
        else {
            return Ok(());
        };
        let (Some(js), Some(obj)) = (self.last_js.clone(), self.last_obj.clone()) else {
            return Ok(());
        };
        let now = ctx.now.as_nanos();
        let max_age = (self.p.max_obs_age_ms * 1e6) as i64;
        if now - js.header.stamp.as_nanos() > max_age || now - obj.header.stamp.as_nanos() > max_age
        {
            return Ok(());
        }
        let Some(tcp) = self.fk.tcp(&js) else {
            return Ok(());
        };
        if self
            .expert
            .as_ref()
            .is_none_or(|(e, t, _)| *e != episode || *t != task)
        {
            tracing::debug!(node = %self.name, episode, task, "new expert");
            self.expert = Some((episode, task, expert_for(self.p.task, direction_of(task))));
        }
        let Some((_, _, expert)) = self.expert.as_mut() else {
            return Ok(());
        };
        let cube = iso(&obj);
        let half = self.p.cube_size_m / 2.0;
        let opening = self.fk.gripper_opening(&js);
        // Grasped, as the fingers tell it: closed on something about the cube's width, with the
        // cube between them.
        let width = opening * 2.0 * self.p.finger_max_m;
        let grasped = width > 2.0 * half - 0.01
            && width < 2.0 * half + 0.004
            && (cube.translation.vector - tcp.translation.vector).norm() < half + 0.02;
        let a = expert.act(&ExpertObs {
            time_s: now as f64 * 1e-9,
            tcp,
            cube,
            cube_half: half,
            gripper_opening: opening,
            grasped,
        });
        self.commands += 1;
        self.out.publish(Action {
            header: Header {
                stamp: ctx.now,
                frame_id: self.p.base_link.clone(),
            },
            policy_version: 0,
            twist: Twist {
                linear: V3 {
                    x: a.linear.x,
                    y: a.linear.y,
                    z: a.linear.z,
                },
                angular: V3 {
                    x: a.angular.x,
                    y: a.angular.y,
                    z: a.angular.z,
                },
            },
            gripper: a.gripper,
            intervention: self.p.output == "teleop",
        })
    }
}

impl NodeKind for ScriptedExpertParams {
    const KIND: &'static str = "scripted_expert";
    const DEFAULT_RATE_HZ: f64 = 10.0;

    fn paths(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.urdf]
    }

    fn validate(&self) -> rft_config::Result<()> {
        ScriptedExpertParams::validate(self)
    }

    fn build(
        &self,
        name: String,
        period: Duration,
        bus: &NodeHandle,
        _ctx: &LaunchCtx,
    ) -> Result<Box<dyn Node>> {
        Ok(Box::new(ScriptedExpert::new(
            name,
            self.clone(),
            period,
            bus,
        )?))
    }
}
