//! rft's runtime side: the bus (in-process, zenoh wire-compatible with rmw_zenoh, ROS 2 via
//! r2r), the node runtime, launch files, nodes, recording, and the CLI tools.

pub mod app;
pub mod autonomy;
pub mod bus;
mod error;
pub mod launch;
pub mod learntools;
pub mod nodes;
pub mod plot;
pub mod record;
pub mod rewardtools;
pub mod runtime;
pub mod simtools;
pub mod tools;

pub use error::{Error, Result};
