//! A container's files and settings: `diff`, `export`, `cp`, `rename` and `update`, on the
//! Containers service's RPCs of the same names (the ones the Docker API gateway serves them
//! with). `diff`'s lines are berth-docker's view.
//!
//! `cp` follows Docker's rules on this side: the container's path is stat'ed first
//! (ArchiveStat); a folder receives the source under its own name, a missing path takes the
//! source's content under the new name (its parent must exist), `SRC/.` copies a folder's
//! content, and `-` is a tar on standard input or output. The container side resolves every
//! path inside the container and unpacks with its bounded reader; this side unpacks with the
//! tar crate's `unpack_in`, which keeps entries inside the destination.

use crate::archive::{copy_chunks, OutputFile};
use crate::client::{Context, Error};
use crate::run::{parse_memory, parse_restart};
use crate::verbs::each;
use berth_api::containers::v1 as capi;
use berth_docker::files::{change_line, is_dir_mode, is_symlink_mode};
use clap::Args;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct DiffArgs {
    pub container: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// CONTAINER:SRC_PATH, a local path, or - (a tar on standard input)
    pub src: String,
    /// CONTAINER:DEST_PATH, a local path, or - (a tar on standard output)
    pub dest: String,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 64m); 0 lifts it
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Number of CPUs; 0 lifts the limit
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `berth diff CONTAINER`: Docker's `C /tmp`, `A /tmp/x`, `D /x` lines, by path.
pub async fn diff(ctx: &Context, a: DiffArgs) -> Result<(), Error> {
    let r = ctx
        .containers()
        .changes(ctx.req(capi::ContainerChangesRequest { id: a.container }))
        .await?
        .into_inner();
    for c in &r.changes {
        println!("{}", change_line(c));
    }
    Ok(())
}

/// Writes a stream of tar chunks to `out`.
async fn copy_tar(
    stream: tonic::Streaming<capi::ArchiveChunk>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    shown: &Path,
) -> Result<(), Error> {
    copy_chunks(stream.map(|r| r.map(|c| c.data)), out, shown).await
}

/// `berth export [-o FILE] CONTAINER`: a tar of its filesystem.
pub async fn export(ctx: &Context, a: ExportArgs) -> Result<(), Error> {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        return Err(Error::Local(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
        ));
    }
    let stream = ctx
        .containers()
        .export(ctx.req(capi::ExportContainerRequest { id: a.container }))
        .await?
        .into_inner();
    match a.output {
        None => {
            copy_tar(
                stream,
                &mut tokio::io::stdout(),
                Path::new("standard output"),
            )
            .await
        }
        Some(path) => {
            let mut file = OutputFile::create(&path).await?;
            copy_tar(stream, file.writer(), &path).await?;
            file.commit().await
        }
    }
}

/// `berth rename OLD NEW`.
pub async fn rename(ctx: &Context, a: RenameArgs) -> Result<(), Error> {
    ctx.containers()
        .rename(ctx.req(capi::RenameContainerRequest {
            id: a.container,
            new_name: a.new_name,
        }))
        .await?;
    Ok(())
}

/// `berth update [--memory] [--cpus] [--pids-limit] [--restart] CONTAINER…`, printing each
/// name as given.
pub async fn update(ctx: &Context, a: UpdateArgs) -> u8 {
    let request = match update_request(&a) {
        Ok(r) => r,
        Err(e) => return crate::fail(e),
    };
    each(&a.containers, |id| {
        let request = capi::UpdateContainerRequest {
            id: id.clone(),
            ..request.clone()
        };
        async move {
            let r = ctx
                .containers()
                .update(ctx.req(request))
                .await?
                .into_inner();
            for w in r.warnings {
                eprintln!("{w}");
            }
            println!("{id}");
            Ok(())
        }
    })
    .await
}

