//! What several nodes read from the robot's topics: the tool pose by forward kinematics of
//! `/joint_states`, the gripper opening, and poses from `PoseStamped`.

use std::path::Path;

use nalgebra::{Isometry3, Quaternion, Translation3, UnitQuaternion};
use rft_msgs::{JointState, PoseStamped};
use rft_safety::kinematics::Chain;

use rft_runtime::{Error, Result};

/// The URDF base link of the default robot (the simulated Panda).
pub fn default_base_link() -> String {
    "panda_link0".into()
}

/// The default robot's tool frame.
pub fn default_tcp_link() -> String {
    "panda_hand_tcp".into()
}

/// Tool pose and gripper opening from joint states.
pub struct ToolFk {
    chain: Chain,
    fingers: Vec<String>,
    finger_max_m: f64,
    q: Vec<f64>,
}

impl ToolFk {
    pub fn new(
        node: &str,
        urdf: &Path,
        base: &str,
        tcp: &str,
        fingers: &[String],
        finger_max_m: f64,
    ) -> Result<Self> {
        let chain = Chain::from_urdf_file(urdf, base, tcp)
            .map_err(|e| Error::node(node, format!("params.urdf {}: {e}", urdf.display())))?;
        Ok(Self {
            q: Vec::with_capacity(chain.joints.len()),
            chain,
            fingers: fingers.to_vec(),
            finger_max_m,
        })
    }

    /// The tool pose in the base frame, or None when a chain joint is missing from `js`.
    pub fn tcp(&mut self, js: &JointState) -> Option<Isometry3<f64>> {
        self.q.clear();
        for j in &self.chain.joints {
            let i = js.name.iter().position(|n| *n == j.name)?;
            self.q.push(*js.position.get(i)?);
        }
        Some(self.chain.base_from_tip(&self.q))
    }

    /// Opening of the fingers, 0 closed … 1 open (0 when the state has no finger joints).
    pub fn gripper_opening(&self, js: &JointState) -> f64 {
        let (mut s, mut n) = (0.0, 0usize);
        for f in &self.fingers {
            if let Some(p) = js
                .name
                .iter()
                .position(|x| x == f)
                .and_then(|i| js.position.get(i))
            {
                s += p;
                n += 1;
            }
        }
        if n == 0 || self.finger_max_m <= 0.0 {
            0.0
        } else {
            (s / (n as f64 * self.finger_max_m)).clamp(0.0, 1.0)
        }
    }
}

/// A `PoseStamped` as an isometry.
pub fn iso(p: &PoseStamped) -> Isometry3<f64> {
    let (t, o) = (&p.pose.position, &p.pose.orientation);
    Isometry3::from_parts(
        Translation3::new(t.x, t.y, t.z),
        UnitQuaternion::from_quaternion(Quaternion::new(o.w, o.x, o.y, o.z)),
    )
}
