//! Rust types of the ROS 2 messages rft speaks. Field order and types follow the `.msg` files
//! exactly: the CDR codec encodes fields in declaration order.

use serde::{Deserialize, Serialize};

/// A ROS 2 message type.
pub trait Message:
    Serialize + for<'de> Deserialize<'de> + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// Full ROS 2 name, e.g. `sensor_msgs/msg/JointState`.
    const TYPE_NAME: &'static str;
}

macro_rules! message {
    ($t:ty, $name:literal) => {
        impl Message for $t {
            const TYPE_NAME: &'static str = $name;
        }
    };
}

// ---------------------------------------------------------------- builtin_interfaces, std_msgs

/// builtin_interfaces/Time.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct Time {
    pub sec: i32,
    pub nanosec: u32,
}

impl Time {
    pub const fn from_nanos(ns: i64) -> Self {
        Self {
            sec: ns.div_euclid(1_000_000_000) as i32,
            nanosec: ns.rem_euclid(1_000_000_000) as u32,
        }
    }
    pub const fn as_nanos(&self) -> i64 {
        self.sec as i64 * 1_000_000_000 + self.nanosec as i64
    }
    pub fn as_secs_f64(&self) -> f64 {
        self.as_nanos() as f64 * 1e-9
    }
}

/// std_msgs/Header.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Header {
    pub stamp: Time,
    pub frame_id: String,
}

