//! COPY and ADD steps: the words expanded and resolved (destination against WORKDIR and the
//! image, `--chown` by number or by the image's names, ADD's URLs downloaded), the sources
//! read from the context or, with `--from`, another stage's or image's rootfs, the layer tar
//! written by [`crate::copy::build_copy_tar`] on a blocking thread, then committed with
//! `Images.CommitLayer` or taken from the cache by the tar's content digest.

use super::{Build, Scope, Stage};
use crate::cache::StepKey;
use crate::copy::{self, Owner, Source, SourceKind};
use crate::dockerfile::{self, Args, Instruction};
use crate::error::{BuildError, StepError};
use crate::rootfs::View;
use std::path::{Path, PathBuf};

/// A COPY's or ADD's arguments as the Dockerfile wrote them.
#[derive(Debug)]
pub(super) struct CopyArgs<'a> {
    pub sources: &'a [String],
    pub dest: &'a str,
    /// `--from` (COPY only).
    pub from: Option<&'a str>,
    pub chown: Option<&'a str>,
    /// ADD: URLs are downloaded and local archives unpacked.
    pub add: bool,
}

impl CopyArgs<'_> {
    fn keyword(&self) -> &'static str {
        if self.add {
            "ADD"
        } else {
            "COPY"
        }
    }
}

/// A COPY's or ADD's words, expanded and resolved.
#[derive(Debug)]
struct CopyPlan {
    sources: Vec<Source>,
    /// The destination as written (expanded), for history.
    dest: String,
    /// The destination in the image: absolute, and ending in `/` when it is a folder.
    dest_abs: String,
    owner: Option<Owner>,
}

impl Build {
    pub(super) async fn copy_step(
        &self,
        scope: &Scope<'_>,
        st: &mut Stage,
        inst: &Instruction,
        copy: &CopyArgs<'_>,
    ) -> Result<(), BuildError> {
        let line = inst.line;
        let plan = self.plan_copy(scope, st, copy).await?;
        let tar_path = self.work_dir.join(format!("layer-{line}.tar"));
        let (kind, digest) = self
            .write_copy_layer(scope, st, copy, &plan, &tar_path)
            .await?;
        let described = format!(
            "{}:{digest}",
            match kind {
                SourceKind::File => "file",
                SourceKind::Dir => "dir",
                SourceKind::Multi => "multi",
            }
        );
        let mut recorded = inst.clone();
        match &mut recorded.args {
            Args::Copy { sources, dest, .. } | Args::Add { sources, dest, .. } => {
                *sources = vec![described];
                // Docker records the destination as written (expanded), not resolved against
                // WORKDIR; the parent image in the cache key covers the resolution.
                *dest = plan.dest.clone();
            }
            _ => {}
        }
        let created_by = dockerfile::history_text(&recorded, &st.shell);
        let key = StepKey {
            parent: &st.image,
            instruction: &created_by,
            content: &digest,
            namespace: &self.ns,
            ..Default::default()
        };
        let id = match self.cached(&key).await {
            Some(id) => {
                self.report.message(" ---> Using cache").await;
                id
            }
            None => {
                let id = self.commit_tar(st, &tar_path, &created_by).await?;
                self.cache.put(&key, &id);
                id
            }
        };
        let _ = std::fs::remove_file(&tar_path);
        st.image = id.clone();
        self.report.done(&id, false, "").await;
        Ok(())
    }

    /// Expands and resolves the words; downloads ADD's URLs.
    async fn plan_copy(
        &self,
        scope: &Scope<'_>,
        st: &Stage,
        copy: &CopyArgs<'_>,
    ) -> Result<CopyPlan, BuildError> {
        let line = scope.line;
        let mut srcs = Vec::new();
        for s in copy.sources {
            srcs.push(self.expand(scope, st, s)?);
        }
        let dest = self.expand(scope, st, copy.dest)?;
        let dest_abs = self.copy_destination(st, &dest).await?;
        let owner = match copy.chown.map(|c| self.expand(scope, st, c)) {
            None => None,
            Some(c) => {
                let c = c?;
                match Owner::numeric(&c) {
                    Some(o) => Some(o),
                    None => Some(self.owner_by_name(st, &c, line).await?),
                }
            }
        };
        // URLs (ADD only) are downloaded into the work folder first, before any view is
        // opened, so that a failed download leaves nothing mounted.
        let mut sources = Vec::new();
        for s in srcs {
            let download = if copy.add && (s.starts_with("http://") || s.starts_with("https://")) {
                Some(self.download(&s, line).await?)
            } else {
                None
            };
            sources.push((s, download));
        }
        Ok(CopyPlan {
            sources,
            dest,
            dest_abs,
            owner,
        })
    }

