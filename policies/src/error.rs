//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `rft-policies`, with the context the caller needs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint or weights file that cannot be used; nothing was overwritten.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// Weights or observations that do not fit the policy's spec.
    #[error("spec mismatch: {0}")]
    Spec(String),
    /// A dataset that cannot be used for training.
    #[error("dataset {path}: {reason}")]
    Dataset { path: PathBuf, reason: String },
    /// An invalid configuration value.
    #[error("config: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn ckpt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn dataset(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Dataset {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
