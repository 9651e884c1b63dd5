//! The simulator as a robot and its cameras: joint-velocity and gripper commands in
//! (`std_msgs/Float64MultiArray`, as ros2_control's forward controllers take them), joint
//! states, RGB and depth images, camera info and ground-truth poses out.

use nalgebra::{Isometry3, Point3};
use rft_config::ConfigError;
use rft_msgs::{
    CameraInfo, Float64MultiArray, Header, Image, JointState, Point, Pose, PoseStamped, Quaternion,
    Time,
};
use rft_sim::{Camera, CommandError, Frame, Renderer, Sim, SimConfig, Visual};
use serde::Deserialize;

/// Where a camera is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraMount {
    /// Fixed in the world at `eye`, looking at `target`.
    Scene,
    /// On the hand, looking along the fingers.
    Wrist,
}

/// One simulated camera.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSpec {
    /// Topic prefix: `/<name>/color/image_raw`, `/<name>/depth/image_raw`,
    /// `/<name>/color/camera_info`, `/<name>/pose`.
    #[serde(default = "default_camera_name")]
    pub name: String,
    #[serde(default = "default_side")]
    pub width: u32,
    #[serde(default = "default_side")]
    pub height: u32,
    #[serde(default = "default_hfov")]
    pub hfov_deg: f64,
    #[serde(default = "default_camera_rate")]
    pub rate_hz: f64,
    #[serde(default = "default_mount")]
    pub mount: CameraMount,
    /// Scene cameras: where the camera is and what it looks at (world frame, metres).
    #[serde(default = "default_eye")]
    pub eye: [f64; 3],
    #[serde(default = "default_target")]
    pub target: [f64; 3],
    /// Publish depth (32FC1, metres) too.
    #[serde(default = "yes")]
    pub depth: bool,
}

fn default_camera_name() -> String {
    "camera".into()
}
fn default_side() -> u32 {
    128
}
fn default_hfov() -> f64 {
    60.0
}
fn default_camera_rate() -> f64 {
    10.0
}
fn yes() -> bool {
    true
}
fn default_mount() -> CameraMount {
    CameraMount::Scene
}
fn default_eye() -> [f64; 3] {
    Camera::scene(1, 1)
        .world_from_camera
        .translation
        .vector
        .into()
}
fn default_target() -> [f64; 3] {
    // A point 1 m along the default camera's optical axis.
    (Camera::scene(1, 1).world_from_camera * Point3::new(0.0, 0.0, 1.0))
        .coords
        .into()
}

impl Default for CameraSpec {
    fn default() -> Self {
        Self {
            name: default_camera_name(),
            width: default_side(),
            height: default_side(),
            hfov_deg: default_hfov(),
            rate_hz: default_camera_rate(),
            mount: default_mount(),
            eye: default_eye(),
            target: default_target(),
            depth: true,
        }
    }
}

impl CameraSpec {
    /// Checks sizes, rates and the mount; errors name the key.
    pub fn validate(&self) -> rft_config::Result<()> {
        let bad = |k: &str, r: String| Err(ConfigError::new(k.to_string(), r));
        if !(8..=1920).contains(&self.width) || !(8..=1080).contains(&self.height) {
            return bad(
                "width",
                format!("{}×{} is outside 8×8 … 1920×1080", self.width, self.height),
            );
        }
        if !(self.hfov_deg > 1.0 && self.hfov_deg < 170.0) {
            return bad("hfov_deg", format!("{} is outside (1, 170)", self.hfov_deg));
        }
        if !(self.rate_hz > 0.0 && self.rate_hz <= 120.0) {
            return bad("rate_hz", format!("{} is outside (0, 120]", self.rate_hz));
        }
        if self.name.is_empty()
            || self
                .name
                .contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '/'))
        {
            return bad("name", format!("`{}` is not a topic-safe name", self.name));
        }
        if self.mount == CameraMount::Scene {
            let (eye, target) = (&self.eye, &self.target);
            let d = (0..3).map(|i| (target[i] - eye[i]).powi(2)).sum::<f64>();
            if !(d > 1e-6 && eye.iter().chain(target).all(|v| v.is_finite())) {
                return bad("eye", "eye and target must be finite and apart".into());
            }
        }
        Ok(())
    }

    fn optical_frame(&self) -> String {
        format!(
            "{}_color_optical_frame",
            self.name.trim_matches('/').replace('/', "_")
        )
    }
}

/// The simulator behind a driver's interface.
pub struct SimDriver {
    sim: Sim,
    cameras: Vec<CameraSpec>,
    renderer: Renderer,
    frame: Frame,
    visuals: Vec<Visual>,
    names: Vec<String>,
}

fn stamp_header(stamp: Time, frame_id: &str) -> Header {
    Header {
        stamp,
        frame_id: frame_id.to_string(),
    }
}

