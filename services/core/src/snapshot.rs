//! Snapshot keys whose meaning two services agree on. A key is the caller's to choose; these
//! conventions are part of the Snapshots API's contract between its callers and the snapshot
//! service, so they live here rather than in either service.

/// Keys of the read-only views the build service takes for the length of one step (`COPY
/// --from`, `--chown` by name, a destination's type). A view of that name that is still
/// there when the snapshot service opens was left by a crash, and is removed.
pub const BUILD_VIEW_PREFIX: &str = "build-view-";
