//! URDF kinematics, CBF-QP safety filter, online gain tuning, watchdog logic.
//!
//! So far: serial-chain kinematics from a URDF (forward kinematics, geometric Jacobian,
//! collision spheres), damped-least-squares differential IK, and a first CBF-QP filter
//! (joint limits, velocity and acceleration boxes, workspace box, sphere obstacles) solved with
//! clarabel, and the fail-safe watchdog logic. The structured fast path, self-collision pairs,
//! the online gain tuner and the node come with the rest of issue 4.

pub mod cbf;
mod error;
pub mod kinematics;
pub mod qp;
pub mod watchdog;

pub use error::{Error, Result};
