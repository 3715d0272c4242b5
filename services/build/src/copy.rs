//! COPY and ADD: what a step copies, as an uncompressed layer tar and a digest for the cache.
//!
//! Sources are read from a root folder — the unpacked context, or another stage's rootfs
//! mounted read-only — and every path is resolved inside that root: `..` stops at the root
//! and a symlink's target (absolute ones too) is taken relative to it, never to the host.
//! Docker's rules: a folder copies its contents; the destination is a folder when it ends in
//! `/` or there are several sources; a relative destination is relative to WORKDIR; files keep
//! their mode and mtime and belong to 0:0 unless `--chown`. ADD also unpacks local archives
//! (plain tar, gzip, bzip2, xz, zstd; detected by content, as Docker does).
//!
//! The digest covers names, types, modes, ownership, link targets and contents, not mtimes,
//! so touching a file does not invalidate the cache but changing it does.

use berth_archive::{ArchiveError, Entry, Reader};
use berth_core::config::Limits;
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("forbidden path outside the build context: {0}")]
    Outside(String),
    #[error("{0}: no such file or directory")]
    Missing(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Archive(#[from] ArchiveError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Ownership given with `--chown`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
}

/// `--chown=uid[:gid]` in numbers; names go through [`Owner::resolve`].
impl Owner {
    pub fn numeric(spec: &str) -> Option<Owner> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let uid: u64 = u.parse().ok()?;
        let gid: u64 = match g {
            Some(g) => g.parse().ok()?,
            None => uid,
        };
        Some(Owner { uid, gid })
    }

    /// Resolves `user[:group]` with the `passwd` and `group` files' text of the image (names
    /// or numbers; a user without a group takes the user's primary group).
    pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Owner, String> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let lookup = |text: &str, name: &str, idx: usize| -> Option<Vec<String>> {
            text.lines()
                .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
                .find(|f| f.len() > idx && f[0] == name)
        };
        let (uid, primary) = match u.parse::<u64>() {
            Ok(n) => (n, None),
            Err(_) => {
                let f = lookup(passwd, u, 3).ok_or_else(|| {
                    format!("unable to convert uid/gid chown string to host mapping: no such user {u:?} in /etc/passwd")
                })?;
                (
                    f[2].parse().map_err(|_| format!("bad uid for {u}"))?,
                    f[3].parse::<u64>().ok(),
                )
            }
        };
        let gid = match g {
            None => primary.unwrap_or(uid),
            Some(g) => match g.parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    let f = lookup(group, g, 2).ok_or_else(|| {
                        format!("unable to convert uid/gid chown string to host mapping: no such group {g:?} in /etc/group")
                    })?;
                    f[2].parse().map_err(|_| format!("bad gid for {g}"))?
                }
            },
        };
        Ok(Owner { uid, gid })
    }
}

/// Resolves `path` inside `root`: `..` stops at the root, symlinks are followed (the last
/// component only with `follow_last`) with their targets taken relative to `root`.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut todo: Vec<String> = components(path).into_iter().rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let candidate = root.join(done.iter().collect::<PathBuf>()).join(&c);
        let last = todo.is_empty();
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() && (!last || follow_last) => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other(format!(
                        "too many levels of symbolic links in {path}"
                    )));
                }
                let target = fs::read_link(&candidate)?;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    done.clear();
                }
                for tc in components(&t).into_iter().rev() {
                    todo.push(tc);
                }
            }
            _ => done.push(c),
        }
    }
    Ok(root.join(done.iter().collect::<PathBuf>()))
}

