//! Image archives: `save` / `image save` (`docker save`'s format), `image export` (an OCI image
//! layout), and `load` / `image load` (either, through the Import RPC).
//!
//! An archive goes to a file atomically: it is written to a temporary file beside the target,
//! made durable and renamed over it, so a failure (an unknown image, a daemon that stops
//! half-way) leaves no partial file. Without `-o` it goes to standard output, which must not
//! be a terminal (Docker refuses that too).

use crate::client::{Context, Error};
use berth_api::images::v1 as api;
use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Images: references (a bare repository means all its tags) or ids
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Images: references or ids
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this archive file instead of standard input
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the progress output
    #[arg(short, long)]
    pub quiet: bool,
}

/// The archive verbs of `berth image`.
#[derive(Debug, Subcommand)]
pub enum ImageArchiveCommand {
    /// Save images to an OCI image layout archive
    Export(ExportArgs),
    /// Save images to a tar archive in `docker save`'s format
    Save(SaveArgs),
    /// Load images from a `docker save` or OCI layout archive
    Load(LoadArgs),
}

pub async fn image(ctx: &Context, c: ImageArchiveCommand) -> Result<(), Error> {
    match c {
        ImageArchiveCommand::Export(a) => export(ctx, a).await,
        ImageArchiveCommand::Save(a) => save(ctx, a).await,
        ImageArchiveCommand::Load(a) => load(ctx, a).await,
    }
}

pub async fn save(ctx: &Context, a: SaveArgs) -> Result<(), Error> {
    write_archive(ctx, a.images, "docker", a.output.as_deref()).await
}

pub async fn export(ctx: &Context, a: ExportArgs) -> Result<(), Error> {
    write_archive(ctx, a.images, "oci", a.output.as_deref()).await
}

/// Asks for the archive and writes it to `output` (atomically) or to standard output.
async fn write_archive(
    ctx: &Context,
    names: Vec<String>,
    format: &str,
    output: Option<&Path>,
) -> Result<(), Error> {
    if output.is_none() && std::io::stdout().is_terminal() {
        return Err(Error::Local(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
        ));
    }
    // An unknown image fails here, before any file exists.
    let stream = ctx
        .images()
        .export(ctx.req(api::ExportRequest {
            names,
            format: format.to_string(),
        }))
        .await?
        .into_inner();
    match output {
        None => {
            let mut out = tokio::io::stdout();
            copy_stream(stream, &mut out, Path::new("standard output")).await
        }
        Some(path) => {
            let mut file = OutputFile::create(path).await?;
            copy_stream(stream, file.writer(), path).await?;
            file.commit().await
        }
    }
}

async fn copy_stream(
    stream: tonic::Streaming<api::ExportResponse>,
    out: &mut (impl AsyncWrite + Unpin),
    shown: &Path,
) -> Result<(), Error> {
    copy_chunks(stream.map(|r| r.map(|c| c.data)), out, shown).await
}

/// Writes a stream of data chunks (an archive coming from berthd) to `out`.
pub(crate) async fn copy_chunks(
    mut chunks: impl tokio_stream::Stream<Item = Result<Vec<u8>, tonic::Status>> + Unpin,
    out: &mut (impl AsyncWrite + Unpin),
    shown: &Path,
) -> Result<(), Error> {
    let write_err =
        |e: std::io::Error| Error::Local(format!("cannot write {}: {e}", shown.display()));
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk?).await.map_err(write_err)?;
    }
    out.flush().await.map_err(write_err)
}

/// A file being written in place of `dest`: a temporary file beside it, renamed over it by
/// [`OutputFile::commit`], removed when dropped before that. A `dest` that exists and is no
/// regular file (`/dev/stdout`, a fifo) is written directly.
#[derive(Debug)]
pub(crate) struct OutputFile {
    file: tokio::fs::File,
    dest: PathBuf,
    tmp: Option<PathBuf>,
}

