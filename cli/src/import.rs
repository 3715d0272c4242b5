//! `berth import FILE|- [REPOSITORY[:TAG]]`: Docker's import. A rootfs tarball (plain or
//! gzip) becomes a one-layer image through the image service's CommitLayer with no parent,
//! as the gateway's `POST /images/create?fromSrc=-` does; `--change` and `--message` as
//! Docker's. (`berth image import` reads image archives instead: OCI layouts, `docker save`.)

use crate::client::{Context, Error};
use berth_api::images::v1 as api;
use clap::Args;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The rootfs tarball (tar or tar.gz), or - for standard input
    pub file: String,
    /// The new image's name: [REGISTRY/]REPOSITORY[:TAG]; without one the image is dangling
    pub repository: Option<String>,
    /// Apply a Dockerfile instruction to the image's config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL)
    #[arg(short, long)]
    pub change: Vec<String>,
    /// The history's comment (default "Imported from FILE")
    #[arg(short, long)]
    pub message: Option<String>,
}

/// Streams the tarball to CommitLayer and prints the new image's id.
pub async fn import(ctx: &Context, a: ImportArgs) -> Result<(), Error> {
    let mut input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if a.file == "-" {
        Box::new(tokio::io::stdin())
    } else {
        let f = tokio::fs::File::open(&a.file)
            .await
            .map_err(|e| Error::Local(format!("cannot open {}: {e}", a.file)))?;
        Box::new(f)
    };
    let header = api::CommitRequest {
        reference: a.repository.clone().unwrap_or_default(),
        changes: a.change.clone(),
        comment: a
            .message
            .clone()
            .unwrap_or_else(|| format!("Imported from {}", a.file)),
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel::<api::CommitLayerRequest>(4);
    let call = async {
        ctx.images()
            .commit_layer(ctx.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await
            .map_err(Error::from)
    };
    // A read that fails ends the import with its error, which cancels the call: a
    // truncated tarball never becomes an image.
    let feed = async move {
        let mut item = api::commit_layer_request::Item::Header(header);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if tx
                .send(api::CommitLayerRequest { item: Some(item) })
                .await
                .is_err()
            {
                return Ok(());
            }
            let n = input
                .read(&mut buf)
                .await
                .map_err(|e| Error::Local(format!("reading {}: {e}", a.file)))?;
            if n == 0 {
                return Ok(());
            }
            item = api::commit_layer_request::Item::Data(buf[..n].to_vec());
        }
    };
    let (r, ()) = tokio::try_join!(call, feed)?;
    println!("{}", r.into_inner().id);
    Ok(())
}
