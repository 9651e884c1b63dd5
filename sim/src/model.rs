//! The robot as the simulator sees it: every link of the URDF with its collision shapes and
//! mass, the arm joints (the movable joints from the base to the tool) and the gripper's finger
//! joints (prismatic joints off the arm's path), and forward kinematics of every link.
//!
//! Another arm is a new URDF file: nothing here knows the Panda.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nalgebra::{Isometry3, Point3, Translation3, Unit, UnitQuaternion, Vector3};
use rft_safety::kinematics::{joint_path, pose};

use crate::error::{Error, Result};

/// A collision primitive, in its own frame (cylinders along z, as in URDF).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Geom {
    Box { half: Vector3<f64> },
    Cylinder { radius: f64, half_length: f64 },
    Sphere { radius: f64 },
}

/// A primitive attached to a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub geom: Geom,
    pub link_from_shape: Isometry3<f64>,
}

/// What moves a link relative to its parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Motion {
    Root,
    Fixed,
    /// Arm joint `index`, revolute (or prismatic) about/along `axis`.
    Arm {
        index: usize,
        axis: Unit<Vector3<f64>>,
        prismatic: bool,
    },
    /// Finger joint `index` (prismatic along `axis`), driven by the gripper command.
    Finger {
        index: usize,
        axis: Unit<Vector3<f64>>,
    },
}

#[derive(Debug, Clone)]
pub struct Link {
    pub name: String,
    /// Index of the parent link (always smaller: links are in topological order).
    pub parent: Option<usize>,
    /// From the parent link's frame to this link's frame before the joint moves.
    pub parent_from_link: Isometry3<f64>,
    pub motion: Motion,
    pub shapes: Vec<Shape>,
    pub mass: f64,
    pub com: Point3<f64>,
}

/// Limits of one actuated joint.
#[derive(Debug, Clone, PartialEq)]
pub struct JointInfo {
    pub name: String,
    pub lower: f64,
    pub upper: f64,
    pub max_velocity: f64,
    pub max_effort: f64,
}

/// A robot loaded from a URDF.
#[derive(Debug, Clone)]
pub struct RobotModel {
    pub links: Vec<Link>,
    pub arm: Vec<JointInfo>,
    pub fingers: Vec<JointInfo>,
    /// The tool frame (its link), e.g. `panda_hand_tcp`.
    pub tcp: usize,
    /// The link the fingers hang off, e.g. `panda_hand`; grasped objects attach to it.
    pub hand: Option<usize>,
}

