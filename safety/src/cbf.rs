//! The CBF-QP safety filter for q̇ = u:
//! minimise ‖u − u_ref‖²_W subject to, for every barrier h(q) ≥ 0, ∂h/∂q · u + α h ≥ 0.
//!
//! Barriers: joint position limits (with padding), the tool's workspace box, an optional tool
//! orientation cone, collision spheres on the arm against static and dynamic sphere obstacles,
//! and self-collision sphere pairs. Joint limits, velocity limits and the per-step
//! acceleration box are single-variable, so they become the QP's variable box and are never
//! relaxed; the other rows share one slack with a large penalty, used only when the hard QP is
//! infeasible, so the QP stays feasible when they conflict with the hard limits.
//!
//! Structure used for speed, with no allocation per step:
//! - every sphere's centre and point Jacobian is computed once per step and shared by its rows;
//! - a row that the box implies (min over the box of a·u ≥ b) cannot change the solution, so it
//!   is left out of the QP: the filter is provably the same with or without pruning;
//! - when the clamped reference satisfies the remaining rows it is the solution (closed form);
//! - otherwise a dense Goldfarb–Idnani active-set solver ([`crate::active_set`]) solves it,
//!   with clarabel ([`crate::qp::DenseQp`]) as the fallback if that ever fails numerically.

// The numeric core walks parallel per-joint arrays by index; their lengths are fixed in `new`
// and checked at the top of `filter`.
#![allow(clippy::needless_range_loop)]

use nalgebra::{Matrix6xX, Point3, Unit, Vector3};

use crate::active_set::{ActiveSet, Problem};
use crate::kinematics::{Chain, JointKind};
use crate::qp::{DenseQp, QpError};

/// Settings of the filter (every number comes from the launch file in the node).
#[derive(Debug, Clone)]
pub struct CbfConfig {
    /// Distance kept from each joint limit.
    pub joint_padding_rad: f64,
    /// Class-K gain α (1/s) of every barrier when no [`GainTuner`] is set. Keep α ≲ a_max / v_max
    /// so that the acceleration box can brake before a barrier is reached: with α = 20 on the
    /// Panda the slack opened and the workspace was crossed by 3 cm in the invariance test;
    /// with α = 3 it holds. A tuner adapts α per barrier instead.
    pub alpha: f64,
    /// Control period, for the acceleration box.
    pub dt_s: f64,
    pub max_velocity_rad_s: Vec<f64>,
    pub max_accel_rad_s2: Vec<f64>,
    /// Tool-centre-point workspace box in the base frame.
    pub workspace_min: Vector3<f64>,
    pub workspace_max: Vector3<f64>,
    /// Static obstacles: centre (base frame) and radius.
    pub obstacles: Vec<(Point3<f64>, f64)>,
    /// Spheres carried by joints before this index are ignored against obstacles (links that
    /// barely move near the base).
    pub first_obstacle_joint: usize,
    /// Self-collision pairs: indices into the chain's spheres (see [`self_collision_pairs`]).
    pub self_pairs: Vec<(usize, usize)>,
    /// Diagonal of W.
    pub weights: Vec<f64>,
    /// Penalty on the shared slack of the soft rows.
    pub slack_weight: f64,
    /// Deceleration the tool can be assumed to achieve along a Cartesian barrier (m/s²), for
    /// the gain tuner.
    pub cartesian_brake_m_s2: f64,
    /// Optional cone the tool axis must stay in.
    pub orientation_cone: Option<OrientationCone>,
    /// Capacity for obstacles from the dynamic-obstacle topic.
    pub max_dynamic_obstacles: usize,
    /// When the QP is infeasible, the acceleration box is widened by this factor (≥ 1; 1 turns
    /// it off) before the soft rows get their slack: keeping the safe set comes before keeping
    /// the acceleration limit.
    pub accel_relax_factor: f64,
    /// Give the rows other than the joint box a slack when the QP is infeasible (default). When
    /// false, an infeasible QP is an error and the caller stops the robot instead.
    pub soft_rows: bool,
    /// Leave out of the QP the rows the box already implies (exact; off only to measure the
    /// worst case).
    pub prune_rows: bool,
}

/// The tool axis `axis_in_tool` (tip frame) must stay within `max_angle_rad` of `reference`
/// (base frame): h = cos∠(axis, reference) − cos(max_angle).
#[derive(Debug, Clone, Copy)]
pub struct OrientationCone {
    pub axis_in_tool: Unit<Vector3<f64>>,
    pub reference: Unit<Vector3<f64>>,
    pub max_angle_rad: f64,
    /// Angular deceleration the tool can be assumed to achieve (rad/s²), for the gain tuner.
    pub brake_rad_s2: f64,
}

/// Bad input to the filter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CbfError {
    #[error("{got} dynamic obstacles, more than the {max} the filter was configured for")]
    TooManyObstacles { got: usize, max: usize },
    #[error("dynamic obstacle {index} is not finite or has a negative radius")]
    BadObstacle { index: usize },
}

