use std::fmt;

/// Errors of the `msgs` crate.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error("CDR: input ends at byte {at} but {needed} more bytes are needed")]
    Eof { at: usize, needed: usize },
    #[error("CDR: encapsulation header {0:02x?} is not plain little-endian CDR (00 01 00 00)")]
    BadHeader([u8; 4]),
    #[error("CDR: message shorter than the 4-byte encapsulation header ({0} bytes)")]
    NoHeader(usize),
    #[error("CDR: length {len} at byte {at} exceeds the {remaining} bytes left")]
    LengthTooLarge {
        at: usize,
        len: usize,
        remaining: usize,
    },
    #[error("CDR: string at byte {at} is not NUL-terminated")]
    StringNotTerminated { at: usize },
    #[error("CDR: string at byte {at} is not valid UTF-8")]
    StringNotUtf8 { at: usize },
    #[error("CDR: bool at byte {at} has value {value} (expected 0 or 1)")]
    BadBool { at: usize, value: u8 },
    #[error("CDR: {0} trailing bytes after the message")]
    TrailingBytes(usize),
    #[error("CDR: {0}")]
    Unsupported(&'static str),
    #[error("CDR: {0}")]
    Custom(String),
    #[error("message definition {type_name}, line {line}: {reason}")]
    Definition {
        type_name: String,
        line: usize,
        reason: String,
    },
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("attachment: {0}")]
    Attachment(String),
    #[error("key expression `{key}`: {reason}")]
    KeyExpr { key: String, reason: String },
    #[error("JSON for {type_name}: {reason}")]
    Json { type_name: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}
