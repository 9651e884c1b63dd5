//! The simulator: a URDF arm with a parallel-jaw gripper on a table with a cube and a target
//! region or platform (rapier3d physics), reset-free tasks with ground-truth success and
//! progress, a software camera (RGB and depth, no GPU), and scripted experts.
//!
//! The world is z-up with the table top at z = 0 and the robot's base at the origin. The crate
//! speaks nalgebra at its boundary; rapier's glam types stay inside.

pub mod error;
pub mod expert;
pub mod frames;
pub mod model;
pub mod render;
pub mod task;
pub mod world;

pub use error::{CommandError, Error, Result};
pub use expert::{Expert, ExpertAction, ExpertObs, TwistController};
pub use frames::{DemoFrames, DemoFramesConfig, DemoKind, demo_frames};
pub use model::{Geom, RobotModel};
pub use render::{Camera, Frame, Renderer};
pub use task::{Direction, Region, TaskKind, TaskStatus};
pub use world::{JointReading, Sim, SimConfig, SimEvent, Visual};