/// Supplies the class-K gain α of each barrier at each step (the "online CBF" of issue 4).
/// The default is [`BrakingRule`]; a learned tuner (an RL policy) implements the same trait.
pub trait GainTuner: Send {
    /// α for one barrier this step.
    fn alpha(&mut self, input: &GainInput) -> f64;
}

/// What a [`GainTuner`] sees of one barrier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GainInput {
    pub barrier: Barrier,
    /// The barrier's clearance (rad for joints and the cone, m otherwise).
    pub clearance: f64,
    /// How fast the clearance shrinks under the previous command (≥ 0; 0 when moving away).
    pub closing_speed: f64,
    /// Deceleration the robot can be assumed to achieve along the barrier.
    pub brake: f64,
    /// Recent QP activity: an exponential average (time constant [`ACTIVITY_TAU_S`]) of
    /// whether this barrier's constraint was active, in [0, 1].
    pub activity: f64,
}

/// Time constant of [`GainInput::activity`].
pub const ACTIVITY_TAU_S: f64 = 0.2;

/// Deterministic rule: the barrier bound shrinks the allowed closing speed at rate α, which
/// needs a deceleration α·v; keep it within a share of what the robot can brake:
/// α = clamp(margin · brake / max(v, v_min), α_min, α_max).
#[derive(Debug, Clone, Copy)]
pub struct BrakingRule {
    pub alpha_min: f64,
    pub alpha_max: f64,
    /// Share of the braking capability the barrier may use (0..1].
    pub margin: f64,
    /// Closing speeds below this count as this (avoids dividing by zero).
    pub min_speed: f64,
}

impl GainTuner for BrakingRule {
    /// Uses the closing speed and the braking capability; the clearance enters through the
    /// constraint itself (closing speed ≤ α·h) and QP activity is left to learned tuners.
    fn alpha(&mut self, input: &GainInput) -> f64 {
        (self.margin * input.brake / input.closing_speed.max(self.min_speed))
            .clamp(self.alpha_min, self.alpha_max)
    }
}

/// One barrier and its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Barrier {
    JointLower(usize),
    JointUpper(usize),
    WorkspaceMin(usize),
    WorkspaceMax(usize),
    /// (robot sphere index, static obstacle index); h is the signed clearance in metres.
    Obstacle(usize, usize),
    /// (robot sphere index, dynamic obstacle index); h is the signed clearance in metres.
    DynamicObstacle(usize, usize),
    /// The tool-axis cone; h is the angle margin in radians.
    OrientationCone,
    /// Not barriers but limits that can bind the box: a joint's velocity limit and its
    /// acceleration limit (reported as active constraints; no α).
    VelocityLimit(usize),
    AccelLimit(usize),
    /// (robot sphere, robot sphere); h is the signed clearance in metres.
    SelfCollision(usize, usize),
}

/// Sphere pairs worth guarding against self-collision: spheres on links at least `min_gap`
/// joints apart (adjacent links always touch), clear of each other by `min_clearance` at the
/// reference configuration `q_ref` (pairs that overlap there are part of the arm's shape).
pub fn self_collision_pairs(
    chain: &Chain,
    q_ref: &[f64],
    min_gap: usize,
    min_clearance: f64,
) -> Vec<(usize, usize)> {
    let mut frames = Vec::new();
    chain.forward(q_ref, &mut frames);
    let at = |s: &crate::kinematics::Sphere| match s.joint {
        Some(j) => frames[j] * s.center_in_frame,
        None => s.center_in_frame,
    };
    let link = |s: &crate::kinematics::Sphere| s.joint.map_or(0, |j| j + 1);
    let mut pairs = Vec::new();
    for (a, sa) in chain.spheres.iter().enumerate() {
        for (b, sb) in chain.spheres.iter().enumerate().skip(a + 1) {
            if link(sb).abs_diff(link(sa)) < min_gap || sa.joint.is_none() && sb.joint.is_none() {
                continue;
            }
            if (at(sa) - at(sb)).norm() - (sa.radius + sb.radius) > min_clearance {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

impl std::fmt::Display for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const AXIS: [&str; 3] = ["x", "y", "z"];
        let axis = |k: usize| AXIS.get(k).copied().unwrap_or("?");
        match self {
            Barrier::JointLower(i) => write!(f, "joint_lower[{i}]"),
            Barrier::JointUpper(i) => write!(f, "joint_upper[{i}]"),
            Barrier::WorkspaceMin(k) => write!(f, "workspace_min[{}]", axis(*k)),
            Barrier::WorkspaceMax(k) => write!(f, "workspace_max[{}]", axis(*k)),
            Barrier::Obstacle(s, o) => write!(f, "obstacle[{o}]/sphere[{s}]"),
            Barrier::DynamicObstacle(s, o) => write!(f, "dynamic_obstacle[{o}]/sphere[{s}]"),
            Barrier::SelfCollision(a, b) => write!(f, "self[{a},{b}]"),
            Barrier::OrientationCone => write!(f, "orientation_cone"),
            Barrier::VelocityLimit(i) => write!(f, "velocity_limit[{i}]"),
            Barrier::AccelLimit(i) => write!(f, "accel_limit[{i}]"),
        }
    }
}

/// How a step was solved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolvePath {
    /// The clamped reference satisfied every row.
    ClosedForm,
    /// The active-set solver.
    ActiveSet,
    /// clarabel, after the active-set solver failed numerically.
    Clarabel,
}

/// What one filter step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterReport {
    /// Soft-row slack used (0 when every constraint held exactly).
    pub slack: f64,
    /// Rows built (before pruning).
    pub rows_built: usize,
    /// Rows in the QP (after pruning).
    pub rows: usize,
    /// Solver steps (active-set additions and drops, or interior-point iterations).
    pub iterations: usize,
    pub path: SolvePath,
    /// The hard QP was infeasible and the acceleration box was widened to solve it.
    pub accel_relaxed: bool,
    /// Smallest clearance (m) between an arm sphere and an obstacle or another arm sphere;
    /// infinite when there are none.
    pub min_clearance_m: f64,
}

