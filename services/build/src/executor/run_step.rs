//! RUN steps: a container on the stage's image (its env with the build args in effect, its
//! WORKDIR and USER, the build's network), run through the runtime service with its output
//! relayed to the client, its snapshot committed as the step's layer when it exits 0, and
//! the container removed in every case.

use super::{short, Build, Stage};
use crate::cache::StepKey;
use crate::dockerfile::{self, Command, Instruction};
use crate::error::{BuildError, StepError};
use crate::executor::Event;
use berth_api::containers::v1 as capi;
use berth_api::images::v1 as iapi;
use berth_api::tasks::v1 as tapi;
use berth_core::grpc::request;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

impl Build {
    pub(super) async fn run_step(
        &self,
        st: &mut Stage,
        inst: &Instruction,
        command: &Command,
    ) -> Result<(), BuildError> {
        let line = inst.line;
        let args = st.run_args();
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
            return Err(self.invalid(line, "RUN needs a base image with a shell; this stage is FROM scratch with nothing in it"));
        }
        let cmd = st.command_vec(command);
        let mut env = st.env();
        env.extend(arg_strings.iter().cloned());
        let config = self.container_config(st, cmd.clone(), env);
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
            .map_err(|s| self.at(line, StepError::Service(s)))?
            .into_inner()
            .container
            .ok_or(BuildError::NoContainer)?;
        self.report
            .message(format!(" ---> Running in {}", short(&container.id)))
            .await;
        let r = match self.run_container(&container.id).await {
            Ok(0) => self.commit_container(st, &container, &created_by).await,
            Ok(code) => Err(self.at(
                line,
                StepError::CommandFailed {
                    command: cmd.join(" "),
                    code,
                },
            )),
            Err(e) => Err(e),
        };
        self.remove_container(&container.id).await;
        let id = r?;
        self.report
            .message(format!(
                "Removing intermediate container {}",
                short(&container.id)
            ))
            .await;
        self.cache.put(&key, &id);
        st.image = id.clone();
        self.report.done(&id, false, &container.id).await;
        Ok(())
    }

    /// The container a RUN runs `cmd` in.
    fn container_config(
        &self,
        st: &Stage,
        cmd: Vec<String>,
        env: Vec<String>,
    ) -> capi::ContainerConfig {
        capi::ContainerConfig {
            image: st.image.clone(),
            cmd,
            entrypoint: vec![],
            entrypoint_set: true,
            env,
            working_dir: st.working_dir().to_string(),
            user: st.user().to_string(),
            // Docker's `build --network`: `default` is the default bridge network.
            network_mode: match self.options.network.as_str() {
                "default" => String::new(),
                n => n.to_string(),
            },
            snapshotter: self.options.snapshotter.clone(),
            labels: [("berth.build".to_string(), "run".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    /// Commits the container's snapshot over the stage's image.
    async fn commit_container(
        &self,
        st: &Stage,
        container: &capi::Container,
        created_by: &str,
    ) -> Result<String, BuildError> {
        let fields = iapi::CommitRequest {
            snapshotter: container.snapshotter.clone(),
            snapshot_key: container.snapshot_key.clone(),
            created_by: created_by.to_string(),
            ..Default::default()
        };
        self.commit(st, fields).await
    }

    /// Removes the RUN's task and container, whatever became of them.
    async fn remove_container(&self, id: &str) {
        let _ = self
            .clients
            .tasks
            .clone()
            .delete(request(
                &self.ns,
                tapi::DeleteTaskRequest {
                    container_id: id.to_string(),
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
                    id: id.to_string(),
                    force: true,
                    remove_volumes: true,
                },
            ))
            .await;
    }

    /// Creates the task, relays its output, and gives its exit code.
    async fn run_container(&self, id: &str) -> Result<i32, BuildError> {
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
                    self.report.send(Event::Stdout(b)).await
                }
                Some(tapi::attach_response::Item::Stderr(b)) => {
                    self.report.send(Event::Stderr(b)).await
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
}
