use std::path::PathBuf;

/// Errors of the runtime: transports, launch files, nodes, recording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Msgs(#[from] rft_msgs::Error),
    #[error("topic `{topic}`: {reason}")]
    Topic { topic: String, reason: String },
    #[error("zenoh: {0}")]
    Zenoh(String),
    #[error("{}: {key}: {reason}", path.display())]
    Launch {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// The runtime cannot run as asked (e.g. the lockstep executor on a wall clock).
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("node `{node}`: {reason}")]
    Node { node: String, reason: String },
    #[error("recording {}: {reason}", path.display())]
    Record { path: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn node(node: &str, reason: impl std::fmt::Display) -> Self {
        Error::Node {
            node: node.to_string(),
            reason: reason.to_string(),
        }
    }
}
