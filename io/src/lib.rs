//! Quiver's snapshot pipeline.
//!
//! This crate will stream a consistent set of segment files into a tar archive through io_uring
//! (with a plain-syscall fallback), to local disk or S3. It is intentionally empty until the
//! snapshot issue lands; the engine already lays segments out as self-describing directories so
//! that this crate can stream them as they are.
