//! The simulated world: a URDF arm with a parallel-jaw gripper on a table, a cube, and the
//! task's regions or platform, stepped by rapier3d.
//!
//! How the robot is simulated: the arm tracks joint-velocity commands the way a stiff industrial
//! velocity controller does (velocity and acceleration limits, joint limits that hold), and its
//! links are kinematic rapier bodies that push the dynamic cube. A grasp is made when both
//! fingers touch the object while closing: the object then rides with the hand until the
//! gripper opens. Efforts are the torques that hold the arm (and what it carries) against
//! gravity, computed from the URDF's masses.

use std::path::PathBuf;

use nalgebra::{Isometry3, Point3, Translation3, UnitQuaternion, Vector3};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rapier3d::prelude::*;
use serde::Deserialize;

use crate::error::{CommandError, Error, Result};
use crate::model::{Geom, Motion, RobotModel};
use crate::task::{Direction, TaskKind, TaskStatus};

/// The Panda ready posture, used when the URDF has the Panda's seven joints.
pub const PANDA_READY: [f64; 7] = [
    0.0,
    -std::f64::consts::FRAC_PI_4,
    0.0,
    -3.0 * std::f64::consts::FRAC_PI_4,
    0.0,
    std::f64::consts::FRAC_PI_2,
    std::f64::consts::FRAC_PI_4,
];

/// The table top is the plane z = 0; the table spans these x, y ranges.
pub const TABLE_X: (f64, f64) = (-0.3, 0.9);
pub const TABLE_Y: (f64, f64) = (-0.7, 0.7);
pub const TABLE_THICKNESS: f64 = 0.05;
pub const FLOOR_Z: f64 = -0.75;

/// The bundled Panda URDF.
pub fn default_urdf() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/panda.urdf"))
}

/// Everything that sets up a simulation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// The robot's URDF.
    pub urdf: PathBuf,
    pub base_link: String,
    pub tcp_link: String,
    pub task: TaskKind,
    /// Physics rate.
    pub physics_hz: f64,
    /// Seed of the first `reset`.
    pub seed: u64,
    /// Arm posture after a reset (before the per-seed jitter). Default: the Panda's ready
    /// posture for a 7-joint arm, else the middle of each joint's range.
    pub initial_q: Option<Vec<f64>>,
    /// Uniform jitter added to each joint of the initial posture on reset.
    pub initial_q_jitter_rad: f64,
    /// Per-joint acceleration limit of the velocity controller (one value or one per joint).
    pub max_accel_rad_s2: Vec<f64>,
    /// Finger speed of the gripper, metres per second per finger.
    pub finger_speed_m_s: f64,
    pub cube_size_m: f64,
    pub cube_mass_kg: f64,
    pub friction: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            urdf: default_urdf(),
            base_link: "panda_link0".into(),
            tcp_link: "panda_hand_tcp".into(),
            task: TaskKind::Push,
            physics_hz: 1000.0,
            seed: 0,
            initial_q: None,
            initial_q_jitter_rad: 0.05,
            // The Panda's joint acceleration limits are 7.5–20 rad/s².
            max_accel_rad_s2: vec![10.0],
            finger_speed_m_s: 0.1,
            cube_size_m: 0.05,
            cube_mass_kg: 0.1,
            friction: 0.8,
        }
    }
}

impl SimConfig {
    fn check(&self) -> Result<()> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                key: key.into(),
                reason,
            })
        };
        if !(self.physics_hz.is_finite() && (50.0..=20_000.0).contains(&self.physics_hz)) {
            return bad(
                "physics_hz",
                format!("{} is outside 50..=20000", self.physics_hz),
            );
        }
        for (key, v, lo, hi) in [
            ("cube_size_m", self.cube_size_m, 0.01, 0.078),
            ("cube_mass_kg", self.cube_mass_kg, 0.001, 5.0),
            ("friction", self.friction, 0.0, 5.0),
            ("finger_speed_m_s", self.finger_speed_m_s, 0.001, 1.0),
            ("initial_q_jitter_rad", self.initial_q_jitter_rad, 0.0, 0.5),
        ] {
            if !(v.is_finite() && v >= lo && v <= hi) {
                return bad(key, format!("{v} is outside [{lo}, {hi}]"));
            }
        }
        if self.max_accel_rad_s2.is_empty()
            || !self
                .max_accel_rad_s2
                .iter()
                .all(|a| a.is_finite() && *a > 0.0)
        {
            return bad(
                "max_accel_rad_s2",
                "needs one or more positive values".into(),
            );
        }
        Ok(())
    }
}

