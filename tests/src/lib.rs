//! Test support: image builders and helpers for the integration tests.
