//! Robot and camera drivers: each turns a device (here, the simulator) into ROS messages and
//! takes commands as ROS messages, with no bus of its own; the `nodes` crate wires them to
//! topics.

pub mod sim;

pub use sim::{CameraMount, CameraSpec, SimDriver};
