//! rapier3d physics of an arm, table and objects; tasks with ground-truth success; software camera.
//!
//! This crate is a placeholder in the workspace foundation; its issue fills it.
