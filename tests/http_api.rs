//! HTTP API tests (written below).
