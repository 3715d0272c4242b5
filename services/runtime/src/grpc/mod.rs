//! The runtime's gRPC services: thin shells that read a request's namespace and fields, call
//! the runtime's domain code, and turn its answers and errors into the API's messages and
//! status codes.
//!
//! - [`tasks`]: `berth.tasks.v1.Tasks` over [`crate::tasks`] (and pause, usage, logs).
//! - [`networks`]: `berth.networks.v1.Networks` over [`crate::network`].

pub mod networks;
pub mod tasks;