/// The folders (relative to `root`, parents first) WORKDIR must create for the absolute
/// `dir` to exist: none when it is there. Existing parts are followed through symlinks
/// inside `root`, so a new folder goes where the link leads, never over the link; a part
/// that is not a folder is an error, as `mkdir -p` gives.
pub fn missing_dirs(root: &Path, dir: &str) -> Result<Vec<String>, String> {
    let mut base = String::new();
    let mut comps = components(dir).into_iter();
    for c in comps.by_ref() {
        let candidate = join_rel(&base, &c);
        let p = resolve_in_root(root, &candidate, true).map_err(|e| e.to_string())?;
        match fs::metadata(&p) {
            Ok(m) if m.is_dir() => {
                base = p
                    .strip_prefix(root)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or(candidate);
            }
            Ok(_) => return Err(format!("mkdir {dir}: not a directory")),
            Err(_) => {
                // Resolved but absent: a dangling link makes its target's folder.
                let rel = p
                    .strip_prefix(root)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or(candidate);
                let mut out = vec![rel.clone()];
                let mut cur = rel;
                for c in comps.by_ref() {
                    cur = join_rel(&cur, &c);
                    out.push(cur.clone());
                }
                return Ok(out);
            }
        }
    }
    Ok(Vec::new())
}

/// The components of a path, keeping `..`, dropping `.` and the root.
fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// `path` made absolute (relative to `workdir`) and normalised; keeps a trailing `/`.
pub fn destination(dest: &str, workdir: &str) -> String {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!(
            "{}/{}",
            if workdir.is_empty() { "/" } else { workdir },
            dest
        )
    };
    let mut out: Vec<String> = Vec::new();
    for c in components(&joined) {
        if c == ".." {
            out.pop();
        } else {
            out.push(c);
        }
    }
    let mut s = format!("/{}", out.join("/"));
    if (dest.ends_with('/') || dest.ends_with("/.") || dest == ".") && s != "/" {
        s.push('/');
    }
    s
}

/// Normalises a source path of the context; `None` when it leaves the context.
pub fn context_relative(src: &str) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    for c in components(src) {
        if c == ".." {
            out.pop()?;
        } else {
            out.push(c);
        }
    }
    Some(out.join("/"))
}

/// Go's filepath.Match on one component: `*`, `?`, `[a-z]`, `[^a]`, `\x`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| rec(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && rec(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                let mut i = 1;
                let negate = matches!(p.get(1), Some('^') | Some('!'));
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let start = i;
                while i < p.len() && (p[i] != ']' || i == start) {
                    if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                        if p[i] <= *c && *c <= p[i + 2] {
                            matched = true;
                        }
                        i += 3;
                    } else {
                        if p[i] == *c {
                            matched = true;
                        }
                        i += 1;
                    }
                }
                if i >= p.len() {
                    return false;
                }
                matched != negate && rec(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && rec(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && rec(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    rec(&p, &n)
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The paths (relative to `root`, no leading `/`) a source pattern names; empty when none.
pub fn expand_source(root: &Path, src: &str) -> io::Result<Vec<String>> {
    let comps = components(src);
    if !comps.iter().any(|c| has_glob(c)) {
        return Ok(vec![comps.join("/")]);
    }
    let mut found = vec![String::new()];
    for c in &comps {
        let mut next = Vec::new();
        for base in &found {
            if !has_glob(c) {
                next.push(join_rel(base, c));
                continue;
            }
            let dir = resolve_in_root(root, base, true)?;
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| glob_match(c, n))
                .collect();
            names.sort();
            for n in names {
                next.push(join_rel(base, &n));
            }
        }
        found = next;
    }
    Ok(found)
}

fn join_rel(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// The kind of source a step copied, for Docker's history text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Dir,
    Multi,
}

/// A layer tar being written, with the digest of what it holds.
pub struct LayerTar<W: Write> {
    builder: tar::Builder<W>,
    hash: Sha256,
    pub owner: Option<Owner>,
    pub entries: usize,
}

impl<W: Write> std::fmt::Debug for LayerTar<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerTar")
            .field("entries", &self.entries)
            .finish()
    }
}

