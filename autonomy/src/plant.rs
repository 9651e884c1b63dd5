//! The simulated plant of the in-process loop: the simulator stepped in lockstep with the same
//! safety filter the `safety_filter` node runs (differential IK, CBF-QP, deceleration when the
//! QP fails), a scene camera, and the action mapping. One call to [`SimPlant::apply`] is one
//! control period of the policy.

use std::path::PathBuf;

use nalgebra::{Isometry3, Vector6};
use rft_safety::cbf::CbfFilter;
use rft_safety::kinematics::DiffIk;
use rft_sim::{Camera, Direction, Frame, Renderer, Sim, SimConfig, TaskKind, TaskStatus, Visual};
use serde::{Deserialize, Serialize};

use super::action::ActionMap;
use rft_policies::replay::ImageShape;

use super::obs::{PROPRIO_OBS_DIM, STATE_OBS_DIM, proprio_obs, state_obs};
use rft_config::ConfigError;
use rft_safety::SafetyConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlantConfig {
    pub task: TaskKind,
    pub urdf: PathBuf,
    /// Policy rate.
    pub control_hz: f64,
    /// Safety filter rate (the joint-state rate).
    pub safety_hz: f64,
    pub physics_hz: f64,
    /// Scene camera resolution (what the success classifier sees).
    pub camera_width: u32,
    pub camera_height: u32,
    pub action: ActionMap,
    /// The safety filter's box for the tool, metres (base frame).
    pub workspace_min: [f64; 3],
    pub workspace_max: [f64; 3],
    /// What the policy observes: `state` (tool pose, the object's pose as a pose estimator
    /// reports it, gripper: 14 values) or `image` (tool pose and gripper, 6 values, plus the
    /// scene camera at `policy_image_size`² through the policy's CNN encoder).
    pub observation: ObservationKind,
    pub policy_image_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservationKind {
    #[default]
    State,
    Image,
}

impl Default for PlantConfig {
    fn default() -> Self {
        Self {
            task: TaskKind::Push,
            urdf: rft_sim::world::default_urdf(),
            control_hz: 10.0,
            safety_hz: 100.0,
            physics_hz: 1000.0,
            camera_width: 128,
            camera_height: 128,
            action: ActionMap::default(),
            workspace_min: rft_safety::config::DEFAULT_WORKSPACE_MIN,
            workspace_max: rft_safety::config::DEFAULT_WORKSPACE_MAX,
            observation: ObservationKind::State,
            policy_image_size: 64,
        }
    }
}

impl PlantConfig {
    /// The safety filter's configuration: its defaults with this plant's URDF, rate, workspace
    /// and speed limits.
    pub fn safety_config(&self) -> rft_config::Result<SafetyConfig> {
        let p = SafetyConfig {
            joint_state_rate_hz: self.safety_hz,
            workspace_min: self.workspace_min,
            workspace_max: self.workspace_max,
            max_linear_m_s: self.action.max_linear_m_s,
            max_angular_rad_s: self.action.max_yaw_rad_s.max(self.action.max_hold_rad_s),
            ..SafetyConfig::new(self.urdf.clone())
        };
        p.validate()?;
        Ok(p)
    }

    /// Values in the policy's observation vector.
    pub fn obs_dim(&self) -> usize {
        match self.observation {
            ObservationKind::State => STATE_OBS_DIM,
            ObservationKind::Image => PROPRIO_OBS_DIM,
        }
    }

    /// The policy's image, when it sees one (rgb, channel-first).
    pub fn image_shape(&self) -> Option<ImageShape> {
        (self.observation == ObservationKind::Image).then_some(ImageShape {
            channels: 3,
            height: self.policy_image_size as usize,
            width: self.policy_image_size as usize,
        })
    }

    pub fn validate(&self) -> rft_config::Result<()> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if !(ok(self.control_hz) && ok(self.safety_hz) && ok(self.physics_hz)) {
            return Err(ConfigError::new("control_hz", "rates must be positive"));
        }
        if self.safety_hz < self.control_hz || self.physics_hz < self.safety_hz {
            return Err(ConfigError::new(
                "safety_hz",
                format!(
                    "need control_hz ({}) ≤ safety_hz ({}) ≤ physics_hz ({})",
                    self.control_hz, self.safety_hz, self.physics_hz
                ),
            ));
        }
        if !(16..=256).contains(&self.policy_image_size) {
            return Err(ConfigError::new(
                "policy_image_size",
                format!("{} is outside 16…256 pixels", self.policy_image_size),
            ));
        }
        if self.camera_width < 16 || self.camera_height < 16 {
            return Err(ConfigError::new(
                "camera_width",
                "the camera needs at least 16×16",
            ));
        }
        self.action.validate().map_err(|e| e.under("action"))?;
        Ok(())
    }
}