fn update_request(a: &UpdateArgs) -> Result<capi::UpdateContainerRequest, Error> {
    let memory = a
        .memory
        .as_deref()
        .map(parse_memory)
        .transpose()
        .map_err(Error::Local)?;
    let nano_cpus = match a.cpus {
        Some(c) if c < 0.0 => {
            return Err(Error::Local("invalid --cpus: it must be positive".into()))
        }
        c => c.map(|c| (c * 1e9) as i64),
    };
    let restart_policy = a
        .restart
        .as_deref()
        .map(parse_restart)
        .transpose()
        .map_err(Error::Local)?;
    if memory.is_none() && nano_cpus.is_none() && a.pids_limit.is_none() && restart_policy.is_none()
    {
        return Err(Error::Local(
            "you must provide one or more flags when using this command".into(),
        ));
    }
    Ok(capi::UpdateContainerRequest {
        id: String::new(),
        memory,
        nano_cpus,
        pids_limit: a.pids_limit,
        restart_policy,
        ..Default::default()
    })
}

/// One side of `cp`: a container's path or a local one.
#[derive(Debug, PartialEq)]
enum Side {
    Container(String, String),
    Local(String),
}

/// `CONTAINER:PATH` or a local path (one with a `/` before any `:`, or starting with `.`, is
/// local, as Docker reads it).
fn side(s: &str) -> Side {
    if s.starts_with('/') || s.starts_with('.') {
        return Side::Local(s.into());
    }
    match s.split_once(':') {
        Some((c, p)) if !c.is_empty() && !c.contains('/') => Side::Container(c.into(), p.into()),
        _ => Side::Local(s.into()),
    }
}

/// `berth cp [-a] [-L] SRC DEST`.
pub async fn cp(ctx: &Context, a: CpArgs) -> Result<(), Error> {
    match (side(&a.src), side(&a.dest)) {
        (Side::Container(c, p), Side::Local(dest)) => copy_from(ctx, &a, &c, &p, &dest).await,
        (Side::Local(src), Side::Container(c, p)) => copy_to(ctx, &a, &src, &c, &p).await,
        (Side::Container(..), Side::Container(..)) => Err(Error::Local(
            "copying between containers is not supported".into(),
        )),
        (Side::Local(..), Side::Local(..)) => Err(Error::Local(
            "must specify at least one container source".into(),
        )),
    }
}

fn absolute(p: &str) -> String {
    if p.starts_with('/') {
        p.into()
    } else {
        format!("/{p}")
    }
}

async fn stat(ctx: &Context, container: &str, path: &str) -> Result<capi::PathStat, Error> {
    Ok(ctx
        .containers()
        .archive_stat(ctx.req(capi::ArchivePathRequest {
            id: container.into(),
            path: path.into(),
        }))
        .await?
        .into_inner())
}

/// CONTAINER:SRC → a local DEST (or `-`, the tar itself).
async fn copy_from(
    ctx: &Context,
    a: &CpArgs,
    container: &str,
    src: &str,
    dest: &str,
) -> Result<(), Error> {
    let mut src = absolute(src);
    let st = stat(ctx, container, &src).await?;
    if a.follow_link && is_symlink_mode(st.mode) {
        src = st.link_target.clone();
    }
    let mut stream = ctx
        .containers()
        .archive_get(ctx.req(capi::ArchivePathRequest {
            id: container.into(),
            path: src.clone(),
        }))
        .await?
        .into_inner();
    if dest == "-" {
        return copy_tar(
            stream,
            &mut tokio::io::stdout(),
            Path::new("standard output"),
        )
        .await;
    }
    let mut tar = Vec::new();
    while let Some(chunk) = stream.next().await {
        tar.extend_from_slice(&chunk?.data);
    }
    let (parent, name) = local_target(&src, dest, is_dir_mode(st.mode))?;
    let archive = a.archive;
    tokio::task::spawn_blocking(move || unpack_renamed(&tar, &parent, &name, archive))
        .await
        .map_err(|e| Error::Local(e.to_string()))?
}