/// The α source of a filter, the gains it handed out in the last step, and each barrier's
/// recent QP activity (by its position in the fixed barrier order).
///
/// Tried and dropped: raising a tuned α so that a row's bound α·h never tightens faster than
/// braking allows. It kept α high near the walls, the arm arrived too fast, and the tool
/// crossed the workspace by 3 cm, as with a fixed high α.
struct Gains {
    tuner: Option<Box<dyn GainTuner>>,
    fixed: f64,
    used: Vec<(Barrier, f64)>,
    activity: Vec<f64>,
    prev_used: Vec<(Barrier, f64)>,
    prev_activity: Vec<f64>,
    /// Per-step decay of the activity average.
    decay: f64,
}

impl Gains {
    fn start_step(&mut self) {
        std::mem::swap(&mut self.used, &mut self.prev_used);
        std::mem::swap(&mut self.activity, &mut self.prev_activity);
        self.used.clear();
        self.activity.clear();
    }

    /// α for `barrier`: `clearance` and `closing` (≥ 0 when approaching) feed the tuner, in
    /// units where the robot brakes at `brake`.
    fn get(&mut self, barrier: Barrier, clearance: f64, closing: f64, brake: f64) -> f64 {
        let i = self.used.len();
        let activity = match (self.prev_used.get(i), self.prev_activity.get(i)) {
            (Some((b, _)), Some(a)) if *b == barrier => *a,
            _ => 0.0,
        };
        let a = match self.tuner.as_mut() {
            Some(t) => t.alpha(&GainInput {
                barrier,
                clearance,
                closing_speed: closing.max(0.0),
                brake,
                activity,
            }),
            None => self.fixed,
        };
        self.used.push((barrier, a));
        self.activity.push(activity);
        a
    }

    /// Folds this step's active set into the activity averages.
    fn update_activity(&mut self, active: &[Barrier]) {
        for ((b, _), a) in self.used.iter().zip(self.activity.iter_mut()) {
            let hit = if active.contains(b) { 1.0 } else { 0.0 };
            *a = self.decay * *a + (1.0 - self.decay) * hit;
        }
    }
}

/// One sphere's state this step.
#[derive(Debug, Clone, Copy)]
struct SphereNow {
    center: Point3<f64>,
    radius: f64,
    /// Index of the first column of its 3×n point Jacobian in `sphere_jac`; `None` for spheres
    /// on the base (they do not move).
    jac: Option<usize>,
}

/// The filter, with its scratch space. Everything is sized in [`CbfFilter::new`].
pub struct CbfFilter {
    chain: Chain,
    cfg: CbfConfig,
    n: usize,
    frames: Vec<nalgebra::Isometry3<f64>>,
    /// Tip Jacobian.
    jac: Matrix6xX<f64>,
    /// Joint axes and origins in the base frame.
    axes: Vec<Vector3<f64>>,
    origins: Vec<Vector3<f64>>,
    spheres: Vec<SphereNow>,
    /// 3×n linear point Jacobians, column-major, one block per sphere.
    sphere_jac: Vec<f64>,
    dynamic: Vec<(Point3<f64>, f64)>,
    gains: Gains,
    // The QP, hard form: n variables; soft form: n + 1.
    weights: Vec<f64>,
    reference: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// The box with the acceleration limit widened by `accel_relax_factor`.
    lo_relaxed: Vec<f64>,
    hi_relaxed: Vec<f64>,
    /// What each box bound comes from: the position barrier, the velocity or the acceleration
    /// limit.
    lo_src: Vec<Barrier>,
    hi_src: Vec<Barrier>,
    rows: Vec<f64>,
    b: Vec<f64>,
    row_barrier: Vec<Barrier>,
    soft_rows: Vec<f64>,
    x: Vec<f64>,
    solver: ActiveSet,
    /// Barriers active at the last solution.
    active: Vec<Barrier>,
}

