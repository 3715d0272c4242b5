//! berth's build service: Dockerfile builds as a client of the other services.
//!
//! - [`dockerfile`]: the Dockerfile front end (parser, variable substitution, history text).
//! - [`dockerignore`]: `.dockerignore` rules for filtering the build context.

pub mod dockerfile;
pub mod dockerignore;
