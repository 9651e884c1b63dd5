//! URDF kinematics, CBF-QP safety filter, online gain tuning, watchdog logic.
//!
//! This crate is a placeholder in the workspace foundation; its issue fills it.
