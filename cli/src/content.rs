//! `berth content ls|get|rm`, as `ctr content`: the blobs of the content store, which every
//! namespace shares. `get` streams a blob to standard output and checks it against its
//! digest; berthd refuses `rm` of a blob an image holds (remove the image instead).

use crate::client::{Context, Error};
use crate::format;
use crate::template::ListFormat;
use crate::verbs::{done, each};
use berth_api::content::v1 as api;
use berth_core::digest::{Algorithm, Digest, Hasher};
use clap::Subcommand;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

#[derive(Debug, Subcommand)]
pub enum ContentCommand {
    /// List the blobs of the content store
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        output: ListFormat,
    },
    /// Write a blob to standard output
    Get {
        /// The blob's digest (sha256:…)
        digest: String,
    },
    /// Remove blobs no image holds
    #[command(alias = "remove", alias = "delete", alias = "del")]
    Rm {
        /// Digests of the blobs
        #[arg(required = true)]
        digests: Vec<String>,
    },
}

/// Runs a content subcommand; gives the exit code.
pub async fn content(ctx: &Context, c: ContentCommand) -> u8 {
    match c {
        ContentCommand::Ls { output } => done(ls(ctx, &output).await),
        ContentCommand::Get { digest } => done(get(ctx, &digest).await),
        ContentCommand::Rm { digests } => {
            each(&digests, |digest| async move {
                ctx.content()
                    .delete(ctx.req(api::DeleteContentRequest {
                        digest: digest.clone(),
                    }))
                    .await?;
                println!("{digest}");
                Ok(())
            })
            .await
        }
    }
}

/// One blob as `ls --format` sees it; `now` in unix seconds.
fn ls_json(b: &api::BlobInfo, now: i64) -> Value {
    let labels = format::labels(&b.labels);
    json!({
        "Digest": b.digest,
        "Size": format::size(b.size),
        "Bytes": b.size,
        "Age": format::duration(now - b.created_at.as_ref().map_or(now, |t| t.seconds)),
        "Labels": if labels.is_empty() { "-".to_string() } else { labels },
    })
}

const LS_COLUMNS: &[(&str, &str)] = &[
    ("Digest", "DIGEST"),
    ("Size", "SIZE"),
    ("Age", "AGE"),
    ("Labels", "LABELS"),
];
const LS_TABLE: &str = "table {{.Digest}}\t{{.Size}}\t{{.Age}}\t{{.Labels}}";

async fn ls(ctx: &Context, output: &ListFormat) -> Result<(), Error> {
    let blobs = ctx
        .content()
        .list(ctx.req(api::ListContentRequest {}))
        .await?
        .into_inner()
        .blobs;
    let now = chrono::Utc::now().timestamp();
    let objects: Vec<Value> = blobs.iter().map(|b| ls_json(b, now)).collect();
    output.print_keyed("Digest", LS_TABLE, LS_COLUMNS, &objects)
}

/// Streams blob `digest` to standard output, checking what arrives against a sha256 digest
/// (the algorithm berth stores blobs by).
async fn get(ctx: &Context, digest: &str) -> Result<(), Error> {
    let want: Digest = digest
        .parse()
        .map_err(|e| Error::Local(format!("invalid digest {digest:?}: {e}")))?;
    let mut stream = ctx
        .content()
        .read(ctx.req(api::ReadContentRequest {
            digest: want.to_string(),
            offset: 0,
            size: 0,
        }))
        .await?
        .into_inner();
    let mut out = tokio::io::stdout();
    let mut hasher = (want.algorithm() == Algorithm::Sha256).then(Hasher::new);
    let write_err = |e: std::io::Error| Error::Local(format!("cannot write standard output: {e}"));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk.data);
        }
        out.write_all(&chunk.data).await.map_err(write_err)?;
    }
    out.flush().await.map_err(write_err)?;
    match hasher.map(Hasher::finish) {
        Some(got) if got != want => Err(Error::Local(format!(
            "content {want}: what arrived hashes to {got}: the blob is damaged"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::prost_types::Timestamp;

    #[test]
    fn ls_reads_like_ctr() {
        let manifest = api::BlobInfo {
            digest: "sha256:aa".into(),
            size: 1234,
            created_at: Some(Timestamp {
                seconds: 1000,
                nanos: 0,
            }),
            labels: [
                ("berth.gc.ref.content.l.0".into(), "sha256:cc".into()),
                ("berth.gc.ref.content.config".into(), "sha256:bb".into()),
            ]
            .into(),
        };
        let layer = api::BlobInfo {
            digest: "sha256:cc".into(),
            size: 2_000_000,
            created_at: Some(Timestamp {
                seconds: 1000 - 3 * 86400,
                nanos: 0,
            }),
            labels: Default::default(),
        };
        let objects: Vec<Value> = [manifest, layer].iter().map(|b| ls_json(b, 1005)).collect();
        let out = ListFormat::default()
            .render_keyed("Digest", LS_TABLE, LS_COLUMNS, &objects)
            .unwrap();
        assert_eq!(
            out,
            "DIGEST      SIZE     AGE         LABELS\n\
             sha256:aa   1.23kB   5 seconds   berth.gc.ref.content.config=sha256:bb,berth.gc.ref.content.l.0=sha256:cc\n\
             sha256:cc   2MB      3 days      -\n"
        );
        let quiet = ListFormat {
            quiet: true,
            ..Default::default()
        };
        assert_eq!(
            quiet
                .render_keyed("Digest", LS_TABLE, LS_COLUMNS, &objects)
                .unwrap(),
            "sha256:aa\nsha256:cc\n"
        );
        assert_eq!(objects[1]["Bytes"], 2_000_000);
    }
}
