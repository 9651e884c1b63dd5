//! Observations: proprioception (tool pose, gripper) plus the object's pose as a pose
//! estimator reports it (`/rft/object_pose`), in the robot's base frame.

use nalgebra::{Isometry3, UnitQuaternion, Vector3};

/// Length of the state observation.
pub const STATE_OBS_DIM: usize = 14;

/// What each value of the state observation is (written into checkpoints' metadata).
pub const STATE_OBS_NAMES: [&str; STATE_OBS_DIM] = [
    "tcp_x",
    "tcp_y",
    "tcp_z",
    "tcp_sin_2yaw",
    "tcp_cos_2yaw",
    "object_x",
    "object_y",
    "object_z",
    "object_sin_4yaw",
    "object_cos_4yaw",
    "object_minus_tcp_x",
    "object_minus_tcp_y",
    "object_minus_tcp_z",
    "gripper_opening",
];

/// Length of the proprioceptive observation used with images: tool position, tool yaw
/// (sin/cos of twice it), gripper opening.
pub const PROPRIO_OBS_DIM: usize = 6;

/// Writes the proprioceptive observation (the first values of the state observation's tool
/// part, and the gripper).
pub fn proprio_obs(tcp: &Isometry3<f64>, gripper_opening: f64, out: &mut [f32; PROPRIO_OBS_DIM]) {
    let p = tcp.translation.vector;
    let ty = 2.0 * yaw_of(&tcp.rotation);
    for (o, x) in out
        .iter_mut()
        .zip([p.x, p.y, p.z, ty.sin(), ty.cos(), gripper_opening])
    {
        *o = x as f32;
    }
}

/// Yaw about world z of a frame's x axis.
pub fn yaw_of(r: &UnitQuaternion<f64>) -> f64 {
    let x = r * Vector3::x();
    x.y.atan2(x.x)
}

/// Writes the state observation. Angles enter through their symmetries: the two-finger tool
/// looks the same every half turn, the cube every quarter turn.
pub fn state_obs(
    tcp: &Isometry3<f64>,
    object: &Isometry3<f64>,
    gripper_opening: f64,
    out: &mut [f32; STATE_OBS_DIM],
) {
    let p = tcp.translation.vector;
    let c = object.translation.vector;
    let ty = 2.0 * yaw_of(&tcp.rotation);
    let cy = 4.0 * yaw_of(&object.rotation);
    let d = c - p;
    let v = [
        p.x,
        p.y,
        p.z,
        ty.sin(),
        ty.cos(),
        c.x,
        c.y,
        c.z,
        cy.sin(),
        cy.cos(),
        d.x,
        d.y,
        d.z,
        gripper_opening,
    ];
    for (o, x) in out.iter_mut().zip(v) {
        *o = x as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Translation3;

    #[test]
    fn symmetric_angles_give_equal_observations() {
        let down = UnitQuaternion::from_axis_angle(&Vector3::x_axis(), std::f64::consts::PI);
        let tcp = |yaw: f64| {
            Isometry3::from_parts(
                Translation3::new(0.4, 0.1, 0.05),
                UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw) * down,
            )
        };
        let cube = |yaw: f64| {
            Isometry3::from_parts(
                Translation3::new(0.5, -0.1, 0.025),
                UnitQuaternion::from_axis_angle(&Vector3::z_axis(), yaw),
            )
        };
        let (mut a, mut b, mut c) = ([0.0; STATE_OBS_DIM], [0.0; STATE_OBS_DIM], [0.0; 14]);
        state_obs(&tcp(0.3), &cube(0.2), 0.0, &mut a);
        state_obs(
            &tcp(0.3 + std::f64::consts::PI),
            &cube(0.2 + std::f64::consts::FRAC_PI_2),
            0.0,
            &mut b,
        );
        state_obs(&tcp(0.5), &cube(0.2), 0.0, &mut c);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
        assert!((a[3] - c[3]).abs() > 0.1, "a different tool yaw must show");
        assert!((a[10] - 0.1).abs() < 1e-6 && (a[11] + 0.2).abs() < 1e-6);
    }
}