/// Something that happened in the world, for logs and the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEvent {
    /// The object left the table (fell off or was pushed off); it stays where it landed until
    /// the next reset.
    ObjectOffTable {
        object: String,
        at_s: f64,
        position: [f64; 3],
    },
    Grasped {
        object: String,
        at_s: f64,
    },
    Released {
        object: String,
        at_s: f64,
    },
}

/// A box, cylinder or sphere to draw, with its colour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Visual {
    pub geom: Geom,
    pub world_from_shape: Isometry3<f64>,
    pub color: [f32; 3],
}

#[derive(Debug, Clone, Copy)]
struct Grasp {
    hand_from_object: Isometry3<f64>,
    /// Finger position when the grasp closed.
    finger: f64,
}

/// Joint state of the arm then the fingers.
#[derive(Debug, Clone, PartialEq)]
pub struct JointReading {
    pub name: Vec<String>,
    pub position: Vec<f64>,
    pub velocity: Vec<f64>,
    pub effort: Vec<f64>,
}

/// A running simulation.
pub struct Sim {
    cfg: SimConfig,
    model: RobotModel,
    world: PhysicsWorld,
    link_bodies: Vec<Option<RigidBodyHandle>>,
    finger_colliders: Vec<ColliderHandle>,
    cube: RigidBodyHandle,
    cube_collider: ColliderHandle,
    ready: Vec<f64>,
    accel: Vec<f64>,
    q: Vec<f64>,
    qd: Vec<f64>,
    qd_cmd: Vec<f64>,
    fingers: Vec<f64>,
    finger_vel: Vec<f64>,
    gripper_cmd: f64,
    grasp: Option<Grasp>,
    poses: Vec<Isometry3<f64>>,
    dt: f64,
    steps: u64,
    rejected: u64,
    off_table: bool,
    events: Vec<SimEvent>,
}

pub(crate) fn to_pose(iso: &Isometry3<f64>) -> Pose {
    let t = iso.translation.vector;
    let q = iso.rotation.quaternion();
    Pose::from_parts(
        Vec3::new(t.x as f32, t.y as f32, t.z as f32),
        Rotation::from_xyzw(q.i as f32, q.j as f32, q.k as f32, q.w as f32).normalize(),
    )
}

pub(crate) fn from_pose(p: &Pose) -> Isometry3<f64> {
    let t = p.translation;
    let r = p.rotation;
    Isometry3::from_parts(
        Translation3::new(f64::from(t.x), f64::from(t.y), f64::from(t.z)),
        UnitQuaternion::new_normalize(nalgebra::Quaternion::new(
            f64::from(r.w),
            f64::from(r.x),
            f64::from(r.y),
            f64::from(r.z),
        )),
    )
}

fn collider_for(geom: &Geom, link_from_shape: &Isometry3<f64>) -> ColliderBuilder {
    let b = match *geom {
        Geom::Box { half } => ColliderBuilder::cuboid(half.x as f32, half.y as f32, half.z as f32)
            .position(to_pose(link_from_shape)),
        // rapier's cylinders run along y, URDF's along z.
        Geom::Cylinder {
            radius,
            half_length,
        } => ColliderBuilder::cylinder(half_length as f32, radius as f32).position(to_pose(
            &(link_from_shape
                * UnitQuaternion::from_euler_angles(std::f64::consts::FRAC_PI_2, 0.0, 0.0)),
        )),
        Geom::Sphere { radius } => {
            ColliderBuilder::ball(radius as f32).position(to_pose(link_from_shape))
        }
    };
    b.friction(0.8).restitution(0.0)
}

