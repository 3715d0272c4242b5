//! Docker's views of berth's objects: the JSON and the table cells that Docker's API and CLI
//! show for what berth's services return, written once for the two fronts that show them —
//! the `berth` CLI (`image ls`, `image inspect`) and the Docker Engine API gateway
//! (`GET /images/json`, `GET /images/{name}/json`, `GET /images/{name}/history`).
//!
//! Every function is pure: it takes the services' gRPC messages and returns Docker's shape, so
//! `berth` and `docker` against the gateway cannot disagree.
//!
//! ```
//! let (repo, tag) = berth_docker::repo_tag("docker.io/library/busybox:latest");
//! assert_eq!((repo.as_str(), tag.as_str()), ("busybox", "latest"));
//! ```

// `/info` is one large `json!`.
#![recursion_limit = "256"]

pub mod events;
pub mod filters;
pub mod host;
mod images;
pub mod networks;
pub mod system;
pub mod time;
pub mod usage;
pub mod volumes;

pub use images::*;
