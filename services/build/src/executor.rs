//! The build executor, classic-builder style: each instruction makes an image (its id is the
//! config digest) that the next one starts from.
//!
//! A [`Build`] takes plain inputs — [`BuildOptions`], the unpacked context, the [`Clients`]
//! of the services it drives — reports through a [`Report`] of [`Event`]s, and fails with a
//! [`BuildError`]; the gRPC shell ([`crate::service`]) does the proto on either side.
//!
//! [`Build::run`] walks the stages up to the target; [`Build::step`] hands each instruction
//! to the room that carries it out:
//! - `config_step`: config-only steps (ENV, LABEL, CMD, …) are `Images.Commit` with
//!   `empty_layer`; WORKDIR also commits the folders it makes. They edit the image config
//!   through the image service's typed module ([`berth_image::config`]), as `commit` and
//!   `--change` do.
//! - `run_step`: RUN runs a container through the runtime service and commits its snapshot.
//! - `copy_step`: COPY/ADD build a layer tar here (see [`crate::copy`]) and send it with
//!   `Images.CommitLayer`; `--from` reads another image's rootfs through a read-only view;
//!   ADD's URLs are fetched by `download`.
//!
//! Each step's image is remembered in the [`BuildCache`] under its parent, instruction and
//! copied content, so a rebuild with nothing changed makes no new image.

mod config_step;
mod copy_step;
mod download;
pub mod progress;
mod run_step;

pub use download::MAX_REDIRECTS;
pub use progress::{Event, Report};

use crate::cache::{BuildCache, StepKey};
use crate::dockerfile::{self, Args, Command, Dockerfile, Instruction};
use crate::error::{BuildError, StepError};
use berth_api::containers::v1::containers_client::ContainersClient;
use berth_api::images::v1 as iapi;
use berth_api::images::v1::images_client::ImagesClient;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_core::config::Limits;
use berth_core::grpc::request;
use berth_image::config::{Change, ContainerConfig};
use copy_step::CopyArgs;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

/// The clients of the services a build drives.
#[derive(Debug, Clone)]
pub struct Clients {
    pub images: ImagesClient<Channel>,
    pub snapshots: SnapshotsClient<Channel>,
    pub containers: ContainersClient<Channel>,
    pub tasks: TasksClient<Channel>,
}

/// What to build, and how: `berth build`'s options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// How messages name the Dockerfile (`Dockerfile`, or the `-f` file's name).
    pub dockerfile_name: String,
    /// `-t`: every one names the final image.
    pub tags: Vec<String>,
    /// `--build-arg K=V`.
    pub build_args: HashMap<String, String>,
    pub no_cache: bool,
    /// `--target`: the stage to stop after; the last one when `None`.
    pub target: Option<String>,
    /// `--label`: added to the final image's config.
    pub labels: BTreeMap<String, String>,
    /// Empty: the image service's default.
    pub snapshotter: String,
    /// RUN steps' network mode: empty or `default` for the default bridge, `host`, `none`,
    /// or a user network's name.
    pub network: String,
}

/// One build: its options, the unpacked context, and where to work.
#[derive(Debug)]
pub struct Build {
    pub ns: String,
    pub options: BuildOptions,
    pub context: PathBuf,
    pub work_dir: PathBuf,
    pub mnt_dir: PathBuf,
    pub cache: BuildCache,
    pub clients: Clients,
    pub report: Report,
    /// What an ADD may unpack or fetch.
    pub limits: Limits,
}

/// Build arguments with their values (`None`: declared without one).
type ArgValues = Vec<(String, Option<String>)>;

/// What a step may refer to beyond its own stage: the Dockerfile, the global ARGs, the
/// images of the stages built before it; and the line its words and errors belong to.
#[derive(Clone, Copy)]
struct Scope<'a> {
    df: &'a Dockerfile,
    globals: &'a [(String, Option<String>)],
    done: &'a [String],
    line: usize,
}

/// A config-only instruction's arguments as history records them, with the words expanded
/// where Docker does.
type Recorded = Result<Args, BuildError>;

