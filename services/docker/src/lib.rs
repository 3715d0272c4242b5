//! Docker's views of berth's objects: the JSON and the table cells that Docker's API and CLI
//! show for what berth's services return, written once for the two fronts that show them —
//! the `berth` CLI (`image ls`, `image inspect`) and the Docker Engine API gateway
//! (`GET /images/json`, `GET /images/{name}/json`, `GET /images/{name}/history`); and the
//! shapes of a container's streams (attach's framing and detach keys, logs' timestamps).
//!
//! Every function is pure: it takes the services' gRPC messages and returns Docker's shape, so
//! `berth` and `docker` against the gateway cannot disagree.
//!
//! ```
//! let (repo, tag) = berth_docker::repo_tag("docker.io/library/busybox:latest");
//! assert_eq!((repo.as_str(), tag.as_str()), ("busybox", "latest"));
//! ```

mod images;
mod streams;

pub use images::*;
pub use streams::*;