/// A reader that hashes what passes through it.
struct Hashing<'a, R> {
    inner: R,
    hash: &'a mut Sha256,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> LayerTar<W> {
    pub fn new(out: W, owner: Option<Owner>) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Complete);
        builder.follow_symlinks(false);
        LayerTar {
            builder,
            hash: Sha256::new(),
            owner,
            entries: 0,
        }
    }

    #[allow(clippy::too_many_arguments)] // the fields of one tar header
    fn header(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        mtime: u64,
        size: u64,
        uid: u64,
        gid: u64,
        link: Option<&str>,
    ) -> tar::Header {
        let (uid, gid) = match self.owner {
            Some(o) => (o.uid, o.gid),
            None => (uid, gid),
        };
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode & 0o7777);
        h.set_mtime(mtime);
        h.set_size(size);
        h.set_uid(uid);
        h.set_gid(gid);
        self.hash.update(
            format!(
                "{name}\0{:?}\0{:o}\0{uid}:{gid}\0{}\0{size}\0",
                kind.as_byte(),
                mode & 0o7777,
                link.unwrap_or("")
            )
            .as_bytes(),
        );
        self.entries += 1;
        h
    }

    /// Adds a folder entry `name` (no leading `/`).
    pub fn dir(&mut self, name: &str, mode: u32, mtime: u64, uid: u64, gid: u64) -> io::Result<()> {
        let name = format!("{}/", name.trim_end_matches('/'));
        let mut h = self.header(
            &name,
            tar::EntryType::Directory,
            mode,
            mtime,
            0,
            uid,
            gid,
            None,
        );
        self.builder.append_data(&mut h, &name, io::empty())
    }

    /// Adds a file entry whose contents come from `data`.
    #[allow(clippy::too_many_arguments)]
    pub fn file(
        &mut self,
        name: &str,
        mode: u32,
        mtime: u64,
        size: u64,
        uid: u64,
        gid: u64,
        data: impl Read,
    ) -> io::Result<()> {
        let mut h = self.header(
            name,
            tar::EntryType::Regular,
            mode,
            mtime,
            size,
            uid,
            gid,
            None,
        );
        let mut hash = Sha256::new();
        let r = Hashing {
            inner: data.take(size),
            hash: &mut hash,
        };
        self.builder.append_data(&mut h, name, r)?;
        let content = hash.finalize();
        self.hash.update(content);
        Ok(())
    }

    /// Adds a symlink entry.
    pub fn symlink(
        &mut self,
        name: &str,
        target: &str,
        mtime: u64,
        uid: u64,
        gid: u64,
    ) -> io::Result<()> {
        let mut h = self.header(
            name,
            tar::EntryType::Symlink,
            0o777,
            mtime,
            0,
            uid,
            gid,
            Some(target),
        );
        self.builder.append_link(&mut h, name, target)
    }

    /// Copies what is at `src` (a resolved host path inside the source root) to `dest` (no
    /// leading `/`), recursively for folders; the folder itself becomes `dest`.
    pub fn copy_path(&mut self, src: &Path, dest: &str) -> io::Result<()> {
        let m = fs::symlink_metadata(src)?;
        let mtime = m.mtime().max(0) as u64;
        let mode = m.permissions().mode();
        if m.file_type().is_symlink() {
            let t = fs::read_link(src)?;
            return self.symlink(dest, &t.to_string_lossy(), mtime, 0, 0);
        }
        if m.is_dir() {
            if !dest.is_empty() {
                self.dir(dest, mode, mtime, 0, 0)?;
            }
            let mut names: Vec<_> = fs::read_dir(src)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for n in names {
                let child = join_rel(dest, &n.to_string_lossy());
                self.copy_path(&src.join(&n), &child)?;
            }
            return Ok(());
        }
        if m.is_file() {
            let f = fs::File::open(src)?;
            return self.file(dest, mode, mtime, m.len(), 0, 0, f);
        }
        Ok(())
    }

    /// Unpacks the archive `src` (tar, gzip, bzip2, xz, zstd) into `dest`, keeping its owners,
    /// within `limits`. A sparse file is refused: the layer would hold it expanded.
    pub fn extract_archive(
        &mut self,
        src: &Path,
        dest: &str,
        limits: &Limits,
    ) -> Result<(), CopyError> {
        let r = open_archive(src)?.ok_or_else(|| io::Error::other("not an archive"))?;
        let mut a = Reader::new(r, *limits);
        while let Some(e) = a.next_entry()? {
            let raw = e.name();
            let Some(comps) = crate::context::safe_components(&raw) else {
                return Err(CopyError::Invalid(format!(
                    "archive entry {raw:?} leaves its destination"
                )));
            };
            if comps.is_empty() {
                continue;
            }
            let name = join_rel(dest, &comps.join("/"));
            let h = &e.header;
            let mode = h.mode().unwrap_or(0o644);
            let mtime = h.mtime().unwrap_or(0);
            let uid = h.uid().unwrap_or(0);
            let gid = h.gid().unwrap_or(0);
            match h.entry_type() {
                tar::EntryType::Directory => self.dir(&name, mode, mtime, uid, gid)?,
                tar::EntryType::Symlink => {
                    let t = link_text(&e);
                    self.symlink(&name, &t, mtime, uid, gid)?
                }
                tar::EntryType::Link => {
                    let t = link_text(&e);
                    let Some(tc) = crate::context::safe_components(&t) else {
                        return Err(CopyError::Invalid(format!(
                            "archive entry {raw:?} links outside its destination"
                        )));
                    };
                    let target = join_rel(dest, &tc.join("/"));
                    let mut hd = self.header(
                        &name,
                        tar::EntryType::Link,
                        mode,
                        mtime,
                        0,
                        uid,
                        gid,
                        Some(&target),
                    );
                    self.builder.append_link(&mut hd, &name, &target)?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = e.size;
                    self.file(&name, mode, mtime, size, uid, gid, a.data())?
                }
                tar::EntryType::GNUSparse => {
                    return Err(CopyError::Invalid(format!(
                        "archive entry {raw:?} is a sparse file, which the layer would hold expanded; unpack it in a RUN step instead"
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends the tar; gives the writer and the hex digest of what it holds.
    pub fn finish(self) -> io::Result<(W, String)> {
        let w = self.builder.into_inner()?;
        Ok((w, hex::encode(self.hash.finalize())))
    }
}

fn link_text(e: &Entry) -> String {
    String::from_utf8_lossy(e.link.as_deref().unwrap_or_default()).into_owned()
}

/// An archive ADD unpacks: a reader of its tar, or `None` when `path` is not one.
pub fn open_archive(path: &Path) -> io::Result<Option<Box<dyn Read>>> {
    let mut head = [0u8; 512];
    let mut f = fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let f = fs::File::open(path)?;
    let reader: Box<dyn Read> = if head[..n].starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(f)))
    } else if head[..n].starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(io::BufReader::new(f)))
    } else if head[..n].starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            io::BufReader::new(f),
        ))
    } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(f)?)
    } else if n >= 262 && &head[257..262] == b"ustar" {
        return Ok(Some(Box::new(f)));
    } else {
        return Ok(None);
    };
    // A compressed file is an archive only if what it holds is a tar.
    let mut probe = reader;
    let mut inner = [0u8; 512];
    let mut m = 0;
    while m < inner.len() {
        let r = match probe.read(&mut inner[m..]) {
            Ok(r) => r,
            Err(_) => return Ok(None),
        };
        if r == 0 {
            break;
        }
        m += r;
    }
    if m < 262 || &inner[257..262] != b"ustar" {
        return Ok(None);
    }
    Ok(Some(Box::new(
        io::Cursor::new(inner[..m].to_vec()).chain(probe),
    )))
}

