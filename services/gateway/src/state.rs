//! What the gateway itself keeps between requests (Docker objects berth's services do not
//! hold, such as exec instances between their create and start).

/// The gateway's own state, shared by every handler.
#[derive(Debug, Default)]
pub struct Local {
    /// Docker's exec instances.
    pub execs: crate::exec::Execs,
}