/// The velocity/position box [l1, h1] intersected with the acceleration box u_prev ± da; where
/// they do not meet, the position barrier wins (the joint limit is never crossed).
/// Also says whether each bound is the acceleration limit's.
fn accel_box(l1: f64, h1: f64, u_prev: f64, da: f64) -> (f64, f64, bool, bool) {
    let (l2, h2) = (u_prev - da, u_prev + da);
    if l2.max(l1) <= h2.min(h1) {
        (l2.max(l1), h2.min(h1), l2 > l1, h2 < h1)
    } else if l2 > h1 {
        (h1, h1, false, false)
    } else {
        (l1, l1, false, false)
    }
}

/// Rows a filter can build at most.
fn max_rows(chain: &Chain, cfg: &CbfConfig) -> usize {
    let spheres = chain
        .spheres
        .iter()
        .filter(|s| s.joint.is_some_and(|j| j >= cfg.first_obstacle_joint))
        .count();
    6 + 1 + spheres * (cfg.obstacles.len() + cfg.max_dynamic_obstacles) + cfg.self_pairs.len()
}

impl CbfFilter {
    pub fn new(chain: Chain, cfg: CbfConfig) -> Self {
        let n = chain.dof();
        let rows = max_rows(&chain, &cfg);
        let barriers = 2 * n + rows;
        let ns = chain.spheres.len();
        Self {
            n,
            frames: Vec::with_capacity(n + 1),
            jac: Matrix6xX::zeros(n),
            axes: vec![Vector3::zeros(); n],
            origins: vec![Vector3::zeros(); n],
            spheres: Vec::with_capacity(ns),
            sphere_jac: vec![0.0; 3 * n * ns],
            dynamic: Vec::with_capacity(cfg.max_dynamic_obstacles),
            gains: Gains {
                tuner: None,
                fixed: cfg.alpha,
                used: Vec::with_capacity(barriers),
                activity: Vec::with_capacity(barriers),
                prev_used: Vec::with_capacity(barriers),
                prev_activity: Vec::with_capacity(barriers),
                decay: (-cfg.dt_s / ACTIVITY_TAU_S).exp(),
            },
            weights: Vec::with_capacity(n + 1),
            reference: Vec::with_capacity(n + 1),
            lo: Vec::with_capacity(n + 1),
            hi: Vec::with_capacity(n + 1),
            lo_relaxed: Vec::with_capacity(n),
            hi_relaxed: Vec::with_capacity(n),
            lo_src: Vec::with_capacity(n),
            hi_src: Vec::with_capacity(n),
            rows: Vec::with_capacity(rows * n),
            b: Vec::with_capacity(rows),
            row_barrier: Vec::with_capacity(rows),
            soft_rows: Vec::with_capacity(rows * (n + 1)),
            x: vec![0.0; n + 1],
            solver: ActiveSet::new(n + 1, 2 * (n + 1) + rows),
            active: Vec::with_capacity(barriers),
            chain,
            cfg,
        }
    }

    /// Uses `tuner` for α instead of the fixed `alpha` of the configuration.
    pub fn with_tuner(mut self, tuner: Box<dyn GainTuner>) -> Self {
        self.gains.tuner = Some(tuner);
        self
    }

    /// The α of every barrier used in the last step (for `/rft/safety` and recording), in a
    /// fixed order: joints, workspace, cone, obstacles, self pairs.
    pub fn alphas(&self) -> &[(Barrier, f64)] {
        &self.gains.used
    }

    /// Recent QP activity of every barrier, in the order of [`Self::alphas`].
    pub fn activity(&self) -> &[f64] {
        &self.gains.activity
    }

