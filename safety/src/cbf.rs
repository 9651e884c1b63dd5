//! The CBF-QP safety filter for q̇ = u:
//! minimise ‖u − u_ref‖²_W subject to, for every barrier h(q) ≥ 0, ∂h/∂q · u + α h ≥ 0.
//!
//! Barriers: joint position limits (with padding), the tool's workspace box, and collision
//! spheres on the arm against static sphere obstacles. Joint limits, velocity limits and the
//! per-step acceleration box are single-variable, so they become the QP's variable box and are
//! never relaxed; the workspace and obstacle rows share one slack with a large penalty, so the
//! QP stays feasible when they conflict with the hard limits.
//!
//! First version: it builds the QP afresh each step. The structured solver (row pruning,
//! closed-form boxes, warm-started active set) comes next; see issue 4.

use nalgebra::{Matrix6xX, Point3, Vector3};

use crate::kinematics::Chain;
use crate::qp::{DenseQp, QpError};

/// Settings of the filter (every number comes from the launch file in the node).
#[derive(Debug, Clone)]
pub struct CbfConfig {
    /// Distance kept from each joint limit.
    pub joint_padding_rad: f64,
    /// Class-K gain α (1/s) of every barrier. Keep α ≲ a_max / v_max so that the acceleration
    /// box can brake before a barrier is reached: with α = 20 on the Panda the slack opened and
    /// the workspace was crossed by 3 cm in the invariance test; with α = 3 it holds. The online
    /// gain tuner of issue 4 is meant to adapt α per constraint.
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
}

/// Supplies the class-K gain α of each barrier at each step (the "online CBF" of issue 4).
/// The default is [`BrakingRule`]; a learned tuner (an RL policy) implements the same trait.
pub trait GainTuner: Send {
    /// α for `barrier` whose value is `h` (clearance: rad or m), closing at `closing_speed`
    /// (rad/s or m/s, ≥ 0; 0 when moving away), when the robot can brake at `brake` along it.
    fn alpha(&mut self, barrier: Barrier, h: f64, closing_speed: f64, brake: f64) -> f64;
}

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
    fn alpha(&mut self, _barrier: Barrier, _h: f64, closing_speed: f64, brake: f64) -> f64 {
        (self.margin * brake / closing_speed.max(self.min_speed))
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
    /// (robot sphere index, obstacle index); h is the signed clearance in metres.
    Obstacle(usize, usize),
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

/// What one filter step did.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterReport {
    /// Soft-row slack used (0 when every constraint held exactly).
    pub slack: f64,
    /// Rows in the QP.
    pub rows: usize,
    /// Interior-point iterations.
    pub iterations: u32,
}

/// The α source of a filter and the gains it handed out in the last step.
struct Gains {
    tuner: Option<Box<dyn GainTuner>>,
    fixed: f64,
    used: Vec<(Barrier, f64)>,
}

impl Gains {
    fn get(&mut self, barrier: Barrier, h: f64, closing: f64, brake: f64) -> f64 {
        let a = match self.tuner.as_mut() {
            Some(t) => t.alpha(barrier, h, closing.max(0.0), brake),
            None => self.fixed,
        };
        self.used.push((barrier, a));
        a
    }
}

/// The filter, with its scratch space.
pub struct CbfFilter {
    chain: Chain,
    cfg: CbfConfig,
    frames: Vec<nalgebra::Isometry3<f64>>,
    jac: Matrix6xX<f64>,
    /// Second point Jacobian, for self-collision pairs.
    jac_b: Matrix6xX<f64>,
    gains: Gains,
}

impl CbfFilter {
    pub fn new(chain: Chain, cfg: CbfConfig) -> Self {
        let n = chain.dof();
        Self {
            frames: Vec::with_capacity(n + 1),
            jac: Matrix6xX::zeros(n),
            jac_b: Matrix6xX::zeros(n),
            gains: Gains {
                tuner: None,
                fixed: cfg.alpha,
                used: Vec::new(),
            },
            chain,
            cfg,
        }
    }

    /// Uses `tuner` for α instead of the fixed `alpha` of the configuration.
    pub fn with_tuner(mut self, tuner: Box<dyn GainTuner>) -> Self {
        self.gains.tuner = Some(tuner);
        self
    }

