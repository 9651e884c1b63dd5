//! URDF kinematics, CBF-QP safety filter, online gain tuning, watchdog logic.
//!
//! So far: serial-chain kinematics from a URDF (forward kinematics, geometric Jacobian,
//! collision spheres) and damped-least-squares differential IK. The CBF-QP filter, the online
//! gain tuner and the watchdogs come with the rest of issue 4.

mod error;
pub mod kinematics;

pub use error::{Error, Result};