impl Sim {
    /// Builds the world from `cfg` and resets it with `cfg.seed`.
    pub fn new(cfg: SimConfig) -> Result<Self> {
        cfg.check()?;
        let model = RobotModel::from_urdf_file(&cfg.urdf, &cfg.base_link, &cfg.tcp_link)?;
        Self::with_model(cfg, model)
    }

    /// Builds the world with an already loaded robot.
    pub fn with_model(cfg: SimConfig, model: RobotModel) -> Result<Self> {
        cfg.check()?;
        let n = model.arm.len();
        let accel = match cfg.max_accel_rad_s2.len() {
            1 => vec![cfg.max_accel_rad_s2[0]; n],
            k if k == n => cfg.max_accel_rad_s2.clone(),
            k => {
                return Err(Error::Config {
                    key: "max_accel_rad_s2".into(),
                    reason: format!("has {k} values; give one, or one per joint ({n})"),
                });
            }
        };
        let ready = match &cfg.initial_q {
            Some(q) => {
                if q.len() != n {
                    return Err(Error::Config {
                        key: "initial_q".into(),
                        reason: format!("has {} values but the arm has {n} joints", q.len()),
                    });
                }
                for (i, (v, j)) in q.iter().zip(&model.arm).enumerate() {
                    if !(v.is_finite() && *v >= j.lower && *v <= j.upper) {
                        return Err(Error::Config {
                            key: format!("initial_q[{i}]"),
                            reason: format!(
                                "{v} is outside {}'s limits [{}, {}]",
                                j.name, j.lower, j.upper
                            ),
                        });
                    }
                }
                q.clone()
            }
            None if n == 7
                && PANDA_READY
                    .iter()
                    .zip(&model.arm)
                    .all(|(v, j)| *v >= j.lower && *v <= j.upper) =>
            {
                PANDA_READY.to_vec()
            }
            None => model
                .arm
                .iter()
                .map(|j| 0.5 * (j.lower.max(-3.0) + j.upper.min(3.0)))
                .collect(),
        };

        let mut world = PhysicsWorld::new();
        world.gravity = Vec3::new(0.0, 0.0, -9.81);
        world.integration_parameters.dt = (1.0 / cfg.physics_hz) as f32;
        let fixed = |world: &mut PhysicsWorld, center: Vector3<f64>, half: Vector3<f64>| {
            let b = world
                .bodies
                .insert(RigidBodyBuilder::fixed().translation(Vec3::new(
                    center.x as f32,
                    center.y as f32,
                    center.z as f32,
                )));
            world.colliders.insert_with_parent(
                ColliderBuilder::cuboid(half.x as f32, half.y as f32, half.z as f32)
                    .friction(cfg.friction as f32),
                b,
                &mut world.bodies,
            );
        };
        let (table_c, table_h) = table_box();
        fixed(&mut world, table_c, table_h);
        fixed(
            &mut world,
            Vector3::new(0.3, 0.0, FLOOR_Z - 0.05),
            Vector3::new(3.0, 3.0, 0.05),
        );
        if let Some((c, h)) = cfg.task.platform() {
            fixed(&mut world, c, h);
        }
        let h = cfg.cube_size_m / 2.0;
        let cube = world.bodies.insert(
            RigidBodyBuilder::dynamic()
                .translation(Vec3::new(0.5, 0.0, h as f32))
                .can_sleep(false),
        );
        let cube_collider = world.colliders.insert_with_parent(
            ColliderBuilder::cuboid(h as f32, h as f32, h as f32)
                .mass(cfg.cube_mass_kg as f32)
                .friction(cfg.friction as f32)
                .restitution(0.0),
            cube,
            &mut world.bodies,
        );
        let mut link_bodies = Vec::with_capacity(model.links.len());
        let mut finger_colliders = Vec::new();
        for l in &model.links {
            if l.shapes.is_empty() {
                link_bodies.push(None);
                continue;
            }
            let b = world
                .bodies
                .insert(RigidBodyBuilder::kinematic_position_based());
            for s in &l.shapes {
                let c = world.colliders.insert_with_parent(
                    collider_for(&s.geom, &s.link_from_shape),
                    b,
                    &mut world.bodies,
                );
                if matches!(l.motion, Motion::Finger { .. }) {
                    finger_colliders.push(c);
                }
            }
            link_bodies.push(Some(b));
        }
        let nf = model.fingers.len();
        let mut sim = Self {
            dt: 1.0 / cfg.physics_hz,
            q: ready.clone(),
            qd: vec![0.0; n],
            qd_cmd: vec![0.0; n],
            fingers: vec![0.0; nf],
            finger_vel: vec![0.0; nf],
            gripper_cmd: 1.0,
            grasp: None,
            poses: Vec::with_capacity(model.links.len()),
            steps: 0,
            rejected: 0,
            off_table: false,
            events: Vec::new(),
            ready,
            accel,
            link_bodies,
            finger_colliders,
            cube,
            cube_collider,
            world,
            model,
            cfg,
        };
        let seed = sim.cfg.seed;
        sim.reset(seed);
        Ok(sim)
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    pub fn model(&self) -> &RobotModel {
        &self.model
    }

    pub fn task(&self) -> TaskKind {
        self.cfg.task
    }

    /// Simulated time since construction, seconds.
    pub fn time_s(&self) -> f64 {
        self.steps as f64 * self.dt
    }

    pub fn physics_dt(&self) -> f64 {
        self.dt
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Randomises the scene for the forward direction: the cube in the start region.
    pub fn reset(&mut self, seed: u64) {
        self.reset_for(seed, Direction::Forward);
    }

    /// Randomises the scene so that `dir` can begin: the arm near its initial posture with the
    /// gripper open, the cube at a random pose in the region `dir` starts from. Only runs when
    /// asked; the world never resets itself.
    pub fn reset_for(&mut self, seed: u64, dir: Direction) {
        let mut rng = StdRng::seed_from_u64(seed);
        let jitter = self.cfg.initial_q_jitter_rad;
        for i in 0..self.q.len() {
            let j = &self.model.arm[i];
            let dq = if jitter > 0.0 {
                rng.random_range(-jitter..=jitter)
            } else {
                0.0
            };
            self.q[i] = (self.ready[i] + dq).clamp(j.lower, j.upper);
        }
        self.qd.iter_mut().for_each(|v| *v = 0.0);
        self.qd_cmd.iter_mut().for_each(|v| *v = 0.0);
        for (f, j) in self.fingers.iter_mut().zip(&self.model.fingers) {
            *f = j.upper;
        }
        self.finger_vel.iter_mut().for_each(|v| *v = 0.0);
        self.gripper_cmd = 1.0;
        if self.grasp.take().is_some() {
            self.world.bodies[self.cube].set_body_type(RigidBodyType::Dynamic, true);
        }
        let (from, _) = self.cfg.task.regions(dir);
        let h = self.cfg.cube_size_m / 2.0;
        let m = (from.half - h).max(0.0) * 0.8;
        let (dx, dy) = (rng.random_range(-m..=m), rng.random_range(-m..=m));
        let yaw = rng.random_range(-std::f64::consts::FRAC_PI_4..std::f64::consts::FRAC_PI_4);
        let pose = Isometry3::from_parts(
            Translation3::new(
                from.center.x + dx,
                from.center.y + dy,
                from.surface_z + h + 1e-4,
            ),
            UnitQuaternion::from_euler_angles(0.0, 0.0, yaw),
        );
        self.set_object_pose(&pose);
        self.off_table = false;
        self.events.clear();
        self.place_links(true);
    }

    /// Places the cube (at rest).
    pub fn set_object_pose(&mut self, pose: &Isometry3<f64>) {
        let b = &mut self.world.bodies[self.cube];
        b.set_position(to_pose(pose), true);
        b.set_linvel(Vec3::ZERO, true);
        b.set_angvel(Vec3::ZERO, true);
    }

    /// Moves the link bodies to the current joint positions (teleporting them on reset).
    fn place_links(&mut self, teleport: bool) {
        self.model.link_poses(
            &Isometry3::identity(),
            &self.q,
            &self.fingers,
            &mut self.poses,
        );
        for (k, b) in self.link_bodies.iter().enumerate() {
            let Some(b) = b else { continue };
            let p = to_pose(&self.poses[k]);
            let body = &mut self.world.bodies[*b];
            if teleport {
                body.set_position(p, true);
            }
            body.set_next_kinematic_position(p);
        }
        if let (Some(g), Some(hand)) = (self.grasp, self.model.hand) {
            let p = to_pose(&(self.poses[hand] * g.hand_from_object));
            let body = &mut self.world.bodies[self.cube];
            if teleport {
                body.set_position(p, true);
            }
            body.set_next_kinematic_position(p);
        }
    }

    /// Sets the joint-velocity command (rad/s, one per arm joint), as ros2_control's forward
    /// velocity controller takes it. A rejected command is counted and the previous one stays.
    pub fn set_joint_velocity(&mut self, qd: &[f64]) -> std::result::Result<(), CommandError> {
        if qd.len() != self.q.len() {
            self.rejected += 1;
            return Err(CommandError::WrongLength {
                expected: self.q.len(),
                got: qd.len(),
            });
        }
        if let Some((index, v)) = qd.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            self.rejected += 1;
            return Err(CommandError::NonFinite {
                what: "joint velocity",
                index,
                value: *v,
            });
        }
        self.qd_cmd.copy_from_slice(qd);
        Ok(())
    }

    /// Sets the gripper position command: 0 closed, 1 fully open (clamped to [0, 1]).
    pub fn set_gripper(&mut self, position: f64) -> std::result::Result<(), CommandError> {
        if !position.is_finite() {
            self.rejected += 1;
            return Err(CommandError::NonFinite {
                what: "gripper",
                index: 0,
                value: position,
            });
        }
        self.gripper_cmd = position.clamp(0.0, 1.0);
        Ok(())
    }

    /// Commands rejected so far.
    pub fn rejected_commands(&self) -> u64 {
        self.rejected
    }

    /// Advances the world by one physics step.
    pub fn step(&mut self) {
        let dt = self.dt;
        for i in 0..self.q.len() {
            let j = &self.model.arm[i];
            let target = self.qd_cmd[i].clamp(-j.max_velocity, j.max_velocity);
            let a = self.accel[i] * dt;
            let v = self.qd[i] + (target - self.qd[i]).clamp(-a, a);
            let q = self.q[i] + v * dt;
            if q <= j.lower || q >= j.upper {
                self.q[i] = q.clamp(j.lower, j.upper);
                self.qd[i] = 0.0;
            } else {
                self.q[i] = q;
                self.qd[i] = v;
            }
        }
        // Fingers: towards the commanded opening, or held at the grasp.
        let now = self.time_s();
        if let Some(g) = self.grasp {
            let upper = self.model.fingers.first().map_or(0.04, |j| j.upper);
            if self.gripper_cmd * upper > g.finger + 0.002 {
                self.release(now);
            }
        }
        let step = self.cfg.finger_speed_m_s * dt;
        for (k, j) in self.model.fingers.iter().enumerate() {
            let target = match self.grasp {
                Some(g) => g.finger,
                None => self.gripper_cmd * j.upper,
            };
            let f = self.fingers[k] + (target - self.fingers[k]).clamp(-step, step);
            self.finger_vel[k] = (f - self.fingers[k]) / dt;
            self.fingers[k] = f.clamp(j.lower, j.upper);
        }
        self.place_links(false);
        self.world.step();
        self.steps += 1;
        let now = self.time_s();
        // A grasp closes when every finger touches the cube while the gripper closes.
        let closing = self.finger_vel.iter().any(|v| *v < 0.0);
        if self.grasp.is_none()
            && closing
            && !self.finger_colliders.is_empty()
            && self
                .finger_colliders
                .iter()
                .all(|f| self.touching(*f, self.cube_collider))
            && let Some(hand) = self.model.hand
        {
            let cube = from_pose(self.world.bodies[self.cube].position());
            self.grasp = Some(Grasp {
                hand_from_object: self.poses[hand].inverse() * cube,
                finger: self.fingers.first().copied().unwrap_or(0.0),
            });
            self.world.bodies[self.cube].set_body_type(RigidBodyType::KinematicPositionBased, true);
            self.events.push(SimEvent::Grasped {
                object: "cube".into(),
                at_s: now,
            });
        }
        if !self.off_table {
            let p = self.object_pose().translation.vector;
            let on_table =
                p.x >= TABLE_X.0 && p.x <= TABLE_X.1 && p.y >= TABLE_Y.0 && p.y <= TABLE_Y.1;
            if p.z < -0.02 || (!on_table && p.z < 0.1) {
                self.off_table = true;
                self.events.push(SimEvent::ObjectOffTable {
                    object: "cube".into(),
                    at_s: now,
                    position: [p.x, p.y, p.z],
                });
            }
        }
    }

    /// Whether two colliders touch (within half a millimetre).
    fn touching(&self, a: ColliderHandle, b: ColliderHandle) -> bool {
        let (a, b) = (&self.world.colliders[a], &self.world.colliders[b]);
        rapier3d::parry::query::distance(a.position(), a.shape(), b.position(), b.shape())
            .is_ok_and(|d| d.distance <= 5e-4)
    }

    fn release(&mut self, now: f64) {
        self.grasp = None;
        let body = &mut self.world.bodies[self.cube];
        let (v, w) = (body.linvel(), body.angvel());
        body.set_body_type(RigidBodyType::Dynamic, true);
        body.set_linvel(v, true);
        body.set_angvel(w, true);
        self.events.push(SimEvent::Released {
            object: "cube".into(),
            at_s: now,
        });
    }

    /// Advances by `seconds` (rounded to whole physics steps).
    pub fn advance(&mut self, seconds: f64) {
        let n = (seconds / self.dt).round().max(0.0) as u64;
        for _ in 0..n {
            self.step();
        }
    }

    /// Arm joint positions.
    pub fn q(&self) -> &[f64] {
        &self.q
    }

    /// Arm joint velocities.
    pub fn qd(&self) -> &[f64] {
        &self.qd
    }

    /// Finger joint positions (metres each; the opening is their sum).
    pub fn fingers(&self) -> &[f64] {
        &self.fingers
    }

    /// The gripper opening as a fraction of fully open.
    pub fn gripper_opening(&self) -> f64 {
        let (s, u) = self
            .model
            .fingers
            .iter()
            .zip(&self.fingers)
            .fold((0.0, 0.0), |(s, u), (j, f)| (s + f, u + j.upper));
        if u > 0.0 { s / u } else { 0.0 }
    }

    pub fn is_grasping(&self) -> bool {
        self.grasp.is_some()
    }

    /// Whether the cube has left the table since the last reset.
    pub fn object_off_table(&self) -> bool {
        self.off_table
    }

    /// Events since the last call (and since the last reset).
    pub fn take_events(&mut self) -> Vec<SimEvent> {
        std::mem::take(&mut self.events)
    }

    /// Joint state: arm joints then finger joints.
    pub fn joint_reading(&self) -> JointReading {
        let mut effort = vec![0.0; self.q.len()];
        let extra = match (self.grasp, self.model.hand) {
            (Some(g), Some(hand)) => Some((
                hand,
                self.poses[hand] * Point3::from(g.hand_from_object.translation.vector),
                self.cfg.cube_mass_kg,
            )),
            _ => None,
        };
        self.model.gravity_torques(&self.poses, extra, &mut effort);
        // Fingers report the grip force while holding something.
        let grip = if self.grasp.is_some() { -20.0 } else { 0.0 };
        effort.extend(self.fingers.iter().map(|_| grip));
        JointReading {
            name: self.model.joint_names(),
            position: self.q.iter().chain(&self.fingers).copied().collect(),
            velocity: self.qd.iter().chain(&self.finger_vel).copied().collect(),
            effort,
        }
    }

    /// World pose of a link by index (see [`RobotModel::link_index`]).
    pub fn link_pose(&self, link: usize) -> Isometry3<f64> {
        self.poses[link]
    }

    /// World pose of the tool frame.
    pub fn tcp_pose(&self) -> Isometry3<f64> {
        self.poses[self.model.tcp]
    }

    /// World pose of the cube.
    pub fn object_pose(&self) -> Isometry3<f64> {
        from_pose(self.world.bodies[self.cube].position())
    }

    /// Linear speed of the cube, m/s.
    pub fn object_speed(&self) -> f64 {
        let v = self.world.bodies[self.cube].linvel();
        f64::from(v.length())
    }

    pub fn cube_half(&self) -> f64 {
        self.cfg.cube_size_m / 2.0
    }

    /// Ground truth of `dir` of the task (evaluation and tests only).
    pub fn task_status(&self, dir: Direction) -> TaskStatus {
        crate::task::evaluate(
            self.cfg.task,
            dir,
            &self.object_pose(),
            self.cube_half(),
            self.object_speed(),
            self.is_grasping(),
        )
    }

    /// Every number that defines the state, for determinism checks.
    pub fn state_vector(&self) -> Vec<f64> {
        let mut v: Vec<f64> = Vec::new();
        v.extend(&self.q);
        v.extend(&self.qd);
        v.extend(&self.fingers);
        let b = &self.world.bodies[self.cube];
        let p = b.position();
        v.extend([p.translation.x, p.translation.y, p.translation.z].map(f64::from));
        v.extend([p.rotation.x, p.rotation.y, p.rotation.z, p.rotation.w].map(f64::from));
        v.extend(b.linvel().to_array().map(f64::from));
        v.extend(b.angvel().to_array().map(f64::from));
        v.push(if self.grasp.is_some() { 1.0 } else { 0.0 });
        v
    }

    /// What to draw: floor, table, regions, platform, cube and the robot's collision shapes.
    pub fn visuals(&self, out: &mut Vec<Visual>) {
        out.clear();
        let boxed = |center: Vector3<f64>, half: Vector3<f64>, color: [f32; 3]| Visual {
            geom: Geom::Box { half },
            world_from_shape: Isometry3::translation(center.x, center.y, center.z),
            color,
        };
        out.push(boxed(
            Vector3::new(0.3, 0.0, FLOOR_Z - 0.05),
            Vector3::new(3.0, 3.0, 0.05),
            [0.42, 0.43, 0.46],
        ));
        let (tc, th) = table_box();
        out.push(boxed(tc, th, [0.74, 0.62, 0.47]));
        let task = self.cfg.task;
        let decal = |r: crate::task::Region, color| {
            boxed(
                Vector3::new(r.center.x, r.center.y, r.surface_z + 0.0005),
                Vector3::new(r.half, r.half, 0.0005),
                color,
            )
        };
        out.push(decal(task.start_region(), [0.93, 0.86, 0.45]));
        match task.platform() {
            Some((c, h)) => {
                out.push(boxed(c, h, [0.25, 0.42, 0.82]));
            }
            None => out.push(decal(task.goal_region(), [0.30, 0.72, 0.36])),
        }
        let h = self.cube_half();
        out.push(Visual {
            geom: Geom::Box {
                half: Vector3::new(h, h, h),
            },
            world_from_shape: self.object_pose(),
            color: [0.86, 0.16, 0.12],
        });
        for (k, l) in self.model.links.iter().enumerate() {
            let color = match l.motion {
                Motion::Finger { .. } => [0.22, 0.22, 0.25],
                _ if Some(k) == self.model.hand => [0.30, 0.30, 0.33],
                _ if k % 2 == 0 => [0.93, 0.93, 0.93],
                _ => [0.78, 0.79, 0.81],
            };
            for s in &l.shapes {
                out.push(Visual {
                    geom: s.geom,
                    world_from_shape: self.poses[k] * s.link_from_shape,
                    color,
                });
            }
        }
    }
}

/// Centre and half extents of the table.
pub fn table_box() -> (Vector3<f64>, Vector3<f64>) {
    (
        Vector3::new(
            0.5 * (TABLE_X.0 + TABLE_X.1),
            0.5 * (TABLE_Y.0 + TABLE_Y.1),
            -TABLE_THICKNESS / 2.0,
        ),
        Vector3::new(
            0.5 * (TABLE_X.1 - TABLE_X.0),
            0.5 * (TABLE_Y.1 - TABLE_Y.0),
            TABLE_THICKNESS / 2.0,
        ),
    )
}
