//! ROS 2 messages for rft: Rust types, the CDR codec, REP-2016 type hashes and the rmw_zenoh
//! wire format (key expressions, attachments, liveliness tokens). No I/O.

pub mod cdr;
mod error;
pub mod msgdef;
pub mod registry;
pub mod rmw_zenoh;
pub mod types;

pub use error::{Error, Result};
pub use registry::TypeInfo;
pub use types::*;
