//! Docker's views of berth's objects: the JSON and the table cells that Docker's API and CLI
//! show for what berth's services return, written once for the two fronts that show them —
//! the `berth` CLI (`image ls`, `image inspect`, `ps`, `inspect`) and the Docker Engine API
//! gateway (`GET /images/json`, `GET /containers/json`, `GET /containers/{id}/json`, …).
//!
//! - images: list, inspect, history, delete, and the image list's filters;
//! - [`containers`]: a container's inspect JSON and the names Docker shows of it;
//! - [`ps`]: container listings (rows, API entries, filters), with [`filters`], [`ports`]
//!   and [`format`] (times, statuses, commands);
//! - [`create`]: the Engine API's create body as a berth `ContainerConfig`.
//!
//! The progress, build and load lines of Docker's JSON streams ([`pull_progress`],
//! [`push_progress`], [`build_step`] …) and the inputs of a container's commit
//! ([`run_overrides`], [`commit_pauses`]) live here too.
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

// The create body of the tests and `/info` are large `json!`s.
#![recursion_limit = "256"]

mod commit;
pub mod containers;
pub mod create;
pub mod events;
pub mod files;
pub mod filters;
pub mod format;
pub mod host;
mod images;
pub mod networks;
pub mod ports;
mod progress;
pub mod ps;
mod streams;
pub mod system;
pub mod time;
pub mod usage;
pub mod volumes;

pub use commit::*;
pub use images::*;
pub use progress::*;
pub use streams::*;
