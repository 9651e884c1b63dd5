//! Scripted experts, one per task and direction, for demos and tests. They see ground truth
//! (the cube's pose) and answer in the policy's action space: a tool twist (world frame) and a
//! gripper position. [`TwistController`] turns a twist into joint velocities the way the safety
//! filter's differential IK does, for running experts on the bare simulator.

use std::path::Path;

use nalgebra::{Isometry3, UnitQuaternion, Vector2, Vector3, Vector6};
use rft_safety::kinematics::{Chain, DiffIk};

use crate::error::{Error, Result};
use crate::task::{Direction, TaskKind};
use crate::world::Sim;

/// What an expert sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpertObs {
    pub time_s: f64,
    pub tcp: Isometry3<f64>,
    pub cube: Isometry3<f64>,
    pub cube_half: f64,
    /// 0 closed … 1 fully open.
    pub gripper_opening: f64,
    pub grasped: bool,
}

impl ExpertObs {
    pub fn from_sim(sim: &Sim) -> Self {
        Self {
            time_s: sim.time_s(),
            tcp: sim.tcp_pose(),
            cube: sim.object_pose(),
            cube_half: sim.cube_half(),
            gripper_opening: sim.gripper_opening(),
            grasped: sim.is_grasping(),
        }
    }
}

/// A tool twist in the world frame (m/s, rad/s) and a gripper position (0 closed … 1 open).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpertAction {
    pub linear: Vector3<f64>,
    pub angular: Vector3<f64>,
    pub gripper: f64,
}

impl ExpertAction {
    pub fn twist(&self) -> Vector6<f64> {
        Vector6::new(
            self.linear.x,
            self.linear.y,
            self.linear.z,
            self.angular.x,
            self.angular.y,
            self.angular.z,
        )
    }
}

/// A scripted policy.
pub trait Expert: Send {
    fn act(&mut self, obs: &ExpertObs) -> ExpertAction;
    /// The expert thinks it has finished.
    fn done(&self) -> bool;
    /// Its current phase, for logs.
    fn phase(&self) -> &'static str;
}

/// The expert for `dir` of `task`.
pub fn expert_for(task: TaskKind, dir: Direction) -> Box<dyn Expert> {
    match task {
        TaskKind::Push => Box::new(PushExpert::new(task, dir)),
        TaskKind::PickPlace => Box::new(PickPlaceExpert::new(task, dir)),
    }
}

/// Fastest the experts move the tool.
pub const EXPERT_MAX_LINEAR_M_S: f64 = 0.2;
const KP: f64 = 4.0;
const KR: f64 = 3.0;

fn yaw_of(r: &UnitQuaternion<f64>) -> f64 {
    let x = r * Vector3::x();
    x.y.atan2(x.x)
}

/// Wraps `a` into [-period/2, period/2).
fn wrap(a: f64, period: f64) -> f64 {
    (a + 0.5 * period).rem_euclid(period) - 0.5 * period
}

/// Angular velocity that turns the tool to point straight down with yaw `yaw`.
fn hold_down(tcp: &UnitQuaternion<f64>, yaw: f64) -> Vector3<f64> {
    let want = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw)
        * UnitQuaternion::from_axis_angle(&Vector3::x_axis(), std::f64::consts::PI);
    let w = (want * tcp.inverse()).scaled_axis() * KR;
    let n = w.norm();
    if n > 1.5 { w * (1.5 / n) } else { w }
}

/// The yaw closest to the tool's that is `base` modulo `period`.
fn nearest_yaw(tcp: &UnitQuaternion<f64>, base: f64, period: f64) -> f64 {
    let cur = yaw_of(tcp);
    cur + wrap(base - cur, period)
}

fn toward(p: &Vector3<f64>, target: &Vector3<f64>, vmax: f64) -> Vector3<f64> {
    let v = (target - p) * KP;
    let n = v.norm();
    if n > vmax { v * (vmax / n) } else { v }
}

