use std::path::PathBuf;

/// Errors of the `sim` crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("URDF {}: {reason}", path.display())]
    Urdf { path: PathBuf, reason: String },
    #[error("sim config `{key}`: {reason}")]
    Config { key: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Why a command was rejected (and counted); the previous command stays in force.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("joint velocity command has {got} values but the arm has {expected} joints")]
    WrongLength { expected: usize, got: usize },
    #[error("{what} command has a non-finite value ({value}) at index {index}")]
    NonFinite {
        what: &'static str,
        index: usize,
        value: f64,
    },
}
