//! `-f KEY=VALUE` filters of the listings: Docker's rules, written once in berth-docker.

pub use berth_docker::filters::*;
