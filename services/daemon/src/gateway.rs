//! `[gateway] socket`: the Docker Engine API (`berth-gateway`), served by berthd beside its
//! gRPC services and reaching them as any client does, through the addresses of `[services]`.

use crate::Channels;
use anyhow::{Context as _, Result};
use berth_core::config::Config;
use std::path::PathBuf;
use tracing::{info, warn};

/// Binds the gateway's socket (in place of a stale one; 0600, or 0660 root:GROUP) and serves
/// the API until `shutdown` ends. Returns the socket to remove when berthd stops; `None` when
/// `[gateway]` has no socket.
pub fn start(
    config: &Config,
    channels: &Channels,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<PathBuf>> {
    let Some(path) = config.gateway.socket.clone() else {
        return Ok(None);
    };
    let services = berth_gateway::Services::new(berth_gateway::Backends {
        image: channels.to(&config.services.image)?,
        runtime: channels.to(&config.services.runtime)?,
        build: channels.to(&config.services.build)?,
        registry: channels.to(&config.services.registry)?,
        events: channels.to(&config.services.events)?,
        version: channels.to(&None)?,
        root: config.root.clone(),
        snapshotter: config.snapshotter.clone(),
    });
    let listener = crate::bind_unix(&path).context("[gateway] socket")?;
    if let Some(group) = &config.gateway.group {
        share_with(&path, group)?;
    }
    info!(socket = %path.display(), group = ?config.gateway.group, "Docker Engine API gateway ready");
    tokio::spawn(async move {
        if let Err(e) = berth_gateway::serve(listener, services, shutdown).await {
            warn!(error = %e, "the Docker Engine API gateway stopped");
        }
    });
    Ok(Some(path))
}

/// Mode 0660 and group `group`: its members may use the socket.
fn share_with(path: &std::path::Path, group: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let gid = nix::unistd::Group::from_name(group)
        .with_context(|| format!("cannot look up [gateway] group {group:?}"))?
        .with_context(|| format!("[gateway] group {group:?} does not exist on this host"))?
        .gid;
    nix::unistd::chown(path, None, Some(gid))
        .with_context(|| format!("cannot give {} to group {group}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot make {} mode 0660", path.display()))?;
    Ok(())
}
