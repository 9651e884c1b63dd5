//! The policy's action space: a tool twist `(vx, vy, vz, ωz)` in [−1, 1] scaled to metres and
//! radians per second, with the tool held pointing down (roll and pitch are corrected here, not
//! learned) and a fixed gripper position for tasks that do not grasp.

use nalgebra::{Isometry3, UnitQuaternion, Vector3, Vector6};
use serde::{Deserialize, Serialize};

use super::obs::yaw_of;
use rft_config::ConfigError;

/// Number of action values the policy outputs.
pub const ACTION_DIM: usize = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionMap {
    /// Linear speed at |a| = 1.
    pub max_linear_m_s: f64,
    /// Yaw rate at |a| = 1.
    pub max_yaw_rad_s: f64,
    /// Gain of the roll/pitch hold (1/s) and its largest rate.
    pub hold_gain: f64,
    pub max_hold_rad_s: f64,
    /// Gripper position sent with every action (0 closed … 1 open).
    pub gripper: f64,
}

impl Default for ActionMap {
    fn default() -> Self {
        Self {
            max_linear_m_s: 0.2,
            max_yaw_rad_s: 1.0,
            hold_gain: 3.0,
            max_hold_rad_s: 1.0,
            gripper: 0.0,
        }
    }
}

impl ActionMap {
    pub fn validate(&self) -> rft_config::Result<()> {
        for (k, v) in [
            ("max_linear_m_s", self.max_linear_m_s),
            ("max_yaw_rad_s", self.max_yaw_rad_s),
            ("hold_gain", self.hold_gain),
            ("max_hold_rad_s", self.max_hold_rad_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::new(
                    k,
                    format!("{v} must be a positive number"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.gripper) {
            return Err(ConfigError::new(
                "gripper",
                format!("{} is outside [0, 1]", self.gripper),
            ));
        }
        Ok(())
    }

    /// The tool twist (world frame, m/s and rad/s) for action `a` with the tool at `tcp`.
    /// Non-finite action values count as 0; values are clamped to [−1, 1].
    pub fn twist(&self, a: &[f32], tcp: &Isometry3<f64>) -> Vector6<f64> {
        let v = |i: usize| {
            a.get(i)
                .map(|x| f64::from(*x))
                .filter(|x| x.is_finite())
                .unwrap_or(0.0)
                .clamp(-1.0, 1.0)
        };
        let want = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw_of(&tcp.rotation))
            * UnitQuaternion::from_axis_angle(&Vector3::x_axis(), std::f64::consts::PI);
        let mut w = (want * tcp.rotation.inverse()).scaled_axis() * self.hold_gain;
        w.z = 0.0;
        let n = w.norm();
        if n > self.max_hold_rad_s {
            w *= self.max_hold_rad_s / n;
        }
        let l = self.max_linear_m_s;
        Vector6::new(
            v(0) * l,
            v(1) * l,
            v(2) * l,
            w.x,
            w.y,
            v(3) * self.max_yaw_rad_s,
        )
    }

    /// The action that asks for the linear velocity and yaw rate of a tool twist (what a
    /// scripted expert or a teleop device commands), clamped to [−1, 1].
    pub fn action_of(&self, linear: &Vector3<f64>, yaw_rate: f64) -> [f32; ACTION_DIM] {
        let c = |x: f64| x.clamp(-1.0, 1.0) as f32;
        [
            c(linear.x / self.max_linear_m_s),
            c(linear.y / self.max_linear_m_s),
            c(linear.z / self.max_linear_m_s),
            c(yaw_rate / self.max_yaw_rad_s),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Translation3;

    #[test]
    fn scales_clamps_and_holds_the_tool_down() {
        let m = ActionMap::default();
        let down = UnitQuaternion::from_axis_angle(&Vector3::x_axis(), std::f64::consts::PI);
        let level = Isometry3::from_parts(Translation3::new(0.4, 0.0, 0.1), down);
        let t = m.twist(&[0.5, -2.0, f32::NAN, 1.0], &level);
        assert!((t[0] - 0.1).abs() < 1e-12 && (t[1] + 0.2).abs() < 1e-12 && t[2] == 0.0);
        assert!(
            t[3].abs() < 1e-9 && t[4].abs() < 1e-9,
            "level tool: no correction"
        );
        assert!((t[5] - 1.0).abs() < 1e-12);
        // Tilted about x by 0.1 rad: the hold turns it back.
        let tilted = Isometry3::from_parts(
            Translation3::new(0.4, 0.0, 0.1),
            UnitQuaternion::from_axis_angle(&Vector3::x_axis(), 0.1) * down,
        );
        let t = m.twist(&[0.0; 4], &tilted);
        assert!(t[3] < -0.2 && t[4].abs() < 1e-6 && t[5] == 0.0, "{t:?}");
        let a = m.action_of(&Vector3::new(0.1, 0.4, 0.0), -0.5);
        assert_eq!(a, [0.5, 1.0, 0.0, -0.5]);
    }
}