/// Cube yaw about world z.
fn cube_yaw(cube: &Isometry3<f64>) -> f64 {
    yaw_of(&cube.rotation)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushPhase {
    Lift,
    Above,
    Descend,
    Push,
    Done,
}

/// Pushes the cube with the closed fingers into the goal region of its direction: it goes
/// behind the cube on the line to the goal, lowers, pushes while steering the contact back onto
/// the line, and lifts to re-approach if the cube slips away.
pub struct PushExpert {
    goal: Vector2<f64>,
    phase: PushPhase,
}

const PUSH_Z: f64 = 0.02;
const SAFE_Z: f64 = 0.10;

impl PushExpert {
    pub fn new(task: TaskKind, dir: Direction) -> Self {
        let (_, to) = task.regions(dir);
        Self {
            goal: to.center,
            phase: PushPhase::Above,
        }
    }

    /// Pushes towards `goal` (table xy) instead of the region's centre: near misses and
    /// partial attempts for classifier data.
    pub fn with_goal(mut self, goal: Vector2<f64>) -> Self {
        self.goal = goal;
        self
    }
}

impl Expert for PushExpert {
    /// A pure, mostly continuous function of the state (the phase is recomputed every step,
    /// never remembered): a memoryless policy cloned from these demos sees the same action
    /// wherever it stands, and the expert recovers from wherever noise or a failed episode
    /// left the cube. Height follows the distance to the pre-push point (high when far, low
    /// when there); near the cube and outside the pushing corridor it rises before it moves
    /// sideways, so it never sweeps across the cube.
    fn act(&mut self, o: &ExpertObs) -> ExpertAction {
        let p = o.tcp.translation.vector;
        let c = o.cube.translation.vector;
        let c2 = c.xy();
        let d = self.goal - c2;
        let dist = d.norm();
        let u = if dist > 1e-6 { d / dist } else { Vector2::x() };
        let h = o.cube_half;
        let pre = c2 - u * (h + 0.055);
        let rel = p.xy() - c2;
        let along = -rel.dot(&u);
        let lateral = rel - u * rel.dot(&u);
        let in_corridor = lateral.norm() < 0.02 && along > h + 0.005 && along < h + 0.11;
        let yaw = nearest_yaw(&o.tcp.rotation, u.y.atan2(u.x), std::f64::consts::PI);
        let vmax = EXPERT_MAX_LINEAR_M_S;
        let linear = if dist < 0.015 {
            self.phase = PushPhase::Done;
            toward(&p, &Vector3::new(p.x, p.y, SAFE_Z), vmax)
        } else if in_corridor && p.z < PUSH_Z + 0.02 {
            self.phase = PushPhase::Push;
            // Push along the line, steer back onto it, slow down near the goal.
            let speed = dist.clamp(0.02, 0.08);
            let steer = -lateral * 4.0;
            Vector3::new(
                u.x * speed + steer.x,
                u.y * speed + steer.y,
                KP * (PUSH_Z - p.z),
            )
        } else {
            let to_pre = pre - p.xy();
            let near = to_pre.norm();
            let z_target = PUSH_Z + (SAFE_Z - PUSH_Z) * ((near - 0.01) / 0.04).clamp(0.0, 1.0);
            // Outside the corridor and close to the cube: clear its top before moving across.
            let clear_z = c.z + h + 0.03;
            let gate = if !in_corridor && rel.norm() < h + 0.07 {
                ((p.z - (clear_z - 0.02)) / 0.02).clamp(0.0, 1.0)
            } else {
                1.0
            };
            self.phase = if gate < 1.0 {
                PushPhase::Lift
            } else if near < 0.015 {
                PushPhase::Descend
            } else {
                PushPhase::Above
            };
            let z_target = if gate < 1.0 {
                z_target.max(clear_z + 0.01)
            } else {
                z_target
            };
            let mut v = Vector3::new(
                KP * to_pre.x * gate,
                KP * to_pre.y * gate,
                KP * (z_target - p.z),
            );
            let n = v.norm();
            if n > vmax {
                v *= vmax / n;
            }
            v
        };
        ExpertAction {
            linear,
            angular: hold_down(&o.tcp.rotation, yaw),
            gripper: 0.0,
        }
    }

    fn done(&self) -> bool {
        self.phase == PushPhase::Done
    }

    fn phase(&self) -> &'static str {
        match self.phase {
            PushPhase::Lift => "lift",
            PushPhase::Above => "above",
            PushPhase::Descend => "descend",
            PushPhase::Push => "push",
            PushPhase::Done => "done",
        }
    }
}

/// The first push expert, kept for the classifier's frames (`frames.rs`), whose data and
/// calibration were tuned on it. It remembers its phase, so a memoryless policy clones it badly:
/// policy demos use [`PushExpert`].
///
/// Pushes the cube with the closed fingers into the goal region of its direction: it goes
/// behind the cube on the line to the goal, lowers, pushes while steering the contact back onto
/// the line, and lifts to re-approach if the cube slips away.
pub struct PhasedPushExpert {
    goal: Vector2<f64>,
    phase: PushPhase,
}