/// One source of a COPY/ADD: the word (expanded) and, for a URL that ADD downloaded, the
/// downloaded file and the name it takes.
pub type Source = (String, Option<(PathBuf, String)>);

/// A source found: where it is, the name it had, and whether ADD downloaded it.
struct Matched {
    path: PathBuf,
    name: String,
    downloaded: bool,
}

/// Seconds since the epoch: the mtime of what a step makes itself (WORKDIR's folders, a
/// downloaded file).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes the layer tar of a COPY/ADD to `out`; gives the kind of source and the digest.
/// An archive ADD unpacks stays within `limits`.
#[allow(clippy::too_many_arguments)]
pub fn build_copy_tar(
    root: &Path,
    sources: &[Source],
    dest: &str,
    owner: Option<Owner>,
    extract: bool,
    in_context: bool,
    out: &Path,
    limits: &Limits,
) -> Result<(SourceKind, String), CopyError> {
    let f = io::BufWriter::new(fs::File::create(out)?);
    let mut t = LayerTar::new(f, owner);
    let matched = match_sources(root, sources, in_context)?;
    let dest_is_dir = dest.ends_with('/') || matched.len() > 1;
    if matched.len() > 1 && !dest.ends_with('/') {
        return Err(CopyError::Invalid(format!("When using COPY with more than one source file, the destination must be a directory and end with a / (got {dest:?})")));
    }
    let dest_rel = dest
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string();
    let kind = match matched.as_slice() {
        [m] if m.path.is_dir() => SourceKind::Dir,
        [_] => SourceKind::File,
        _ => SourceKind::Multi,
    };
    for m in &matched {
        write_source(&mut t, m, &dest_rel, dest_is_dir, extract, limits)?;
    }
    let (mut w, digest) = t.finish()?;
    w.flush()?;
    Ok((kind, digest))
}

