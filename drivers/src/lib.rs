//! Robot and camera drivers behind traits: sim, ros2_control over the bus, opencv camera.
//!
//! This crate is a placeholder in the workspace foundation; its issue fills it.