impl PhasedPushExpert {
    pub fn new(task: TaskKind, dir: Direction) -> Self {
        let (_, to) = task.regions(dir);
        Self {
            goal: to.center,
            phase: PushPhase::Above,
        }
    }

    /// Pushes towards `goal` (table xy) instead of the region's centre: near misses and
    /// partial attempts for classifier data.
    pub fn with_goal(mut self, goal: Vector2<f64>) -> Self {
        self.goal = goal;
        self
    }
}

impl Expert for PhasedPushExpert {
    fn act(&mut self, o: &ExpertObs) -> ExpertAction {
        let p = o.tcp.translation.vector;
        let c = o.cube.translation.vector;
        let c2 = c.xy();
        let d = self.goal - c2;
        let dist = d.norm();
        if dist < 0.015 || self.phase == PushPhase::Done {
            self.phase = PushPhase::Done;
        }
        let u = if dist > 1e-6 { d / dist } else { Vector2::x() };
        let u3 = Vector3::new(u.x, u.y, 0.0);
        let h = o.cube_half;
        let pre = c2 - u * (h + 0.035);
        let rel = p.xy() - c2;
        let along = -rel.dot(&u);
        let lateral = rel - u * rel.dot(&u);
        let yaw = nearest_yaw(&o.tcp.rotation, u.y.atan2(u.x), std::f64::consts::PI);
        let at = |xy: Vector2<f64>, z: f64| Vector3::new(xy.x, xy.y, z);
        let linear = match self.phase {
            PushPhase::Done => toward(&p, &at(p.xy(), SAFE_Z), EXPERT_MAX_LINEAR_M_S),
            PushPhase::Lift => {
                if p.z > SAFE_Z - 0.01 {
                    self.phase = PushPhase::Above;
                }
                toward(&p, &at(p.xy(), SAFE_Z), EXPERT_MAX_LINEAR_M_S)
            }
            PushPhase::Above => {
                if (p.xy() - pre).norm() < 0.008 {
                    self.phase = PushPhase::Descend;
                }
                toward(&p, &at(pre, SAFE_Z), EXPERT_MAX_LINEAR_M_S)
            }
            PushPhase::Descend => {
                if (p.xy() - pre).norm() > 0.03 {
                    self.phase = PushPhase::Lift;
                } else if p.z < PUSH_Z + 0.005 {
                    self.phase = PushPhase::Push;
                }
                toward(&p, &at(pre, PUSH_Z), EXPERT_MAX_LINEAR_M_S)
            }
            PushPhase::Push => {
                if lateral.norm() > 0.025 || along < h || along > h + 0.08 {
                    self.phase = PushPhase::Lift;
                }
                // Push along the line, steer back onto it, slow down near the goal.
                let speed = (1.5 * dist).clamp(0.03, 0.08);
                let steer = -lateral * 4.0;
                let mut v = u3 * speed + Vector3::new(steer.x, steer.y, 0.0);
                v.z = KP * (PUSH_Z - p.z);
                v
            }
        };
        ExpertAction {
            linear,
            angular: hold_down(&o.tcp.rotation, yaw),
            gripper: 0.0,
        }
    }

    fn done(&self) -> bool {
        self.phase == PushPhase::Done
    }

