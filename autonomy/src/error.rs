use std::path::PathBuf;

use rft_config::ConfigError;

/// Errors of the reset-free loop's library: settings, missing or mismatched artifacts, and the
/// libraries it drives.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is wrong; the key path is relative to the pipeline's settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A stage cannot run with what it was given (a missing artifact, a policy of the wrong
    /// shape, a run directory that would be overwritten).
    #[error("{0}")]
    Stage(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a file that is already open (a CSV row, a flush).
    #[error("writing: {0}")]
    Write(#[from] std::io::Error),
    #[error(transparent)]
    Policy(#[from] rft_policies::Error),
    #[error(transparent)]
    Reward(#[from] rft_rewards::Error),
    #[error(transparent)]
    Sim(#[from] rft_sim::Error),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Toml(#[from] toml::ser::Error),
    #[error(transparent)]
    Png(#[from] png::EncodingError),
    /// An error with what was being done when it happened.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.as_ref().to_path_buf();
        move |source| Error::Io { path, source }
    }
}

/// Adds what was being done to an error (as `anyhow::Context` does, within this crate's type).
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: what(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| Error::Stage(what()))
    }
}
