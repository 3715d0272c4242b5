//! SPDY/3.1 and Kubernetes' streaming protocols (server side).
//! (overview filled in below)

pub mod compress;
pub mod dictionary;
pub mod frame;
pub mod session;
pub mod upgrade;
pub mod remotecommand;
pub mod portforward;