    /// The α of every barrier used in the last step (for `/rft/safety` and recording).
    pub fn alphas(&self) -> &[(Barrier, f64)] {
        &self.gains.used
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    pub fn config(&self) -> &CbfConfig {
        &self.cfg
    }

    fn tcp(&self) -> Point3<f64> {
        Point3::from(self.frames[self.chain.dof()].translation.vector)
    }

    /// Every barrier value at `q` (for monitoring and tests). Obstacle values are clearances in
    /// metres; the QP itself uses the squared-distance form.
    pub fn barriers(&mut self, q: &[f64], out: &mut Vec<(Barrier, f64)>) {
        out.clear();
        self.chain.forward(q, &mut self.frames);
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
        for (si, s) in self.chain.spheres.iter().enumerate() {
            let Some(ji) = s.joint.filter(|j| *j >= self.cfg.first_obstacle_joint) else {
                continue;
            };
            let c = self.frames[ji] * s.center_in_frame;
            for (oi, (oc, orad)) in self.cfg.obstacles.iter().enumerate() {
                out.push((
                    Barrier::Obstacle(si, oi),
                    (c - oc).norm() - (s.radius + orad),
                ));
            }
        }
        for &(a, b) in &self.cfg.self_pairs {
            let (pa, ra) = self.sphere_at(a);
            let (pb, rb) = self.sphere_at(b);
            out.push((Barrier::SelfCollision(a, b), (pa - pb).norm() - (ra + rb)));
        }
    }

    /// Centre (base frame, from the last `forward`) and radius of robot sphere `i`.
    fn sphere_at(&self, i: usize) -> (Point3<f64>, f64) {
        let s = &self.chain.spheres[i];
        let c = match s.joint {
            Some(j) => self.frames[j] * s.center_in_frame,
            None => s.center_in_frame,
        };
        (c, s.radius)
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
        let n = self.chain.dof();
        let qp = self.build(q, u_prev, u_ref, false);
        let (sol, slack) = match qp.solve() {
            Ok(sol) => (sol, 0.0),
            Err(QpError::Infeasible) => {
                let qp = self.build(q, u_prev, u_ref, true);
                let sol = qp.solve()?;
                let slack = sol.x[n];
                (sol, slack)
            }
            Err(e) => return Err(e),
        };
        for (o, x) in u.iter_mut().zip(&sol.x) {
            *o = *x;
        }
        Ok(FilterReport {
            slack,
            rows: qp.rows.len(),
            iterations: sol.iterations,
        })
    }

    fn build(&mut self, q: &[f64], u_prev: &[f64], u_ref: &[f64], with_slack: bool) -> DenseQp {
        let n = self.chain.dof();
        self.chain.forward(q, &mut self.frames);
        self.chain.jacobian(&self.frames, &mut self.jac);
        self.gains.used.clear();
        // Gains first (they need &mut self), from closing speeds under the previous command.
        let mut joint_alpha = Vec::with_capacity(2 * n);
        let pad = self.cfg.joint_padding_rad;
        for i in 0..n {
            let (lo, hi, brake) = (
                self.chain.joints[i].lower,
                self.chain.joints[i].upper,
                self.cfg.max_accel_rad_s2[i],
            );
            let a_lo = self
                .gains
                .get(Barrier::JointLower(i), q[i] - (lo + pad), -u_prev[i], brake);
            let a_hi = self
                .gains
                .get(Barrier::JointUpper(i), (hi - pad) - q[i], u_prev[i], brake);
            joint_alpha.push((a_lo, a_hi));
        }
        let p = Point3::from(self.frames[n].translation.vector);
        let v: Vector3<f64> = (0..n).fold(Vector3::zeros(), |acc, i| {
            acc + Vector3::new(self.jac[(0, i)], self.jac[(1, i)], self.jac[(2, i)]) * u_prev[i]
        });
        let brake = self.cfg.cartesian_brake_m_s2;
        let mut ws_alpha = [(0.0, 0.0); 3];
        for (k, wa) in ws_alpha.iter_mut().enumerate() {
            let (wmin, wmax) = (self.cfg.workspace_min[k], self.cfg.workspace_max[k]);
            *wa = (
                self.gains
                    .get(Barrier::WorkspaceMin(k), p[k] - wmin, -v[k], brake),
                self.gains
                    .get(Barrier::WorkspaceMax(k), wmax - p[k], v[k], brake),
            );
        }
        let cfg = &self.cfg;
        let extra = usize::from(with_slack);
        let slack_col: &[f64] = if with_slack { &[1.0] } else { &[] };
        let mut qp = DenseQp {
            p_diag: cfg
                .weights
                .iter()
                .copied()
                .chain(slack_col.iter().map(|_| cfg.slack_weight))
                .collect(),
            q: cfg
                .weights
                .iter()
                .zip(u_ref)
                .map(|(w, r)| -w * r)
                .chain(slack_col.iter().map(|_| cfg.slack_weight))
                .collect(),
            rows: Vec::new(),
            lo: vec![0.0; n + extra],
            hi: vec![0.0; n + extra],
        };
        // Hard box: velocity ∩ position barrier, then the acceleration box where compatible.
        for (i, j) in self.chain.joints.iter().enumerate() {
            let v = cfg.max_velocity_rad_s[i];
            let (a_lo, a_hi) = joint_alpha[i];
            let l1 = (-v).max(-a_lo * (q[i] - (j.lower + pad)));
            let h1 = v.min(a_hi * ((j.upper - pad) - q[i]));
            let (l1, h1) = if l1 <= h1 { (l1, h1) } else { (h1, h1) };
            let da = cfg.max_accel_rad_s2[i] * cfg.dt_s;
            let (l2, h2) = (u_prev[i] - da, u_prev[i] + da);
            let (lo, hi) = if l2.max(l1) <= h2.min(h1) {
                (l2.max(l1), h2.min(h1))
            } else if l2 > h1 {
                (h1, h1)
            } else {
                (l1, l1)
            };
            qp.lo[i] = lo;
            qp.hi[i] = hi;
        }
        if with_slack {
            qp.lo[n] = 0.0;
            qp.hi[n] = 1e9;
        }
        // Workspace rows on the TCP: ±J_v[k] u (+ s) ≥ −α h.
        for (k, (a_min, a_max)) in ws_alpha.iter().enumerate() {
            let h_min = p[k] - cfg.workspace_min[k];
            let h_max = cfg.workspace_max[k] - p[k];
            let row = |sign: f64| -> Vec<f64> {
                (0..n)
                    .map(|i| sign * self.jac[(k, i)])
                    .chain(slack_col.iter().copied())
                    .collect()
            };
            qp.rows.push((row(1.0), -a_min * h_min));
            qp.rows.push((row(-1.0), -a_max * h_max));
        }
        // Obstacle rows: h = ‖c − o‖² − (r_s + r_o)², ∂h/∂q = 2 (c − o)ᵀ J_c. The gain uses the
        // clearance δ = ‖c − o‖ − r and its closing speed.
        for (si, s) in self.chain.spheres.iter().enumerate() {
            let Some(ji) = s.joint.filter(|j| *j >= cfg.first_obstacle_joint) else {
                continue;
            };
            let c = self.frames[ji] * s.center_in_frame;
            self.chain
                .jacobian_of_point(&self.frames, ji, &c, &mut self.jac);
            let vc: Vector3<f64> = (0..n).fold(Vector3::zeros(), |acc, i| {
                acc + Vector3::new(self.jac[(0, i)], self.jac[(1, i)], self.jac[(2, i)]) * u_prev[i]
            });
            for (oi, (oc, orad)) in cfg.obstacles.iter().enumerate() {
                let d = c - oc;
                let r = s.radius + orad;
                let dist = d.norm().max(1e-9);
                let closing = -d.dot(&vc) / dist;
                let a = self
                    .gains
                    .get(Barrier::Obstacle(si, oi), dist - r, closing, brake);
                let h = d.norm_squared() - r * r;
                let row: Vec<f64> = (0..n)
                    .map(|i| {
                        2.0 * (d.x * self.jac[(0, i)]
                            + d.y * self.jac[(1, i)]
                            + d.z * self.jac[(2, i)])
                    })
                    .chain(slack_col.iter().copied())
                    .collect();
                qp.rows.push((row, -a * h));
            }
        }
        // Self-collision rows: h = ‖c_a − c_b‖² − (r_a + r_b)², ∂h/∂q = 2 (c_a − c_b)ᵀ (J_a − J_b).
        for &(sa, sb) in &cfg.self_pairs {
            let (ca, ra) = self.sphere_at(sa);
            let (cb, rb) = self.sphere_at(sb);
            let point_velocity_rows = |chain: &Chain,
                                       frames: &[nalgebra::Isometry3<f64>],
                                       jac: &mut Matrix6xX<f64>,
                                       idx: usize,
                                       c: &Point3<f64>| {
                match chain.spheres[idx].joint {
                    Some(j) => chain.jacobian_of_point(frames, j, c, jac),
                    None => jac.fill(0.0),
                }
            };
            point_velocity_rows(&self.chain, &self.frames, &mut self.jac, sa, &ca);
            point_velocity_rows(&self.chain, &self.frames, &mut self.jac_b, sb, &cb);
            let d = ca - cb;
            let r = ra + rb;
            let dist = d.norm().max(1e-9);
            self.jac -= &self.jac_b; // relative point Jacobian J_a − J_b
            let ja = &self.jac;
            let rel = |i: usize| Vector3::new(ja[(0, i)], ja[(1, i)], ja[(2, i)]);
            let vrel: Vector3<f64> =
                (0..n).fold(Vector3::zeros(), |acc, i| acc + rel(i) * u_prev[i]);
            let a = self.gains.get(
                Barrier::SelfCollision(sa, sb),
                dist - r,
                -d.dot(&vrel) / dist,
                brake,
            );
            let h = d.norm_squared() - r * r;
            let row: Vec<f64> = (0..n)
                .map(|i| 2.0 * d.dot(&rel(i)))
                .chain(slack_col.iter().copied())
                .collect();
            qp.rows.push((row, -a * h));
        }
        qp
    }
}
