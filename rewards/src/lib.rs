//! Rewards without hand-written reward code: success classifiers (a CNN trained on a few
//! labelled demos, a CLIP-style image model with a logistic probe, any OpenAI-compatible VLM),
//! the KAGI keypoint affordance scorer (propose, lift, score), and reward fusion.
//!
//! A plain Rust API that knows nothing of the bus; the reward node in `rft-nodes` wires it to
//! topics.

pub mod classifier;
pub mod clip;
pub mod cnn;
pub mod conv;
pub mod data;
pub mod error;
pub mod fusion;
pub mod keypoints;
pub mod metrics;
pub mod vlm;

pub use classifier::{Debouncer, ImageRef, SuccessClassifier};
pub use cnn::{CnnClassifier, CnnConfig, CnnTrainConfig, TrainReport};
pub use data::LabelledFrames;
pub use error::{Error, Result};
pub use metrics::Confusion;