/// What one control period did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ApplyInfo {
    /// The filter changed the commanded joint velocity noticeably for most of the period.
    pub safety_override: bool,
    /// Safety ticks whose QP failed (the arm decelerated).
    pub qp_failures: u32,
}

/// Sim + safety filter + camera.
pub struct SimPlant {
    pub sim: Sim,
    cfg: PlantConfig,
    filter: CbfFilter,
    ik: DiffIk,
    u_prev: Vec<f64>,
    u_ref: Vec<f64>,
    u: Vec<f64>,
    q: Vec<f64>,
    per_control: usize,
    per_safety: usize,
    renderer: Renderer,
    camera: Camera,
    frame: Frame,
    policy_camera: Camera,
    policy_frame: Frame,
    visuals: Vec<Visual>,
    /// Safety ticks at which the filter overrode the command, over the plant's life.
    pub override_ticks: u64,
    pub qp_failures: u64,
}

impl SimPlant {
    /// The scene for the forward task, randomised by `seed`.
    pub fn new(cfg: &PlantConfig, seed: u64) -> crate::Result<Self> {
        cfg.validate()
            .map_err(|e| crate::Error::Config(e.under("plant")))?;
        let sim = Sim::new(SimConfig {
            urdf: cfg.urdf.clone(),
            task: cfg.task,
            physics_hz: cfg.physics_hz,
            seed,
            ..SimConfig::default()
        })?;
        let params = cfg
            .safety_config()
            .map_err(|e| crate::Error::Config(e.under("safety")))?;
        let (filter, ik) = params
            .filter_and_ik(sim.q())
            .map_err(|e| crate::Error::Config(e.under("safety")))?;
        let n = sim.q().len();
        let per_control = (cfg.safety_hz / cfg.control_hz).round().max(1.0) as usize;
        let per_safety = (cfg.physics_hz / cfg.safety_hz).round().max(1.0) as usize;
        let mut p = Self {
            sim,
            cfg: cfg.clone(),
            filter,
            ik,
            u_prev: vec![0.0; n],
            u_ref: vec![0.0; n],
            u: vec![0.0; n],
            q: vec![0.0; n],
            per_control,
            per_safety,
            renderer: Renderer::new(),
            camera: Camera::scene(cfg.camera_width, cfg.camera_height),
            frame: Frame::default(),
            policy_camera: Camera::scene(cfg.policy_image_size, cfg.policy_image_size),
            policy_frame: Frame::default(),
            visuals: Vec::new(),
            override_ticks: 0,
            qp_failures: 0,
        };
        p.reset_for(seed, Direction::Forward);
        Ok(p)
    }

    pub fn config(&self) -> &PlantConfig {
        &self.cfg
    }

    /// Puts the scene back for `dir` (a human reset, or the start of an evaluation episode).
    pub fn reset_for(&mut self, seed: u64, dir: Direction) {
        self.sim.reset_for(seed, dir);
        self.u_prev.iter_mut().for_each(|v| *v = 0.0);
    }

    pub fn time_s(&self) -> f64 {
        self.sim.time_s()
    }

    /// The tool's pose (what forward kinematics of the joint states gives on a robot).
    pub fn tcp(&self) -> Isometry3<f64> {
        self.sim.tcp_pose()
    }

    /// The object's pose (what a pose estimator publishes on `/rft/object_pose`).
    pub fn object(&self) -> Isometry3<f64> {
        self.sim.object_pose()
    }