/// Where a copy from a container lands: the local folder to unpack in and the name the
/// source's top entry takes there.
fn local_target(src: &str, dest: &str, src_is_dir: bool) -> Result<(PathBuf, String), Error> {
    let dest_path = Path::new(dest);
    let src_base = Path::new(src.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    let content_only = src.ends_with("/.");
    match std::fs::metadata(dest_path) {
        Ok(m) if m.is_dir() && !content_only => Ok((dest_path.to_path_buf(), src_base)),
        Ok(m) if m.is_dir() => Ok(split_local(dest_path)),
        Ok(_) if src_is_dir => Err(Error::Local(format!(
            "cannot copy a directory to a file: {dest}"
        ))),
        Ok(_) => Ok(split_local(dest_path)),
        Err(_) if dest.ends_with('/') && !src_is_dir => Err(Error::Local(format!(
            "the destination directory must exist: {dest}"
        ))),
        Err(_) => {
            let (parent, name) = split_local(dest_path);
            if !parent.is_dir() {
                return Err(Error::Local(format!(
                    "the destination directory {} does not exist",
                    parent.display()
                )));
            }
            Ok((parent, name))
        }
    }
}

fn split_local(p: &Path) -> (PathBuf, String) {
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    (parent, name)
}

/// Unpacks `tar` in `parent`, its top entry renamed `name`.
fn unpack_renamed(tar: &[u8], parent: &Path, name: &str, owners: bool) -> Result<(), Error> {
    let local =
        |e: std::io::Error| Error::Local(format!("cannot copy to {}: {e}", parent.display()));
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_ownerships(owners);
    archive.set_preserve_permissions(true);
    for entry in archive.entries().map_err(local)? {
        let mut entry = entry.map_err(local)?;
        let path = entry.path().map_err(local)?.into_owned();
        let mut comps = path.components();
        comps.next();
        let rest = comps.as_path();
        let renamed = if rest.as_os_str().is_empty() {
            PathBuf::from(name)
        } else {
            Path::new(name).join(rest)
        };
        if name == "." && renamed.as_os_str() == "." {
            continue;
        }
        let target = parent.join(&renamed);
        if entry.header().entry_type().is_dir() && target.is_dir() {
            continue;
        }
        if !target.starts_with(parent) {
            continue;
        }
        // unpack_in refuses paths out of `parent` (`..`) and writes through no symlink
        // the archive made.
        let mut h = entry.header().clone();
        h.set_path(&renamed).map_err(local)?;
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(local)?;
        let mut one = tar::Builder::new(Vec::new());
        if let (Ok(Some(link)), true) = (entry.link_name(), h.entry_type().is_symlink()) {
            one.append_link(&mut h, &renamed, link).map_err(local)?;
        } else {
            one.append_data(&mut h, &renamed, data.as_slice())
                .map_err(local)?;
        }
        let bytes = one.into_inner().map_err(local)?;
        let mut a = tar::Archive::new(bytes.as_slice());
        a.set_preserve_ownerships(owners);
        a.set_preserve_permissions(true);
        for e in a.entries().map_err(local)? {
            e.map_err(local)?.unpack_in(parent).map_err(local)?;
        }
    }
    Ok(())
}

/// A local SRC (or `-`, a tar on standard input) → CONTAINER:DEST.
async fn copy_to(
    ctx: &Context,
    a: &CpArgs,
    src: &str,
    container: &str,
    dest: &str,
) -> Result<(), Error> {
    let dest = absolute(dest);
    let (folder, tar) = if src == "-" {
        let mut tar = Vec::new();
        std::io::stdin()
            .read_to_end(&mut tar)
            .map_err(|e| Error::Local(format!("cannot read standard input: {e}")))?;
        (dest, tar)
    } else {
        let meta = if a.follow_link {
            std::fs::metadata(src)
        } else {
            std::fs::symlink_metadata(src)
        }
        .map_err(|e| Error::Local(format!("cannot copy {src}: {e}")))?;
        let (folder, name) = container_target(ctx, container, &dest, src, meta.is_dir()).await?;
        let (src, follow) = (PathBuf::from(src), a.follow_link);
        let tar = tokio::task::spawn_blocking(move || pack(&src, &name, follow))
            .await
            .map_err(|e| Error::Local(e.to_string()))??;
        (folder, tar)
    };
    let mut requests = vec![capi::ArchivePutRequest {
        id: container.into(),
        path: folder,
        no_overwrite_dir_non_dir: true,
        copy_uid_gid: a.archive,
        data: Vec::new(),
    }];
    requests.extend(tar.chunks(1 << 20).map(|c| capi::ArchivePutRequest {
        data: c.to_vec(),
        ..Default::default()
    }));
    ctx.containers()
        .archive_put(ctx.req(tokio_stream::iter(requests)))
        .await?;
    Ok(())
}

/// Where a local source lands in the container: the folder to unpack in and the name of
/// the source's top entry there.
async fn container_target(
    ctx: &Context,
    container: &str,
    dest: &str,
    src: &str,
    src_is_dir: bool,
) -> Result<(String, String), Error> {
    let src_base = Path::new(src.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    let (parent, base) = {
        let trimmed = dest.trim_end_matches('/');
        match trimmed.rsplit_once('/') {
            Some((p, b)) => (
                if p.is_empty() {
                    "/".into()
                } else {
                    p.to_string()
                },
                b.to_string(),
            ),
            None => ("/".into(), trimmed.to_string()),
        }
    };
    match stat(ctx, container, dest).await {
        Ok(st) if is_dir_mode(st.mode) && src.ends_with("/.") => Ok((parent, base)),
        Ok(st) if is_dir_mode(st.mode) => Ok((dest.to_string(), src_base)),
        Ok(_) if src_is_dir => Err(Error::Local(format!(
            "cannot copy a directory to a file: {container}:{dest}"
        ))),
        Ok(_) => Ok((parent, base)),
        Err(Error::Status(s)) if s.code() == tonic::Code::NotFound => {
            if dest.ends_with('/') && !src_is_dir {
                return Err(Error::Local(format!(
                    "the destination directory must exist: {container}:{dest}"
                )));
            }
            Ok((parent, base))
        }
        Err(e) => Err(e),
    }
}

/// A tar of local `src` whose top entry is `name`.
fn pack(src: &Path, name: &str, follow: bool) -> Result<Vec<u8>, Error> {
    let err = |e: std::io::Error| Error::Local(format!("cannot copy {}: {e}", src.display()));
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(follow);
    let meta = std::fs::symlink_metadata(src).map_err(err)?;
    if meta.is_dir() || (follow && src.is_dir()) {
        b.append_dir_all(name, src).map_err(err)?;
    } else {
        b.append_path_with_name(src, name).map_err(err)?;
    }
    b.into_inner().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh scratch folder (the CLI has no tempfile dependency).
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("berth-cp-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn sides_as_docker_reads_them() {
        assert_eq!(
            side("web:/etc"),
            Side::Container("web".into(), "/etc".into())
        );
        assert_eq!(side("./a:b"), Side::Local("./a:b".into()));
        assert_eq!(side("/tmp/x"), Side::Local("/tmp/x".into()));
        assert_eq!(side("-"), Side::Local("-".into()));
        assert_eq!(side("a/b:c"), Side::Local("a/b:c".into()));
    }

    #[test]
    fn local_targets_follow_dockers_rules() {
        let t = Scratch::new("targets");
        let d = t.path().display().to_string();
        // Into an existing folder, under the source's name.
        assert_eq!(
            local_target("/etc", &d, true).unwrap(),
            (t.path().to_path_buf(), "etc".into())
        );
        // A new path takes the content under its own name.
        let out = format!("{d}/out");
        assert_eq!(
            local_target("/etc", &out, true).unwrap(),
            (t.path().to_path_buf(), "out".into())
        );
        assert!(local_target("/etc/passwd", &format!("{d}/nope/"), false).is_err());
        assert!(local_target("/etc", &format!("{d}/a/b"), true).is_err());
    }

    #[test]
    fn a_copied_tree_is_renamed_and_stays_inside() {
        let t = Scratch::new("tree");
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "x").unwrap();
        let tar = pack(&src, "etc", false).unwrap();
        let dest = t.path().join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        unpack_renamed(&tar, &dest, "out", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("out/sub/f")).unwrap(),
            "x"
        );
    }
}
