//! berth-core: the shared domain of every berth service.
//!
//! - [`digest::Digest`]: content addresses (`sha256:<hex>`), and [`digest::Hasher`] to compute them.
//! - [`reference::Reference`]: image references under Docker's rules
//!   (`busybox` is `docker.io/library/busybox:latest`).
//! - [`media`]: OCI and Docker media types.
//! - [`config::Config`]: `berthd`'s TOML configuration (roots, registries, service addresses).
//! - [`grpc`]: connecting to a service address, the namespace in metadata, trace propagation.
//! - [`telemetry`]: tracing subscriber setup with optional OTLP export.
//! - [`signal`]: signal names and numbers as Docker takes them (`TERM`, `SIGKILL`, `RTMIN+1`).
//! - [`snapshot`]: snapshot keys with a meaning services agree on (the build service's views).
//! - [`metrics`]: Prometheus metrics: every RPC counted and timed, helpers for collectors.
//! - [`testing`]: skipping a test whose prerequisite is missing, except under CI.

pub mod config;
pub mod digest;
pub mod grpc;
pub mod media;
pub mod metrics;
pub mod reference;
pub mod signal;
pub mod snapshot;
pub mod telemetry;
pub mod testing;

pub use digest::Digest;
pub use reference::Reference;