    /// The policy's observation now: `obs` gets the configured vector and, for image
    /// observations, `image` the policy camera's frame (rgb, channel-first; left empty for
    /// state observations).
    pub fn observe(&mut self, obs: &mut Vec<f32>, image: &mut Vec<u8>) {
        obs.clear();
        image.clear();
        match self.cfg.observation {
            ObservationKind::State => {
                let mut o = [0.0f32; STATE_OBS_DIM];
                state_obs(
                    &self.tcp(),
                    &self.object(),
                    self.sim.gripper_opening(),
                    &mut o,
                );
                obs.extend_from_slice(&o);
            }
            ObservationKind::Image => {
                let mut o = [0.0f32; PROPRIO_OBS_DIM];
                proprio_obs(&self.tcp(), self.sim.gripper_opening(), &mut o);
                obs.extend_from_slice(&o);
                self.sim.visuals(&mut self.visuals);
                self.renderer
                    .render(&self.visuals, &self.policy_camera, &mut self.policy_frame);
                let f = &self.policy_frame;
                let n = (f.width * f.height) as usize;
                image.resize(3 * n, 0);
                for (i, px) in f.rgb.chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        image[c * n + i] = px[c];
                    }
                }
            }
        }
    }

    /// Ground truth, for evaluation and for measuring the classifier (never for rewards).
    pub fn truth(&self, dir: Direction) -> TaskStatus {
        self.sim.task_status(dir)
    }

    /// Runs one control period with policy action `a`: at each safety tick the twist from the
    /// action mapping goes through the differential IK and the CBF-QP filter, and the physics
    /// runs until the next tick.
    pub fn apply(&mut self, a: &[f32]) -> ApplyInfo {
        self.control_period(|p| {
            let twist: Vector6<f64> = p.cfg.action.twist(a, &p.tcp());
            p.ik.solve(p.filter.chain(), &p.q, &twist, &mut p.u_ref);
        })
    }

    /// One control period with the gripper held at its configured command: at each safety
    /// tick `reference` writes the joint-velocity reference into `self.u_ref` (with `self.q`
    /// holding the measured joints), the CBF-QP filters it and the physics runs until the next
    /// tick.
    fn control_period(&mut self, mut reference: impl FnMut(&mut Self)) -> ApplyInfo {
        let mut info = ApplyInfo::default();
        let mut modified = 0;
        let _ = self.sim.set_gripper(self.cfg.action.gripper);
        for _ in 0..self.per_control {
            self.q.copy_from_slice(self.sim.q());
            reference(self);
            match self
                .filter
                .filter(&self.q, &self.u_prev, &self.u_ref, &mut self.u)
            {
                Ok(_) => {
                    let diff = self
                        .u
                        .iter()
                        .zip(&self.u_ref)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    let scale = self.u_ref.iter().map(|v| v.abs()).fold(0.0, f64::max);
                    if diff > 0.05 + 0.2 * scale {
                        modified += 1;
                        self.override_ticks += 1;
                    }
                }
                Err(_) => {
                    // Fail safe as the node does: decelerate towards zero.
                    info.qp_failures += 1;
                    self.qp_failures += 1;
                    for (u, p) in self.u.iter_mut().zip(&self.u_prev) {
                        *u = 0.5 * p;
                    }
                }
            }
            // Well formed by construction (finite, right length).
            let _ = self.sim.set_joint_velocity(&self.u);
            self.u_prev.copy_from_slice(&self.u);
            for _ in 0..self.per_safety {
                self.sim.step();
            }
        }
        // Acceleration limits reshape every change of action for a tick or two; an override
        // is the filter changing the command for most of the period.
        info.safety_override = 2 * modified > self.per_control;
        info
    }

    /// Renders the scene camera; rgb8, `camera_width × camera_height`.
    pub fn render(&mut self) -> &Frame {
        self.sim.visuals(&mut self.visuals);
        self.renderer
            .render(&self.visuals, &self.camera, &mut self.frame);
        &self.frame
    }
}