/// Where a stage stands.
#[derive(Debug, Clone)]
struct Stage {
    /// The current image id; empty while on scratch with no step yet.
    image: String,
    /// The image config's "config" section.
    config: ContainerConfig,
    /// ARGs declared in this stage, with their values.
    args: ArgValues,
    shell: Vec<String>,
    cmd_set: bool,
}

impl Stage {
    /// A stage on `image` (empty for scratch) with its config.
    fn on(image: String, config: ContainerConfig) -> Stage {
        let shell = config.shell_or_default();
        Stage {
            image,
            config,
            args: vec![],
            shell,
            cmd_set: false,
        }
    }

    /// A variable's value for expansion: ENV first, then the stage's ARGs.
    fn lookup(&self, k: &str) -> Option<String> {
        self.config.env_var(k).or_else(|| {
            self.args
                .iter()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.clone())
        })
    }

    /// Build args in effect for RUN: declared in the stage, with a value, not shadowed by ENV.
    fn run_args(&self) -> Vec<(String, String)> {
        let env = self.env();
        self.args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .filter(|(k, _)| {
                !env.iter()
                    .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
            })
            .collect()
    }

    /// The config's `Env`, as `NAME=value` strings.
    fn env(&self) -> Vec<String> {
        self.config.env.get().cloned().unwrap_or_default()
    }

    /// The config's `WorkingDir`; empty when unset.
    fn working_dir(&self) -> &str {
        self.config.working_dir.get().map_or("", String::as_str)
    }

    /// The config's `User`; empty when unset.
    fn user(&self) -> &str {
        self.config.user.get().map_or("", String::as_str)
    }

    /// A command as the image runs it: exec form as written, shell form through SHELL.
    fn command_vec(&self, c: &Command) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = self.shell.clone();
                v.push(s.clone());
                v
            }
        }
    }
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// A value from `args` by name.
fn arg_value(args: &[(String, Option<String>)], k: &str) -> Option<String> {
    args.iter()
        .find(|(n, _)| n == k)
        .and_then(|(_, v)| v.clone())
}

impl Build {
    /// An error about line `line` of the Dockerfile.
    fn at(&self, line: usize, error: StepError) -> BuildError {
        BuildError::Step {
            dockerfile: self.options.dockerfile_name.clone(),
            line,
            error,
        }
    }

    /// A wrong instruction or word on line `line`.
    fn invalid(&self, line: usize, why: impl std::fmt::Display) -> BuildError {
        self.at(line, StepError::invalid(why))
    }

    fn images(&self) -> ImagesClient<Channel> {
        self.clients.images.clone()
    }

    /// Builds the target stage (and the stages before it), labels and tags the result.
    pub async fn run(self) -> Result<(), BuildError> {
        let df = dockerfile::parse(&self.options.dockerfile)
            .map_err(|e| self.invalid(e.line, e.message))?;
        if df.stages.is_empty() {
            return Err(BuildError::NoFrom {
                dockerfile: self.options.dockerfile_name.clone(),
            });
        }
        let last = match &self.options.target {
            None => df.stages.len() - 1,
            Some(t) => df
                .stage_index(t)
                .ok_or_else(|| BuildError::NoTarget(t.clone()))?,
        };
        let total: usize = df.stages[..=last]
            .iter()
            .map(|s| 1 + s.instructions.len())
            .sum();
        let globals = self.global_args(&df)?;
        let mut done: Vec<String> = Vec::new();
        let mut n = 0;
        for stage in &df.stages[..=last] {
            let scope = Scope {
                df: &df,
                globals: &globals,
                done: &done,
                line: stage.line,
            };
            let image = self.build_stage(&scope, stage, &mut n, total).await?;
            done.push(image);
        }
        let image = done.last().cloned().unwrap_or_default();
        let image = self.add_labels(image).await?;
        let tags = self.tag(&image).await?;
        self.report
            .send(Event::Built {
                image_id: image,
                tags,
            })
            .await;
        Ok(())
    }

