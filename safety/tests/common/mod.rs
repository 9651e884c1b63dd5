//! The Panda filter the safety tests share.
#![allow(dead_code)]

use std::path::Path;

use nalgebra::{Isometry3, Point3, Unit, Vector3};
use rft_safety::cbf::{CbfConfig, CbfFilter, OrientationCone, self_collision_pairs};
use rft_safety::kinematics::Chain;

pub const READY: [f64; 7] = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785];

pub fn chain() -> Chain {
    let urdf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/assets/panda.urdf");
    Chain::from_urdf_file(&urdf, "panda_link0", "panda_hand_tcp").unwrap()
}

/// What to guard besides joint limits, the workspace box and two static obstacles.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    pub self_pairs: bool,
    pub cone: bool,
    pub prune: bool,
}

pub fn config(chain: &Chain, extras: Extras) -> CbfConfig {
    CbfConfig {
        joint_padding_rad: 0.05,
        alpha: 3.0,
        dt_s: 0.002,
        max_velocity_rad_s: chain.joints.iter().map(|j| j.max_velocity).collect(),
        max_accel_rad_s2: vec![15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0],
        workspace_min: Vector3::new(0.2, -0.4, 0.05),
        workspace_max: Vector3::new(0.75, 0.4, 0.7),
        obstacles: vec![
            (Point3::new(0.55, 0.25, 0.25), 0.06),
            (Point3::new(0.45, -0.3, 0.55), 0.05),
        ],
        first_obstacle_joint: 2,
        self_pairs: if extras.self_pairs {
            self_collision_pairs(chain, &READY, 3, 0.05)
        } else {
            Vec::new()
        },
        weights: vec![1.0; 7],
        slack_weight: 1e4,
        cartesian_brake_m_s2: 2.0,
        // The hand's approach axis within 60° of straight down.
        orientation_cone: extras.cone.then(|| OrientationCone {
            axis_in_tool: Vector3::z_axis(),
            reference: Unit::new_normalize(Vector3::new(0.0, 0.0, -1.0)),
            max_angle_rad: 1.05,
            brake_rad_s2: 5.0,
        }),
        max_dynamic_obstacles: 4,
        soft_rows: true,
        accel_relax_factor: 3.0,
        prune_rows: extras.prune,
    }
}

pub fn filter(extras: Extras) -> CbfFilter {
    let chain = chain();
    let cfg = config(&chain, extras);
    CbfFilter::new(chain, cfg)
}

/// An independent model of the Panda for oracles: Craig's modified DH with Franka's published
/// table (`Rx(α) Tx(a) Rz(θ) Tz(d)` per joint), none of the URDF parser's or the filter's
/// kinematics. Returns the frame of each link after its joint's motion (`panda_link1..7`).
pub fn dh_link_frames(q: &[f64]) -> [Isometry3<f64>; 7] {
    use std::f64::consts::FRAC_PI_2;
    let table = [
        (0.0, 0.333, 0.0),
        (0.0, 0.0, -FRAC_PI_2),
        (0.0, 0.316, FRAC_PI_2),
        (0.0825, 0.0, FRAC_PI_2),
        (-0.0825, 0.384, -FRAC_PI_2),
        (0.0, 0.0, FRAC_PI_2),
        (0.088, 0.0, FRAC_PI_2),
    ];
    let mut t = Isometry3::identity();
    let mut out = [Isometry3::identity(); 7];
    for (i, (a, d, alpha)) in table.iter().enumerate() {
        t = t
            * Isometry3::rotation(Vector3::x() * *alpha)
            * Isometry3::translation(*a, 0.0, 0.0)
            * Isometry3::rotation(Vector3::z() * q[i])
            * Isometry3::translation(0.0, 0.0, *d);
        out[i] = t;
    }
    out
}

/// The tool frame (`panda_hand_tcp`): the flange 0.107 m beyond link 7, the hand turned −45°
/// about z, the TCP 0.1034 m further along z.
pub fn dh_tcp(q: &[f64]) -> Isometry3<f64> {
    dh_link_frames(q)[6]
        * Isometry3::translation(0.0, 0.0, 0.107)
        * Isometry3::rotation(Vector3::z() * -std::f64::consts::FRAC_PI_4)
        * Isometry3::translation(0.0, 0.0, 0.1034)
}
