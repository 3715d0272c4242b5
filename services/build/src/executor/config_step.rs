//! Config-only steps (ENV, LABEL, ARG, CMD, ENTRYPOINT, WORKDIR, USER, VOLUME, EXPOSE,
//! STOPSIGNAL, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER): one function per instruction that
//! expands its words and edits the stage (the image config with a [`Change`], as
//! `commit --change` does), giving its arguments as history
//! records them; then [`Build::commit_config_step`] commits the config with no layer, or
//! takes the image from the cache.
//!
//! WORKDIR is the one that may make a layer: the folders it names, when the image lacks them.

use super::{Build, Recorded, Scope, Stage};
use crate::cache::StepKey;
use crate::copy::{self, LayerTar};
use crate::dockerfile::{self, Args, Command, Healthcheck, Instruction};
use crate::error::BuildError;
use berth_image::config::{Change, HealthConfig};
use std::path::PathBuf;

/// ENV's and LABEL's `(key, value)` words.
type Pairs = [(String, String)];

impl Build {
    pub(super) fn env(&self, scope: &Scope<'_>, st: &mut Stage, pairs: &Pairs) -> Recorded {
        let out = self.expand_pairs(scope, st, pairs)?;
        st.config.apply(Change::Env(out.clone()));
        Ok(Args::Env(out))
    }

    pub(super) fn label(&self, scope: &Scope<'_>, st: &mut Stage, pairs: &Pairs) -> Recorded {
        let out = self.expand_pairs(scope, st, pairs)?;
        st.config.apply(Change::Label(out.clone()));
        Ok(Args::Label(out))
    }

    fn expand_pairs(
        &self,
        scope: &Scope<'_>,
        st: &Stage,
        pairs: &Pairs,
    ) -> Result<Vec<(String, String)>, BuildError> {
        pairs
            .iter()
            .map(|(k, v)| Ok((self.expand(scope, st, k)?, self.expand(scope, st, v)?)))
            .collect()
    }