fn pose_msg(p: &Isometry3<f64>) -> Pose {
    let t = p.translation.vector;
    let q = p.rotation.quaternion();
    Pose {
        position: Point {
            x: t.x,
            y: t.y,
            z: t.z,
        },
        orientation: Quaternion {
            x: q.i,
            y: q.j,
            z: q.k,
            w: q.w,
        },
    }
}

impl SimDriver {
    pub fn new(cfg: SimConfig, cameras: Vec<CameraSpec>) -> rft_sim::Result<Self> {
        let sim = Sim::new(cfg)?;
        Ok(Self {
            names: sim.model().joint_names(),
            sim,
            cameras,
            renderer: Renderer::new(),
            frame: Frame::default(),
            visuals: Vec::new(),
        })
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    pub fn sim_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }

    pub fn cameras(&self) -> &[CameraSpec] {
        &self.cameras
    }

    /// A joint-velocity command: one value per arm joint, rad/s.
    pub fn apply_joint_velocity(&mut self, m: &Float64MultiArray) -> Result<(), CommandError> {
        self.sim.set_joint_velocity(&m.data)
    }

    /// A gripper command: one position, 0 closed … 1 open.
    pub fn apply_gripper(&mut self, m: &Float64MultiArray) -> Result<(), CommandError> {
        match m.data.as_slice() {
            [p] => self.sim.set_gripper(*p),
            other => {
                // Counted by the sim like any other rejected command.
                let _ = self.sim.set_gripper(f64::NAN);
                Err(CommandError::WrongLength {
                    expected: 1,
                    got: other.len(),
                })
            }
        }
    }

    /// Stops the arm (zero velocity) without touching the gripper.
    pub fn hold(&mut self) {
        let n = self.sim.q().len();
        let _ = self.sim.set_joint_velocity(&vec![0.0; n]);
    }

    /// Advances physics by `seconds` (whole physics steps).
    pub fn advance(&mut self, seconds: f64) {
        self.sim.advance(seconds);
    }

    pub fn joint_state(&self, stamp: Time) -> JointState {
        let r = self.sim.joint_reading();
        JointState {
            header: stamp_header(stamp, ""),
            name: self.names.clone(),
            position: r.position,
            velocity: r.velocity,
            effort: r.effort,
        }
    }

    /// The camera `index` as it is now.
    pub fn camera(&self, index: usize) -> Camera {
        let s = &self.cameras[index];
        match &s.mount {
            CameraMount::Scene => Camera::look_at(
                s.width,
                s.height,
                s.hfov_deg,
                Point3::from(s.eye),
                Point3::from(s.target),
            ),
            CameraMount::Wrist => {
                let hand = self.sim.model().hand.unwrap_or(self.sim.model().tcp);
                Camera::wrist(s.width, s.height, s.hfov_deg, &self.sim.link_pose(hand))
            }
        }
    }

    /// Renders camera `index`: colour image, depth image (if enabled), camera info and the
    /// camera's pose in the world.
    pub fn render(
        &mut self,
        index: usize,
        stamp: Time,
    ) -> (Image, Option<Image>, CameraInfo, PoseStamped) {
        let cam = self.camera(index);
        self.sim.visuals(&mut self.visuals);
        self.renderer.render(&self.visuals, &cam, &mut self.frame);
        let spec = &self.cameras[index];
        let header = stamp_header(stamp, &spec.optical_frame());
        let color = Image {
            header: header.clone(),
            height: cam.height,
            width: cam.width,
            encoding: "rgb8".into(),
            is_bigendian: 0,
            step: cam.width * 3,
            data: self.frame.rgb.clone(),
        };
        let depth = spec.depth.then(|| Image {
            header: header.clone(),
            height: cam.height,
            width: cam.width,
            encoding: "32FC1".into(),
            is_bigendian: 0,
            step: cam.width * 4,
            data: self
                .frame
                .depth
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect(),
        });
        let k = cam.k();
        let info = CameraInfo {
            header: header.clone(),
            height: cam.height,
            width: cam.width,
            distortion_model: "plumb_bob".into(),
            d: vec![0.0; 5],
            k,
            r: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p: [
                k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0,
            ],
            ..Default::default()
        };
        let pose = PoseStamped {
            header: stamp_header(stamp, "world"),
            pose: pose_msg(&cam.world_from_camera),
        };
        (color, depth, info, pose)
    }

    /// Ground-truth pose of the cube (world frame).
    pub fn object_pose(&self, stamp: Time) -> PoseStamped {
        PoseStamped {
            header: stamp_header(stamp, "world"),
            pose: pose_msg(&self.sim.object_pose()),
        }
    }

    /// Pose of the tool frame (world frame).
    pub fn tcp_pose(&self, stamp: Time) -> PoseStamped {
        PoseStamped {
            header: stamp_header(stamp, "world"),
            pose: pose_msg(&self.sim.tcp_pose()),
        }
    }
}