    fn phase(&self) -> &'static str {
        match self.phase {
            PushPhase::Lift => "lift",
            PushPhase::Above => "above",
            PushPhase::Descend => "descend",
            PushPhase::Push => "push",
            PushPhase::Done => "done",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PickPhase {
    Above,
    Descend { z: f64 },
    Close { since: f64, z: f64 },
    Lift,
    Carry,
    Lower,
    Release,
    Retreat,
    Done,
}

/// Picks the cube from where it is and places it on the goal surface of its direction.
pub struct PickPlaceExpert {
    goal: Vector2<f64>,
    goal_z: f64,
    phase: PickPhase,
}

impl PickPlaceExpert {
    pub fn new(task: TaskKind, dir: Direction) -> Self {
        let (_, to) = task.regions(dir);
        Self {
            goal: to.center,
            goal_z: to.surface_z,
            phase: PickPhase::Above,
        }
    }
}

impl Expert for PickPlaceExpert {
    fn act(&mut self, o: &ExpertObs) -> ExpertAction {
        let p = o.tcp.translation.vector;
        let c = o.cube.translation.vector;
        let h = o.cube_half;
        let lift_z = self.goal_z.max(0.04) + 0.16;
        let grasp_yaw = nearest_yaw(
            &o.tcp.rotation,
            cube_yaw(&o.cube),
            std::f64::consts::FRAC_PI_2,
        );
        let mut yaw = yaw_of(&o.tcp.rotation);
        let vmax = EXPERT_MAX_LINEAR_M_S;
        let mut gripper = 1.0;
        let at = |x: f64, y: f64, z: f64| Vector3::new(x, y, z);
        let linear = match self.phase {
            PickPhase::Above => {
                yaw = grasp_yaw;
                let t = at(c.x, c.y, c.z + 0.12);
                if (p.xy() - c.xy()).norm() < 0.004
                    && (p.z - t.z).abs() < 0.03
                    && wrap(
                        yaw_of(&o.tcp.rotation) - grasp_yaw,
                        std::f64::consts::FRAC_PI_2,
                    )
                    .abs()
                        < 0.04
                    && o.gripper_opening > 0.95
                {
                    // The grasp height is fixed now, so a cube pressed while the fingers close
                    // does not drag the target down with it.
                    self.phase = PickPhase::Descend { z: c.z - 0.005 };
                }
                toward(&p, &t, vmax)
            }
            PickPhase::Descend { z } => {
                yaw = grasp_yaw;
                let t = at(c.x, c.y, z);
                if (p.xy() - c.xy()).norm() > 0.012 {
                    self.phase = PickPhase::Above;
                } else if (p.z - t.z).abs() < 0.004 {
                    self.phase = PickPhase::Close { since: o.time_s, z };
                }
                toward(&p, &t, 0.12)
            }
            PickPhase::Close { since, z } => {
                gripper = 0.0;
                if o.grasped {
                    self.phase = PickPhase::Lift;
                } else if o.time_s - since > 1.5 {
                    self.phase = PickPhase::Above;
                }
                toward(&p, &at(p.x, p.y, z), 0.05)
            }
            PickPhase::Lift => {
                gripper = 0.0;
                if !o.grasped {
                    self.phase = PickPhase::Above;
                } else if p.z > lift_z - 0.01 {
                    self.phase = PickPhase::Carry;
                }
                toward(&p, &at(p.x, p.y, lift_z), vmax)
            }
            PickPhase::Carry => {
                gripper = 0.0;
                // Steer the cube, not the tool, over the goal.
                let off = p - c;
                let t = at(self.goal.x + off.x, self.goal.y + off.y, lift_z);
                if !o.grasped {
                    self.phase = PickPhase::Above;
                } else if (c.xy() - self.goal).norm() < 0.005 {
                    self.phase = PickPhase::Lower;
                }
                toward(&p, &t, vmax)
            }
            PickPhase::Lower => {
                gripper = 0.0;
                let off = p - c;
                let rest = self.goal_z + h + 0.003;
                let t = at(self.goal.x + off.x, self.goal.y + off.y, p.z + (rest - c.z));
                if !o.grasped {
                    self.phase = PickPhase::Retreat;
                } else if c.z - rest < 0.003 {
                    self.phase = PickPhase::Release;
                }
                toward(&p, &t, 0.12)
            }
            PickPhase::Release => {
                if o.gripper_opening > 0.9 && !o.grasped {
                    self.phase = PickPhase::Retreat;
                }
                Vector3::zeros()
            }
            PickPhase::Retreat | PickPhase::Done => {
                let t = at(p.x, p.y, lift_z);
                if (p.z - t.z).abs() < 0.01 {
                    self.phase = PickPhase::Done;
                }
                toward(&p, &t, vmax)
            }
        };
        ExpertAction {
            linear,
            angular: hold_down(&o.tcp.rotation, yaw),
            gripper,
        }
    }

    fn done(&self) -> bool {
        self.phase == PickPhase::Done
    }

    fn phase(&self) -> &'static str {
        match self.phase {
            PickPhase::Above => "above",
            PickPhase::Descend { .. } => "descend",
            PickPhase::Close { .. } => "close",
            PickPhase::Lift => "lift",
            PickPhase::Carry => "carry",
            PickPhase::Lower => "lower",
            PickPhase::Release => "release",
            PickPhase::Retreat => "retreat",
            PickPhase::Done => "done",
        }
    }
}

/// Tool twist → joint velocities: damped least squares with a pull towards a rest posture,
/// scaled down uniformly to the joints' velocity limits.
pub struct TwistController {
    chain: Chain,
    ik: DiffIk,
    qd: Vec<f64>,
}

impl TwistController {
    /// The chain `base` → `tcp` of the URDF at `urdf`, resting at `q_rest`.
    pub fn new(urdf: &Path, base: &str, tcp: &str, q_rest: Vec<f64>) -> Result<Self> {
        let chain = Chain::from_urdf_file(urdf, base, tcp).map_err(|e| Error::Urdf {
            path: urdf.to_path_buf(),
            reason: e.to_string(),
        })?;
        let ik = DiffIk::new(&chain, 0.03, 1.0, q_rest);
        Ok(Self {
            qd: vec![0.0; chain.dof()],
            chain,
            ik,
        })
    }

