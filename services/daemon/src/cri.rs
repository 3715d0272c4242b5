//! `[cri] socket`: the Kubernetes CRI (`berth-cri`), served by berthd beside its gRPC services
//! and reaching them as any client does, through the addresses of `[services]`; its streaming
//! server (Exec, Attach, PortForward) on `[cri] stream_address`.

use crate::Channels;
use anyhow::{Context as _, Result};
use berth_core::config::Config;
use std::path::PathBuf;
use tracing::{info, warn};

/// Binds the CRI's socket (in place of a stale one; 0600, root only) and serves the CRI until
/// `shutdown` ends. Returns the socket to remove when berthd stops; `None` when `[cri]` has
/// no socket.
pub fn start(
    config: &Config,
    channels: &Channels,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<PathBuf>> {
    let Some(path) = config.cri.socket.clone() else {
        return Ok(None);
    };
    let (cni_conf_dir, cni_bin_dirs) = berth_cri::Backends::cni_dirs(&config.cri);
    let backends = berth_cri::Backends {
        image: channels.to(&config.services.image)?,
        snapshot: channels.to(&config.services.snapshot)?,
        runtime: channels.to(&config.services.runtime)?,
        events: channels.to(&config.services.events)?,
        snapshot_host: channels.to(&config.services.snapshot)?,
        snapshotter: config.snapshotter.clone(),
        sandbox_image: config
            .cri
            .sandbox_image
            .clone()
            .unwrap_or_else(|| berth_cri::sandboxes::DEFAULT_SANDBOX_IMAGE.to_string()),
        cni_conf_dir,
        cni_bin_dirs,
    };
    let listener = crate::bind_unix(&path).context("[cri] socket")?;
    let stream_listener =
        berth_cri::stream::StreamListener::bind(config.cri.stream_address.as_deref())
            .context("[cri] stream_address")?;
    info!(socket = %path.display(), streaming = %stream_listener.address(), "Kubernetes CRI ready");
    tokio::spawn(async move {
        if let Err(e) = berth_cri::serve(listener, stream_listener, backends, shutdown).await {
            warn!(error = %e, "the Kubernetes CRI stopped");
        }
    });
    Ok(Some(path))
}
