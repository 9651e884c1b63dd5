//! The safety filter node: the only node allowed to command the robot.
//!
//! Subscribes to `/joint_states`, `/rft/action` and `/rft/teleop` (end-effector twist, normalised
//! to [-1, 1] per axis, plus gripper), `/rft/estop` (std_msgs/Bool: true engages, false
//! releases) and `/rft/obstacles` (dynamic sphere obstacles). On every joint state it turns the
//! freshest command (teleop wins while it is fresh) into joint velocities with differential IK,
//! filters them through the CBF-QP and publishes `/joint_velocity_cmd` (std_msgs/
//! Float64MultiArray, joints in URDF chain order) and `/gripper_cmd`. `/rft/safety` carries the
//! state, the reason of any stop, the active constraints and their class-K gains α.
//!
//! Stale joint states or commands, NaN/Inf, an infeasible QP or a solver error each bring the
//! arm to rest with a bounded deceleration, and motion resumes only on a fresh command after
//! the fault has cleared; the e-stop latches until released (see `rft_safety::watchdog`). The
//! node's timer only acts when joint states stop arriving: it keeps decelerating open loop.
//!
//! Every limit comes from the launch file and is checked against the URDF before anything
//! starts: a limit wider than the URDF's is an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nalgebra::{Point3, Unit, Vector3, Vector6};
use rft_msgs::{
    Action, Bool, Float64MultiArray, Header, JointState, Obstacles, SAFETY_ESTOP, SAFETY_LIMITING,
    SAFETY_OK, SAFETY_STOPPED, SAFETY_STOPPING, SafetyStatus,
};
use rft_safety::cbf::{
    BrakingRule, CbfConfig, CbfFilter, FilterReport, OrientationCone, self_collision_pairs,
};
use rft_safety::kinematics::{Chain, DiffIk};
use rft_safety::qp::QpError;
use rft_safety::watchdog::{Mode, StopReason, Watchdog, WatchdogConfig};
use serde::Deserialize;

use super::check;
use crate::bus::{NodeHandle, Publisher, QueueConfig, Subscription};
use crate::error::{Error, Result};
use crate::runtime::{Node, StepCtx};

type Invalid = (String, String);

