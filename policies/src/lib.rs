//! Policies and learners in candle, as a plain Rust API that knows nothing of the bus.
//!
//! - [`nets`]: MLP (optional LayerNorm), critic ensembles as batched matmuls, the tanh-Gaussian
//!   actor, a ResNet-style image encoder with random-shift augmentation.
//! - [`agent`]: one SAC core for SAC, CQL/Cal-QL, behaviour cloning, WSRL and RLPD.
//! - [`replay`]: preallocated replay buffer (n-step, flags, u8 images, save/load).
//! - [`dataset`]: offline datasets from episodes or from MCAP recordings, with MC returns.
//! - [`checkpoint`]: safetensors + JSON checkpoints, written atomically, verified on load.
//! - [`handle`]: [`handle::PolicyHandle`] for the policy runner: allocation-free `act`,
//!   lock-free validated weight swaps, weights as bytes for `/rft/policy`.
//! - [`online`]: [`online::OnlineLearner`], the update recipe every online loop shares.
//! - [`train`]: online and offline training loops with progress and a metrics CSV.
//! - [`pendulum`]: an exact port of Gymnasium's Pendulum-v1.

pub mod agent;
pub mod checkpoint;
pub mod dataset;
pub mod env;
pub mod error;
pub mod fused;
pub mod handle;
pub mod nets;
pub mod normalize;
pub mod online;
pub mod optim;
pub mod pendulum;
pub mod replay;
pub mod store;
pub mod train;

pub use agent::{Agent, AgentConfig, Algorithm, CqlConfig, QReduce, UpdateInfo};
pub use error::{Error, Result};
pub use normalize::ObsNorm;
pub use replay::{Batch, ReplayBuffer, SampleSpec, TransitionIn};

/// The compute device: CUDA when built with the `cuda` feature and a GPU is present (unless
/// `prefer_cpu`), otherwise the CPU.
pub fn device(prefer_cpu: bool) -> candle_core::Device {
    if prefer_cpu {
        return candle_core::Device::Cpu;
    }
    #[cfg(feature = "cuda")]
    if let Ok(d) = candle_core::Device::new_cuda(0) {
        return d;
    }
    candle_core::Device::Cpu
}