    /// ARG: the value is `--build-arg`'s, else the default, else the global ARG's.
    pub(super) fn arg(
        &self,
        scope: &Scope<'_>,
        st: &mut Stage,
        list: &[(String, Option<String>)],
    ) -> Recorded {
        let mut out = Vec::new();
        for (k, d) in list {
            let k = self.expand(scope, st, k)?;
            let v = match (self.options.build_args.get(&k), d) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => Some(self.expand(scope, st, d)?),
                (None, None) => super::arg_value(scope.globals, &k),
            };
            st.args.retain(|(n, _)| *n != k);
            st.args.push((k.clone(), v));
            out.push((k, d.clone()));
        }
        Ok(Args::Arg(out))
    }

    pub(super) fn cmd(&self, st: &mut Stage, c: &Command) -> Args {
        st.config.apply(Change::Cmd(st.command_vec(c)));
        st.cmd_set = true;
        Args::Cmd(c.clone())
    }

    pub(super) fn entrypoint(&self, st: &mut Stage, c: &Command) -> Args {
        st.config.apply(Change::Entrypoint {
            argv: st.command_vec(c),
            keep_cmd: st.cmd_set,
        });
        Args::Entrypoint(c.clone())
    }

    /// WORKDIR: resolved against the previous one; history records the result.
    pub(super) fn workdir(&self, scope: &Scope<'_>, st: &mut Stage, w: &str) -> Recorded {
        let w = self.expand(scope, st, w)?;
        let dir = copy::destination(&w, st.working_dir());
        let dir = if dir.len() > 1 {
            dir.trim_end_matches('/').to_string()
        } else {
            dir
        };
        st.config.apply(Change::Workdir(dir.clone()));
        Ok(Args::Workdir(dir))
    }

    pub(super) fn user(&self, scope: &Scope<'_>, st: &mut Stage, u: &str) -> Recorded {
        let u = self.expand(scope, st, u)?;
        st.config.apply(Change::User(u.clone()));
        Ok(Args::User(u))
    }

    pub(super) fn volume(&self, scope: &Scope<'_>, st: &mut Stage, vols: &[String]) -> Recorded {
        let mut out = Vec::new();
        for v in vols {
            out.push(self.expand(scope, st, v)?);
        }
        if out.iter().any(String::is_empty) {
            return Err(self.invalid(scope.line, "VOLUME specified can not be an empty string"));
        }
        st.config.apply(Change::Volume(out.clone()));
        Ok(Args::Volume(out))
    }

    pub(super) fn expose(&self, scope: &Scope<'_>, st: &mut Stage, ports: &[String]) -> Recorded {
        let mut out = Vec::new();
        for p in ports {
            for w in self.expand(scope, st, p)?.split_whitespace() {
                out.extend(expose_ports(w).map_err(|e| self.invalid(scope.line, e))?);
            }
        }
        st.config.apply(Change::Expose(out));
        // Docker's parser sorts the words as written; history shows them expanded.
        let mut words = ports.to_vec();
        words.sort();
        let mut shown = Vec::new();
        for w in &words {
            shown.push(self.expand(scope, st, w)?);
        }
        Ok(Args::Expose(shown))
    }

    pub(super) fn stop_signal(&self, scope: &Scope<'_>, st: &mut Stage, s: &str) -> Recorded {
        let s = self.expand(scope, st, s)?;
        st.config.apply(Change::StopSignal(s.clone()));
        Ok(Args::StopSignal(s))
    }

    pub(super) fn shell(&self, st: &mut Stage, sh: &[String]) -> Args {
        st.shell = sh.to_vec();
        st.config.apply(Change::Shell(sh.to_vec()));
        Args::Shell(sh.to_vec())
    }

    pub(super) fn healthcheck(&self, st: &mut Stage, h: Option<&Healthcheck>) -> Args {
        st.config
            .apply(Change::Healthcheck(HealthConfig::from_dockerfile(h)));
        Args::Healthcheck(h.cloned())
    }

    pub(super) fn onbuild(&self, st: &mut Stage, trigger: &str) -> Args {
        st.config.apply(Change::Onbuild(trigger.to_string()));
        Args::Onbuild(trigger.to_string())
    }

    /// Commits a config-only step (`recorded`: the instruction as history records it), or
    /// takes its image from the cache.
    pub(super) async fn commit_config_step(
        &self,
        st: &mut Stage,
        recorded: &Instruction,
    ) -> Result<(), BuildError> {
        let created_by = dockerfile::history_text(recorded, &st.shell);
        let author = match &recorded.args {
            Args::Maintainer(m) => m.as_str(),
            _ => "",
        };
        // WORKDIR's folder, made as a layer when the image lacks it.
        let workdir = match &recorded.args {
            Args::Workdir(dir) => Some(dir.as_str()),
            _ => None,
        };
        // Whether WORKDIR makes a folder depends on the parent alone, which the key holds;
        // the marker keeps apart entries from before WORKDIR made folders.
        let content = if workdir.is_some() { "mkdir" } else { author };
        let key = StepKey {
            parent: &st.image,
            instruction: &created_by,
            namespace: &self.ns,
            content,
            ..Default::default()
        };
        if let Some(id) = self.cached(&key).await {
            self.report.message(" ---> Using cache").await;
            st.image = id;
        } else {
            let layer = match workdir {
                Some(dir) => self.workdir_layer(st, dir, recorded.line).await?,
                None => None,
            };
            let id = match layer {
                Some(tar) => {
                    let r = self.commit_tar(st, &tar, &created_by).await;
                    let _ = std::fs::remove_file(&tar);
                    r?
                }
                None => self.commit_config(st, &created_by, author).await?,
            };
            self.cache.put(&key, &id);
            st.image = id;
        }
        self.report.done(&st.image, false, "").await;
        Ok(())
    }

    /// The layer tar WORKDIR commits when `dir` is missing in the stage's image: the missing
    /// folders, 0755 and owned by root whatever USER says, as Docker's classic builder makes
    /// them. `None` when the folder is there (the step then records no layer).
    async fn workdir_layer(
        &self,
        st: &Stage,
        dir: &str,
        line: usize,
    ) -> Result<Option<PathBuf>, BuildError> {
        let missing = if st.image.is_empty() {
            // Scratch: an empty root lacks every part.
            let empty = self.work_dir.join("scratch-root");
            std::fs::create_dir_all(&empty)?;
            copy::missing_dirs(&empty, dir)
        } else {
            let d = dir.to_string();
            self.in_rootfs(&st.image, move |root| copy::missing_dirs(root, &d))
                .await?
        };
        let missing = missing.map_err(|e| self.invalid(line, e))?;
        if missing.is_empty() {
            return Ok(None);
        }
        let tar = self.work_dir.join(format!("layer-{line}.tar"));
        let t2 = tar.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let now = copy::now();
            let f = std::io::BufWriter::new(std::fs::File::create(&t2)?);
            let mut t = LayerTar::new(f, None);
            for m in &missing {
                t.dir(m, 0o755, now, 0, 0)?;
            }
            let (mut w, _) = t.finish()?;
            std::io::Write::flush(&mut w)
        })
        .await??;
        Ok(Some(tar))
    }
}

/// `80`, `80/udp`, `8000-8002` → Docker's `80/tcp` keys.
fn expose_ports(word: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, pr)) => (p, pr.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    let bad = || format!("invalid containerPort: {word}");
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_ports() {
        assert_eq!(expose_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(
            expose_ports("8000-8002").unwrap(),
            vec!["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(expose_ports("http").is_err());
    }
}