    /// Barriers whose constraint was active at the last solution.
    pub fn active_barriers(&self) -> &[Barrier] {
        &self.active
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    pub fn config(&self) -> &CbfConfig {
        &self.cfg
    }

    /// Replaces the dynamic obstacles (centre in the base frame, radius). On error the previous
    /// ones stay in force.
    pub fn set_dynamic_obstacles(
        &mut self,
        obstacles: &[(Point3<f64>, f64)],
    ) -> Result<(), CbfError> {
        if obstacles.len() > self.cfg.max_dynamic_obstacles {
            return Err(CbfError::TooManyObstacles {
                got: obstacles.len(),
                max: self.cfg.max_dynamic_obstacles,
            });
        }
        if let Some(index) = obstacles
            .iter()
            .position(|(c, r)| !(c.coords.iter().all(|v| v.is_finite()) && *r >= 0.0))
        {
            return Err(CbfError::BadObstacle { index });
        }
        self.dynamic.clear();
        self.dynamic.extend_from_slice(obstacles);
        Ok(())
    }

    pub fn dynamic_obstacles(&self) -> &[(Point3<f64>, f64)] {
        &self.dynamic
    }

    fn tcp(&self) -> Point3<f64> {
        Point3::from(self.frames[self.n].translation.vector)
    }

    /// Forward kinematics, tip Jacobian, sphere centres and their point Jacobians at `q`.
    fn kinematics(&mut self, q: &[f64]) {
        let n = self.n;
        self.chain.forward(q, &mut self.frames);
        self.chain.jacobian(&self.frames, &mut self.jac);
        for (i, j) in self.chain.joints.iter().enumerate() {
            self.axes[i] = self.frames[i].rotation * j.axis.into_inner();
            self.origins[i] = self.frames[i].translation.vector;
        }
        self.spheres.clear();
        for (si, s) in self.chain.spheres.iter().enumerate() {
            let Some(carrier) = s.joint else {
                self.spheres.push(SphereNow {
                    center: s.center_in_frame,
                    radius: s.radius,
                    jac: None,
                });
                continue;
            };
            let c = self.frames[carrier] * s.center_in_frame;
            let base = 3 * n * si;
            let block = &mut self.sphere_jac[base..base + 3 * n];
            block.fill(0.0);
            for (i, j) in self.chain.joints.iter().enumerate().take(carrier + 1) {
                let v = match j.kind {
                    JointKind::Revolute => self.axes[i].cross(&(c.coords - self.origins[i])),
                    JointKind::Prismatic => self.axes[i],
                };
                block[3 * i..3 * i + 3].copy_from_slice(v.as_slice());
            }
            self.spheres.push(SphereNow {
                center: c,
                radius: s.radius,
                jac: Some(base),
            });
        }
    }

    /// Every barrier value at `q` (for monitoring and tests). Obstacle values are clearances in
    /// metres and the cone's is the angle margin in radians; the QP itself uses the
    /// squared-distance and cosine forms.
    pub fn barriers(&mut self, q: &[f64], out: &mut Vec<(Barrier, f64)>) {
        out.clear();
        self.kinematics(q);
        let pad = self.cfg.joint_padding_rad;
        for (i, j) in self.chain.joints.iter().enumerate() {
            out.push((Barrier::JointLower(i), q[i] - (j.lower + pad)));
            out.push((Barrier::JointUpper(i), (j.upper - pad) - q[i]));
        }
        let p = self.tcp();
        for k in 0..3 {
            out.push((Barrier::WorkspaceMin(k), p[k] - self.cfg.workspace_min[k]));
            out.push((Barrier::WorkspaceMax(k), self.cfg.workspace_max[k] - p[k]));
        }
        if let Some(cone) = self.cfg.orientation_cone {
            let axis = self.frames[self.n].rotation * cone.axis_in_tool.into_inner();
            let angle = axis.dot(&cone.reference).clamp(-1.0, 1.0).acos();
            out.push((Barrier::OrientationCone, cone.max_angle_rad - angle));
        }
        for (si, s) in self.spheres.iter().enumerate() {
            if !self.guarded(si) {
                continue;
            }
            for (oi, (oc, orad)) in self.cfg.obstacles.iter().enumerate() {
                let h = (s.center - oc).norm() - (s.radius + orad);
                out.push((Barrier::Obstacle(si, oi), h));
            }
            for (oi, (oc, orad)) in self.dynamic.iter().enumerate() {
                let h = (s.center - oc).norm() - (s.radius + orad);
                out.push((Barrier::DynamicObstacle(si, oi), h));
            }
        }
        for &(a, b) in &self.cfg.self_pairs {
            let (sa, sb) = (self.spheres[a], self.spheres[b]);
            let h = (sa.center - sb.center).norm() - (sa.radius + sb.radius);
            out.push((Barrier::SelfCollision(a, b), h));
        }
    }

    /// Whether sphere `si` is checked against obstacles.
    fn guarded(&self, si: usize) -> bool {
        self.chain.spheres[si]
            .joint
            .is_some_and(|j| j >= self.cfg.first_obstacle_joint)
    }

    /// Linear velocity of sphere `s` under `u`, and its Jacobian column `i`.
    fn sphere_col(&self, s: &SphereNow, i: usize) -> Vector3<f64> {
        match s.jac {
            Some(base) => {
                Vector3::from_column_slice(&self.sphere_jac[base + 3 * i..base + 3 * i + 3])
            }
            None => Vector3::zeros(),
        }
    }

    /// Pushes the row `∂h/∂q · u ≥ −α h` for a sphere-distance barrier between a sphere and a
    /// point moving with Jacobian `other` (or fixed), with h = ‖d‖² − r².
    #[allow(clippy::too_many_arguments)]
    fn distance_row(
        &mut self,
        barrier: Barrier,
        a: SphereNow,
        b_center: Point3<f64>,
        b_sphere: Option<SphereNow>,
        r: f64,
        u_prev: &[f64],
        min_clearance: &mut f64,
    ) {
        let n = self.n;
        let d = a.center - b_center;
        let dist = d.norm().max(1e-9);
        let clearance = dist - r;
        *min_clearance = min_clearance.min(clearance);
        let h = d.norm_squared() - r * r;
        let start = self.rows.len();
        let mut closing = 0.0;
        for i in 0..n {
            let mut col = self.sphere_col(&a, i);
            if let Some(sb) = &b_sphere {
                col -= self.sphere_col(sb, i);
            }
            let g = 2.0 * d.dot(&col);
            self.rows.push(g);
            closing -= g * u_prev[i];
        }
        // ḣ = 2‖d‖ δ̇: the clearance closes at −ḣ / (2‖d‖).
        let alpha = self.gains.get(
            barrier,
            clearance,
            closing / (2.0 * dist),
            self.cfg.cartesian_brake_m_s2,
        );
        debug_assert_eq!(self.rows.len(), start + n);
        self.b.push(-alpha * h);
        self.row_barrier.push(barrier);
    }

    /// Builds the hard QP at `q`: box in `lo`/`hi`, rows in `rows`/`b`. Returns the smallest
    /// sphere clearance.
    fn build(&mut self, q: &[f64], u_prev: &[f64], u_ref: &[f64]) -> f64 {
        let n = self.n;
        self.kinematics(q);
        self.gains.start_step();
        self.rows.clear();
        self.b.clear();
        self.row_barrier.clear();
        self.weights.clear();
        self.weights.extend_from_slice(&self.cfg.weights);
        self.reference.clear();
        self.reference.extend_from_slice(u_ref);
        self.lo.clear();
        self.hi.clear();
        self.lo_relaxed.clear();
        self.hi_relaxed.clear();
        self.lo_src.clear();
        self.hi_src.clear();
        // Hard box: velocity ∩ position barrier, then the acceleration box where compatible.
        let pad = self.cfg.joint_padding_rad;
        for i in 0..n {
            let (lower, upper) = (self.chain.joints[i].lower, self.chain.joints[i].upper);
            let brake = self.cfg.max_accel_rad_s2[i];
            let (h_lo, h_hi) = (q[i] - (lower + pad), (upper - pad) - q[i]);
            let a_lo = self
                .gains
                .get(Barrier::JointLower(i), h_lo, -u_prev[i], brake);
            let a_hi = self
                .gains
                .get(Barrier::JointUpper(i), h_hi, u_prev[i], brake);
            let v = self.cfg.max_velocity_rad_s[i];
            let l1 = (-v).max(-a_lo * h_lo);
            let h1 = v.min(a_hi * h_hi);
            let (l1, h1) = if l1 <= h1 { (l1, h1) } else { (h1, h1) };
            let da = brake * self.cfg.dt_s;
            let (lo, hi, lo_accel, hi_accel) = accel_box(l1, h1, u_prev[i], da);
            self.lo.push(lo);
            self.hi.push(hi);
            self.lo_src.push(if lo_accel {
                Barrier::AccelLimit(i)
            } else if -a_lo * h_lo > -v {
                Barrier::JointLower(i)
            } else {
                Barrier::VelocityLimit(i)
            });
            self.hi_src.push(if hi_accel {
                Barrier::AccelLimit(i)
            } else if a_hi * h_hi < v {
                Barrier::JointUpper(i)
            } else {
                Barrier::VelocityLimit(i)
            });
            let (lo, hi, _, _) = accel_box(l1, h1, u_prev[i], da * self.cfg.accel_relax_factor);
            self.lo_relaxed.push(lo);
            self.hi_relaxed.push(hi);
        }
        // Workspace rows on the TCP: ±J_v[k] u ≥ −α h.
        let p = self.tcp();
        let brake = self.cfg.cartesian_brake_m_s2;
        for k in 0..3 {
            let v: f64 = (0..n).map(|i| self.jac[(k, i)] * u_prev[i]).sum();
            let h_min = p[k] - self.cfg.workspace_min[k];
            let h_max = self.cfg.workspace_max[k] - p[k];
            let a_min = self.gains.get(Barrier::WorkspaceMin(k), h_min, -v, brake);
            let a_max = self.gains.get(Barrier::WorkspaceMax(k), h_max, v, brake);
            for i in 0..n {
                self.rows.push(self.jac[(k, i)]);
            }
            self.b.push(-a_min * h_min);
            self.row_barrier.push(Barrier::WorkspaceMin(k));
            for i in 0..n {
                self.rows.push(-self.jac[(k, i)]);
            }
            self.b.push(-a_max * h_max);
            self.row_barrier.push(Barrier::WorkspaceMax(k));
        }
        // Orientation cone: h = aᵀz − cos θ, ḣ = (z × a)ᵀ J_ω u.
        if let Some(cone) = self.cfg.orientation_cone {
            let z = self.frames[n].rotation * cone.axis_in_tool.into_inner();
            let h = z.dot(&cone.reference) - cone.max_angle_rad.cos();
            let g = z.cross(&cone.reference);
            let start = self.rows.len();
            let mut hdot = 0.0;
            for i in 0..n {
                let w = Vector3::new(self.jac[(3, i)], self.jac[(4, i)], self.jac[(5, i)]);
                let gi = g.dot(&w);
                self.rows.push(gi);
                hdot += gi * u_prev[i];
            }
            let angle = z.dot(&cone.reference).clamp(-1.0, 1.0).acos();
            let sin = angle.sin().max(1e-6);
            let alpha = self.gains.get(
                Barrier::OrientationCone,
                cone.max_angle_rad - angle,
                -hdot / sin,
                cone.brake_rad_s2,
            );
            debug_assert_eq!(self.rows.len(), start + n);
            self.b.push(-alpha * h);
            self.row_barrier.push(Barrier::OrientationCone);
        }
        // Obstacle rows: h = ‖c − o‖² − (r_s + r_o)², ∂h/∂q = 2 (c − o)ᵀ J_c.
        let mut min_clearance = f64::INFINITY;
        for si in 0..self.spheres.len() {
            if !self.guarded(si) {
                continue;
            }
            let s = self.spheres[si];
            let n_static = self.cfg.obstacles.len();
            for k in 0..n_static + self.dynamic.len() {
                let (barrier, (oc, orad)) = if k < n_static {
                    (Barrier::Obstacle(si, k), self.cfg.obstacles[k])
                } else {
                    let d = k - n_static;
                    (Barrier::DynamicObstacle(si, d), self.dynamic[d])
                };
                let r = s.radius + orad;
                self.distance_row(barrier, s, oc, None, r, u_prev, &mut min_clearance);
            }
        }
        // Self-collision rows: ∂h/∂q = 2 (c_a − c_b)ᵀ (J_a − J_b).
        for k in 0..self.cfg.self_pairs.len() {
            let (a, b) = self.cfg.self_pairs[k];
            let (sa, sb) = (self.spheres[a], self.spheres[b]);
            self.distance_row(
                Barrier::SelfCollision(a, b),
                sa,
                sb.center,
                Some(sb),
                sa.radius + sb.radius,
                u_prev,
                &mut min_clearance,
            );
        }
        min_clearance
    }

    /// Drops the rows that the box implies: min over the box of a·u ≥ b means the row can
    /// never bind, so the solution is the same without it. The relaxed box contains the
    /// normal one, so a row it implies can bind in neither solve.
    fn prune(&mut self) {
        let n = self.n;
        let mut kept = 0;
        for r in 0..self.b.len() {
            let a = &self.rows[r * n..(r + 1) * n];
            let min_over_box: f64 = a
                .iter()
                .zip(self.lo_relaxed.iter().zip(&self.hi_relaxed))
                .map(|(a, (lo, hi))| (a * lo).min(a * hi))
                .sum();
            if min_over_box >= self.b[r] {
                continue;
            }
            if kept != r {
                self.rows.copy_within(r * n..(r + 1) * n, kept * n);
                self.b[kept] = self.b[r];
                self.row_barrier[kept] = self.row_barrier[r];
            }
            kept += 1;
        }
        self.rows.truncate(kept * n);
        self.b.truncate(kept);
        self.row_barrier.truncate(kept);
    }

    /// Filters `u_ref` at `q` (previous command `u_prev`) into `u`. The QP is first solved with
    /// every row hard; only if that is infeasible are the soft rows given their slack.
    pub fn filter(
        &mut self,
        q: &[f64],
        u_prev: &[f64],
        u_ref: &[f64],
        u: &mut [f64],
    ) -> Result<FilterReport, QpError> {
        let n = self.n;
        for (name, v) in [("q", q), ("u_prev", u_prev), ("u_ref", u_ref)] {
            if v.len() != n {
                return Err(QpError::Input(format!(
                    "{name} has {} entries, the chain has {n} joints",
                    v.len()
                )));
            }
        }
        if u.len() != n {
            return Err(QpError::Input(format!(
                "the output has {} entries, the chain has {n} joints",
                u.len()
            )));
        }
        let result = self.solve_step(q, u_prev, u_ref, u);
        self.gains.update_activity(&self.active);
        result
    }

    fn solve_step(
        &mut self,
        q: &[f64],
        u_prev: &[f64],
        u_ref: &[f64],
        u: &mut [f64],
    ) -> Result<FilterReport, QpError> {
        let n = self.n;
        let min_clearance_m = self.build(q, u_prev, u_ref);
        let rows_built = self.b.len();
        if self.cfg.prune_rows {
            self.prune();
        }
        self.active.clear();
        let mut report = FilterReport {
            slack: 0.0,
            rows_built,
            rows: self.b.len(),
            iterations: 0,
            path: SolvePath::ClosedForm,
            accel_relaxed: false,
            min_clearance_m,
        };
        // Closed form: the box alone is separable (W is diagonal), so its solution is the
        // clamped reference; if that satisfies every row it is the solution.
        for i in 0..n {
            self.x[i] = u_ref[i].clamp(self.lo[i], self.hi[i]);
        }
        let rows_hold = (0..self.b.len()).all(|r| {
            let a = &self.rows[r * n..(r + 1) * n];
            let ax: f64 = a.iter().zip(&self.x).map(|(a, x)| a * x).sum();
            ax >= self.b[r]
        });
        if rows_hold {
            self.mark_box_active(u_ref);
            u.copy_from_slice(&self.x[..n]);
            return Ok(report);
        }
        report.path = SolvePath::ActiveSet;
        match self.active_set(false, &mut report) {
            Ok(true) => return self.done(u, report),
            Ok(false) => {}
            Err(_) => return self.clarabel(u, report),
        }
        // Safety before smoothness: widen the acceleration box (velocity and position limits
        // stay) before any row is relaxed.
        if self.cfg.accel_relax_factor > 1.0 {
            report.accel_relaxed = true;
            self.lo.copy_from_slice(&self.lo_relaxed);
            self.hi.copy_from_slice(&self.hi_relaxed);
            match self.active_set(false, &mut report) {
                Ok(true) => return self.done(u, report),
                Ok(false) => {}
                Err(_) => return self.clarabel(u, report),
            }
        }
        if !self.cfg.soft_rows {
            return Err(QpError::Infeasible);
        }
        // Soft form: one more variable s ≥ 0 with cost w_s (½ s² + s), added to every row.
        self.weights.push(self.cfg.slack_weight);
        self.reference.push(-1.0);
        self.lo.push(0.0);
        self.hi.push(1e9);
        self.soft_rows.clear();
        for r in 0..self.b.len() {
            self.soft_rows
                .extend_from_slice(&self.rows[r * n..(r + 1) * n]);
            self.soft_rows.push(1.0);
        }
        let result = self.active_set(true, &mut report);
        self.weights.truncate(n);
        self.reference.truncate(n);
        self.lo.truncate(n);
        self.hi.truncate(n);
        match result {
            Ok(true) => self.done(u, report),
            Ok(false) => Err(QpError::Infeasible),
            Err(_) => self.clarabel(u, report),
        }
    }

    /// Runs the active-set solver on the current box and rows (`soft`: with the slack
    /// variable and `soft_rows`). Ok(false) when infeasible.
    fn active_set(&mut self, soft: bool, report: &mut FilterReport) -> Result<bool, QpError> {
        let nv = self.n + usize::from(soft);
        let problem = Problem {
            weights: &self.weights,
            reference: &self.reference,
            lo: &self.lo,
            hi: &self.hi,
            rows: if soft { &self.soft_rows } else { &self.rows },
            b: &self.b,
        };
        match self.solver.solve(&problem, &mut self.x[..nv]) {
            Ok(stats) => {
                report.iterations += stats.iterations;
                if soft {
                    report.slack = self.x[self.n];
                }
                self.mark_active(nv);
                Ok(true)
            }
            Err(QpError::Infeasible) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Hands the solution out.
    fn done(&self, u: &mut [f64], report: FilterReport) -> Result<FilterReport, QpError> {
        u.copy_from_slice(&self.x[..self.n]);
        Ok(report)
    }

    /// Box bounds that clip the reference.
    fn mark_box_active(&mut self, u_ref: &[f64]) {
        for i in 0..self.n {
            if u_ref[i] < self.lo[i] {
                self.active.push(self.lo_src[i]);
            } else if u_ref[i] > self.hi[i] {
                self.active.push(self.hi_src[i]);
            }
        }
    }

    /// Barriers of the active set after an active-set solve with `nv` variables.
    fn mark_active(&mut self, nv: usize) {
        for (k, lambda) in self.solver.active() {
            if lambda <= 0.0 {
                continue;
            }
            let barrier = if k < self.n {
                self.lo_src[k]
            } else if k < nv {
                continue; // the slack's own bound
            } else if k < nv + self.n {
                self.hi_src[k - nv]
            } else if k < 2 * nv {
                continue;
            } else {
                self.row_barrier[k - 2 * nv]
            };
            self.active.push(barrier);
        }
    }

    /// The hard QP of the last step as a [`DenseQp`] (after pruning when it is on), to check the
    /// filter against clarabel. Allocates; not for the control loop.
    pub fn last_qp(&self) -> DenseQp {
        self.dense_qp(false)
    }

    /// The QP of the current step as a [`DenseQp`]; `with_slack` adds the soft rows' slack.
    fn dense_qp(&self, with_slack: bool) -> DenseQp {
        let n = self.n;
        let extra: &[f64] = if with_slack { &[1.0] } else { &[] };
        let w = &self.cfg.weights;
        let mut qp = DenseQp {
            p_diag: w.clone(),
            q: w.iter().zip(&self.reference).map(|(w, r)| -w * r).collect(),
            rows: (0..self.b.len())
                .map(|r| {
                    let mut a = self.rows[r * n..(r + 1) * n].to_vec();
                    a.extend_from_slice(extra);
                    (a, self.b[r])
                })
                .collect(),
            lo: self.lo[..n].to_vec(),
            hi: self.hi[..n].to_vec(),
        };
        if with_slack {
            qp.p_diag.push(self.cfg.slack_weight);
            qp.q.push(self.cfg.slack_weight);
            qp.lo.push(0.0);
            qp.hi.push(1e9);
        }
        qp
    }

    /// Solves the pruned QP with clarabel (allocates; only used if the active set fails).
    fn clarabel(
        &mut self,
        u: &mut [f64],
        mut report: FilterReport,
    ) -> Result<FilterReport, QpError> {
        let n = self.n;
        report.path = SolvePath::Clarabel;
        let sol = match self.dense_qp(false).solve() {
            Ok(sol) => sol,
            Err(QpError::Infeasible) if self.cfg.soft_rows => {
                let sol = self.dense_qp(true).solve()?;
                report.slack = sol.x[n];
                sol
            }
            Err(e) => return Err(e),
        };
        report.iterations = sol.iterations as usize;
        u.copy_from_slice(&sol.x[..n]);
        Ok(report)
    }
}
