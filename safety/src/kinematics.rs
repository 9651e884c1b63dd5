//! Serial-chain kinematics from a URDF: forward kinematics of every link frame, the geometric
//! Jacobian, collision spheres from the collision geometry, and damped-least-squares
//! differential IK with a null-space posture term. Nothing here allocates per call once the
//! caller's workspace exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nalgebra::{
    Isometry3, Matrix6, Matrix6xX, Point3, Translation3, Unit, UnitQuaternion, Vector3, Vector6,
};

use crate::error::{Error, Result};

/// How a joint moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JointKind {
    Revolute,
    Prismatic,
}

/// One movable joint of the chain.
#[derive(Debug, Clone)]
pub struct Joint {
    pub name: String,
    pub kind: JointKind,
    /// From the previous movable joint's frame (after its motion) to this joint's frame at
    /// q = 0, fixed joints in between folded in.
    pub prev_from_joint: Isometry3<f64>,
    /// Motion axis in the joint's frame.
    pub axis: Unit<Vector3<f64>>,
    pub lower: f64,
    pub upper: f64,
    pub max_velocity: f64,
    /// The link this joint moves (its child).
    pub child_link: String,
}

/// A collision sphere attached to a link frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sphere {
    /// Index of the movable joint whose frame carries it; `None` for the base.
    pub joint: Option<usize>,
    pub center_in_frame: Point3<f64>,
    pub radius: f64,
}

/// A serial chain from `base` to `tip`.
#[derive(Debug, Clone)]
pub struct Chain {
    pub base: String,
    pub tip: String,
    pub joints: Vec<Joint>,
    /// From the last joint's frame to the tip frame.
    pub last_from_tip: Isometry3<f64>,
    /// Collision spheres derived from the URDF's collision geometry.
    pub spheres: Vec<Sphere>,
}

/// A URDF origin as an isometry.
pub fn pose(p: &urdf_rs::Pose) -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::new(p.xyz[0], p.xyz[1], p.xyz[2]),
        UnitQuaternion::from_euler_angles(p.rpy[0], p.rpy[1], p.rpy[2]),
    )
}

/// Spheres covering one collision primitive, in the primitive's link frame.
fn spheres_for(geometry: &urdf_rs::Geometry, origin: &Isometry3<f64>) -> Vec<(Point3<f64>, f64)> {
    use urdf_rs::Geometry as G;
    let along_z = |radius: f64, length: f64| -> Vec<(Point3<f64>, f64)> {
        // Spheres of the cylinder's radius along its axis, spaced one radius apart.
        let n = ((length / radius.max(1e-3)).ceil() as usize).max(1) + 1;
        (0..n)
            .map(|i| {
                let z = -length / 2.0 + length * i as f64 / (n - 1).max(1) as f64;
                (origin * Point3::new(0.0, 0.0, z), radius)
            })
            .collect()
    };
    match geometry {
        G::Sphere { radius } => vec![(origin * Point3::origin(), *radius)],
        G::Cylinder { radius, length } | G::Capsule { radius, length } => along_z(*radius, *length),
        G::Box { size } => {
            // One sphere that encloses the box.
            let r = 0.5 * (size[0] * size[0] + size[1] * size[1] + size[2] * size[2]).sqrt();
            vec![(origin * Point3::origin(), r)]
        }
        G::Mesh { .. } => Vec::new(),
    }
}

/// The joints from `base` down to `tip`, in order, checked: `base` exists and every link on
/// the way is connected. Errors are the reason, for the caller to wrap.
pub fn joint_path<'a>(
    robot: &'a urdf_rs::Robot,
    base: &str,
    tip: &str,
) -> std::result::Result<Vec<&'a urdf_rs::Joint>, String> {
    let by_child: HashMap<&str, &urdf_rs::Joint> = robot
        .joints
        .iter()
        .map(|j| (j.child.link.as_str(), j))
        .collect();
    if !robot.links.iter().any(|l| l.name == base) {
        return Err(format!("no link named `{base}` (the base)"));
    }
    // Walk up from the tip to the base.
    let mut path = Vec::new();
    let mut link = tip;
    while link != base {
        let Some(j) = by_child.get(link) else {
            return Err(format!(
                "link `{link}` is not connected to base `{base}` (tip `{tip}`)"
            ));
        };
        path.push(*j);
        link = j.parent.link.as_str();
        if path.len() > robot.joints.len() {
            return Err("the joint graph has a cycle".into());
        }
    }
    path.reverse();
    Ok(path)
}