impl RobotModel {
    /// Loads `path`, with the arm running from `base` to `tcp`.
    pub fn from_urdf_file(path: &Path, base: &str, tcp: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Urdf {
            path: path.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_urdf_str(&text, base, tcp).map_err(|e| match e {
            Error::Urdf { reason, .. } => Error::Urdf {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Parses URDF text; errors name `<string>` as the path.
    pub fn from_urdf_str(xml: &str, base: &str, tcp: &str) -> Result<Self> {
        let err = |reason: String| Error::Urdf {
            path: PathBuf::from("<string>"),
            reason,
        };
        let robot =
            urdf_rs::read_from_string(xml).map_err(|e| err(format!("malformed URDF: {e}")))?;
        let by_child: HashMap<&str, &urdf_rs::Joint> = robot
            .joints
            .iter()
            .map(|j| (j.child.link.as_str(), j))
            .collect();
        // The arm: movable joints on the path from the base to the tool.
        let on_path: Vec<&str> = joint_path(&robot, base, tcp)
            .map_err(err)?
            .iter()
            .map(|j| j.name.as_str())
            .collect();
        if by_child.contains_key(base) {
            return Err(err(format!("the base `{base}` has a parent joint")));
        }
        // Links in topological order, from the base down.
        let mut order: Vec<&str> = vec![base];
        let mut i = 0;
        while i < order.len() {
            let parent = order[i];
            for j in robot.joints.iter().filter(|j| j.parent.link == parent) {
                order.push(j.child.link.as_str());
            }
            i += 1;
            if order.len() > robot.links.len() + 1 {
                return Err(err("the joint graph has a cycle".into()));
            }
        }
        let index: HashMap<&str, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut links = Vec::with_capacity(order.len());
        let (mut arm, mut fingers) = (Vec::new(), Vec::new());
        let mut hand = None;
        for name in &order {
            let Some(l) = robot.links.iter().find(|l| l.name == *name) else {
                return Err(err(format!("joint child `{name}` is not a link")));
            };
            let (parent, parent_from_link, motion) = match by_child.get(name) {
                None => (None, Isometry3::identity(), Motion::Root),
                Some(j) => {
                    let parent = index[j.parent.link.as_str()];
                    let axis = Vector3::new(j.axis.xyz[0], j.axis.xyz[1], j.axis.xyz[2]);
                    let info = || -> Result<JointInfo> {
                        let (lower, upper) = match j.joint_type {
                            urdf_rs::JointType::Continuous => (-1e9, 1e9),
                            _ => (j.limit.lower, j.limit.upper),
                        };
                        if !(lower < upper && j.limit.velocity > 0.0) {
                            return Err(err(format!(
                                "joint `{}`: limits [{lower}, {upper}] with velocity {} are not usable",
                                j.name, j.limit.velocity
                            )));
                        }
                        Ok(JointInfo {
                            name: j.name.clone(),
                            lower,
                            upper,
                            max_velocity: j.limit.velocity,
                            max_effort: j.limit.effort,
                        })
                    };
                    let unit = || {
                        Unit::try_new(axis, 1e-9)
                            .ok_or_else(|| err(format!("joint `{}`: zero axis", j.name)))
                    };
                    use urdf_rs::JointType as T;
                    let motion = match (&j.joint_type, on_path.contains(&j.name.as_str())) {
                        (T::Fixed, _) => Motion::Fixed,
                        (T::Revolute | T::Continuous | T::Prismatic, true) => {
                            arm.push(info()?);
                            Motion::Arm {
                                index: arm.len() - 1,
                                axis: unit()?,
                                prismatic: j.joint_type == T::Prismatic,
                            }
                        }
                        (T::Prismatic, false) => {
                            fingers.push(info()?);
                            if hand.is_some_and(|h| h != parent) {
                                return Err(err(format!(
                                    "finger joint `{}` hangs off a different link than the other fingers",
                                    j.name
                                )));
                            }
                            hand = Some(parent);
                            Motion::Finger {
                                index: fingers.len() - 1,
                                axis: unit()?,
                            }
                        }
                        (other, _) => {
                            return Err(err(format!(
                                "joint `{}`: type {other:?} off the arm's path is not supported \
                                 (only prismatic finger joints are)",
                                j.name
                            )));
                        }
                    };
                    (Some(parent), pose(&j.origin), motion)
                }
            };
            let mut shapes = Vec::new();
            for c in &l.collision {
                use urdf_rs::Geometry as G;
                let geom = match &c.geometry {
                    G::Box { size } => Geom::Box {
                        half: Vector3::new(size[0], size[1], size[2]) * 0.5,
                    },
                    G::Cylinder { radius, length } | G::Capsule { radius, length } => {
                        Geom::Cylinder {
                            radius: *radius,
                            half_length: length * 0.5,
                        }
                    }
                    G::Sphere { radius } => Geom::Sphere { radius: *radius },
                    G::Mesh { filename, .. } => {
                        return Err(err(format!(
                            "link `{name}`: mesh collision geometry ({filename}) is not supported; \
                             use boxes, cylinders or spheres"
                        )));
                    }
                };
                let ok = match geom {
                    Geom::Box { half } => half.iter().all(|h| *h > 0.0 && h.is_finite()),
                    Geom::Cylinder {
                        radius,
                        half_length,
                    } => radius > 0.0 && half_length > 0.0,
                    Geom::Sphere { radius } => radius > 0.0,
                };
                if !ok {
                    return Err(err(format!(
                        "link `{name}`: collision geometry {geom:?} has a non-positive size"
                    )));
                }
                shapes.push(Shape {
                    geom,
                    link_from_shape: pose(&c.origin),
                });
            }
            let o = &l.inertial.origin.xyz;
            links.push(Link {
                name: name.to_string(),
                parent,
                parent_from_link,
                motion,
                shapes,
                mass: l.inertial.mass.value.max(0.0),
                com: Point3::new(o[0], o[1], o[2]),
            });
        }
        if arm.is_empty() {
            return Err(err(format!(
                "no movable joint between `{base}` and `{tcp}`"
            )));
        }
        Ok(Self {
            tcp: index[tcp],
            hand,
            links,
            arm,
            fingers,
        })
    }

    /// World poses of every link (the base at `world_from_base`), written to `out`.
    pub fn link_poses(
        &self,
        world_from_base: &Isometry3<f64>,
        q: &[f64],
        fingers: &[f64],
        out: &mut Vec<Isometry3<f64>>,
    ) {
        out.clear();
        for l in &self.links {
            let parent = l.parent.map_or(*world_from_base, |p| out[p]);
            let motion = match l.motion {
                Motion::Root | Motion::Fixed => Isometry3::identity(),
                Motion::Arm {
                    index,
                    axis,
                    prismatic,
                } => joint_motion(axis, q.get(index).copied().unwrap_or(0.0), prismatic),
                Motion::Finger { index, axis } => {
                    joint_motion(axis, fingers.get(index).copied().unwrap_or(0.0), true)
                }
            };
            out.push(parent * l.parent_from_link * motion);
        }
    }

    pub fn link_index(&self, name: &str) -> Option<usize> {
        self.links.iter().position(|l| l.name == name)
    }

    /// Names of the arm joints then the finger joints, as published in joint states.
    pub fn joint_names(&self) -> Vec<String> {
        self.arm
            .iter()
            .chain(&self.fingers)
            .map(|j| j.name.clone())
            .collect()
    }

    /// Joint torques that hold the arm (and `extra` point masses: link, mass) against gravity,
    /// from link poses computed by [`Self::link_poses`].
    pub fn gravity_torques(
        &self,
        poses: &[Isometry3<f64>],
        extra: Option<(usize, Point3<f64>, f64)>,
        tau: &mut [f64],
    ) {
        tau.iter_mut().for_each(|t| *t = 0.0);
        let g = Vector3::new(0.0, 0.0, 9.81);
        // For every link, the force m·g at its centre of mass loads each arm joint above it.
        let mut load = |link: usize, point: Point3<f64>, mass: f64| {
            let f = g * mass;
            let mut i = Some(link);
            while let Some(k) = i {
                if let Motion::Arm {
                    index,
                    axis,
                    prismatic,
                } = self.links[k].motion
                    && index < tau.len()
                {
                    let z = poses[k].rotation * axis.into_inner();
                    tau[index] += if prismatic {
                        z.dot(&f)
                    } else {
                        z.cross(&(point - poses[k].translation.vector).coords)
                            .dot(&f)
                    };
                }
                i = self.links[k].parent;
            }
        };
        for (k, l) in self.links.iter().enumerate() {
            if l.mass > 0.0 {
                load(k, poses[k] * l.com, l.mass);
            }
        }
        if let Some((k, p, m)) = extra {
            load(k, p, m);
        }
    }
}

fn joint_motion(axis: Unit<Vector3<f64>>, q: f64, prismatic: bool) -> Isometry3<f64> {
    if prismatic {
        Isometry3::from_parts(
            Translation3::from(axis.into_inner() * q),
            UnitQuaternion::identity(),
        )
    } else {
        Isometry3::from_parts(
            Translation3::identity(),
            UnitQuaternion::from_axis_angle(&axis, q),
        )
    }
}
