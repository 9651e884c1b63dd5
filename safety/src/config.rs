//! The safety filter's configuration, as a launch file writes it: limits (each defaulting to the
//! URDF's, narrower allowed, wider rejected), workspace box, obstacles, self-collision, gains,
//! watchdog timeouts. Every default is written once, here; the `safety_filter` node and anything
//! else that runs the filter take this type.

use std::path::PathBuf;

use nalgebra::{Point3, Unit, Vector3};
use rft_config::{ConfigError, Result, check};
use serde::{Deserialize, Serialize};

use crate::cbf::{BrakingRule, CbfConfig, CbfFilter, OrientationCone, self_collision_pairs};
use crate::kinematics::{Chain, DiffIk};
use crate::watchdog::WatchdogConfig;

/// Franka Panda acceleration limits (manufacturer's figures), the default for 7-joint chains.
const PANDA_ACCEL: [f64; 7] = [15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObstacleParams {
    /// Centre in the base frame (m).
    pub center: [f64; 3],
    pub radius: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GainKind {
    /// One α for every barrier.
    Fixed,
    /// α per barrier from its closing speed (`rft_safety::cbf::BrakingRule`).
    Braking,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
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
    /// The largest tool speed a command may ask for (m/s and rad/s, per axis); faster commands
    /// are capped.
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
    /// Moving the arm home between two episodes (the episode manager's `switching` phase).
    #[serde(default)]
    pub homing: HomingConfig,
}

/// How the filter moves the arm home between two episodes, when the episode manager asks
/// (`/rft/phase` switching): the tool rises to `clear_z`, crosses to the home position and
/// comes down (a scripted move, never learned); with the posture asked for, the joints then
/// go back to `posture` one by one at most `max_joint_rad_s`. Every command goes through the
/// same CBF-QP as the policy's; a fresh `/rft/teleop` command still wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomingConfig {
    /// The home posture (chain order, rad); the tool's home is its forward kinematics.
    /// Default: the first joint state (the posture the robot starts in).
    pub posture: Option<Vec<f64>>,
    /// Height (base frame, m) the tool rises to before it crosses the table.
    pub clear_z: f64,
    /// Speed of the tool on its way home (m/s).
    pub max_linear_m_s: f64,
    /// Proportional gain (1/s) and speed cap (rad/s) of the posture move.
    pub joint_gain: f64,
    pub max_joint_rad_s: f64,
    /// Home is reached within this distance of the tool (m) and, for the posture, of each
    /// joint (rad), with every joint below `rest_rad_s`.
    pub tolerance_m: f64,
    pub tolerance_rad: f64,
    pub rest_rad_s: f64,
}

impl Default for HomingConfig {
    fn default() -> Self {
        Self {
            posture: None,
            clear_z: 0.15,
            max_linear_m_s: 0.2,
            joint_gain: 2.0,
            max_joint_rad_s: 1.0,
            tolerance_m: 0.02,
            tolerance_rad: 0.02,
            rest_rad_s: 0.01,
        }
    }
}

impl HomingConfig {
    /// The tool's linear velocity on its way home: straight up to `clear_z` (or home's
    /// height, if lower) while it is away from home's xy, then across and down to `home`;
    /// proportional, capped at `max_linear_m_s`.
    pub fn tool_velocity(&self, tcp: &Vector3<f64>, home: &Vector3<f64>) -> Vector3<f64> {
        let up = self.clear_z.min(home.z);
        let target = if tcp.z < up - 0.01 && (tcp.xy() - home.xy()).norm() > self.tolerance_m {
            Vector3::new(tcp.x, tcp.y, up + 0.02)
        } else {
            *home
        };
        let mut v = (target - tcp) * 4.0;
        if v.norm() > self.max_linear_m_s {
            v *= self.max_linear_m_s / v.norm();
        }
        v
    }

    /// Joint velocities of the posture move towards `posture`.
    pub fn joint_velocity(&self, q: &[f64], posture: &[f64], u: &mut [f64]) {
        for ((u, q), h) in u.iter_mut().zip(q).zip(posture) {
            *u = (self.joint_gain * (h - q)).clamp(-self.max_joint_rad_s, self.max_joint_rad_s);
        }
    }

    /// Whether every joint is within `tolerance_rad` of `posture`.
    pub fn at_posture(&self, q: &[f64], posture: &[f64]) -> bool {
        q.iter()
            .zip(posture)
            .all(|(q, h)| (q - h).abs() < self.tolerance_rad)
    }
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
/// The tool's default workspace box in the base frame, metres: in front of a Panda-sized arm,
/// down to 1 cm above the table.
pub const DEFAULT_WORKSPACE_MIN: [f64; 3] = [0.2, -0.5, 0.01];
pub const DEFAULT_WORKSPACE_MAX: [f64; 3] = [0.8, 0.5, 0.8];

fn d_ws_min() -> [f64; 3] {
    DEFAULT_WORKSPACE_MIN
}
fn d_ws_max() -> [f64; 3] {
    DEFAULT_WORKSPACE_MAX
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

/// Everything the filter is built from (what `validate` checks).
pub struct Built {
    pub chain: Chain,
    pub cbf: CbfConfig,
    pub watchdog: WatchdogConfig,
}

impl SafetyConfig {
    /// The defaults for the robot described by `urdf` (what a launch file naming only `urdf`
    /// gets).
    pub fn new(urdf: PathBuf) -> Self {
        Self {
            urdf,
            base_link: d_base(),
            tip_link: d_tip(),
            joint_state_rate_hz: d_state_rate(),
            position_min: None,
            position_max: None,
            max_velocity_rad_s: None,
            max_accel_rad_s2: None,
            joint_padding_rad: d_pad(),
            workspace_min: d_ws_min(),
            workspace_max: d_ws_max(),
            obstacles: Vec::new(),
            max_dynamic_obstacles: d_max_dyn(),
            first_obstacle_joint: d_first_obs(),
            self_collision: SelfCollisionParams::default(),
            orientation_cone: None,
            gains: GainParams::default(),
            weights: None,
            slack_weight: d_slack(),
            cartesian_brake_m_s2: d_cart_brake(),
            accel_relax_factor: d_relax(),
            soft_constraints: true,
            max_linear_m_s: d_lin(),
            max_angular_rad_s: d_ang(),
            ik_damping: d_damping(),
            nullspace_gain: d_nullspace(),
            rest_position: None,
            stale_state_ms: d_stale_state(),
            stale_command_ms: d_stale_cmd(),
            stop_decel_rad_s2: None,
            status_rate_hz: d_status_rate(),
            homing: HomingConfig::default(),
        }
    }

    /// Checks every value, and the limits against the URDF's.
    pub fn validate(&self) -> Result<()> {
        self.build(None).map(|_| ())
    }

    /// The CBF filter and the differential IK these parameters describe, for a robot first
    /// seen at `q` (what the node builds on its first joint state). The in-process sim loop
    /// uses it to run the same filter without a bus.
    pub fn filter_and_ik(&self, q: &[f64]) -> Result<(CbfFilter, DiffIk)> {
        let built = self.build(Some(q))?;
        let rest = self.rest_position.clone().unwrap_or(q.to_vec());
        let ik = DiffIk::new(&built.chain, self.ik_damping, self.nullspace_gain, rest);
        Ok((self.make_filter(built), ik))
    }

    pub fn build(&self, first_state: Option<&[f64]>) -> Result<Built> {
        let mut chain = Chain::from_urdf_file(&self.urdf, &self.base_link, &self.tip_link)
            .map_err(|e| ConfigError::new("urdf", e.to_string()))?;
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
                return Err(ConfigError::new(
                    "max_accel_rad_s2",
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
        if let Some(v) = &self.homing.posture {
            len("homing.posture", v)?;
            check(v.iter().all(|x| x.is_finite()), "homing.posture", || {
                "must be finite".into()
            })?;
        }
        let h = &self.homing;
        for (key, v) in [
            ("homing.max_linear_m_s", h.max_linear_m_s),
            ("homing.joint_gain", h.joint_gain),
            ("homing.max_joint_rad_s", h.max_joint_rad_s),
            ("homing.tolerance_m", h.tolerance_m),
            ("homing.tolerance_rad", h.tolerance_rad),
            ("homing.rest_rad_s", h.rest_rad_s),
        ] {
            check(finite_positive(v), key, || {
                format!("must be positive, got {v}")
            })?;
        }
        check(h.clear_z.is_finite(), "homing.clear_z", || {
            "must be finite".into()
        })?;
        let cone = match &self.orientation_cone {
            None => None,
            Some(c) => {
                let axis = Unit::try_new(Vector3::from(c.axis_in_tool), 1e-9);
                let reference = Unit::try_new(Vector3::from(c.reference), 1e-9);
                let (Some(axis_in_tool), Some(reference)) = (axis, reference) else {
                    return Err(ConfigError::new(
                        "orientation_cone",
                        "axis_in_tool and reference must be non-zero",
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

    pub fn make_filter(&self, built: Built) -> CbfFilter {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn panda() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sim/assets/panda.urdf")
    }

    #[test]
    fn new_gives_the_same_defaults_as_a_launch_file_naming_only_the_urdf() {
        let mut t = toml::Table::new();
        t.insert("urdf".into(), panda().display().to_string().into());
        let parsed: SafetyConfig = rft_config::from_table(&t).unwrap();
        assert_eq!(parsed, SafetyConfig::new(panda()));
        assert_eq!(parsed.workspace_min, DEFAULT_WORKSPACE_MIN);
        parsed.validate().unwrap();
    }

    #[test]
    fn errors_name_the_key_and_a_limit_wider_than_the_urdf_is_refused() {
        let bad = SafetyConfig {
            workspace_min: [0.2, -0.5, 0.9],
            ..SafetyConfig::new(panda())
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.key, "workspace_min");
        assert!(e.reason.contains("[2]"), "{e}");
        assert_eq!(
            e.under("nodes[1].params").key,
            "nodes[1].params.workspace_min"
        );
        let wide = SafetyConfig {
            max_velocity_rad_s: Some(vec![9.0; 7]),
            ..SafetyConfig::new(panda())
        };
        let e = wide.validate().unwrap_err();
        assert_eq!(e.key, "max_velocity_rad_s");
        assert!(e.reason.contains("wider than the URDF"), "{e}");
    }
}