impl Header {
    pub fn at(stamp: Time) -> Self {
        Self {
            stamp,
            frame_id: String::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Bool {
    pub data: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StringMsg {
    pub data: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MultiArrayDimension {
    pub label: String,
    pub size: u32,
    pub stride: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MultiArrayLayout {
    pub dim: Vec<MultiArrayDimension>,
    pub data_offset: u32,
}

/// std_msgs/Float64MultiArray: what ros2_control's forward controllers take.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Float64MultiArray {
    pub layout: MultiArrayLayout,
    pub data: Vec<f64>,
}

impl Float64MultiArray {
    pub fn from_data(data: Vec<f64>) -> Self {
        Self {
            layout: MultiArrayLayout::default(),
            data,
        }
    }
}

// ---------------------------------------------------------------- sensor_msgs

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct JointState {
    pub header: Header,
    pub name: Vec<String>,
    pub position: Vec<f64>,
    pub velocity: Vec<f64>,
    pub effort: Vec<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Image {
    pub header: Header,
    pub height: u32,
    pub width: u32,
    pub encoding: String,
    pub is_bigendian: u8,
    pub step: u32,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CompressedImage {
    pub header: Header,
    pub format: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RegionOfInterest {
    pub x_offset: u32,
    pub y_offset: u32,
    pub height: u32,
    pub width: u32,
    pub do_rectify: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CameraInfo {
    pub header: Header,
    pub height: u32,
    pub width: u32,
    pub distortion_model: String,
    pub d: Vec<f64>,
    pub k: [f64; 9],
    pub r: [f64; 9],
    pub p: [f64; 12],
    pub binning_x: u32,
    pub binning_y: u32,
    pub roi: RegionOfInterest,
}

// ---------------------------------------------------------------- geometry_msgs

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Vector3 {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Quaternion {
    pub x: f64,
    pub y: f64,
    pub z: f64,
    pub w: f64,
}

impl Default for Quaternion {
    fn default() -> Self {
        Self {
            x: 0.0,
            y: 0.0,
            z: 0.0,
            w: 1.0,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Twist {
    pub linear: Vector3,
    pub angular: Vector3,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TwistStamped {
    pub header: Header,
    pub twist: Twist,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Pose {
    pub position: Point,
    pub orientation: Quaternion,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PoseStamped {
    pub header: Header,
    pub pose: Pose,
}

// ---------------------------------------------------------------- rft_msgs

pub const TASK_FORWARD: u8 = 0;
pub const TASK_BACKWARD: u8 = 1;

/// rft_msgs/Action: end-effector twist + gripper from the policy or from teleop.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Action {
    pub header: Header,
    pub policy_version: u64,
    pub twist: Twist,
    pub gripper: f64,
    pub intervention: bool,
}

/// rft_msgs/Transition: one control step; rewards are joined by the learner by stamp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Transition {
    pub header: Header,
    pub episode_id: u64,
    pub task_id: u8,
    pub step: u32,
    pub obs: Vec<f32>,
    pub action: Vec<f32>,
    pub next_obs: Vec<f32>,
    pub next_obs_stamp: Time,
    pub done: bool,
    pub truncated: bool,
    pub intervention: bool,
    pub safety_override: bool,
    pub policy_version: u64,
    /// The policy's camera image at `obs` and at `next_obs` (rgb8, channel-first, the size of
    /// the policy's encoder); empty for a policy that sees no image.
    #[serde(with = "serde_bytes")]
    pub image: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub next_image: Vec<u8>,
}

/// rft_msgs/Reward for one camera frame (`header.stamp` = the frame's stamp).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Reward {
    pub header: Header,
    pub task_id: u8,
    pub success_prob: f32,
    pub success: bool,
    pub dense: f32,
    pub reward: f32,
    pub source: String,
    pub valid: bool,
}

/// rft_msgs/PolicyUpdate: versioned safetensors bytes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PolicyUpdate {
    pub header: Header,
    pub version: u64,
    pub algorithm: String,
    pub format: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub sha256: String,
}

pub const PHASE_RUNNING: u8 = 0;
pub const PHASE_SWITCHING: u8 = 1;
pub const PHASE_PAUSED_FOR_HUMAN: u8 = 2;
pub const PHASE_STOPPED: u8 = 3;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct EpisodePhase {
    pub header: Header,
    pub episode_id: u64,
    pub task_id: u8,
    pub phase: u8,
    pub reason: String,
    /// While switching: the joints go back to the home posture too.
    pub home_posture: bool,
    /// Above 0: the runner acts with this exploration noise in this episode (stall escape).
    pub explore_std: f64,
}

/// rft_msgs/SceneReset: a simulator puts the scene where task `task_id` begins, from `seed`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SceneReset {
    pub header: Header,
    pub seed: u64,
    pub task_id: u8,
}

pub const SAFETY_OK: u8 = 0;
pub const SAFETY_LIMITING: u8 = 1;
pub const SAFETY_STOPPING: u8 = 2;
pub const SAFETY_STOPPED: u8 = 3;
pub const SAFETY_ESTOP: u8 = 4;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SafetyStatus {
    pub header: Header,
    pub state: u8,
    pub reason: String,
    pub active_constraints: Vec<String>,
    pub alpha: Vec<f64>,
    pub qp_time_us: f32,
    pub min_distance_m: f32,
}

/// rft_msgs/Obstacles: sphere obstacles for the safety filter, in the base frame.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Obstacles {
    pub header: Header,
    pub centers: Vec<Point>,
    pub radii: Vec<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Metric {
    pub header: Header,
    pub source: String,
    pub name: String,
    pub value: f64,
}

message!(Time, "builtin_interfaces/msg/Time");
message!(Header, "std_msgs/msg/Header");
message!(Bool, "std_msgs/msg/Bool");
message!(StringMsg, "std_msgs/msg/String");
message!(MultiArrayDimension, "std_msgs/msg/MultiArrayDimension");
message!(MultiArrayLayout, "std_msgs/msg/MultiArrayLayout");
message!(Float64MultiArray, "std_msgs/msg/Float64MultiArray");
message!(JointState, "sensor_msgs/msg/JointState");
message!(Image, "sensor_msgs/msg/Image");
message!(CompressedImage, "sensor_msgs/msg/CompressedImage");
message!(RegionOfInterest, "sensor_msgs/msg/RegionOfInterest");
message!(CameraInfo, "sensor_msgs/msg/CameraInfo");
message!(Vector3, "geometry_msgs/msg/Vector3");
message!(Point, "geometry_msgs/msg/Point");
message!(Quaternion, "geometry_msgs/msg/Quaternion");
message!(Twist, "geometry_msgs/msg/Twist");
message!(TwistStamped, "geometry_msgs/msg/TwistStamped");
message!(Pose, "geometry_msgs/msg/Pose");
message!(PoseStamped, "geometry_msgs/msg/PoseStamped");
message!(Action, "rft_msgs/msg/Action");
message!(Transition, "rft_msgs/msg/Transition");
message!(Reward, "rft_msgs/msg/Reward");
message!(PolicyUpdate, "rft_msgs/msg/PolicyUpdate");
message!(EpisodePhase, "rft_msgs/msg/EpisodePhase");
message!(SafetyStatus, "rft_msgs/msg/SafetyStatus");
message!(Metric, "rft_msgs/msg/Metric");
message!(Obstacles, "rft_msgs/msg/Obstacles");
message!(SceneReset, "rft_msgs/msg/SceneReset");

/// Calls `$m!(Type)` for every message type, so a list of all of them lives in one place.
#[macro_export]
macro_rules! for_each_message {
    ($m:ident) => {
        $m!($crate::types::Time);
        $m!($crate::types::Header);
        $m!($crate::types::Bool);
        $m!($crate::types::StringMsg);
        $m!($crate::types::MultiArrayDimension);
        $m!($crate::types::MultiArrayLayout);
        $m!($crate::types::Float64MultiArray);
        $m!($crate::types::JointState);
        $m!($crate::types::Image);
        $m!($crate::types::CompressedImage);
        $m!($crate::types::RegionOfInterest);
        $m!($crate::types::CameraInfo);
        $m!($crate::types::Vector3);
        $m!($crate::types::Point);
        $m!($crate::types::Quaternion);
        $m!($crate::types::Twist);
        $m!($crate::types::TwistStamped);
        $m!($crate::types::Pose);
        $m!($crate::types::PoseStamped);
        $m!($crate::types::Action);
        $m!($crate::types::Transition);
        $m!($crate::types::Reward);
        $m!($crate::types::PolicyUpdate);
        $m!($crate::types::EpisodePhase);
        $m!($crate::types::SafetyStatus);
        $m!($crate::types::Metric);
        $m!($crate::types::Obstacles);
        $m!($crate::types::SceneReset);
    };
}