    /// For `sim`'s robot, resting at its current posture.
    pub fn for_sim(sim: &Sim) -> Result<Self> {
        let c = sim.config();
        Self::new(&c.urdf, &c.base_link, &c.tcp_link, sim.q().to_vec())
    }

    pub fn joint_velocity(&mut self, q: &[f64], twist: &Vector6<f64>) -> &[f64] {
        self.ik.solve(&self.chain, q, twist, &mut self.qd);
        let scale = self
            .chain
            .joints
            .iter()
            .zip(&self.qd)
            .map(|(j, v)| v.abs() / j.max_velocity)
            .fold(1.0, f64::max);
        self.qd.iter_mut().for_each(|v| *v /= scale);
        &self.qd
    }
}

/// How an expert episode ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeResult {
    pub success: bool,
    /// Simulated seconds until success (or the time limit).
    pub time_s: f64,
    pub progress: f64,
    pub off_table: bool,
}

/// Runs `expert` on `sim` for up to `max_s` simulated seconds: the expert acts at
/// `policy_hz`, the twist controller at `control_hz` (as policy and safety filter do on the
/// robot). Stops early once the task reports success and the expert is done.
pub fn run_episode(
    sim: &mut Sim,
    ctrl: &mut TwistController,
    expert: &mut dyn Expert,
    dir: Direction,
    max_s: f64,
    policy_hz: f64,
    control_hz: f64,
) -> EpisodeResult {
    let control_steps = ((1.0 / control_hz) / sim.physics_dt()).round().max(1.0) as u64;
    let per_action = (control_hz / policy_hz).round().max(1.0) as u64;
    let t0 = sim.time_s();
    let mut action = expert.act(&ExpertObs::from_sim(sim));
    let mut k = 0u64;
    while sim.time_s() - t0 < max_s {
        if k.is_multiple_of(per_action) {
            action = expert.act(&ExpertObs::from_sim(sim));
            if expert.done() && sim.task_status(dir).success {
                break;
            }
        }
        k += 1;
        let qd = ctrl.joint_velocity(sim.q(), &action.twist());
        // Both are well formed by construction.
        let _ = sim.set_joint_velocity(qd);
        let _ = sim.set_gripper(action.gripper);
        for _ in 0..control_steps {
            sim.step();
        }
    }
    let s = sim.task_status(dir);
    EpisodeResult {
        success: s.success,
        time_s: sim.time_s() - t0,
        progress: s.progress,
        off_table: sim.object_off_table(),
    }
}

/// Height the tool rises to before it crosses the table on its way home (base frame, metres).
pub const HOME_CLEAR_Z: f64 = 0.15;

/// The tool's linear velocity on its way home between episodes, in the base frame: straight up
/// to `clear_z` (or home's height, if lower) while it is away from home's xy, then across and
/// down to `home`; proportional, capped at `max_speed` (m/s). Scripted, never learned: the
/// reset-free loop and the classifier's frames move the arm home the same way.
pub fn homing_velocity(
    tcp: &Vector3<f64>,
    home: &Vector3<f64>,
    clear_z: f64,
    max_speed: f64,
) -> Vector3<f64> {
    let up = clear_z.min(home.z);
    let target = if tcp.z < up - 0.01 && (tcp.xy() - home.xy()).norm() > 0.02 {
        Vector3::new(tcp.x, tcp.y, up + 0.02)
    } else {
        *home
    };
    let mut v = (target - tcp) * 4.0;
    if v.norm() > max_speed {
        v *= max_speed / v.norm();
    }
    v
}
