//! The runtime's gRPC services: thin shells that read a request's namespace and fields, call
//! the runtime's domain code, and turn its answers and errors into the API's messages and
//! status codes.
//!
//! - [`containers`]: `berth.containers.v1.Containers` over [`crate::containers`].
//! - [`files`]: the file RPCs of Containers (changes, export, archive) over
//!   [`crate::tasks::files`].
//! - [`tasks`]: `berth.tasks.v1.Tasks` over [`crate::tasks`] (and pause, usage, logs).
//! - [`networks`]: `berth.networks.v1.Networks` over [`crate::network`].
//! - [`volumes`]: `berth.volumes.v1.Volumes` over [`crate::volumes`].

pub mod containers;
pub mod files;
pub mod networks;
pub mod tasks;
pub mod volumes;