/// Franka Panda acceleration limits (manufacturer's figures), the default for 7-joint chains.
const PANDA_ACCEL: [f64; 7] = [15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObstacleParams {
    /// Centre in the base frame (m).
    pub center: [f64; 3],
    pub radius: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfCollisionParams {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Guard sphere pairs on links at least this many joints apart.
    #[serde(default = "d_gap")]
    pub min_link_gap: usize,
    /// ... that are at least this far apart at the reference posture.
    #[serde(default = "d_clear")]
    pub min_clearance_m: f64,
    /// The reference posture; default: the rest posture, else the first joint state.
    #[serde(default)]
    pub reference: Option<Vec<f64>>,
}

impl Default for SelfCollisionParams {
    fn default() -> Self {
        Self {
            enabled: true,
            min_link_gap: d_gap(),
            min_clearance_m: d_clear(),
            reference: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConeParams {
    /// Tool axis in the tip frame.
    #[serde(default = "d_z")]
    pub axis_in_tool: [f64; 3],
    /// Reference direction in the base frame.
    #[serde(default = "d_down")]
    pub reference: [f64; 3],
    pub max_angle_deg: f64,
    #[serde(default = "d_ang_brake")]
    pub brake_rad_s2: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GainKind {
    /// One α for every barrier.
    Fixed,
    /// α per barrier from its closing speed (`rft_safety::cbf::BrakingRule`).
    Braking,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GainParams {
    #[serde(default = "d_gain_kind")]
    pub kind: GainKind,
    /// α of `fixed` (1/s).
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    #[serde(default = "d_alpha_min")]
    pub alpha_min: f64,
    #[serde(default = "d_alpha_max")]
    pub alpha_max: f64,
    /// Share of the braking capability a barrier may use.
    #[serde(default = "d_margin")]
    pub margin: f64,
    /// Closing speeds below this count as this.
    #[serde(default = "d_min_speed")]
    pub min_speed: f64,
}

impl Default for GainParams {
    fn default() -> Self {
        Self {
            kind: d_gain_kind(),
            alpha: d_alpha(),
            alpha_min: d_alpha_min(),
            alpha_max: d_alpha_max(),
            margin: d_margin(),
            min_speed: d_min_speed(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyFilterParams {
    /// The robot's URDF; a relative path is taken from the launch file's directory.
    pub urdf: PathBuf,
    #[serde(default = "d_base")]
    pub base_link: String,
    #[serde(default = "d_tip")]
    pub tip_link: String,
    /// Rate of `/joint_states`: the control period of the acceleration box.
    #[serde(default = "d_state_rate")]
    pub joint_state_rate_hz: f64,
    /// Default: the URDF's limits. Narrower is fine; wider is an error.
    #[serde(default)]
    pub position_min: Option<Vec<f64>>,
    #[serde(default)]
    pub position_max: Option<Vec<f64>>,
    /// Default: the URDF's velocity limits. Must not exceed them.
    #[serde(default)]
    pub max_velocity_rad_s: Option<Vec<f64>>,
    /// Default: the Panda's (7 joints); required for other arms.
    #[serde(default)]
    pub max_accel_rad_s2: Option<Vec<f64>>,
    #[serde(default = "d_pad")]
    pub joint_padding_rad: f64,
    #[serde(default = "d_ws_min")]
    pub workspace_min: [f64; 3],
    #[serde(default = "d_ws_max")]
    pub workspace_max: [f64; 3],
    #[serde(default)]
    pub obstacles: Vec<ObstacleParams>,
    /// Capacity for `/rft/obstacles`; a message with more is rejected.
    #[serde(default = "d_max_dyn")]
    pub max_dynamic_obstacles: usize,
    /// Spheres on joints before this index are not checked against obstacles.
    #[serde(default = "d_first_obs")]
    pub first_obstacle_joint: usize,
    #[serde(default)]
    pub self_collision: SelfCollisionParams,
    #[serde(default)]
    pub orientation_cone: Option<ConeParams>,
    #[serde(default)]
    pub gains: GainParams,
    /// Diagonal of the QP's weight W; default all 1.
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    #[serde(default = "d_slack")]
    pub slack_weight: f64,
    #[serde(default = "d_cart_brake")]
    pub cartesian_brake_m_s2: f64,
    /// When the QP is infeasible the acceleration box is widened by this factor before the
    /// soft rows are relaxed (1 = never).
    #[serde(default = "d_relax")]
    pub accel_relax_factor: f64,
    /// Let the workspace, cone and collision rows take a heavily penalised slack when nothing
    /// else is feasible (default). When false, an infeasible QP stops the robot instead.
    #[serde(default = "yes")]
    pub soft_constraints: bool,
    /// Twist of a full-scale (±1) command.
    #[serde(default = "d_lin")]
    pub max_linear_m_s: f64,
    #[serde(default = "d_ang")]
    pub max_angular_rad_s: f64,
    #[serde(default = "d_damping")]
    pub ik_damping: f64,
    #[serde(default = "d_nullspace")]
    pub nullspace_gain: f64,
    /// Posture the null-space term pulls towards; default: the first joint state.
    #[serde(default)]
    pub rest_position: Option<Vec<f64>>,
    #[serde(default = "d_stale_state")]
    pub stale_state_ms: f64,
    #[serde(default = "d_stale_cmd")]
    pub stale_command_ms: f64,
    /// Deceleration of a stop; default: the acceleration limits.
    #[serde(default)]
    pub stop_decel_rad_s2: Option<Vec<f64>>,
    #[serde(default = "d_status_rate")]
    pub status_rate_hz: f64,
}

fn yes() -> bool {
    true
}
fn d_gap() -> usize {
    3
}
fn d_clear() -> f64 {
    0.05
}
fn d_z() -> [f64; 3] {
    [0.0, 0.0, 1.0]
}
fn d_down() -> [f64; 3] {
    [0.0, 0.0, -1.0]
}
fn d_ang_brake() -> f64 {
    5.0
}
fn d_gain_kind() -> GainKind {
    GainKind::Braking
}
fn d_alpha() -> f64 {
    3.0
}
fn d_alpha_min() -> f64 {
    0.5
}
fn d_alpha_max() -> f64 {
    10.0
}
fn d_margin() -> f64 {
    0.3
}
fn d_min_speed() -> f64 {
    0.05
}
fn d_base() -> String {
    "panda_link0".into()
}
fn d_tip() -> String {
    "panda_hand_tcp".into()
}
fn d_state_rate() -> f64 {
    100.0
}
fn d_pad() -> f64 {
    0.05
}
fn d_ws_min() -> [f64; 3] {
    [0.2, -0.5, 0.02]
}
fn d_ws_max() -> [f64; 3] {
    [0.8, 0.5, 0.8]
}
fn d_max_dyn() -> usize {
    16
}
fn d_first_obs() -> usize {
    2
}
fn d_slack() -> f64 {
    1e4
}
fn d_cart_brake() -> f64 {
    2.0
}
fn d_relax() -> f64 {
    3.0
}
fn d_lin() -> f64 {
    0.25
}
fn d_ang() -> f64 {
    1.0
}
fn d_damping() -> f64 {
    0.05
}
fn d_nullspace() -> f64 {
    1.0
}
fn d_stale_state() -> f64 {
    50.0
}
fn d_stale_cmd() -> f64 {
    200.0
}
fn d_status_rate() -> f64 {
    20.0
}

fn finite_positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// Everything the node builds from its parameters (also what `validate` checks).
struct Built {
    chain: Chain,
    cbf: CbfConfig,
    watchdog: WatchdogConfig,
}

impl SafetyFilterParams {
    /// Makes a relative URDF path relative to `base` (the launch file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if self.urdf.is_relative() {
            self.urdf = base.join(&self.urdf);
        }
    }

    pub fn validate(&self) -> std::result::Result<(), Invalid> {
        self.build(None).map(|_| ())
    }

    /// The CBF filter and the differential IK these parameters describe, for a robot first
    /// seen at `q` (what the node builds on its first joint state). The in-process sim loop
    /// uses it to run the same filter without a bus.
    pub fn filter_and_ik(&self, q: &[f64]) -> std::result::Result<(CbfFilter, DiffIk), Invalid> {
        let built = self.build(Some(q))?;
        let rest = self.rest_position.clone().unwrap_or(q.to_vec());
        let ik = DiffIk::new(&built.chain, self.ik_damping, self.nullspace_gain, rest);
        Ok((self.make_filter(built), ik))
    }

    fn build(&self, first_state: Option<&[f64]>) -> std::result::Result<Built, Invalid> {
        let mut chain = Chain::from_urdf_file(&self.urdf, &self.base_link, &self.tip_link)
            .map_err(|e| ("urdf".to_string(), e.to_string()))?;
        let n = chain.dof();
        let len = |key: &str, v: &[f64]| {
            check(v.len() == n, key, || {
                format!(
                    "has {} values but the chain {} → {} has {n} joints",
                    v.len(),
                    self.base_link,
                    self.tip_link
                )
            })?;
            check(v.iter().all(|x| x.is_finite()), key, || {
                "values must be finite".into()
            })
        };
        // Limits: narrower than the URDF's is fine, wider is an error.
        if let Some(v) = &self.position_min {
            len("position_min", v)?;
            for (i, (j, lo)) in chain.joints.iter_mut().zip(v).enumerate() {
                check(*lo >= j.lower, "position_min", || {
                    format!(
                        "[{i}] = {lo} is wider than the URDF's lower limit {} of `{}`",
                        j.lower, j.name
                    )
                })?;
                j.lower = *lo;
            }
        }
        if let Some(v) = &self.position_max {
            len("position_max", v)?;
            for (i, (j, hi)) in chain.joints.iter_mut().zip(v).enumerate() {
                check(*hi <= j.upper, "position_max", || {
                    format!(
                        "[{i}] = {hi} is wider than the URDF's upper limit {} of `{}`",
                        j.upper, j.name
                    )
                })?;
                j.upper = *hi;
            }
        }
        check(
            self.joint_padding_rad.is_finite() && self.joint_padding_rad >= 0.0,
            "joint_padding_rad",
            || "must be finite and not negative".into(),
        )?;
        for (i, j) in chain.joints.iter().enumerate() {
            check(
                j.lower + self.joint_padding_rad < j.upper - self.joint_padding_rad,
                "position_min",
                || {
                    format!(
                        "[{i}]: `{}` has no room left between {} and {} with padding {}",
                        j.name, j.lower, j.upper, self.joint_padding_rad
                    )
                },
            )?;
        }
        let vmax = match &self.max_velocity_rad_s {
            Some(v) => {
                len("max_velocity_rad_s", v)?;
                for (i, (j, vi)) in chain.joints.iter_mut().zip(v).enumerate() {
                    check(*vi > 0.0, "max_velocity_rad_s", || {
                        format!("[{i}] must be positive")
                    })?;
                    check(*vi <= j.max_velocity, "max_velocity_rad_s", || {
                        format!(
                            "[{i}] = {vi} is wider than the URDF's velocity limit {} of `{}`",
                            j.max_velocity, j.name
                        )
                    })?;
                    j.max_velocity = *vi;
                }
                v.clone()
            }
            None => chain.joints.iter().map(|j| j.max_velocity).collect(),
        };
        let accel = match &self.max_accel_rad_s2 {
            Some(v) => v.clone(),
            None if n == PANDA_ACCEL.len() => PANDA_ACCEL.to_vec(),
            None => {
                return Err((
                    "max_accel_rad_s2".into(),
                    format!(
                        "required for a chain of {n} joints (the URDF has no acceleration limits)"
                    ),
                ));
            }
        };
        len("max_accel_rad_s2", &accel)?;
        check(accel.iter().all(|a| *a > 0.0), "max_accel_rad_s2", || {
            "must be positive".into()
        })?;
        let stop = self.stop_decel_rad_s2.clone().unwrap_or(accel.clone());
        len("stop_decel_rad_s2", &stop)?;
        check(stop.iter().all(|a| *a > 0.0), "stop_decel_rad_s2", || {
            "must be positive".into()
        })?;
        check(
            finite_positive(self.joint_state_rate_hz),
            "joint_state_rate_hz",
            || "must be positive".into(),
        )?;
        let dt_s = 1.0 / self.joint_state_rate_hz;
        for k in 0..3 {
            let (lo, hi) = (self.workspace_min[k], self.workspace_max[k]);
            check(
                lo.is_finite() && hi.is_finite() && lo < hi,
                "workspace_min",
                || format!("[{k}]: {lo} must be below workspace_max[{k}] = {hi}"),
            )?;
        }
        for (i, o) in self.obstacles.iter().enumerate() {
            check(
                o.center.iter().all(|c| c.is_finite()) && o.radius.is_finite() && o.radius >= 0.0,
                &format!("obstacles[{i}]"),
                || "needs a finite centre and a radius ≥ 0".into(),
            )?;
        }
        check(
            self.first_obstacle_joint <= n,
            "first_obstacle_joint",
            || {
                format!(
                    "{} is past the chain's {n} joints",
                    self.first_obstacle_joint
                )
            },
        )?;
        let g = &self.gains;
        match g.kind {
            GainKind::Fixed => check(
                finite_positive(g.alpha) && g.alpha * dt_s < 1.0,
                "gains.alpha",
                || {
                    format!(
                        "must be positive and below the joint-state rate, got {}",
                        g.alpha
                    )
                },
            )?,
            GainKind::Braking => {
                check(
                    finite_positive(g.alpha_min)
                        && g.alpha_min <= g.alpha_max
                        && g.alpha_max * dt_s < 1.0,
                    "gains.alpha_min",
                    || {
                        format!(
                            "need 0 < alpha_min ≤ alpha_max < joint_state_rate_hz, got {} and {}",
                            g.alpha_min, g.alpha_max
                        )
                    },
                )?;
                check(g.margin > 0.0 && g.margin <= 1.0, "gains.margin", || {
                    "must be in (0, 1]".into()
                })?;
                check(finite_positive(g.min_speed), "gains.min_speed", || {
                    "must be positive".into()
                })?;
            }
        }
        let weights = self.weights.clone().unwrap_or(vec![1.0; n]);
        len("weights", &weights)?;
        check(weights.iter().all(|w| *w > 0.0), "weights", || {
            "must be positive".into()
        })?;
        for (key, v) in [
            ("slack_weight", self.slack_weight),
            ("cartesian_brake_m_s2", self.cartesian_brake_m_s2),
            ("max_linear_m_s", self.max_linear_m_s),
            ("max_angular_rad_s", self.max_angular_rad_s),
            ("ik_damping", self.ik_damping),
            ("stale_state_ms", self.stale_state_ms),
            ("stale_command_ms", self.stale_command_ms),
            ("status_rate_hz", self.status_rate_hz),
        ] {
            check(finite_positive(v), key, || {
                format!("must be positive, got {v}")
            })?;
        }
        check(
            self.nullspace_gain.is_finite() && self.nullspace_gain >= 0.0,
            "nullspace_gain",
            || "must be finite and not negative".into(),
        )?;
        check(
            self.accel_relax_factor.is_finite() && self.accel_relax_factor >= 1.0,
            "accel_relax_factor",
            || "must be at least 1".into(),
        )?;
        check(self.stale_state_ms > 1e3 * dt_s, "stale_state_ms", || {
            format!(
                "{} ms is shorter than one joint-state period ({:.1} ms): every state would be stale",
                self.stale_state_ms,
                1e3 * dt_s
            )
        })?;
        if let Some(v) = &self.rest_position {
            len("rest_position", v)?;
        }
        let cone = match &self.orientation_cone {
            None => None,
            Some(c) => {
                let axis = Unit::try_new(Vector3::from(c.axis_in_tool), 1e-9);
                let reference = Unit::try_new(Vector3::from(c.reference), 1e-9);
                let (Some(axis_in_tool), Some(reference)) = (axis, reference) else {
                    return Err((
                        "orientation_cone".into(),
                        "axis_in_tool and reference must be non-zero".into(),
                    ));
                };
                check(
                    c.max_angle_deg > 0.0 && c.max_angle_deg < 180.0,
                    "orientation_cone.max_angle_deg",
                    || "must be in (0, 180)".into(),
                )?;
                check(
                    finite_positive(c.brake_rad_s2),
                    "orientation_cone.brake_rad_s2",
                    || "must be positive".into(),
                )?;
                Some(OrientationCone {
                    axis_in_tool,
                    reference,
                    max_angle_rad: c.max_angle_deg.to_radians(),
                    brake_rad_s2: c.brake_rad_s2,
                })
            }
        };
        let sc = &self.self_collision;
        let self_pairs = if sc.enabled {
            let reference = sc
                .reference
                .as_deref()
                .or(self.rest_position.as_deref())
                .or(first_state);
            match reference {
                Some(r) => {
                    len("self_collision.reference", r)?;
                    self_collision_pairs(&chain, r, sc.min_link_gap, sc.min_clearance_m)
                }
                None => Vec::new(), // chosen at the first joint state
            }
        } else {
            Vec::new()
        };
        let cbf = CbfConfig {
            joint_padding_rad: self.joint_padding_rad,
            alpha: g.alpha,
            dt_s,
            max_velocity_rad_s: vmax,
            max_accel_rad_s2: accel,
            workspace_min: Vector3::from(self.workspace_min),
            workspace_max: Vector3::from(self.workspace_max),
            obstacles: self
                .obstacles
                .iter()
                .map(|o| (Point3::from(o.center), o.radius))
                .collect(),
            first_obstacle_joint: self.first_obstacle_joint,
            self_pairs,
            weights,
            slack_weight: self.slack_weight,
            cartesian_brake_m_s2: self.cartesian_brake_m_s2,
            orientation_cone: cone,
            max_dynamic_obstacles: self.max_dynamic_obstacles,
            accel_relax_factor: self.accel_relax_factor,
            soft_rows: self.soft_constraints,
            prune_rows: true,
        };
        Ok(Built {
            chain,
            cbf,
            watchdog: WatchdogConfig {
                stale_state_ms: self.stale_state_ms,
                stale_command_ms: self.stale_command_ms,
                stop_decel_rad_s2: stop,
            },
        })
    }

    fn make_filter(&self, built: Built) -> CbfFilter {
        let f = CbfFilter::new(built.chain, built.cbf);
        match self.gains.kind {
            GainKind::Fixed => f,
            GainKind::Braking => f.with_tuner(Box::new(BrakingRule {
                alpha_min: self.gains.alpha_min,
                alpha_max: self.gains.alpha_max,
                margin: self.gains.margin,
                min_speed: self.gains.min_speed,
            })),
        }
    }
}

/// Counters of inputs the node refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SafetyCounts {
    /// Joint states with missing joints or the wrong lengths.
    pub rejected_states: u64,
    /// `/rft/obstacles` messages that were malformed or too many.
    pub rejected_obstacles: u64,
    /// Steps where the QP failed.
    pub qp_failures: u64,
    /// Steps driven by `/rft/teleop`.
    pub teleop_steps: u64,
}

pub struct SafetyFilter {
    name: String,
    p: SafetyFilterParams,
    period: Duration,
    dt_s: f64,
    /// Built once the first joint state gives the rest posture (if the launch file has none).
    filter: Option<(CbfFilter, DiffIk)>,
    watchdog: Watchdog,
    chain_names: Vec<String>,
    /// For each chain joint, its index in the last joint state's arrays.
    state_index: Vec<usize>,
    state_names: Vec<String>,
    states: Subscription<JointState>,
    action: Subscription<Action>,
    teleop: Subscription<Action>,
    estop: Subscription<Bool>,
    obstacles: Subscription<Obstacles>,
    cmd: Publisher<Float64MultiArray>,
    gripper: Publisher<Float64MultiArray>,
    status: Publisher<SafetyStatus>,
    q: Vec<f64>,
    qd: Vec<f64>,
    u_prev: Vec<f64>,
    u_ref: Vec<f64>,
    u: Vec<f64>,
    /// The freshest command of each source and when it arrived.
    policy_cmd: Option<(i64, Arc<Action>)>,
    teleop_cmd: Option<(i64, Arc<Action>)>,
    last_state_ns: Option<i64>,
    /// Arrival time of the last command the watchdog was told about.
    last_command_seen: Option<i64>,
    last_status_ns: Option<i64>,
    last_status_state: u8,
    last_report: Option<FilterReport>,
    last_mode: Mode,
    qp_time_us: f32,
    counts: SafetyCounts,
}

impl SafetyFilter {
    pub fn new(
        name: String,
        p: SafetyFilterParams,
        period: Duration,
        bus: &NodeHandle,
    ) -> Result<Self> {
        let built = p
            .build(None)
            .map_err(|(k, r)| Error::node(&name, format!("params.{k}: {r}")))?;
        let n = built.chain.dof();
        let chain_names = built.chain.joints.iter().map(|j| j.name.clone()).collect();
        let watchdog = Watchdog::new(built.watchdog.clone());
        // Without a rest posture the first joint state supplies it (and the self-collision
        // reference posture).
        let filter = if p.rest_position.is_none() {
            None
        } else {
            let rest = p.rest_position.clone().unwrap_or_default();
            let ik = DiffIk::new(&built.chain, p.ik_damping, p.nullspace_gain, rest);
            Some((p.make_filter(built), ik))
        };
        Ok(Self {
            states: bus.subscribe("/joint_states", QueueConfig::latest_only())?,
            action: bus.subscribe_quiet("/rft/action", QueueConfig::latest_only())?,
            teleop: bus.subscribe_quiet("/rft/teleop", QueueConfig::latest_only())?,
            estop: bus.subscribe("/rft/estop", QueueConfig::drop_oldest(64))?,
            obstacles: bus.subscribe_quiet("/rft/obstacles", QueueConfig::latest_only())?,
            cmd: bus.publisher("/joint_velocity_cmd")?,
            gripper: bus.publisher("/gripper_cmd")?,
            status: bus.publisher("/rft/safety")?,
            dt_s: 1.0 / p.joint_state_rate_hz,
            name,
            p,
            period,
            filter,
            watchdog,
            chain_names,
            state_index: vec![0; n],
            state_names: Vec::new(),
            q: vec![0.0; n],
            qd: vec![0.0; n],
            u_prev: vec![0.0; n],
            u_ref: vec![0.0; n],
            u: vec![0.0; n],
            policy_cmd: None,
            teleop_cmd: None,
            last_state_ns: None,
            last_command_seen: None,
            last_status_ns: None,
            last_status_state: u8::MAX,
            last_report: None,
            last_mode: Mode::Run,
            qp_time_us: 0.0,
            counts: SafetyCounts::default(),
        })
    }

    pub fn counts(&self) -> SafetyCounts {
        self.counts
    }

    /// Copies the chain's joints out of `js` (matched by name; in order when unnamed).
    fn read_state(&mut self, js: &JointState) -> bool {
        let n = self.q.len();
        if js.name.is_empty() {
            if js.position.len() != n {
                return false;
            }
            self.state_names.clear();
            for (i, idx) in self.state_index.iter_mut().enumerate() {
                *idx = i;
            }
        } else if js.name != self.state_names {
            for (i, want) in self.chain_names.iter().enumerate() {
                let Some(k) = js.name.iter().position(|s| s == want) else {
                    tracing::warn!(node = %self.name, joint = %want, "joint state lacks a joint of the chain");
                    self.state_names.clear();
                    return false;
                };
                self.state_index[i] = k;
            }
            self.state_names.clone_from(&js.name);
        }
        for i in 0..n {
            let k = self.state_index[i];
            let Some(q) = js.position.get(k) else {
                return false;
            };
            self.q[i] = *q;
            // Velocity is optional in a JointState; NaN or Inf in it still trips the watchdog.
            self.qd[i] = js.velocity.get(k).copied().unwrap_or(0.0);
        }
        true
    }

    fn take_estops(&mut self, now: i64) {
        while let Some(e) = self.estop.try_recv() {
            self.watchdog.on_estop(now, e.data);
            tracing::warn!(node = %self.name, engaged = e.data, "e-stop");
        }
    }

    fn poll_inputs(&mut self, now: i64) {
        self.take_estops(now);
        if let Some(o) = self.obstacles.latest() {
            let ok = o.centers.len() == o.radii.len();
            let list: Vec<(Point3<f64>, f64)> = o
                .centers
                .iter()
                .zip(&o.radii)
                .map(|(c, r)| (Point3::new(c.x, c.y, c.z), *r))
                .collect();
            let res = match (&mut self.filter, ok) {
                (Some((f, _)), true) => f.set_dynamic_obstacles(&list).map_err(|e| e.to_string()),
                (None, true) => Err("no joint state yet".into()),
                (_, false) => Err(format!(
                    "{} centres but {} radii",
                    o.centers.len(),
                    o.radii.len()
                )),
            };
            if let Err(reason) = res {
                self.counts.rejected_obstacles += 1;
                tracing::warn!(node = %self.name, %reason, rejected = self.counts.rejected_obstacles,
                    "rejected /rft/obstacles (the previous obstacles stay)");
            }
        }
        for (sub, slot) in [
            (&self.action, &mut self.policy_cmd),
            (&self.teleop, &mut self.teleop_cmd),
        ] {
            if let Some(a) = sub.latest() {
                *slot = Some((now, a));
            }
        }
    }

    /// The command in force: teleop while it is fresh, else the policy's.
    fn command(&self, now: i64) -> Option<(i64, Arc<Action>, bool)> {
        let fresh_ns = (self.p.stale_command_ms * 1e6) as i64;
        match &self.teleop_cmd {
            Some((t, a)) if now - t <= fresh_ns => Some((*t, a.clone(), true)),
            _ => self
                .policy_cmd
                .as_ref()
                .map(|(t, a)| (*t, a.clone(), false)),
        }
    }

    /// One control step on a fresh joint state.
    fn control(&mut self, ctx: &StepCtx<'_>, js: &JointState) -> Result<()> {
        let now = ctx.now.as_nanos();
        self.last_state_ns = Some(now);
        if !self.read_state(js) {
            self.counts.rejected_states += 1;
            tracing::warn!(node = %self.name, rejected = self.counts.rejected_states,
                "rejected joint state (missing joints or wrong lengths)");
            return Ok(());
        }
        self.watchdog.on_state(now, &self.q, &self.qd);
        if self.filter.is_none() && self.q.iter().all(|v| v.is_finite()) {
            self.filter = Some(self.build_at(&self.q.clone())?);
        }
        self.poll_inputs(now);
        let command = self.command(now);
        let mut twist = Vector6::zeros();
        let mut gripper = None;
        if let Some((t, a, teleop)) = &command {
            let tw = &a.twist;
            let raw = [
                tw.linear.x,
                tw.linear.y,
                tw.linear.z,
                tw.angular.x,
                tw.angular.y,
                tw.angular.z,
                a.gripper,
            ];
            // Only a new message counts as fresh (the stamp is its arrival on our clock).
            if self.last_command_seen < Some(*t) {
                self.watchdog.on_command(*t, &raw);
                self.last_command_seen = Some(*t);
            }
            for k in 0..3 {
                // Normalised axes: clamped to ±1 (NaN stays NaN for the watchdog).
                twist[k] = raw[k].clamp(-1.0, 1.0) * self.p.max_linear_m_s;
                twist[k + 3] = raw[k + 3].clamp(-1.0, 1.0) * self.p.max_angular_rad_s;
            }
            gripper = raw[6].is_finite().then(|| raw[6].clamp(0.0, 1.0));
            if *teleop {
                self.counts.teleop_steps += 1;
            }
        }
        let mut mode = self.watchdog.mode(now);
        if mode == Mode::Run
            && let Some((filter, ik)) = &mut self.filter
        {
            ik.solve(filter.chain(), &self.q, &twist, &mut self.u_ref);
            let t0 = Instant::now();
            let res = filter.filter(&self.q, &self.u_prev, &self.u_ref, &mut self.u);
            self.qp_time_us = t0.elapsed().as_secs_f32() * 1e6;
            match res {
                Ok(report) => self.last_report = Some(report),
                Err(e) => {
                    self.counts.qp_failures += 1;
                    tracing::warn!(node = %self.name, error = %e, "QP failed: stopping");
                    self.watchdog
                        .on_qp_failure(now, matches!(e, QpError::Infeasible));
                    mode = self.watchdog.mode(now);
                }
            }
        }
        if mode != Mode::Run || self.filter.is_none() {
            self.watchdog
                .decelerate(&self.u_prev, self.dt_s, &mut self.u);
        }
        self.last_mode = mode;
        self.publish(ctx, if mode == Mode::Run { gripper } else { None })
    }

    fn build_at(&self, q: &[f64]) -> Result<(CbfFilter, DiffIk)> {
        let (f, ik) = self
            .p
            .filter_and_ik(q)
            .map_err(|(k, r)| Error::node(&self.name, format!("params.{k}: {r}")))?;
        tracing::info!(node = %self.name, self_pairs = f.config().self_pairs.len(),
            "safety filter ready");
        Ok((f, ik))
    }

    fn publish(&mut self, ctx: &StepCtx<'_>, gripper: Option<f64>) -> Result<()> {
        let now = ctx.now.as_nanos();
        self.cmd
            .publish(Float64MultiArray::from_data(self.u.clone()))?;
        if let Some(g) = gripper {
            self.gripper
                .publish(Float64MultiArray::from_data(vec![g]))?;
        }
        self.u_prev.copy_from_slice(&self.u);
        let moving = self.u.iter().any(|v| *v != 0.0);
        let (state, reason) = match self.last_mode {
            Mode::Stop(StopReason::EStop) => (SAFETY_ESTOP, StopReason::EStop.as_str().to_string()),
            Mode::Stop(r) if moving => (SAFETY_STOPPING, r.as_str().to_string()),
            Mode::Stop(r) => (SAFETY_STOPPED, r.as_str().to_string()),
            Mode::Run => match (&self.filter, &self.last_report) {
                (Some((f, _)), Some(rep)) if !f.active_barriers().is_empty() || rep.slack > 0.0 => {
                    (SAFETY_LIMITING, String::new())
                }
                (None, _) => (SAFETY_STOPPED, "waiting for the first joint state".into()),
                _ => (SAFETY_OK, String::new()),
            },
        };
        let period_ns = (1e9 / self.p.status_rate_hz) as i64;
        let due = self.last_status_ns.is_none_or(|t| now - t >= period_ns);
        if !(due || state != self.last_status_state) {
            return Ok(());
        }
        self.last_status_ns = Some(now);
        self.last_status_state = state;
        let (active, alpha) = match &self.filter {
            Some((f, _)) if self.last_mode == Mode::Run => {
                let active: Vec<String> =
                    f.active_barriers().iter().map(|b| b.to_string()).collect();
                let alpha = f
                    .active_barriers()
                    .iter()
                    .map(|b| {
                        f.alphas()
                            .iter()
                            .find(|(x, _)| x == b)
                            // Velocity and acceleration limits are not barriers: no α.
                            .map_or(0.0, |(_, a)| *a)
                    })
                    .collect();
                (active, alpha)
            }
            _ => (Vec::new(), Vec::new()),
        };
        self.status.publish(SafetyStatus {
            header: Header::at(ctx.now),
            state,
            reason,
            active_constraints: active,
            alpha,
            qp_time_us: self.qp_time_us,
            min_distance_m: self
                .last_report
                .map_or(f32::INFINITY, |r| r.min_clearance_m as f32),
        })
    }
}

impl Node for SafetyFilter {
    fn name(&self) -> &str {
        &self.name
    }
    /// The timer only watches for joint states that stopped arriving.
    fn period(&self) -> Option<Duration> {
        Some(self.period)
    }
    fn step(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        let now = ctx.now.as_nanos();
        let stale_ns = (self.p.stale_state_ms * 1e6) as i64;
        if self.last_state_ns.is_none_or(|t| now - t <= stale_ns) {
            return Ok(());
        }
        // No joint state for too long: decelerate open loop from the last command.
        self.poll_inputs(now);
        self.last_mode = self.watchdog.mode(now);
        self.watchdog
            .decelerate(&self.u_prev, self.period.as_secs_f64(), &mut self.u);
        self.publish(ctx, None)
    }
    fn on_wake(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        if let Some(js) = self.states.latest() {
            self.control(ctx, &js)
        } else {
            // An e-stop alone: take it now, act on the next joint state.
            self.take_estops(ctx.now.as_nanos());
            Ok(())
        }
    }
    fn shutdown(&mut self, ctx: &StepCtx<'_>) -> Result<()> {
        // The runtime is stopping: command zero.
        self.u.iter_mut().for_each(|v| *v = 0.0);
        self.last_mode = Mode::Stop(StopReason::StaleCommand);
        self.publish(ctx, None)
    }
}