    /// `dest` in the image: resolved against WORKDIR, and a folder (ending in `/`) when the
    /// image has a folder there, as in Docker.
    async fn copy_destination(&self, st: &Stage, dest: &str) -> Result<String, BuildError> {
        let mut dest_abs = copy::destination(dest, st.working_dir());
        if !dest_abs.ends_with('/') && !st.image.is_empty() {
            let dest = dest_abs.clone();
            let is_dir = self
                .in_rootfs(&st.image, move |root| {
                    copy::resolve_in_root(root, &dest, true).is_ok_and(|p| p.is_dir())
                })
                .await?;
            if is_dir {
                dest_abs.push('/');
            }
        }
        Ok(dest_abs)
    }

    /// `--chown` by name: looked up in the image's /etc/passwd and /etc/group.
    async fn owner_by_name(
        &self,
        st: &Stage,
        spec: &str,
        line: usize,
    ) -> Result<Owner, BuildError> {
        if st.image.is_empty() {
            return Err(self.invalid(
                line,
                format!(
                    "unable to convert uid/gid chown string {spec:?}: the image has no /etc/passwd"
                ),
            ));
        }
        let (passwd, group) = self
            .in_rootfs(&st.image, |root| {
                let read = |p: &str| {
                    copy::resolve_in_root(root, p, true)
                        .and_then(std::fs::read_to_string)
                        .unwrap_or_default()
                };
                (read("/etc/passwd"), read("/etc/group"))
            })
            .await?;
        Owner::resolve(spec, &passwd, &group).map_err(|e| self.invalid(line, e))
    }

    /// Where the sources are read from: the context, or (`--from`) another stage's or
    /// image's rootfs, with the view to take down after.
    async fn source_root(
        &self,
        scope: &Scope<'_>,
        st: &Stage,
        from: Option<&str>,
    ) -> Result<(PathBuf, Option<View>), BuildError> {
        let line = scope.line;
        let Some(f) = from else {
            return Ok((self.context.clone(), None));
        };
        let f = self.expand(scope, st, f)?;
        let image = match scope.df.stage_index(&f) {
            Some(i) if i < scope.done.len() => scope.done[i].clone(),
            Some(_) => {
                return Err(self.invalid(
                    line,
                    format!("invalid from flag value {f}: refers to the current or a later stage"),
                ))
            }
            None => self
                .image(&f, line)
                .await?
                .summary
                .map(|s| s.id)
                .unwrap_or(f.clone()),
        };
        let v = self.view(&image).await?;
        Ok((v.path().to_path_buf(), Some(v)))
    }

    /// Writes the step's layer tar to `tar`; gives the kind of source and its digest.
    async fn write_copy_layer(
        &self,
        scope: &Scope<'_>,
        st: &Stage,
        copy: &CopyArgs<'_>,
        plan: &CopyPlan,
        tar: &Path,
    ) -> Result<(SourceKind, String), BuildError> {
        let line = scope.line;
        let (root, view) = self.source_root(scope, st, copy.from).await?;
        let in_context = copy.from.is_none();
        let extract = copy.add && in_context;
        let sources = plan.sources.clone();
        let dest = plan.dest_abs.clone();
        let owner = plan.owner;
        let limits = self.limits;
        let out = tar.to_path_buf();
        let built = tokio::task::spawn_blocking(move || {
            copy::build_copy_tar(
                &root, &sources, &dest, owner, extract, in_context, &out, &limits,
            )
        })
        .await;
        if let Some(v) = view {
            v.close().await;
        }
        built?.map_err(|source| {
            self.at(
                line,
                StepError::Copy {
                    keyword: copy.keyword(),
                    source,
                },
            )
        })
    }
}
