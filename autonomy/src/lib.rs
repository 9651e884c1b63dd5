//! The autonomous loop's parts that do not depend on the bus: the observation builder, the
//! action mapping, the reset-free episode schedule, the simulated plant (sim + the safety
//! filter, in process), scripted demos, evaluation against ground truth, and reset-free
//! fine-tuning driven by the learned success classifier.
//!
//! The nodes (`policy_runner`, `episode_manager`, `learner`, in `rft-nodes`) wrap these same
//! parts; the sim pipeline (`rft pipeline`) runs them in one thread, in lockstep, as fast as the
//! CPU allows. Nothing here knows the bus. Progress goes through `tracing`.

pub mod action;
pub mod demos;
pub mod error;
pub mod eval;
pub mod finetune;
pub mod obs;
pub mod pipeline;
pub mod plant;
pub mod plot;
pub mod report;
pub mod schedule;

pub use error::{Context, Error, Result};
