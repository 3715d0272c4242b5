//! Applies in flight: the layers this service is unpacking right now, by (snapshotter,
//! namespace, name). A second Apply of the same layer waits for the first instead of
//! unpacking it again; an Apply whose parent is still being unpacked waits for that parent
//! (native) or unpacks beside it and commits after it (overlayfs).
//!
//! Kept in memory only: a restart forgets every flight, and [`crate::Snapshots::open`]
//! removes the extractions they left. What is committed is always read from the metadata;
//! a flight only says "wait, something may be committed soon" and, if not, why.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Names a layer being applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LayerKey {
    pub snapshotter: String,
    pub namespace: String,
    pub name: String,
}

impl LayerKey {
    pub fn new(snapshotter: &str, namespace: &str, name: &str) -> LayerKey {
        LayerKey {
            snapshotter: snapshotter.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Every Apply in flight.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    registry: Mutex<Registry>,
    /// Signalled whenever a flight starts or ends.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Registry {
    /// Counts starts and ends of flights, so a waiter misses none.
    generation: u64,
    flights: HashMap<LayerKey, Arc<Flight>>,
    /// Which flight waits for which parent, to refuse a loop of parents (only a client that
    /// names layers wrongly can make one) instead of waiting forever.
    waits: HashMap<LayerKey, LayerKey>,
}

/// One Apply in flight; it ends when its [`Claim`] is finished or dropped.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    /// `None` while running; then `Ok` or the error the Apply ended with.
    outcome: Mutex<Option<Result<(), String>>>,
    done: Condvar,
}

impl Flight {
    /// Blocks until the Apply ends; returns how.
    pub fn wait(&self) -> Result<(), String> {
        let mut outcome = lock(&self.outcome);
        loop {
            if let Some(o) = outcome.as_ref() {
                return o.clone();
            }
            outcome = self.done.wait(outcome).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Held by the one Apply that unpacks a layer.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    in_flight: &'a InFlight,
    key: LayerKey,
    flight: Arc<Flight>,
    outcome: Option<Result<(), String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across a panic: every change is a single assignment.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl InFlight {
    /// Claims `key` for the caller; `Err` with the flight of whoever holds it.
    pub fn claim(&self, key: LayerKey) -> Result<Claim<'_>, Arc<Flight>> {
        let mut r = lock(&self.registry);
        if let Some(f) = r.flights.get(&key) {
            return Err(f.clone());
        }
        let flight = Arc::new(Flight::default());
        r.flights.insert(key.clone(), flight.clone());
        r.generation += 1;
        self.changed.notify_all();
        Ok(Claim {
            in_flight: self,
            key,
            flight,
            outcome: None,
        })
    }

    /// The flight of `key`, if it is being applied, and the generation seen, for
    /// [`wait_for_change`](Self::wait_for_change).
    pub fn get(&self, key: &LayerKey) -> (Option<Arc<Flight>>, u64) {
        let r = lock(&self.registry);
        (r.flights.get(key).cloned(), r.generation)
    }

    /// Waits until a flight starts or ends after generation `seen`; `false` when `deadline`
    /// passed first.
    pub fn wait_for_change(&self, seen: u64, deadline: Instant) -> bool {
        let mut r = lock(&self.registry);
        while r.generation == seen {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            r = self
                .changed
                .wait_timeout(r, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Waits for the flight `parent` (got from [`get`](Self::get)) to end, on behalf of the
    /// flight `waiter` (if the caller holds one). Fails at once when `parent` waits,
    /// directly or through others, for `waiter`.
    pub fn wait_for_parent(
        &self,
        waiter: Option<&LayerKey>,
        parent: &LayerKey,
        flight: &Flight,
    ) -> Result<Result<(), String>> {
        if let Some(w) = waiter {
            let mut r = lock(&self.registry);
            let mut next = Some(parent);
            let mut steps = 0;
            while let Some(k) = next {
                if k == w {
                    return Err(Error::InvalidArgument(format!(
                        "layer {} names {} as its parent, which is (or is built on) the layer itself",
                        w.name, parent.name
                    )));
                }
                steps += 1;
                if steps > r.waits.len() {
                    break;
                }
                next = r.waits.get(k);
            }
            r.waits.insert(w.clone(), parent.clone());
        }
        let outcome = flight.wait();
        if let Some(w) = waiter {
            lock(&self.registry).waits.remove(w);
        }
        Ok(outcome)
    }
}

impl Claim<'_> {
    pub fn key(&self) -> &LayerKey {
        &self.key
    }

    /// Ends the flight with `outcome`; waiters wake up.
    pub fn finish(mut self, outcome: Result<(), String>) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .take()
            .unwrap_or_else(|| Err("the Apply ended before it finished".into()));
        *lock(&self.flight.outcome) = Some(outcome);
        self.flight.done.notify_all();
        let mut r = lock(&self.in_flight.registry);
        r.flights.remove(&self.key);
        r.waits.remove(&self.key);
        r.generation += 1;
        self.in_flight.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(name: &str) -> LayerKey {
        LayerKey::new("overlayfs", "default", name)
    }

    #[test]
    fn one_claim_per_name_and_waiters_learn_the_outcome() {
        let f = InFlight::default();
        let claim = f.claim(key("a")).unwrap();
        let theirs = f.claim(key("a")).unwrap_err();
        assert!(f.claim(key("b")).is_ok(), "other names are free");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| theirs.wait());
            std::thread::sleep(Duration::from_millis(20));
            claim.finish(Err("boom".into()));
            assert_eq!(waiter.join().unwrap(), Err("boom".to_string()));
        });
        assert!(f.get(&key("a")).0.is_none());
        // A dropped claim ends its flight with an error.
        let (_, seen) = f.get(&key("a"));
        let claim = f.claim(key("a")).unwrap();
        assert!(
            f.wait_for_change(seen, Instant::now()),
            "a start is a change"
        );
        let (theirs, seen) = f.get(&key("a"));
        let theirs = theirs.unwrap();
        assert!(!f.wait_for_change(seen, Instant::now() + Duration::from_millis(10)));
        drop(claim);
        assert!(theirs.wait().is_err());
    }

    #[test]
    fn a_loop_of_parents_is_refused() {
        let f = InFlight::default();
        let a = f.claim(key("a")).unwrap();
        let b = f.claim(key("b")).unwrap();
        std::thread::scope(|s| {
            // a waits for b …
            let fb = f.get(&key("b")).0.unwrap();
            let f = &f;
            let waiting = s.spawn(move || f.wait_for_parent(Some(&key("a")), &key("b"), &fb));
            while lock(&f.registry).waits.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            // … so b cannot wait for a.
            let fa = f.get(&key("a")).0.unwrap();
            let e = f
                .wait_for_parent(Some(&key("b")), &key("a"), &fa)
                .unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            b.finish(Ok(()));
            assert_eq!(waiting.join().unwrap().unwrap(), Ok(()));
        });
        drop(a);
        assert!(lock(&f.registry).waits.is_empty());
    }
}
