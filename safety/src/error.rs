use std::path::PathBuf;

/// Errors of the `safety` crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("URDF {}: {reason}", path.display())]
    Urdf { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;
