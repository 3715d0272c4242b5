//! The runtime service's metrics, read from its records when scraped: containers by state.

use crate::lifecycle::{
    state_of, STATUS_CREATED, STATUS_DEAD, STATUS_EXITED, STATUS_RESTARTING, STATUS_RUNNING,
};
use crate::Runtime;
use berth_core::metrics::gauge;
use prometheus_client::encoding::DescriptorEncoder;
use std::sync::Arc;

/// The states counted, as Docker names them (`paused` is a running container that is frozen).
const STATES: [&str; 6] = [
    STATUS_CREATED,
    STATUS_RUNNING,
    "paused",
    STATUS_RESTARTING,
    STATUS_EXITED,
    STATUS_DEAD,
];

/// The runtime service's metrics for a Prometheus registry (berthd's `[metrics]`).
#[derive(Debug)]
pub struct Collector(pub Arc<Runtime>);

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut counts = [0i64; STATES.len()];
        let store = self.0.store();
        for ns in store.namespaces().unwrap_or_default() {
            for c in store.list(&ns).unwrap_or_default() {
                let st = state_of(&c);
                let state = if st.paused && st.status == STATUS_RUNNING {
                    "paused"
                } else {
                    st.status.as_str()
                };
                if let Some(i) = STATES.iter().position(|s| *s == state) {
                    counts[i] += 1;
                }
            }
        }
        let samples: Vec<_> = STATES
            .iter()
            .zip(counts)
            .map(|(s, n)| ([("state", *s)], n))
            .collect();
        gauge(
            &mut e,
            "berth_containers",
            "Containers of every namespace, by state.",
            &samples,
        )
    }
}
