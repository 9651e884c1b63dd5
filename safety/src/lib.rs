//! URDF kinematics, CBF-QP safety filter, online gain tuning, watchdog logic.
//!
//! - [`kinematics`]: serial-chain kinematics from a URDF (forward kinematics, geometric
//!   Jacobian, collision spheres) and damped-least-squares differential IK;
//! - [`cbf`]: the CBF-QP filter (joint, velocity and acceleration boxes, workspace box,
//!   orientation cone, static and dynamic sphere obstacles, self-collision pairs) with online
//!   gains ([`cbf::GainTuner`]), row pruning and a closed-form path;
//! - [`active_set`]: the allocation-free dense QP solver it uses, [`qp`]: the clarabel
//!   reference and fallback;
//! - [`watchdog`]: the fail-safe logic (stale inputs, NaN, QP failures, e-stop);
//! - [`config`]: [`config::SafetyConfig`], the filter's launch-file configuration (defaults,
//!   validation against the URDF, building the filter).

pub mod active_set;
pub mod cbf;
pub mod config;
mod error;
pub mod kinematics;
pub mod qp;
pub mod watchdog;

pub use config::SafetyConfig;
pub use error::{Error, Result};
