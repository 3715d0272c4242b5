//! [`ContainerLocks`]: one lock per container (`<ns>/<id>`), so that creating, starting and
//! deleting its task, recording its exits and joining or leaving a network never interleave.
//! The task lifecycle ([`crate::tasks`]) and network connections ([`crate::connections`])
//! share one set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The containers' locks, created on first use and forgotten when a container is deleted.
#[derive(Debug, Default)]
pub struct ContainerLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ContainerLocks {
    /// The lock of one container, held until the guard is dropped.
    pub(crate) async fn lock(&self, ns: &str, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(format!("{ns}/{id}")).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Forgets the lock of a deleted container.
    pub(crate) fn forget(&self, ns: &str, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.remove(&format!("{ns}/{id}"));
    }
}
