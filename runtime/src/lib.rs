//! rft's runtime: the bus and its transports (in-process; zenoh, wire-compatible with ROS 2's
//! rmw_zenoh; ROS 2 through r2r behind the `ros2` feature), the [`Node`] trait, clocks and the
//! executor, the MCAP recorder, launch files with the node-kind registry ([`launch::NodeKind`],
//! [`launch::Registry`]), run directories ([`app`]) and the bus tools (`rft topics`, `echo`,
//! `hz`, `record`, `pub`, `ping`).
//!
//! It knows no node kind: `rft-nodes` registers them.

pub mod app;
pub mod bus;
mod error;
pub mod executor;
pub mod launch;
pub mod record;
pub mod tools;

pub use error::{Error, Result};
pub use executor::{
    Clock, Node, NodeReport, NodeStats, RunReport, Runtime, Shutdown, SimClock, Stage, StepCtx,
};