    async fn step_header(&self, n: usize, total: usize, inst: &Instruction) {
        self.report
            .send(Event::Step {
                number: n,
                total,
                instruction: inst.original.clone(),
                line: inst.line,
            })
            .await;
    }

    /// Builds one stage; `n` counts the steps reported so far. Gives the stage's image.
    async fn build_stage(
        &self,
        scope: &Scope<'_>,
        stage: &dockerfile::Stage,
        n: &mut usize,
        total: usize,
    ) -> Result<String, BuildError> {
        *n += 1;
        self.step_header(*n, total, &stage.from).await;
        let glookup = |k: &str| arg_value(scope.globals, k);
        let base = dockerfile::expand(&stage.base, &glookup, scope.df.escape)
            .map_err(|e| self.invalid(scope.line, e))?;
        let mut st = self.from(scope, &base).await?;
        let shown = if st.image.is_empty() {
            String::new()
        } else {
            short(&st.image)
        };
        self.report.message(format!(" ---> {shown}")).await;
        self.run_triggers(scope, &mut st).await?;
        for inst in &stage.instructions {
            *n += 1;
            self.step_header(*n, total, inst).await;
            self.step(scope, &mut st, inst).await?;
        }
        if st.image.is_empty() {
            // FROM scratch alone still makes an image.
            st.image = self.commit_config(&st, "", "").await?;
        }
        Ok(st.image)
    }

    /// A base image's ONBUILD triggers, run right after FROM (errors point at its line).
    async fn run_triggers(&self, scope: &Scope<'_>, st: &mut Stage) -> Result<(), BuildError> {
        let line = scope.line;
        let triggers = st.config.take_onbuild();
        if triggers.is_empty() {
            return Ok(());
        }
        self.report
            .message(format!(
                "# Executing {} build trigger{}",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ))
            .await;
        for t in triggers {
            let inst = dockerfile::parse_instruction(&t, line, scope.df.escape)
                .map_err(|e| self.invalid(line, e.message))?;
            self.step(scope, st, &inst).await?;
        }
        Ok(())
    }

    /// `--label`s on the final image: a new image over `image` when there are any.
    async fn add_labels(&self, image: String) -> Result<String, BuildError> {
        if self.options.labels.is_empty() {
            return Ok(image);
        }
        let info = self.inspect(&image).await?;
        // The stage's last image, which this build committed: its config is one.
        let mut config = ContainerConfig::from_image_config(&info.config)?;
        config.apply(Change::Label(
            self.options.labels.clone().into_iter().collect(),
        ));
        let st = Stage::on(image, config);
        self.commit_config(&st, "", "").await
    }

    /// Tags `image` with every `-t`; gives the tags as the image service normalised them.
    async fn tag(&self, image: &str) -> Result<Vec<String>, BuildError> {
        let mut tags = Vec::new();
        for t in &self.options.tags {
            let r = self
                .images()
                .tag(request(
                    &self.ns,
                    iapi::TagImageRequest {
                        source: image.to_string(),
                        target: t.clone(),
                    },
                ))
                .await?
                .into_inner();
            tags.push(r.image.map(|i| i.name).unwrap_or_else(|| t.clone()));
        }
        Ok(tags)
    }