impl Chain {
    /// Loads the chain `base` → `tip` from a URDF file.
    pub fn from_urdf_file(path: &Path, base: &str, tip: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Urdf {
            path: path.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_urdf_str(&text, base, tip).map_err(|Error::Urdf { reason, .. }| Error::Urdf {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses URDF text; errors name `<string>` as the path.
    pub fn from_urdf_str(xml: &str, base: &str, tip: &str) -> Result<Self> {
        let err = |reason: String| Error::Urdf {
            path: PathBuf::from("<string>"),
            reason,
        };
        let robot =
            urdf_rs::read_from_string(xml).map_err(|e| err(format!("malformed URDF: {e}")))?;
        let path = joint_path(&robot, base, tip).map_err(err)?;
        let mut joints = Vec::new();
        let mut acc = Isometry3::identity();
        for j in path {
            acc *= pose(&j.origin);
            let kind = match j.joint_type {
                urdf_rs::JointType::Fixed => continue,
                urdf_rs::JointType::Revolute | urdf_rs::JointType::Continuous => {
                    JointKind::Revolute
                }
                urdf_rs::JointType::Prismatic => JointKind::Prismatic,
                ref other => {
                    return Err(err(format!(
                        "joint `{}`: type {other:?} is not supported in a chain",
                        j.name
                    )));
                }
            };
            let axis = Vector3::new(j.axis.xyz[0], j.axis.xyz[1], j.axis.xyz[2]);
            let axis = Unit::try_new(axis, 1e-9)
                .ok_or_else(|| err(format!("joint `{}`: zero axis", j.name)))?;
            let (lower, upper) = if j.joint_type == urdf_rs::JointType::Continuous {
                (f64::NEG_INFINITY, f64::INFINITY)
            } else {
                (j.limit.lower, j.limit.upper)
            };
            let usable = lower < upper && j.limit.velocity > 0.0;
            if !usable {
                return Err(err(format!(
                    "joint `{}`: limits [{lower}, {upper}] with velocity {} are not usable",
                    j.name, j.limit.velocity
                )));
            }
            joints.push(Joint {
                name: j.name.clone(),
                kind,
                prev_from_joint: acc,
                axis,
                lower,
                upper,
                max_velocity: j.limit.velocity,
                child_link: j.child.link.clone(),
            });
            acc = Isometry3::identity();
        }
        if joints.is_empty() {
            return Err(err(format!(
                "no movable joint between `{base}` and `{tip}`"
            )));
        }
        // Collision spheres: each link's primitives, attached to the frame that carries the link.
        let mut spheres = Vec::new();
        let mut carrier: HashMap<&str, (Option<usize>, Isometry3<f64>)> = HashMap::new();
        carrier.insert(base, (None, Isometry3::identity()));
        for (i, jt) in joints.iter().enumerate() {
            carrier.insert(jt.child_link.as_str(), (Some(i), Isometry3::identity()));
        }
        // Fixed children (flange, hand, ...) hang off the link above them.
        let mut changed = true;
        while changed {
            changed = false;
            for j in &robot.joints {
                if j.joint_type == urdf_rs::JointType::Fixed
                    && !carrier.contains_key(j.child.link.as_str())
                    && let Some((idx, frame_from_parent)) =
                        carrier.get(j.parent.link.as_str()).copied()
                {
                    carrier.insert(
                        j.child.link.as_str(),
                        (idx, frame_from_parent * pose(&j.origin)),
                    );
                    changed = true;
                }
            }
        }
        for l in &robot.links {
            let Some((idx, frame_from_link)) = carrier.get(l.name.as_str()).copied() else {
                continue;
            };
            for c in &l.collision {
                for (center, radius) in spheres_for(&c.geometry, &pose(&c.origin)) {
                    spheres.push(Sphere {
                        joint: idx,
                        center_in_frame: frame_from_link * center,
                        radius,
                    });
                }
            }
        }
        Ok(Self {
            base: base.to_string(),
            tip: tip.to_string(),
            last_from_tip: acc,
            joints,
            spheres,
        })
    }

    pub fn dof(&self) -> usize {
        self.joints.len()
    }

    /// `base_from_joint[i]` for every joint frame (after its motion), then `base_from_tip`.
    /// `frames` is resized once to `dof + 1`.
    pub fn forward(&self, q: &[f64], frames: &mut Vec<Isometry3<f64>>) {
        frames.resize(self.dof() + 1, Isometry3::identity());
        let mut base_from = Isometry3::identity();
        for (i, j) in self.joints.iter().enumerate() {
            let qi = q.get(i).copied().unwrap_or(0.0);
            let motion = match j.kind {
                JointKind::Revolute => Isometry3::from_parts(
                    Translation3::identity(),
                    UnitQuaternion::from_axis_angle(&j.axis, qi),
                ),
                JointKind::Prismatic => Isometry3::from_parts(
                    Translation3::from(j.axis.into_inner() * qi),
                    UnitQuaternion::identity(),
                ),
            };
            base_from = base_from * j.prev_from_joint * motion;
            frames[i] = base_from;
        }
        frames[self.dof()] = base_from * self.last_from_tip;
    }

    /// The tip pose.
    pub fn base_from_tip(&self, q: &[f64]) -> Isometry3<f64> {
        let mut f = Vec::with_capacity(self.dof() + 1);
        self.forward(q, &mut f);
        f[self.dof()]
    }

    /// Geometric Jacobian of `point` (in the base frame) carried by joint frame `upto`
    /// (inclusive), from frames computed by [`Self::forward`]: rows (v; ω) in the base frame.
    /// Columns after `upto` are zero.
    pub fn jacobian_of_point(
        &self,
        frames: &[Isometry3<f64>],
        upto: usize,
        point: &Point3<f64>,
        jac: &mut Matrix6xX<f64>,
    ) {
        jac.fill(0.0);
        for (i, j) in self.joints.iter().enumerate().take(upto + 1) {
            let f = &frames[i];
            let z = f.rotation * j.axis.into_inner();
            let o = f.translation.vector;
            let (v, w) = match j.kind {
                JointKind::Revolute => (z.cross(&(point.coords - o)), z),
                JointKind::Prismatic => (z, Vector3::zeros()),
            };
            jac.fixed_view_mut::<3, 1>(0, i).copy_from(&v);
            jac.fixed_view_mut::<3, 1>(3, i).copy_from(&w);
        }
    }

    /// Geometric Jacobian of the tip.
    pub fn jacobian(&self, frames: &[Isometry3<f64>], jac: &mut Matrix6xX<f64>) {
        let tip = Point3::from(frames[self.dof()].translation.vector);
        self.jacobian_of_point(frames, self.dof() - 1, &tip, jac);
    }
}

/// Damped-least-squares differential IK with a null-space pull towards a rest posture:
/// `q̇ = Jᵀ(JJᵀ + λ²I)⁻¹ ẋ + (I − J⁺J) k (q_rest − q)`.
#[derive(Debug, Clone)]
pub struct DiffIk {
    pub damping: f64,
    pub nullspace_gain: f64,
    pub q_rest: Vec<f64>,
    frames: Vec<Isometry3<f64>>,
    jac: Matrix6xX<f64>,
}

impl DiffIk {
    pub fn new(chain: &Chain, damping: f64, nullspace_gain: f64, q_rest: Vec<f64>) -> Self {
        Self {
            damping,
            nullspace_gain,
            q_rest,
            frames: Vec::with_capacity(chain.dof() + 1),
            jac: Matrix6xX::zeros(chain.dof()),
        }
    }

    /// Joint velocities for the tip twist `(v; ω)` in the base frame, written to `qd`.
    pub fn solve(&mut self, chain: &Chain, q: &[f64], twist: &Vector6<f64>, qd: &mut [f64]) {
        chain.forward(q, &mut self.frames);
        chain.jacobian(&self.frames, &mut self.jac);
        let j = &self.jac;
        let mut a: Matrix6<f64> = Matrix6::identity() * (self.damping * self.damping);
        for c in j.column_iter() {
            a += c * c.transpose();
        }
        let Some(chol) = a.cholesky() else {
            qd.iter_mut().for_each(|v| *v = 0.0);
            return;
        };
        let y = chol.solve(twist);
        // Primary task.
        for (i, out) in qd.iter_mut().enumerate().take(chain.dof()) {
            *out = j.column(i).dot(&y);
        }
        // Null-space posture: z − J⁺ J z with J⁺ the damped pseudo-inverse.
        if self.nullspace_gain != 0.0 {
            let n = chain.dof();
            let pull = |i: usize| {
                self.nullspace_gain * (self.q_rest.get(i).copied().unwrap_or(0.0) - q[i])
            };
            let mut jz = Vector6::zeros();
            for (i, col) in j.column_iter().enumerate().take(n) {
                jz += col * pull(i);
            }
            let w = chol.solve(&jz);
            for (i, out) in qd.iter_mut().enumerate().take(n) {
                *out += pull(i) - j.column(i).dot(&w);
            }
        }
    }
}