impl OutputFile {
    pub(crate) async fn create(dest: &Path) -> Result<OutputFile, Error> {
        let err = |p: &Path, e: std::io::Error| {
            Error::Local(format!("cannot write {}: {e}", p.display()))
        };
        if let Ok(m) = tokio::fs::metadata(dest).await {
            if m.is_dir() {
                return Err(Error::Local(format!(
                    "cannot write {}: it is a directory",
                    dest.display()
                )));
            }
            if !m.is_file() {
                let file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .open(dest)
                    .await
                    .map_err(|e| err(dest, e))?;
                return Ok(OutputFile {
                    file,
                    dest: dest.to_path_buf(),
                    tmp: None,
                });
            }
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = dest
            .file_name()
            .ok_or_else(|| {
                Error::Local(format!("cannot write {}: it names no file", dest.display()))
            })?
            .to_string_lossy()
            .into_owned();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp = dir.join(format!(".{base}.{}-{nanos:08x}.part", std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(|e| err(dest, e))?;
        Ok(OutputFile {
            file,
            dest: dest.to_path_buf(),
            tmp: Some(tmp),
        })
    }

    pub(crate) fn writer(&mut self) -> &mut tokio::fs::File {
        &mut self.file
    }

    /// Makes the file durable and puts it in place.
    pub(crate) async fn commit(mut self) -> Result<(), Error> {
        let err =
            |e: std::io::Error| Error::Local(format!("cannot write {}: {e}", self.dest.display()));
        let Some(tmp) = self.tmp.clone() else {
            return self.file.flush().await.map_err(err);
        };
        self.file.sync_all().await.map_err(err)?;
        tokio::fs::rename(&tmp, &self.dest).await.map_err(err)?;
        self.tmp = None;
        if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

pub async fn load(ctx: &Context, a: LoadArgs) -> Result<(), Error> {
    let images = match &a.input {
        Some(path) => {
            let f = tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::Local(format!("cannot open {}: {e}", path.display())))?;
            import_from(ctx, f, "", a.quiet).await?
        }
        None => {
            if std::io::stdin().is_terminal() {
                return Err(Error::Local(
                    "requested load from stdin, but stdin is empty".into(),
                ));
            }
            import_from(ctx, tokio::io::stdin(), "", a.quiet).await?
        }
    };
    for i in images {
        println!("{}", berth_docker::loaded_image(&i.name, &i.name));
    }
    Ok(())
}

/// Sends an archive read from `input` to the Import RPC (`name` for images it does not name)
/// and returns the images it made; progress goes to standard error unless `quiet`.
pub async fn import_from(
    ctx: &Context,
    input: impl AsyncRead + Unpin + Send + 'static,
    name: &str,
    quiet: bool,
) -> Result<Vec<api::Image>, Error> {
    let header = api::ImportRequest {
        item: Some(api::import_request::Item::Header(api::ImportHeader {
            name: name.to_string(),
            unpack: true,
            snapshotter: String::new(),
        })),
    };
    // A read error ends the upload; it is kept here so it is reported, not the daemon's
    // complaint about a truncated archive.
    let read_error = std::sync::Arc::new(std::sync::Mutex::new(None::<std::io::Error>));
    let failed = read_error.clone();
    let data = futures::stream::unfold(Some(input), move |input| {
        let failed = failed.clone();
        async move {
            use tokio::io::AsyncReadExt;
            let mut input = input?;
            let mut buf = vec![0u8; 1 << 20];
            match input.read(&mut buf).await {
                Ok(0) => None,
                Err(e) => {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    None
                }
                Ok(n) => {
                    buf.truncate(n);
                    Some((
                        api::ImportRequest {
                            item: Some(api::import_request::Item::Data(buf)),
                        },
                        Some(input),
                    ))
                }
            }
        }
    });
    let stream = futures::StreamExt::chain(futures::stream::once(async { header }), data);
    let result = match ctx.images().import(ctx.req(stream)).await {
        Ok(resp) => crate::images::follow(resp.into_inner(), quiet).await,
        Err(e) => Err(e.into()),
    };
    if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(Error::Local(format!("cannot read the archive: {e}")));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_files_appear_whole_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("berth-cli-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("out.tar");
        std::fs::write(&dest, b"old").unwrap();

        // Dropped before commit: the old file stays, no temporary file is left.
        let mut f = OutputFile::create(&dest).await.unwrap();
        f.writer().write_all(b"half").await.unwrap();
        drop(f);
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        let mut f = OutputFile::create(&dest).await.unwrap();
        f.writer().write_all(b"whole").await.unwrap();
        f.commit().await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"whole");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        assert!(OutputFile::create(&dir).await.is_err());
        assert!(OutputFile::create(&dir.join("no/such/dir/x.tar"))
            .await
            .is_err());
        // Not a regular file: written in place.
        let mut f = OutputFile::create(Path::new("/dev/null")).await.unwrap();
        f.writer().write_all(b"x").await.unwrap();
        f.commit().await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verbs_parse() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct T {
            #[command(subcommand)]
            c: ImageArchiveCommand,
        }
        let t = T::try_parse_from(["t", "save", "-o", "x.tar", "a", "b"]).unwrap();
        assert!(
            matches!(t.c, ImageArchiveCommand::Save(SaveArgs { output: Some(_), ref images }) if images.len() == 2)
        );
        let t = T::try_parse_from(["t", "load", "-i", "x.tar", "-q"]).unwrap();
        assert!(matches!(
            t.c,
            ImageArchiveCommand::Load(LoadArgs {
                input: Some(_),
                quiet: true
            })
        ));
        assert!(T::try_parse_from(["t", "export", "-o", "x.tar"]).is_err());
    }
}