    /// The global ARGs (before the first FROM) with their values.
    fn global_args(&self, df: &Dockerfile) -> Result<ArgValues, BuildError> {
        let mut out: ArgValues = Vec::new();
        for inst in &df.global_args {
            if let Args::Arg(list) = &inst.args {
                for (k, d) in list {
                    let value = match (self.options.build_args.get(k), d) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(d)) => {
                            let lookup = |x: &str| arg_value(&out, x);
                            Some(
                                dockerfile::expand(d, &lookup, df.escape)
                                    .map_err(|e| self.invalid(inst.line, e))?,
                            )
                        }
                        (None, None) => None,
                    };
                    out.retain(|(n, _)| n != k);
                    out.push((k.clone(), value));
                }
            }
        }
        Ok(out)
    }

    async fn inspect(&self, name: &str) -> Result<iapi::InspectImageResponse, BuildError> {
        Ok(self
            .images()
            .inspect(request(
                &self.ns,
                iapi::InspectImageRequest {
                    name: name.to_string(),
                },
            ))
            .await?
            .into_inner())
    }

    /// An image by name or id, pulled when it is not here.
    async fn image(
        &self,
        name: &str,
        line: usize,
    ) -> Result<iapi::InspectImageResponse, BuildError> {
        match self.inspect(name).await {
            Ok(i) => return Ok(i),
            Err(BuildError::Service(s)) if s.code() == Code::NotFound => {}
            Err(e) => return Err(e),
        }
        self.report.message(format!("Pulling {name}")).await;
        let refused = |s: tonic::Status| self.at(line, StepError::Service(s));
        let mut s = self
            .images()
            .pull(request(
                &self.ns,
                iapi::PullRequest {
                    reference: name.to_string(),
                    platform: None,
                    unpack: true,
                    snapshotter: self.options.snapshotter.clone(),
                    // The registry service's stored login.
                    auth: None,
                },
            ))
            .await
            .map_err(refused)?
            .into_inner();
        while let Some(m) = s.next().await {
            m.map_err(refused)?;
        }
        self.inspect(name).await
    }

    /// FROM: the stage on `base`, an earlier stage's name, an image, or scratch.
    async fn from(&self, scope: &Scope<'_>, base: &str) -> Result<Stage, BuildError> {
        if base.eq_ignore_ascii_case("scratch") {
            return Ok(Stage::on(String::new(), ContainerConfig::default()));
        }
        let (df, done) = (scope.df, scope.done);
        let id = match df.stage_index(base) {
            Some(i) if i < done.len() && df.stages[i].name.is_some() => done[i].clone(),
            _ => base.to_string(),
        };
        let info = self.image(&id, scope.line).await?;
        let image = info.summary.as_ref().map(|s| s.id.clone()).unwrap_or(id);
        // The image service would refuse to commit over a config it cannot read: say so here.
        let config = ContainerConfig::from_image_config(&info.config).map_err(|e| {
            self.invalid(
                scope.line,
                format!("the config of image {base} is not an image's: {e}"),
            )
        })?;
        Ok(Stage::on(image, config))
    }

    /// Expands `word` with the stage's ENV and ARGs.
    fn expand(&self, scope: &Scope<'_>, st: &Stage, word: &str) -> Result<String, BuildError> {
        let lookup = |k: &str| st.lookup(k);
        dockerfile::expand(word, &lookup, scope.df.escape).map_err(|e| self.invalid(scope.line, e))
    }

    /// Runs one instruction on the stage.
    async fn step(
        &self,
        scope: &Scope<'_>,
        st: &mut Stage,
        inst: &Instruction,
    ) -> Result<(), BuildError> {
        let line = inst.line;
        let scope = &Scope { line, ..*scope };
        let recorded = match &inst.args {
            Args::From { .. } => return Err(self.invalid(line, "FROM inside a stage")),
            Args::Run { command, .. } => return self.run_step(st, inst, command).await,
            Args::Copy {
                sources,
                dest,
                from,
                chown,
                ..
            } => {
                let copy = CopyArgs {
                    sources,
                    dest,
                    from: from.as_deref(),
                    chown: chown.as_deref(),
                    add: false,
                };
                return self.copy_step(scope, st, inst, &copy).await;
            }
            Args::Add {
                sources,
                dest,
                chown,
                ..
            } => {
                let copy = CopyArgs {
                    sources,
                    dest,
                    from: None,
                    chown: chown.as_deref(),
                    add: true,
                };
                return self.copy_step(scope, st, inst, &copy).await;
            }
            Args::Env(pairs) => self.env(scope, st, pairs)?,
            Args::Label(pairs) => self.label(scope, st, pairs)?,
            Args::Arg(list) => self.arg(scope, st, list)?,
            Args::Cmd(c) => self.cmd(st, c),
            Args::Entrypoint(c) => self.entrypoint(st, c),
            Args::Workdir(w) => self.workdir(scope, st, w)?,
            Args::User(u) => self.user(scope, st, u)?,
            Args::Volume(vols) => self.volume(scope, st, vols)?,
            Args::Expose(ports) => self.expose(scope, st, ports)?,
            Args::StopSignal(s) => self.stop_signal(scope, st, s)?,
            Args::Shell(sh) => self.shell(st, sh),
            Args::Healthcheck(h) => self.healthcheck(st, h.as_ref()),
            Args::Onbuild(t) => self.onbuild(st, t),
            Args::Maintainer(_) => inst.args.clone(),
        };
        let mut recorded_inst = inst.clone();
        recorded_inst.args = recorded;
        self.commit_config_step(st, &recorded_inst).await
    }

    /// A cached image for `key`, if it is still there.
    async fn cached(&self, key: &StepKey<'_>) -> Option<String> {
        if self.options.no_cache {
            return None;
        }
        let id = self.cache.get(key)?;
        if self.inspect(&id).await.is_ok() {
            Some(id)
        } else {
            self.cache.forget(key);
            None
        }
    }

    /// The commit of a step over the stage's image: `fields` say what it commits (a layer,
    /// a snapshot, or none) and how history records it; the parent and the config are the
    /// stage's.
    fn commit_request(
        &self,
        st: &Stage,
        fields: iapi::CommitRequest,
    ) -> Result<iapi::CommitRequest, BuildError> {
        Ok(iapi::CommitRequest {
            parent: st.image.clone(),
            config: serde_json::to_vec(&st.config.to_json())?,
            intermediate: true,
            ..fields
        })
    }

    /// Commits `fields` over the stage's image (see [`Build::commit_request`]).
    async fn commit(&self, st: &Stage, fields: iapi::CommitRequest) -> Result<String, BuildError> {
        let req = self.commit_request(st, fields)?;
        Ok(self
            .images()
            .commit(request(&self.ns, req))
            .await?
            .into_inner()
            .id)
    }

    /// Commits the stage's config over its image, with no layer.
    async fn commit_config(
        &self,
        st: &Stage,
        created_by: &str,
        author: &str,
    ) -> Result<String, BuildError> {
        let fields = iapi::CommitRequest {
            snapshotter: self.options.snapshotter.clone(),
            created_by: created_by.to_string(),
            author: author.to_string(),
            empty_layer: true,
            ..Default::default()
        };
        self.commit(st, fields).await
    }

    /// Commits the layer tar at `tar` over the stage's image.
    async fn commit_tar(
        &self,
        st: &Stage,
        tar: &Path,
        created_by: &str,
    ) -> Result<String, BuildError> {
        let fields = iapi::CommitRequest {
            snapshotter: self.options.snapshotter.clone(),
            created_by: created_by.to_string(),
            ..Default::default()
        };
        let header = self.commit_request(st, fields)?;
        let (tx, rx) = mpsc::channel::<iapi::CommitLayerRequest>(4);
        let path = tar.to_path_buf();
        let feeder = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let _ = tx.blocking_send(iapi::CommitLayerRequest {
                item: Some(iapi::commit_layer_request::Item::Header(header)),
            });
            let mut f = std::fs::File::open(&path)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                if tx
                    .blocking_send(iapi::CommitLayerRequest {
                        item: Some(iapi::commit_layer_request::Item::Data(buf[..n].to_vec())),
                    })
                    .is_err()
                {
                    return Ok(());
                }
            }
        });
        let r = self
            .images()
            .commit_layer(request(
                &self.ns,
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await;
        feeder.await??;
        Ok(r?.into_inner().id)
    }

    /// A read-only view of `image`'s rootfs; [`View::close`](crate::rootfs::View::close)
    /// takes it down.
    async fn view(&self, image: &str) -> Result<crate::rootfs::View, BuildError> {
        Ok(crate::rootfs::View::open(
            &self.clients.snapshots,
            &self.clients.images,
            &self.ns,
            image,
            &self.mnt_dir,
        )
        .await?)
    }

    /// Runs `f` over `image`'s rootfs on a blocking thread, then takes the view down.
    async fn in_rootfs<T: Send + 'static>(
        &self,
        image: &str,
        f: impl FnOnce(&Path) -> T + Send + 'static,
    ) -> Result<T, BuildError> {
        let v = self.view(image).await?;
        let root = v.path().to_path_buf();
        let r = tokio::task::spawn_blocking(move || f(&root)).await;
        v.close().await;
        Ok(r?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::containers::v1::containers_client::ContainersClient;
    use tonic::transport::Endpoint;

    /// Runs a build of `dockerfile` whose services cannot be reached (port 1 on loopback):
    /// what it reports before it needs them, and how it ends.
    async fn build(dockerfile: &str, target: Option<&str>) -> (Result<(), BuildError>, Vec<Event>) {
        let dir = tempfile::tempdir().unwrap();
        let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let clients = Clients {
            images: ImagesClient::new(channel.clone()),
            snapshots: SnapshotsClient::new(channel.clone()),
            containers: ContainersClient::new(channel.clone()),
            tasks: TasksClient::new(channel),
        };
        let (tx, mut rx) = mpsc::channel(64);
        let build = Build {
            ns: "default".into(),
            options: BuildOptions {
                dockerfile: dockerfile.into(),
                dockerfile_name: "Dockerfile.test".into(),
                target: target.map(str::to_string),
                ..Default::default()
            },
            context: dir.path().join("context"),
            work_dir: dir.path().to_path_buf(),
            mnt_dir: dir.path().join("mnt"),
            cache: BuildCache::open(&dir.path().join("cache.db")).unwrap(),
            clients,
            report: Report::new(tx),
            limits: Limits::default(),
        };
        let r = build.run().await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (r, events)
    }

    fn step(number: usize, total: usize, instruction: &str, line: usize) -> Event {
        Event::Step {
            number,
            total,
            instruction: instruction.into(),
            line,
        }
    }

    #[tokio::test]
    async fn a_bad_dockerfile_names_its_file_and_line() {
        let (r, events) = build("FROM scratch\nFROBNICATE x\n", None).await;
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                BuildError::Step {
                    line: 2,
                    error: StepError::Invalid(_),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("Dockerfile.test:2: "), "{e}");
        assert!(events.is_empty(), "{events:?}");
    }

    #[tokio::test]
    async fn an_unknown_target_is_refused_before_any_step() {
        let (r, events) = build("FROM scratch\n", Some("nope")).await;
        let e = r.unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to reach build target nope in Dockerfile"
        );
        assert!(events.is_empty(), "{events:?}");
    }

    #[tokio::test]
    async fn run_on_scratch_is_refused_at_its_line() {
        let (r, events) = build("FROM scratch\nRUN true\n", None).await;
        assert_eq!(
            r.unwrap_err().to_string(),
            "Dockerfile.test:2: RUN needs a base image with a shell; this stage is FROM scratch with nothing in it"
        );
        assert_eq!(
            events,
            vec![
                step(1, 2, "FROM scratch", 1),
                Event::Message(" ---> ".into()),
                step(2, 2, "RUN true", 2),
            ]
        );
    }

    #[tokio::test]
    async fn copy_from_a_later_stage_is_refused() {
        let (r, _) = build("FROM scratch\nCOPY --from=0 a /\n", None).await;
        assert_eq!(
            r.unwrap_err().to_string(),
            "Dockerfile.test:2: invalid from flag value 0: refers to the current or a later stage"
        );
    }

    #[tokio::test]
    async fn a_service_error_is_passed_on_as_it_came() {
        // ENV commits through the image service, which cannot be reached.
        let (r, events) = build("FROM scratch\nENV A=1\n", None).await;
        let e = r.unwrap_err();
        assert!(matches!(e, BuildError::Service(_)), "{e:?}");
        assert_eq!(events.last(), Some(&step(2, 2, "ENV A=1", 2)));
    }
}
