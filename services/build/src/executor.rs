//! The build executor, classic-builder style: each instruction makes an image (its id is the
//! config digest) that the next one starts from.
//!
//! - config-only steps (ENV, LABEL, CMD, …) are `Images.Commit` with `empty_layer`;
//! - RUN runs a container through the runtime service and commits its snapshot;
//! - COPY/ADD build a layer tar here (see [`crate::copy`]) and send it with
//!   `Images.CommitLayer`; `--from` reads another image's rootfs through a read-only view.
//!
//! Each step's image is remembered in the [`BuildCache`] under its parent, instruction and
//! copied content, so a rebuild with nothing changed makes no new image.

use crate::cache::{BuildCache, StepKey};
use crate::copy::{self, CopyError, LayerTar, Owner, SourceKind};
use crate::dockerfile::{self, Args, Command, Dockerfile, Instruction};
use berth_api::build::v1::{
    build_response, BuildHeader, BuildResponse, BuildResult, BuildStep, BuildStepDone,
};
use berth_api::containers::v1 as capi;
use berth_api::containers::v1::containers_client::ContainersClient;
use berth_api::images::v1 as iapi;
use berth_api::images::v1::images_client::ImagesClient;
use berth_api::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_api::tasks::v1 as tapi;
use berth_api::tasks::v1::tasks_client::TasksClient;
use berth_core::config::Limits;
use berth_core::grpc::request;
use serde_json::{json, Map, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The clients of the services a build drives.
#[derive(Debug, Clone)]
pub struct Clients {
    pub images: ImagesClient<Channel>,
    pub snapshots: SnapshotsClient<Channel>,
    pub containers: ContainersClient<Channel>,
    pub tasks: TasksClient<Channel>,
}

/// Where a build's progress goes.
#[derive(Debug, Clone)]
pub struct Report(mpsc::Sender<Result<BuildResponse, Status>>);

impl Report {
    pub fn new(tx: mpsc::Sender<Result<BuildResponse, Status>>) -> Report {
        Report(tx)
    }
    async fn send(&self, item: build_response::Item) {
        let _ = self.0.send(Ok(BuildResponse { item: Some(item) })).await;
    }
    async fn message(&self, m: impl Into<String>) {
        self.send(build_response::Item::Message(m.into())).await
    }
    async fn done(&self, image_id: &str, cached: bool, container_id: &str) {
        self.send(build_response::Item::Done(BuildStepDone {
            image_id: image_id.to_string(),
            cached,
            container_id: container_id.to_string(),
        }))
        .await
    }
}

/// One build: the header, the unpacked context, and where to work.
#[derive(Debug)]
pub struct Build {
    pub ns: String,
    pub header: BuildHeader,
    pub context: PathBuf,
    pub work_dir: PathBuf,
    pub mnt_dir: PathBuf,
    pub cache: BuildCache,
    pub clients: Clients,
    pub report: Report,
    /// What an ADD may unpack or fetch.
    pub limits: Limits,
}

/// Where a stage stands.
#[derive(Debug, Clone)]
struct Stage {
    /// The current image id; empty while on scratch with no step yet.
    image: String,
    /// The image config's "config" section.
    config: Map<String, Value>,
    /// ARGs declared in this stage, with their values.
    args: Vec<(String, Option<String>)>,
    shell: Vec<String>,
    cmd_set: bool,
}

fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

fn io_status(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Build {
    fn name(&self) -> &str {
        if self.header.dockerfile_name.is_empty() {
            "Dockerfile"
        } else {
            &self.header.dockerfile_name
        }
    }

    /// An error about line `line` of the Dockerfile.
    fn at(&self, line: usize, code: Code, msg: impl std::fmt::Display) -> Status {
        Status::new(code, format!("{}:{line}: {msg}", self.name()))
    }

    fn images(&self) -> ImagesClient<Channel> {
        self.clients.images.clone()
    }

    pub async fn run(self) -> Result<(), Status> {
        let df = dockerfile::parse(&self.header.dockerfile).map_err(|e| {
            Status::invalid_argument(format!("{}:{}: {}", self.name(), e.line, e.message))
        })?;
        if df.stages.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{}: no FROM instruction: a Dockerfile must start with FROM",
                self.name()
            )));
        }
        let last = if self.header.target.is_empty() {
            df.stages.len() - 1
        } else {
            df.stage_index(&self.header.target).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "failed to reach build target {} in Dockerfile",
                    self.header.target
                ))
            })?
        };
        let total: usize = df.stages[..=last]
            .iter()
            .map(|s| 1 + s.instructions.len())
            .sum();
        let globals = self.global_args(&df)?;
        let mut done: Vec<String> = Vec::new();
        let mut n = 0;
        for stage in &df.stages[..=last] {
            n += 1;
            self.step_header(n, total, &stage.from).await;
            let glookup = |k: &str| {
                globals
                    .iter()
                    .find(|(n, _)| n == k)
                    .and_then(|(_, v)| v.clone())
            };
            let base = dockerfile::expand(&stage.base, &glookup, df.escape)
                .map_err(|e| self.at(stage.line, Code::InvalidArgument, e))?;
            let mut st = self.from(&df, &done, &base, stage.line).await?;
            self.report
                .message(format!(
                    " ---> {}",
                    if st.image.is_empty() {
                        String::new()
                    } else {
                        short(&st.image)
                    }
                ))
                .await;
            // A base image's ONBUILD triggers run right after FROM.
            let triggers: Vec<String> = st
                .config
                .get("OnBuild")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if !triggers.is_empty() {
                st.config.insert("OnBuild".into(), Value::Null);
                self.report
                    .message(format!(
                        "# Executing {} build trigger{}",
                        triggers.len(),
                        if triggers.len() == 1 { "" } else { "s" }
                    ))
                    .await;
                for t in triggers {
                    let inst = dockerfile::parse_instruction(&t, stage.line, df.escape)
                        .map_err(|e| self.at(stage.line, Code::InvalidArgument, e.message))?;
                    self.step(&df, &done, &globals, &mut st, &inst).await?;
                }
            }
            for inst in &stage.instructions {
                n += 1;
                self.step_header(n, total, inst).await;
                self.step(&df, &done, &globals, &mut st, inst).await?;
            }
            if st.image.is_empty() {
                // FROM scratch alone still makes an image.
                st.image = self.commit_config(&st, "", "").await?;
            }
            done.push(st.image.clone());
        }
        let mut image = done.last().cloned().unwrap_or_default();
        if !self.header.labels.is_empty() {
            let info = self.inspect(&image).await?;
            let mut config = config_section(&info.config);
            let labels = config.entry("Labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            for (k, v) in &self.header.labels {
                labels[k] = json!(v);
            }
            let st = Stage {
                image: image.clone(),
                config,
                args: vec![],
                shell: default_shell(),
                cmd_set: false,
            };
            image = self.commit_config(&st, "", "").await?;
        }
        let mut tags = Vec::new();
        for t in &self.header.tags {
            let r = self
                .images()
                .tag(request(
                    &self.ns,
                    iapi::TagImageRequest {
                        source: image.clone(),
                        target: t.clone(),
                    },
                ))
                .await?
                .into_inner();
            tags.push(r.image.map(|i| i.name).unwrap_or_else(|| t.clone()));
        }
        self.report
            .send(build_response::Item::Result(BuildResult {
                image_id: image,
                tags,
            }))
            .await;
        Ok(())
    }

    async fn step_header(&self, n: usize, total: usize, inst: &Instruction) {
        self.report
            .send(build_response::Item::Step(BuildStep {
                number: n as i32,
                total: total as i32,
                instruction: inst.original.clone(),
                line: inst.line as u32,
            }))
            .await;
    }

    /// The global ARGs (before the first FROM) with their values.
    fn global_args(&self, df: &Dockerfile) -> Result<Vec<(String, Option<String>)>, Status> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for inst in &df.global_args {
            if let Args::Arg(list) = &inst.args {
                for (k, d) in list {
                    let value =
                        match self.header.build_args.get(k) {
                            Some(v) => Some(v.clone()),
                            None => match d {
                                Some(d) => {
                                    let lookup = |x: &str| {
                                        out.iter()
                                            .find(|(n, _)| n == x)
                                            .and_then(|(_, v)| v.clone())
                                    };
                                    Some(dockerfile::expand(d, &lookup, df.escape).map_err(
                                        |e| self.at(inst.line, Code::InvalidArgument, e),
                                    )?)
                                }
                                None => None,
                            },
                        };
                    out.retain(|(n, _)| n != k);
                    out.push((k.clone(), value));
                }
            }
        }
        Ok(out)
    }

    async fn inspect(&self, name: &str) -> Result<iapi::InspectImageResponse, Status> {
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
    async fn image(&self, name: &str, line: usize) -> Result<iapi::InspectImageResponse, Status> {
        match self.inspect(name).await {
            Ok(i) => return Ok(i),
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(s),
        }
        self.report.message(format!("Pulling {name}")).await;
        let mut s = self
            .images()
            .pull(request(
                &self.ns,
                iapi::PullRequest {
                    reference: name.to_string(),
                    platform: None,
                    unpack: true,
                    snapshotter: self.header.snapshotter.clone(),
                },
            ))
            .await
            .map_err(|s| self.at(line, s.code(), s.message()))?
            .into_inner();
        while let Some(m) = s.next().await {
            m.map_err(|s| self.at(line, s.code(), s.message()))?;
        }
        self.inspect(name).await
    }

    async fn from(
        &self,
        df: &Dockerfile,
        done: &[String],
        base: &str,
        line: usize,
    ) -> Result<Stage, Status> {
        let mut st = Stage {
            image: String::new(),
            config: Map::new(),
            args: vec![],
            shell: default_shell(),
            cmd_set: false,
        };
        if base.eq_ignore_ascii_case("scratch") {
            return Ok(st);
        }
        let id = match df.stage_index(base) {
            Some(i) if i < done.len() && df.stages[i].name.is_some() => done[i].clone(),
            _ => base.to_string(),
        };
        let info = self.image(&id, line).await?;
        st.image = info.summary.as_ref().map(|s| s.id.clone()).unwrap_or(id);
        st.config = config_section(&info.config);
        if let Some(sh) = st.config.get("Shell").and_then(|v| v.as_array()) {
            let sh: Vec<String> = sh
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            if !sh.is_empty() {
                st.shell = sh;
            }
        }
        Ok(st)
    }

    fn env(st: &Stage) -> Vec<String> {
        st.config
            .get("Env")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn lookup_in(st: &Stage, k: &str) -> Option<String> {
        for e in Self::env(st) {
            if let Some((n, v)) = e.split_once('=') {
                if n == k {
                    return Some(v.to_string());
                }
            }
        }
        st.args
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.clone())
    }

    fn expand(
        &self,
        df: &Dockerfile,
        st: &Stage,
        word: &str,
        line: usize,
    ) -> Result<String, Status> {
        let lookup = |k: &str| Self::lookup_in(st, k);
        dockerfile::expand(word, &lookup, df.escape)
            .map_err(|e| self.at(line, Code::InvalidArgument, e))
    }

    /// Build args in effect for RUN: declared in the stage, with a value, not shadowed by ENV.
    fn run_args(st: &Stage) -> Vec<(String, String)> {
        let env = Self::env(st);
        st.args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .filter(|(k, _)| {
                !env.iter()
                    .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
            })
            .collect()
    }

    /// A cached image for `key`, if it is still there.
    async fn cached(&self, key: &StepKey<'_>) -> Option<String> {
        if self.header.no_cache {
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

    async fn commit_config(
        &self,
        st: &Stage,
        created_by: &str,
        author: &str,
    ) -> Result<String, Status> {
        let config = serde_json::to_vec(&Value::Object(st.config.clone())).map_err(io_status)?;
        Ok(self
            .images()
            .commit(request(
                &self.ns,
                iapi::CommitRequest {
                    parent: st.image.clone(),
                    snapshotter: self.header.snapshotter.clone(),
                    config,
                    created_by: created_by.to_string(),
                    author: author.to_string(),
                    empty_layer: true,
                    intermediate: true,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner()
            .id)
    }

    /// Commits the layer tar at `tar` over the stage's image.
    async fn commit_tar(&self, st: &Stage, tar: &Path, created_by: &str) -> Result<String, Status> {
        let config = serde_json::to_vec(&Value::Object(st.config.clone())).map_err(io_status)?;
        let header = iapi::CommitRequest {
            parent: st.image.clone(),
            snapshotter: self.header.snapshotter.clone(),
            config,
            created_by: created_by.to_string(),
            intermediate: true,
            ..Default::default()
        };
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
        feeder.await.map_err(io_status)?.map_err(io_status)?;
        Ok(r?.into_inner().id)
    }

    /// Runs one instruction on the stage.
    async fn step(
        &self,
        df: &Dockerfile,
        done: &[String],
        globals: &[(String, Option<String>)],
        st: &mut Stage,
        inst: &Instruction,
    ) -> Result<(), Status> {
        let line = inst.line;
        let mut author = String::new();
        // WORKDIR's folder, made as a layer when the image lacks it.
        let mut workdir = None;
        // The instruction as history records it, with the args expanded where Docker does.
        let mut recorded = inst.clone();
        match &inst.args {
            Args::From { .. } => {
                return Err(self.at(line, Code::InvalidArgument, "FROM inside a stage"))
            }
            Args::Run { command, .. } => return self.run_step(st, inst, command).await,
            Args::Copy {
                sources,
                dest,
                from,
                chown,
                ..
            } => {
                return self
                    .copy_step(
                        df,
                        done,
                        st,
                        inst,
                        sources,
                        dest,
                        from.as_deref(),
                        chown.as_deref(),
                        false,
                    )
                    .await
            }
            Args::Add {
                sources,
                dest,
                chown,
                ..
            } => {
                return self
                    .copy_step(
                        df,
                        done,
                        st,
                        inst,
                        sources,
                        dest,
                        None,
                        chown.as_deref(),
                        true,
                    )
                    .await
            }
            Args::Env(pairs) => {
                let mut out = Vec::new();
                for (k, v) in pairs {
                    out.push((self.expand(df, st, k, line)?, self.expand(df, st, v, line)?));
                }
                let mut env = Self::env(st);
                for (k, v) in &out {
                    env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k.as_str()) && e != k);
                    env.push(format!("{k}={v}"));
                }
                st.config.insert("Env".into(), json!(env));
                recorded.args = Args::Env(out);
            }
            Args::Label(pairs) => {
                let mut out = Vec::new();
                for (k, v) in pairs {
                    out.push((self.expand(df, st, k, line)?, self.expand(df, st, v, line)?));
                }
                let labels = st.config.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                for (k, v) in &out {
                    labels[k] = json!(v);
                }
                recorded.args = Args::Label(out);
            }
            Args::Arg(list) => {
                let mut out = Vec::new();
                for (k, d) in list {
                    let k = self.expand(df, st, k, line)?;
                    let v = match self.header.build_args.get(&k) {
                        Some(v) => Some(v.clone()),
                        None => match d {
                            Some(d) => Some(self.expand(df, st, d, line)?),
                            None => globals
                                .iter()
                                .find(|(n, _)| *n == k)
                                .and_then(|(_, v)| v.clone()),
                        },
                    };
                    st.args.retain(|(n, _)| *n != k);
                    st.args.push((k.clone(), v.clone()));
                    out.push((k, d.clone()));
                }
                recorded.args = Args::Arg(out);
            }
            Args::Cmd(c) => {
                st.config
                    .insert("Cmd".into(), json!(self.command_vec(st, c)));
                st.cmd_set = true;
            }
            Args::Entrypoint(c) => {
                let v = self.command_vec(st, c);
                st.config.insert("Entrypoint".into(), json!(v));
                if !st.cmd_set {
                    st.config.insert("Cmd".into(), Value::Null);
                }
            }
            Args::Workdir(w) => {
                let w = self.expand(df, st, w, line)?;
                let prev = st
                    .config
                    .get("WorkingDir")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
                let dir = copy::destination(&w, &prev);
                let dir = if dir.len() > 1 {
                    dir.trim_end_matches('/').to_string()
                } else {
                    dir
                };
                st.config.insert("WorkingDir".into(), json!(dir));
                workdir = Some(dir.clone());
                recorded.args = Args::Workdir(dir);
            }
            Args::User(u) => {
                let u = self.expand(df, st, u, line)?;
                st.config.insert("User".into(), json!(u));
                recorded.args = Args::User(u);
            }
            Args::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    out.push(self.expand(df, st, v, line)?);
                }
                let m = st.config.entry("Volumes").or_insert_with(|| json!({}));
                if !m.is_object() {
                    *m = json!({});
                }
                for v in &out {
                    if v.is_empty() {
                        return Err(self.at(
                            line,
                            Code::InvalidArgument,
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    m[v] = json!({});
                }
                recorded.args = Args::Volume(out);
            }
            Args::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    for w in self.expand(df, st, p, line)?.split_whitespace() {
                        out.extend(
                            expose_ports(w).map_err(|e| self.at(line, Code::InvalidArgument, e))?,
                        );
                    }
                }
                let m = st.config.entry("ExposedPorts").or_insert_with(|| json!({}));
                if !m.is_object() {
                    *m = json!({});
                }
                for p in &out {
                    m[p] = json!({});
                }
                // Docker's parser sorts the words as written; history shows them expanded.
                let mut words = ports.clone();
                words.sort();
                let mut shown = Vec::new();
                for w in &words {
                    shown.push(self.expand(df, st, w, line)?);
                }
                recorded.args = Args::Expose(shown);
            }
            Args::StopSignal(s) => {
                let s = self.expand(df, st, s, line)?;
                st.config.insert("StopSignal".into(), json!(s));
                recorded.args = Args::StopSignal(s);
            }
            Args::Shell(sh) => {
                st.shell = sh.clone();
                st.config.insert("Shell".into(), json!(sh));
            }
            Args::Healthcheck(h) => {
                let v = match h {
                    None => json!({"Test": ["NONE"]}),
                    Some(h) => {
                        let mut m = Map::new();
                        m.insert("Test".into(), json!(h.test()));
                        for (k, d) in [
                            ("Interval", h.interval),
                            ("Timeout", h.timeout),
                            ("StartPeriod", h.start_period),
                            ("StartInterval", h.start_interval),
                        ] {
                            if !d.is_zero() {
                                m.insert(k.into(), json!(d.as_nanos() as u64));
                            }
                        }
                        if h.retries > 0 {
                            m.insert("Retries".into(), json!(h.retries));
                        }
                        Value::Object(m)
                    }
                };
                // Docker merges the step's config with its parent's when it commits: fields
                // left unset (zero) keep the previous HEALTHCHECK's, even under NONE.
                let mut v = v;
                if let (Some(prev), Some(m)) = (
                    st.config.get("Healthcheck").and_then(|p| p.as_object()),
                    v.as_object_mut(),
                ) {
                    for k in [
                        "Interval",
                        "Timeout",
                        "StartPeriod",
                        "StartInterval",
                        "Retries",
                    ] {
                        if let (false, Some(p)) = (m.contains_key(k), prev.get(k)) {
                            m.insert(k.into(), p.clone());
                        }
                    }
                }
                st.config.insert("Healthcheck".into(), v);
            }
            Args::Onbuild(t) => {
                let list = st.config.entry("OnBuild").or_insert_with(|| json!([]));
                if !list.is_array() {
                    *list = json!([]);
                }
                list.as_array_mut().expect("an array").push(json!(t));
            }
            Args::Maintainer(m) => author = m.clone(),
        }
        let created_by = dockerfile::history_text(&recorded, &st.shell);
        // Whether WORKDIR makes a folder depends on the parent alone, which the key holds;
        // the marker keeps apart entries from before WORKDIR made folders.
        let content = if workdir.is_some() { "mkdir" } else { &author };
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
            let layer = match &workdir {
                Some(dir) => self.workdir_layer(st, dir, line).await?,
                None => None,
            };
            let id = match layer {
                Some(tar) => {
                    let r = self.commit_tar(st, &tar, &created_by).await;
                    let _ = std::fs::remove_file(&tar);
                    r?
                }
                None => self.commit_config(st, &created_by, &author).await?,
            };
            self.cache.put(&key, &id);
            st.image = id;
        }
        self.report.done(&st.image, false, "").await;
        Ok(())
    }

    fn command_vec(&self, st: &Stage, c: &Command) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = st.shell.clone();
                v.push(s.clone());
                v
            }
        }
    }

    async fn run_step(
        &self,
        st: &mut Stage,
        inst: &Instruction,
        command: &Command,
    ) -> Result<(), Status> {
        let line = inst.line;
        let args = Self::run_args(st);
        let created_by = dockerfile::history_text_with_args(inst, &st.shell, &args);
        let arg_strings: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = StepKey {
            parent: &st.image,
            instruction: &created_by,
            build_args: &arg_strings,
            namespace: &self.ns,
            ..Default::default()
        };
        if let Some(id) = self.cached(&key).await {
            self.report.message(" ---> Using cache").await;
            st.image = id.clone();
            self.report.done(&id, true, "").await;
            return Ok(());
        }
        if st.image.is_empty() {
            return Err(self.at(line, Code::InvalidArgument, "RUN needs a base image with a shell; this stage is FROM scratch with nothing in it"));
        }
        let cmd = self.command_vec(st, command);
        let mut env = Self::env(st);
        env.extend(arg_strings.iter().cloned());
        let config = capi::ContainerConfig {
            image: st.image.clone(),
            cmd: cmd.clone(),
            entrypoint: vec![],
            entrypoint_set: true,
            env,
            working_dir: st
                .config
                .get("WorkingDir")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            user: st
                .config
                .get("User")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            // Docker's `build --network`: `default` is the default bridge network.
            network_mode: match self.header.network.as_str() {
                "default" => String::new(),
                n => n.to_string(),
            },
            snapshotter: self.header.snapshotter.clone(),
            labels: [("berth.build".to_string(), "run".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let container = self
            .clients
            .containers
            .clone()
            .create(request(
                &self.ns,
                capi::CreateContainerRequest {
                    name: String::new(),
                    config: Some(config),
                },
            ))
            .await
            .map_err(|s| self.at(line, s.code(), s.message()))?
            .into_inner()
            .container
            .ok_or_else(|| Status::internal("the runtime created no container"))?;
        self.report
            .message(format!(" ---> Running in {}", short(&container.id)))
            .await;
        let r = self.run_container(&container.id).await;
        let r = match r {
            Ok(0) => self
                .images()
                .commit(request(
                    &self.ns,
                    iapi::CommitRequest {
                        parent: st.image.clone(),
                        snapshotter: container.snapshotter.clone(),
                        snapshot_key: container.snapshot_key.clone(),
                        config: serde_json::to_vec(&Value::Object(st.config.clone()))
                            .map_err(io_status)?,
                        created_by: created_by.clone(),
                        intermediate: true,
                        ..Default::default()
                    },
                ))
                .await
                .map(|r| r.into_inner().id),
            Ok(code) => Err(self.at(
                line,
                Code::Aborted,
                format!(
                    "The command '{}' returned a non-zero code: {code}",
                    cmd.join(" ")
                ),
            )),
            Err(e) => Err(e),
        };
        let _ = self
            .clients
            .tasks
            .clone()
            .delete(request(
                &self.ns,
                tapi::DeleteTaskRequest {
                    container_id: container.id.clone(),
                },
            ))
            .await;
        let _ = self
            .clients
            .containers
            .clone()
            .delete(request(
                &self.ns,
                capi::DeleteContainerRequest {
                    id: container.id.clone(),
                    force: true,
                    remove_volumes: true,
                },
            ))
            .await;
        let id = r?;
        self.report
            .message(format!(
                " ---> Removed intermediate container {}",
                short(&container.id)
            ))
            .await;
        self.cache.put(&key, &id);
        st.image = id.clone();
        self.report.done(&id, false, &container.id).await;
        Ok(())
    }

    /// Creates the task, relays its output, and gives its exit code.
    async fn run_container(&self, id: &str) -> Result<i32, Status> {
        let mut tasks = self.clients.tasks.clone();
        tasks
            .create(request(
                &self.ns,
                tapi::CreateTaskRequest {
                    container_id: id.to_string(),
                },
            ))
            .await?;
        let (tx, rx) = mpsc::channel::<tapi::AttachRequest>(4);
        let _ = tx
            .send(tapi::AttachRequest {
                item: Some(tapi::attach_request::Item::Start(tapi::AttachStart {
                    container_id: id.to_string(),
                    stdin: false,
                })),
            })
            .await;
        let mut output = tasks
            .attach(request(
                &self.ns,
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await?
            .into_inner();
        tasks
            .start(request(
                &self.ns,
                tapi::StartTaskRequest {
                    container_id: id.to_string(),
                },
            ))
            .await?;
        while let Some(m) = output.next().await {
            match m?.item {
                Some(tapi::attach_response::Item::Stdout(b)) => {
                    self.report.send(build_response::Item::Stdout(b)).await
                }
                Some(tapi::attach_response::Item::Stderr(b)) => {
                    self.report.send(build_response::Item::Stderr(b)).await
                }
                Some(tapi::attach_response::Item::Exit(e)) => return Ok(e.exit_code),
                None => {}
            }
        }
        drop(tx);
        let w = tasks
            .wait(request(
                &self.ns,
                tapi::WaitTaskRequest {
                    container_id: id.to_string(),
                },
            ))
            .await?
            .into_inner();
        Ok(w.exit.map(|e| e.exit_code).unwrap_or(-1))
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy_step(
        &self,
        df: &Dockerfile,
        done: &[String],
        st: &mut Stage,
        inst: &Instruction,
        sources: &[String],
        dest: &str,
        from: Option<&str>,
        chown: Option<&str>,
        add: bool,
    ) -> Result<(), Status> {
        let line = inst.line;
        let keyword = if add { "ADD" } else { "COPY" };
        let mut srcs = Vec::new();
        for s in sources {
            srcs.push(self.expand(df, st, s, line)?);
        }
        let dest_raw = self.expand(df, st, dest, line)?;
        let workdir = st
            .config
            .get("WorkingDir")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let mut dest_abs = copy::destination(&dest_raw, &workdir);
        // A destination that is a folder in the image takes the files in, as in Docker.
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
        let owner = match chown.map(|c| self.expand(df, st, c, line)).transpose()? {
            None => None,
            Some(c) => match Owner::numeric(&c) {
                Some(o) => Some(o),
                None => Some(self.owner_by_name(st, &c, line).await?),
            },
        };
        // URLs (ADD only) are downloaded into the work folder first, before any view is
        // opened, so that a failed download leaves nothing mounted.
        let mut downloads = Vec::new();
        for s in &srcs {
            if add && (s.starts_with("http://") || s.starts_with("https://")) {
                let p = self.download(s, line).await?;
                downloads.push((s.clone(), Some(p)));
            } else {
                downloads.push((s.clone(), None));
            }
        }
        // Where the sources are read from: the context, or another stage's or image's rootfs.
        let mut view = None;
        let root = match from {
            None => self.context.clone(),
            Some(f) => {
                let f = self.expand(df, st, f, line)?;
                let image = match df.stage_index(&f) {
                    Some(i) if i < done.len() => done[i].clone(),
                    Some(_) => {
                        return Err(self.at(
                            line,
                            Code::InvalidArgument,
                            format!(
                            "invalid from flag value {f}: refers to the current or a later stage"
                        ),
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
                let p = v.path().to_path_buf();
                view = Some(v);
                p
            }
        };
        let tar_path = self.work_dir.join(format!("layer-{line}.tar"));
        let tp = tar_path.clone();
        let in_context = from.is_none();
        let dest_abs2 = dest_abs.clone();
        let limits = self.limits;
        let built = tokio::task::spawn_blocking(move || {
            build_copy_tar(
                &root,
                &downloads,
                &dest_abs2,
                owner,
                add && in_context,
                in_context,
                &tp,
                &limits,
            )
        })
        .await;
        if let Some(v) = view {
            v.close().await;
        }
        let built = built.map_err(io_status)?;
        let (kind, digest) = built.map_err(|e| match e {
            CopyError::Io(e) => self.at(line, Code::Internal, format!("{keyword} failed: {e}")),
            CopyError::Archive(e) if e.is_limit() => self.at(
                line,
                Code::ResourceExhausted,
                format!("{keyword} failed: the archive {e}"),
            ),
            e => self.at(
                line,
                Code::InvalidArgument,
                format!("{keyword} failed: {e}"),
            ),
        })?;
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
                *dest = dest_raw.clone();
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

    /// The layer tar WORKDIR commits when `dir` is missing in the stage's image: the missing
    /// folders, 0755 and owned by root whatever USER says, as Docker's classic builder makes
    /// them. `None` when the folder is there (the step then records no layer).
    async fn workdir_layer(
        &self,
        st: &Stage,
        dir: &str,
        line: usize,
    ) -> Result<Option<PathBuf>, Status> {
        let missing = if st.image.is_empty() {
            // Scratch: an empty root lacks every part.
            let empty = self.work_dir.join("scratch-root");
            std::fs::create_dir_all(&empty).map_err(io_status)?;
            copy::missing_dirs(&empty, dir)
        } else {
            let d = dir.to_string();
            self.in_rootfs(&st.image, move |root| copy::missing_dirs(root, &d))
                .await?
        };
        let missing = missing.map_err(|e| self.at(line, Code::InvalidArgument, e))?;
        if missing.is_empty() {
            return Ok(None);
        }
        let tar = self.work_dir.join(format!("layer-{line}.tar"));
        let t2 = tar.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let f = std::io::BufWriter::new(std::fs::File::create(&t2)?);
            let mut t = LayerTar::new(f, None);
            for m in &missing {
                t.dir(m, 0o755, now, 0, 0)?;
            }
            let (mut w, _) = t.finish()?;
            std::io::Write::flush(&mut w)
        })
        .await
        .map_err(io_status)?
        .map_err(io_status)?;
        Ok(Some(tar))
    }

    /// `--chown` by name: looked up in the image's /etc/passwd and /etc/group.
    async fn owner_by_name(&self, st: &Stage, spec: &str, line: usize) -> Result<Owner, Status> {
        if st.image.is_empty() {
            return Err(self.at(
                line,
                Code::InvalidArgument,
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
        Owner::resolve(spec, &passwd, &group).map_err(|e| self.at(line, Code::InvalidArgument, e))
    }

    /// A read-only view of `image`'s rootfs; [`View::close`](crate::rootfs::View::close)
    /// takes it down.
    async fn view(&self, image: &str) -> Result<crate::rootfs::View, Status> {
        crate::rootfs::View::open(
            &self.clients.snapshots,
            &self.clients.images,
            &self.ns,
            image,
            &self.mnt_dir,
        )
        .await
    }

    /// Runs `f` over `image`'s rootfs on a blocking thread, then takes the view down.
    async fn in_rootfs<T: Send + 'static>(
        &self,
        image: &str,
        f: impl FnOnce(&Path) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let v = self.view(image).await?;
        let root = v.path().to_path_buf();
        let r = tokio::task::spawn_blocking(move || f(&root)).await;
        v.close().await;
        r.map_err(io_status)
    }

    /// Downloads `url` for ADD into the work folder, within `[limits]`: the whole download
    /// within `download_timeout` (and no 60 s without a byte), at most `max_download_size`
    /// bytes, at most [`MAX_REDIRECTS`] redirects.
    async fn download(&self, url: &str, line: usize) -> Result<(PathBuf, String), Status> {
        let max = self.limits.max_download_size;
        let failed = |e: reqwest::Error| {
            let code = if e.is_timeout() {
                Code::DeadlineExceeded
            } else {
                Code::InvalidArgument
            };
            let why = if e.is_timeout() {
                format!(
                    "it took longer than {} s ([limits] download_timeout), or 60 s passed without data",
                    self.limits.download_timeout
                )
            } else {
                // reqwest's own message omits the cause (refused, redirect loop…).
                let mut msg = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    msg = format!("{msg}: {c}");
                    cause = c.source();
                }
                msg
            };
            self.at(
                line,
                code,
                format!("ADD failed: cannot download {url}: {why}"),
            )
        };
        let too_big = || {
            self.at(
                line,
                Code::ResourceExhausted,
                format!("ADD failed: {url} is larger than {max} bytes ([limits] max_download_size in berthd's config)"),
            )
        };
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .read_timeout(std::time::Duration::from_secs(60))
            .timeout(std::time::Duration::from_secs(self.limits.download_timeout))
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .map_err(failed)?;
        let resp = client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(failed)?;
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_big());
        }
        let name = url
            .split(['?', '#'])
            .next()
            .unwrap_or(url)
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or("download")
            .to_string();
        let mut buf = [0u8; 8];
        let _ = getrandom::fill(&mut buf);
        let path = self.work_dir.join(format!("download-{}", hex::encode(buf)));
        // Streamed to the work folder: a big download never sits in memory.
        let mut file = tokio::fs::File::create(&path).await.map_err(io_status)?;
        let mut body = resp.bytes_stream();
        let mut got: u64 = 0;
        while let Some(chunk) = futures::StreamExt::next(&mut body).await {
            let chunk = chunk.map_err(failed)?;
            got += chunk.len() as u64;
            if got > max {
                return Err(too_big());
            }
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(io_status)?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(io_status)?;
        Ok((path, name))
    }
}

/// Redirects an `ADD https://…` follows (as many as Go's HTTP client, which Docker uses).
pub const MAX_REDIRECTS: usize = 10;

/// The "config" section of an image config JSON.
fn config_section(config: &[u8]) -> Map<String, Value> {
    serde_json::from_slice::<Value>(config)
        .ok()
        .and_then(|v| v.get("config").and_then(|c| c.as_object().cloned()))
        .unwrap_or_default()
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

/// Writes the layer tar of a COPY/ADD to `out`; gives the kind of source and the digest.
/// An archive ADD unpacks stays within `limits`.
#[allow(clippy::too_many_arguments)]
fn build_copy_tar(
    root: &Path,
    sources: &[(String, Option<(PathBuf, String)>)],
    dest: &str,
    owner: Option<Owner>,
    extract: bool,
    in_context: bool,
    out: &Path,
    limits: &Limits,
) -> Result<(SourceKind, String), CopyError> {
    let f = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut t = LayerTar::new(f, owner);
    // Every match, resolved, with the name it had.
    let mut matched: Vec<(PathBuf, String, bool)> = Vec::new();
    for (src, download) in sources {
        if let Some((path, name)) = download {
            matched.push((path.clone(), name.clone(), true));
            continue;
        }
        let rel = if in_context {
            copy::context_relative(src).ok_or_else(|| CopyError::Outside(src.clone()))?
        } else {
            src.clone()
        };
        let found = copy::expand_source(root, &rel)?;
        if found.is_empty() {
            return Err(CopyError::Missing(format!(
                "no source files were specified or matched by {src:?}"
            )));
        }
        for m in found {
            let p = copy::resolve_in_root(root, &m, true)?;
            if std::fs::symlink_metadata(&p).is_err() {
                return Err(CopyError::Missing(format!(
                    "stat {src}: file not found in build context or excluded by .dockerignore"
                )));
            }
            let name = Path::new(&m)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            matched.push((p, name, false));
        }
    }
    let dest_is_dir = dest.ends_with('/') || matched.len() > 1;
    if matched.len() > 1 && !dest.ends_with('/') {
        return Err(CopyError::Invalid(format!("When using COPY with more than one source file, the destination must be a directory and end with a / (got {dest:?})")));
    }
    let dest_rel = dest
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string();
    let kind = match matched.as_slice() {
        [(p, _, _)] if p.is_dir() => SourceKind::Dir,
        [_] => SourceKind::File,
        _ => SourceKind::Multi,
    };
    for (p, name, downloaded) in &matched {
        let meta = std::fs::metadata(p)?;
        if meta.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            names.sort();
            if names.is_empty() && !dest_rel.is_empty() {
                t.dir(&dest_rel, 0o755, 0, 0, 0)?;
            }
            for n in names {
                let child = if dest_rel.is_empty() {
                    n.to_string_lossy().into_owned()
                } else {
                    format!("{dest_rel}/{}", n.to_string_lossy())
                };
                t.copy_path(&p.join(&n), &child)?;
            }
            continue;
        }
        if extract && !downloaded && copy::open_archive(p)?.is_some() {
            t.extract_archive(p, &dest_rel, limits)?;
            continue;
        }
        let target = if dest_is_dir || dest_rel.is_empty() {
            if dest_rel.is_empty() {
                name.clone()
            } else {
                format!("{dest_rel}/{name}")
            }
        } else {
            dest_rel.clone()
        };
        if *downloaded {
            let f = std::fs::File::open(p)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            t.file(&target, 0o600, now, meta.len(), 0, 0, f)?;
        } else {
            t.copy_path(p, &target)?;
        }
    }
    let (mut w, digest) = t.finish()?;
    std::io::Write::flush(&mut w)?;
    Ok((kind, digest))
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