/// Every match of the sources, resolved in `root`, with the name it had.
fn match_sources(
    root: &Path,
    sources: &[Source],
    in_context: bool,
) -> Result<Vec<Matched>, CopyError> {
    let mut matched = Vec::new();
    for (src, download) in sources {
        if let Some((path, name)) = download {
            matched.push(Matched {
                path: path.clone(),
                name: name.clone(),
                downloaded: true,
            });
            continue;
        }
        let rel = if in_context {
            context_relative(src).ok_or_else(|| CopyError::Outside(src.clone()))?
        } else {
            src.clone()
        };
        let found = expand_source(root, &rel)?;
        if found.is_empty() {
            return Err(CopyError::Missing(format!(
                "no source files were specified or matched by {src:?}"
            )));
        }
        for m in found {
            let p = resolve_in_root(root, &m, true)?;
            if fs::symlink_metadata(&p).is_err() {
                return Err(CopyError::Missing(format!(
                    "stat {src}: file not found in build context or excluded by .dockerignore"
                )));
            }
            let name = Path::new(&m)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            matched.push(Matched {
                path: p,
                name,
                downloaded: false,
            });
        }
    }
    Ok(matched)
}

/// Writes one matched source under `dest_rel`: a folder's contents, an archive ADD unpacks,
/// or a file under its own name (in a folder destination) or the destination's.
fn write_source<W: Write>(
    t: &mut LayerTar<W>,
    m: &Matched,
    dest_rel: &str,
    dest_is_dir: bool,
    extract: bool,
    limits: &Limits,
) -> Result<(), CopyError> {
    let meta = fs::metadata(&m.path)?;
    if meta.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&m.path)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        names.sort();
        if names.is_empty() && !dest_rel.is_empty() {
            t.dir(dest_rel, 0o755, 0, 0, 0)?;
        }
        for n in names {
            t.copy_path(&m.path.join(&n), &join_rel(dest_rel, &n.to_string_lossy()))?;
        }
        return Ok(());
    }
    if extract && !m.downloaded && open_archive(&m.path)?.is_some() {
        t.extract_archive(&m.path, dest_rel, limits)?;
        return Ok(());
    }
    let target = if dest_is_dir || dest_rel.is_empty() {
        join_rel(dest_rel, &m.name)
    } else {
        dest_rel.to_string()
    };
    if m.downloaded {
        let f = fs::File::open(&m.path)?;
        t.file(&target, 0o600, now(), meta.len(), 0, 0, f)?;
    } else {
        t.copy_path(&m.path, &target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(destination("/root/", "/"), "/root/");
        assert_eq!(destination("demo", "/root"), "/root/demo");
        assert_eq!(destination("./", "/app"), "/app/");
        assert_eq!(destination(".", "/app"), "/app/");
        assert_eq!(destination("../x", "/app"), "/x");
        assert_eq!(destination("/", "/app"), "/");
        assert_eq!(destination("x", ""), "/x");
    }

    #[test]
    fn sources_cannot_leave_the_context() {
        assert_eq!(context_relative("a/./b").as_deref(), Some("a/b"));
        assert_eq!(context_relative("a/../b").as_deref(), Some("b"));
        assert_eq!(context_relative("/abs").as_deref(), Some("abs"));
        assert_eq!(context_relative("../x"), None);
        assert_eq!(context_relative("a/../../x"), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.tx"));
        assert!(glob_match("fi?e", "file"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
    }

    #[test]
    fn expand_globs_in_a_folder() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a.txt", "b.txt", "c.md"] {
            fs::write(d.path().join(f), f).unwrap();
        }
        assert_eq!(
            expand_source(d.path(), "*.txt").unwrap(),
            vec!["a.txt", "b.txt"]
        );
        assert!(expand_source(d.path(), "*.none").unwrap().is_empty());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/passwd"), "inside").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", d.path().join("up")).unwrap();
        let p = resolve_in_root(d.path(), "abs", true).unwrap();
        assert_eq!(fs::read_to_string(p).unwrap(), "inside");
        let p = resolve_in_root(d.path(), "up/passwd", true).unwrap();
        assert_eq!(fs::read_to_string(p).unwrap(), "inside");
        let p = resolve_in_root(d.path(), "../../etc/passwd", true).unwrap();
        assert!(p.starts_with(d.path()));
    }

    #[test]
    fn digest_follows_content_and_mode_not_mtime() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        let digest = || {
            let mut t = LayerTar::new(Vec::new(), None);
            t.copy_path(&f, "app/f").unwrap();
            t.finish().unwrap().1
        };
        fs::write(&f, "one").unwrap();
        let a = digest();
        filetime::set_file_mtime(&f, filetime::FileTime::from_unix_time(1000, 0)).unwrap();
        assert_eq!(a, digest());
        fs::write(&f, "two").unwrap();
        let b = digest();
        assert_ne!(a, b);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o700)).unwrap();
        assert_ne!(b, digest());
        let mut t = LayerTar::new(Vec::new(), Some(Owner { uid: 1, gid: 1 }));
        t.copy_path(&f, "app/f").unwrap();
        assert_ne!(digest(), t.finish().unwrap().1);
    }

    #[test]
    fn workdir_folders_to_create() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr/src")).unwrap();
        fs::write(d.path().join("file"), "x").unwrap();
        std::os::unix::fs::symlink("/usr/src", d.path().join("link")).unwrap();
        assert!(missing_dirs(d.path(), "/usr/src").unwrap().is_empty());
        assert!(missing_dirs(d.path(), "/").unwrap().is_empty());
        assert_eq!(
            missing_dirs(d.path(), "/usr/src/app/lib").unwrap(),
            vec!["usr/src/app", "usr/src/app/lib"]
        );
        assert_eq!(missing_dirs(d.path(), "/new").unwrap(), vec!["new"]);
        // Through a symlink: made where it leads, not over the link.
        assert_eq!(
            missing_dirs(d.path(), "/link/app").unwrap(),
            vec!["usr/src/app"]
        );
        assert!(missing_dirs(d.path(), "/link").unwrap().is_empty());
        assert!(missing_dirs(d.path(), "/file/app").is_err());
    }

    #[test]
    fn chown_specs() {
        let passwd = "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(Owner::numeric("1:2"), Some(Owner { uid: 1, gid: 2 }));
        assert_eq!(Owner::numeric("7"), Some(Owner { uid: 7, gid: 7 }));
        assert_eq!(Owner::numeric("www"), None);
        assert_eq!(
            Owner::resolve("www", passwd, group),
            Ok(Owner { uid: 33, gid: 34 })
        );
        assert_eq!(
            Owner::resolve("www:staff", passwd, group),
            Ok(Owner { uid: 33, gid: 50 })
        );
        assert!(Owner::resolve("nobody", passwd, group).is_err());
    }

    #[test]
    fn archives_are_detected_by_content() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(6);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "inner", &b"packed"[..]).unwrap();
        let tar_bytes = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_bytes).unwrap();
        fs::write(d.path().join("x.tgz"), gz.finish().unwrap()).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar_bytes).unwrap();
        fs::write(d.path().join("x.tar.bz2"), bz.finish().unwrap()).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar_bytes).unwrap();
        fs::write(d.path().join("x.tar.xz"), xz.finish().unwrap()).unwrap();
        fs::write(
            d.path().join("x.tar.zst"),
            zstd::encode_all(&tar_bytes[..], 1).unwrap(),
        )
        .unwrap();
        fs::write(d.path().join("x.tar"), &tar_bytes).unwrap();
        // Compressed text is not an archive.
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(b"just text").unwrap();
        fs::write(d.path().join("text.bz2"), bz.finish().unwrap()).unwrap();
        assert!(open_archive(&d.path().join("text.bz2")).unwrap().is_none());
        fs::write(d.path().join("plain"), "not an archive").unwrap();
        assert!(open_archive(&d.path().join("plain")).unwrap().is_none());
        for f in ["x.tgz", "x.tar.bz2", "x.tar.xz", "x.tar.zst", "x.tar"] {
            let mut t = LayerTar::new(Vec::new(), None);
            t.extract_archive(&d.path().join(f), "unpacked", &Limits::default())
                .unwrap();
            let (out, _) = t.finish().unwrap();
            let mut a = tar::Archive::new(&out[..]);
            let entries: Vec<(String, Vec<u8>)> = a
                .entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let name = e.path().unwrap().to_string_lossy().into_owned();
                    let mut data = Vec::new();
                    e.read_to_end(&mut data).unwrap();
                    (name, data)
                })
                .collect();
            assert_eq!(
                entries,
                vec![("unpacked/inner".to_string(), b"packed".to_vec())],
                "{f}"
            );
        }
    }

    fn names_in(tar: &Path) -> Vec<String> {
        let mut a = tar::Archive::new(std::fs::File::open(tar).unwrap());
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn copy_path_rules() {
        let ctx = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("file"), "one").unwrap();
        std::fs::create_dir(ctx.path().join("dir")).unwrap();
        std::fs::write(ctx.path().join("dir/a"), "a").unwrap();
        let tar = out.path().join("l.tar");
        let src = |s: &str| (s.to_string(), None);
        let copy = |srcs: &[(String, Option<(PathBuf, String)>)], dest: &str| {
            build_copy_tar(
                ctx.path(),
                srcs,
                dest,
                None,
                false,
                true,
                &tar,
                &Limits::default(),
            )
        };
        // A file to a folder keeps its name; to a path without `/` takes that name.
        copy(&[src("file")], "/root/").unwrap();
        assert_eq!(names_in(&tar), vec!["root/file"]);
        copy(&[src("file")], "/etc/renamed").unwrap();
        assert_eq!(names_in(&tar), vec!["etc/renamed"]);
        // A folder copies its contents.
        let (kind, _) = copy(&[src("dir")], "/app").unwrap();
        assert_eq!(kind, SourceKind::Dir);
        assert_eq!(names_in(&tar), vec!["app/a"]);
        // Several sources need a folder destination.
        assert!(copy(&[src("file"), src("dir")], "/x").is_err());
        let (kind, _) = copy(&[src("file"), src("dir")], "/x/").unwrap();
        assert_eq!(kind, SourceKind::Multi);
        // Missing and outside sources are errors.
        assert!(matches!(
            copy(&[src("nope")], "/"),
            Err(CopyError::Missing(_))
        ));
        assert!(matches!(
            copy(&[src("../etc/passwd")], "/"),
            Err(CopyError::Outside(_))
        ));
        assert!(matches!(
            copy(&[src("*.none")], "/"),
            Err(CopyError::Missing(_))
        ));
    }
}
