//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `rft-rewards`, with the context the caller needs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Store(#[from] rft_policies::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A weights, probe or config file that cannot be used.
    #[error("{path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// Labelled frames that cannot be used for training or evaluation.
    #[error("data: {0}")]
    Data(String),
    /// An invalid configuration value, named by its key.
    #[error("config `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// A frame that does not fit the classifier (size, layout).
    #[error("frame: {0}")]
    Frame(String),
    /// The VLM endpoint could not give an answer (after retries, where retrying made sense).
    #[error("VLM endpoint {endpoint}: {reason}")]
    Vlm { endpoint: String, reason: String },
    /// A VLM answer that does not say what was asked.
    #[error("VLM answer unusable: {0}")]
    Answer(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn config(key: &str, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
