//! The autonomous loop's parts that do not depend on the bus: the observation builder, the
//! action mapping, the reset-free episode schedule, the simulated plant (sim + the safety
//! filter, in process) for scripted demos and evaluation against ground truth, and the
//! offline pipeline (demos, success classifiers, pre-training, evaluation).
//!
//! The nodes (`policy_runner`, `episode_manager`, `learner`, in `rft-nodes`) wrap these same
//! parts; reset-free fine-tuning runs only as that node graph. Nothing here knows the bus.
//! Progress goes through `tracing`.

pub mod action;
pub mod demos;
pub mod error;
pub mod eval;
pub mod obs;
pub mod pipeline;
pub mod plant;
pub mod plot;
pub mod schedule;

pub use error::{Context, Error, Result};
