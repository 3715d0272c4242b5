//! `-f KEY=VALUE` filters of the listings (`ps`, `network ls`): berth-docker's, which the
//! gateway's listings use too.

pub use berth_docker::filters::{label_matches, name_matches, Filters};
