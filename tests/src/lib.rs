//! Helpers for integration tests that spawn Quiver processes.
