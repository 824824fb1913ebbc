//! Typed engine errors. The server maps each variant to an HTTP/gRPC status in one place.

use crate::types::PointId;

/// Everything the engine can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No collection with this name exists.
    #[error("Collection `{0}` doesn't exist!")]
    CollectionNotFound(String),
    /// A collection with this name exists already.
    #[error("Collection `{0}` already exists!")]
    CollectionExists(String),
    /// The collection name cannot be used as a directory name.
    #[error("Invalid collection name `{0}`: {1}")]
    InvalidName(String, &'static str),
    /// A vector has a different length than its collection configures.
    #[error("Wrong input: Vector dimension error: expected dim: {expected}, got {got}")]
    WrongVectorDim {
        /// Configured dimension.
        expected: usize,
        /// Dimension received.
        got: usize,
    },
    /// The request names a vector the collection does not have.
    #[error("Wrong input: Not existing vector name error: {0}")]
    UnknownVector(String),
    /// A shard id the collection does not have.
    #[error("Shard {0} does not exist")]
    ShardNotFound(u32),
    /// An alias name that does not exist.
    #[error("Alias `{0}` does not exist")]
    AliasNotFound(String),
    /// A point was addressed that does not exist.
    #[error("No point with id {0} found")]
    PointNotFound(PointId),
    /// Any other invalid request (NaN values, bad filter, bad config, ...).
    #[error("Wrong input: {0}")]
    BadRequest(String),
    /// Stored data failed a check (CRC, manifest, sizes); the message says which file.
    #[error("Storage corrupted: {0}")]
    Corrupted(String),
    /// The operating system refused an I/O operation (full disk, permissions, ...).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The engine is shutting down and a worker thread no longer accepts work.
    #[error("Service is shutting down")]
    ShuttingDown,
}

impl EngineError {
    /// Shorthand for [`EngineError::BadRequest`].
    pub fn bad(msg: impl Into<String>) -> Self {
        EngineError::BadRequest(msg.into())
    }
}

/// Result alias used across the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
