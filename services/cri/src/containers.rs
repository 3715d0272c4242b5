//! Containers in pod sandboxes: CreateContainer, StartContainer, StopContainer,
//! RemoveContainer, ContainerStatus and ListContainers over berth's Containers and Tasks
//! services.
//!
//! A CRI container is a berth container in `k8s.io` labelled `io.berth.cri.kind=container`
//! and `io.berth.cri.sandbox-id` (see [`crate::objects`]). It joins its sandbox's network
//! network, IPC and UTS namespaces (`network_mode`/`ipc_mode`/`uts_mode` =
//! `container:<sandbox id>`, or the host's for a pod on the node's network; its pid namespace
//! as its namespace options say), which gives it the pod's `/etc/hosts`, resolv.conf and host
//! name; the CRI's command, args,
//! env, working dir, mounts, devices, user, capabilities, privileged, read-only root, no_new_privs,
//! seccomp profile kind, memory and CPU quota become the berth config the runtime already
//! honours. Its output goes to the sandbox's `log_directory`/its `log_path` in the CRI's log
//! format (the config's `log_path` and `log_format = "cri"`).

use crate::objects::{self, label, map_label, map_of};
use crate::sandboxes::{self, containers, get};
use crate::{from_service, req, Backends};
use berth_api::containers::v1 as api;
use berth_api::cri::v1 as cri;
use std::collections::HashMap;
use tonic::{Code, Status};

/// The berth config of a CRI container in `sandbox`.
pub fn container_config(
    sandbox: &api::Container,
    config: &cri::ContainerConfig,
) -> Result<api::ContainerConfig, Status> {
    let meta = config
        .metadata
        .as_ref()
        .filter(|m| !m.name.is_empty())
        .ok_or_else(|| Status::invalid_argument("the container config needs metadata.name"))?;
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Status::invalid_argument("the container config names no image"))?;
    // Refused rather than ignored: a pod that asked for a device must not run without it.
    if let Some(d) = config.cdi_devices.first() {
        return Err(Status::invalid_argument(format!(
            "CDI device {:?}: berth does not support CDI devices",
            d.name
        )));
    }
    // The container's own namespace options, else its pod's.
    let modes = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_else(|| sandboxes::namespace_options(sandbox));
    let host_network = modes.network == cri::NamespaceMode::Node as i32;
    let join = |mode: i32| match cri::NamespaceMode::try_from(mode) {
        Ok(cri::NamespaceMode::Node) => "host".to_string(),
        Ok(cri::NamespaceMode::Pod) => format!("container:{}", sandbox.id),
        _ => String::new(),
    };
    let log_path = match (label(sandbox, objects::LOG_DIRECTORY), &config.log_path) {
        (dir, path) if !dir.is_empty() && !path.is_empty() => format!("{dir}/{path}"),
        _ => String::new(),
    };
    let labels = HashMap::from([
        (objects::KIND.into(), objects::KIND_CONTAINER.into()),
        (objects::SANDBOX_ID.into(), sandbox.id.clone()),
        (objects::NAME.into(), meta.name.clone()),
        (objects::ATTEMPT.into(), meta.attempt.to_string()),
        (objects::LABELS.into(), map_label(&config.labels)),
        (objects::ANNOTATIONS.into(), map_label(&config.annotations)),
        (objects::LOG_PATH.into(), log_path.clone()),
        (objects::IMAGE.into(), image.clone()),
    ]);
    let mut out = api::ContainerConfig {
        image,
        // CRI: `command` replaces the entrypoint (and then the image's Cmd is not used), `args`
        // replace the Cmd — Docker's --entrypoint rules.
        entrypoint_set: !config.command.is_empty(),
        entrypoint: config.command.clone(),
        cmd: config.args.clone(),
        env: config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect(),
        working_dir: config.working_dir.clone(),
        tty: config.tty,
        open_stdin: config.stdin,
        stdin_once: config.stdin_once,
        network_mode: if host_network {
            "host".into()
        } else {
            format!("container:{}", sandbox.id)
        },
        ipc_mode: join(modes.ipc),
        // The pod's host name: the sandbox's UTS namespace, or the host's with its network.
        uts_mode: if host_network {
            "host".into()
        } else {
            format!("container:{}", sandbox.id)
        },
        pid_mode: join(modes.pid),
        binds: binds(&config.mounts)?,
        // The runtime checks the host paths and permissions when it creates the container.
        devices: config
            .devices
            .iter()
            .map(|d| api::DeviceMapping {
                path_on_host: d.host_path.clone(),
                path_in_container: d.container_path.clone(),
                cgroup_permissions: d.permissions.clone(),
            })
            .collect(),
        log_format: if log_path.is_empty() { "" } else { "cri" }.into(),
        log_path: log_path.clone(),
        labels,
        ..Default::default()
    };
    let linux = config.linux.as_ref();
    apply_security(&mut out, linux.and_then(|l| l.security_context.as_ref()))?;
    crate::resources::apply(&mut out, linux.and_then(|l| l.resources.as_ref()));
    // Under its pod's cgroup.
    out.cgroup_parent = sandbox
        .config
        .as_ref()
        .map(|c| c.cgroup_parent.clone())
        .unwrap_or_default();
    Ok(out)
}

/// The CRI's mounts as berth binds, `SRC:DST:MODE,PROPAGATION` (Docker's `-v`): private is
/// rprivate, HostToContainer rslave, Bidirectional rshared.
fn binds(mounts: &[cri::Mount]) -> Result<Vec<String>, Status> {
    use cri::MountPropagation as P;
    mounts
        .iter()
        .map(|m| {
            let propagation = match P::try_from(m.propagation) {
                Ok(P::PropagationPrivate) => "rprivate",
                Ok(P::PropagationHostToContainer) => "rslave",
                Ok(P::PropagationBidirectional) => "rshared",
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "mount {}: unknown mount propagation {}",
                        m.container_path, m.propagation
                    )))
                }
            };
            if !m.host_path.starts_with('/') || !m.container_path.starts_with('/') {
                return Err(Status::invalid_argument(format!(
                    "mount {:?} -> {:?}: both paths must be absolute",
                    m.host_path, m.container_path
                )));
            }
            let mode = if m.readonly { "ro" } else { "rw" };
            Ok(format!(
                "{}:{}:{mode},{propagation}",
                m.host_path, m.container_path
            ))
        })
        .collect()
}

/// The security context: user, privileged, capabilities, read-only root, no_new_privs and
/// the seccomp profile's kind.
fn apply_security(
    out: &mut api::ContainerConfig,
    sc: Option<&cri::LinuxContainerSecurityContext>,
) -> Result<(), Status> {
    let Some(sc) = sc else {
        // No security context: no seccomp profile either, which the CRI calls Unconfined.
        out.security_opt.push("seccomp=unconfined".into());
        return Ok(());
    };
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err(Status::invalid_argument(
            "run_as_group needs run_as_user or run_as_username",
        ));
    }
    out.user = if !sc.run_as_username.is_empty() {
        sc.run_as_username.clone()
    } else if let Some(uid) = &sc.run_as_user {
        match &sc.run_as_group {
            Some(g) => format!("{}:{}", uid.value, g.value),
            None => uid.value.to_string(),
        }
    } else {
        String::new()
    };
    out.privileged = sc.privileged;
    out.masked_paths = sc.masked_paths.clone();
    out.additional_gids = sc
        .supplemental_groups
        .iter()
        .map(|g| {
            u32::try_from(*g).map_err(|_| {
                Status::invalid_argument(format!("supplemental group {g} is not a gid"))
            })
        })
        .collect::<Result<_, _>>()?;
    out.readonly_paths = sc.readonly_paths.clone();
    out.read_only = sc.readonly_rootfs;
    if let Some(caps) = &sc.capabilities {
        out.cap_add = caps.add_capabilities.clone();
        out.cap_drop = caps.drop_capabilities.clone();
    }
    if sc.no_new_privs {
        out.security_opt.push("no-new-privileges".into());
    }
    // The CRI's default is Unconfined: a profile that is not set, or not RuntimeDefault.
    use cri::security_profile::ProfileType;
    let kind = sc
        .seccomp
        .as_ref()
        .map(|p| ProfileType::try_from(p.profile_type));
    // Deprecated in the CRI, but critest 1.27 and older kubelets still send it.
    #[allow(deprecated)]
    let deprecated = sc.seccomp_profile_path.as_str();
    match kind {
        Some(Ok(ProfileType::RuntimeDefault)) => {}
        Some(Ok(ProfileType::Unconfined)) => out.security_opt.push("seccomp=unconfined".into()),
        Some(Ok(ProfileType::Localhost)) => {
            let path = sc.seccomp.as_ref().map_or("", |p| p.localhost_ref.as_str());
            out.seccomp_profile_path = localhost_profile(path)?;
        }
        None if matches!(deprecated, "runtime/default" | "docker/default") => {}
        None if matches!(deprecated, "" | "unconfined") => {
            out.security_opt.push("seccomp=unconfined".into())
        }
        None if deprecated.starts_with("localhost/") => {
            out.seccomp_profile_path = localhost_profile(&deprecated["localhost/".len()..])?;
        }
        _ => {
            return Err(Status::invalid_argument(format!(
                "seccomp profile {deprecated:?}: berth takes RuntimeDefault (runtime/default, \
                 docker/default), Unconfined (unconfined) and Localhost (localhost/PATH) profiles"
            )))
        }
    }
    Ok(())
}

/// The path of a Localhost seccomp profile: absolute, on the node; the runtime reads it when
/// the container is created and names it when it is missing or invalid.
fn localhost_profile(path: &str) -> Result<String, Status> {
    if !path.starts_with('/') {
        return Err(Status::invalid_argument(format!(
            "seccomp Localhost profile {path:?}: give the absolute path of a profile file on the node"
        )));
    }
    Ok(path.to_string())
}

/// The berth name of a container: unique per pod, name and attempt.
fn container_name(sandbox: &api::Container, meta: &cri::ContainerMetadata) -> String {
    format!(
        "k8s_{}_{}_{}_{}_{}",
        objects::name_part(&meta.name),
        objects::name_part(label(sandbox, objects::NAME)),
        objects::name_part(label(sandbox, objects::POD_NAMESPACE)),
        objects::name_part(label(sandbox, objects::UID)),
        meta.attempt
    )
}

/// Refuses a CreateContainer whose `sandbox_config` is another pod's than `sandbox`
/// (the kubelet sends the pod's own), or whose sandbox is not ready: a container must never
/// land in a pod it was not meant for, nor in one whose namespaces are gone.
pub fn check_sandbox(
    sandbox: &api::Container,
    sandbox_config: Option<&cri::PodSandboxConfig>,
) -> Result<(), Status> {
    if let Some(given) = sandbox_config.and_then(|c| c.metadata.as_ref()) {
        let own = sandboxes::status(sandbox).metadata.unwrap_or_default();
        if (&given.name, &given.uid, &given.namespace) != (&own.name, &own.uid, &own.namespace) {
            return Err(Status::invalid_argument(format!(
                "the sandbox config names pod {}/{} (uid {}), but pod sandbox {} is pod {}/{} \
                 (uid {}): give the config of the pod the container is created in",
                given.namespace,
                given.name,
                given.uid,
                sandbox.id,
                own.namespace,
                own.name,
                own.uid
            )));
        }
    }
    if objects::status(sandbox) != "running" {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready: create containers in a running sandbox",
            sandbox.id
        )));
    }
    Ok(())
}

/// CreateContainer in sandbox `sandbox_id`, which `sandbox_config` (when given) describes.
pub async fn create(
    b: &Backends,
    sandbox_id: &str,
    config: cri::ContainerConfig,
    sandbox_config: Option<&cri::PodSandboxConfig>,
) -> Result<String, Status> {
    let sandbox = get(b, sandbox_id, objects::KIND_SANDBOX).await?;
    check_sandbox(&sandbox, sandbox_config)?;
    let cfg = container_config(&sandbox, &config)?;
    let name = container_name(
        &sandbox,
        config.metadata.as_ref().unwrap_or(&Default::default()),
    );
    sandboxes::create(b, name, cfg, "container").await
}

/// StartContainer: its task created and started, once its sandbox is ready.
pub async fn start(b: &Backends, id: &str) -> Result<(), Status> {
    let c = get(b, id, objects::KIND_CONTAINER).await?;
    if objects::status(&c) != "created" {
        return Err(Status::failed_precondition(format!(
            "container {id} is {}, not created: a CRI container starts once",
            objects::status(&c)
        )));
    }
    let sandbox = get(b, label(&c, objects::SANDBOX_ID), objects::KIND_SANDBOX).await?;
    if objects::status(&sandbox) != "running" {
        return Err(Status::failed_precondition(format!(
            "the pod sandbox {} of container {id} is not ready",
            sandbox.id
        )));
    }
    sandboxes::start_task(b, &c.id)
        .await
        .map_err(|e| from_service(&format!("starting container {id}"), e))
}

/// StopContainer with the kubelet's grace period.
pub async fn stop(b: &Backends, id: &str, timeout: i64) -> Result<(), Status> {
    let c = get(b, id, objects::KIND_CONTAINER).await?;
    sandboxes::stop_task(b, &c.id, timeout)
        .await
        .map_err(|e| from_service(&format!("stopping container {id}"), e))
}

/// Containers.Delete, forced; an absent container is success.
pub(crate) async fn delete(b: &Backends, id: &str) -> Result<(), Status> {
    match containers(b)
        .delete(req(api::DeleteContainerRequest {
            id: id.to_string(),
            force: true,
            remove_volumes: true,
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Code::NotFound => Ok(()),
        Err(e) => Err(from_service(&format!("removing {id}"), e)),
    }
}

/// RemoveContainer: forced; an unknown container is success.
pub async fn remove(b: &Backends, id: &str) -> Result<(), Status> {
    match get(b, id, objects::KIND_CONTAINER).await {
        Ok(c) => delete(b, &c.id).await,
        Err(e) if e.code() == Code::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The CRI state of a berth container.
fn state(c: &api::Container) -> cri::ContainerState {
    match objects::status(c) {
        "created" => cri::ContainerState::ContainerCreated,
        "running" | "restarting" => cri::ContainerState::ContainerRunning,
        "exited" | "dead" | "removing" => cri::ContainerState::ContainerExited,
        _ => cri::ContainerState::ContainerUnknown,
    }
}

fn metadata(c: &api::Container) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: label(c, objects::NAME).into(),
        attempt: objects::attempt(c),
    }
}

fn image_spec(c: &api::Container) -> cri::ImageSpec {
    cri::ImageSpec {
        image: label(c, objects::IMAGE).into(),
        ..Default::default()
    }
}

fn time(t: Option<&berth_api::containers::v1::ContainerState>, f: TimeOf) -> i64 {
    t.and_then(|s| match f {
        TimeOf::Started => s.started_at.as_ref(),
        TimeOf::Finished => s.finished_at.as_ref(),
    })
    .map(|t| objects::nanos(t.seconds, t.nanos))
    .unwrap_or(0)
}

#[derive(Clone, Copy)]
enum TimeOf {
    Started,
    Finished,
}

/// ContainerStatus of the berth container `c`.
pub fn status(c: &api::Container) -> cri::ContainerStatus {
    let st = c.state.as_ref();
    let state = state(c);
    let exit_code = st.map(|s| s.exit_code).unwrap_or(0);
    let (reason, message) = match state {
        cri::ContainerState::ContainerExited => {
            let oom = st.is_some_and(|s| s.oom_killed);
            let error = st.map(|s| s.error.clone()).unwrap_or_default();
            let reason = if oom {
                "OOMKilled"
            } else if exit_code == 0 {
                "Completed"
            } else {
                "Error"
            };
            (reason.to_string(), error)
        }
        _ => (String::new(), String::new()),
    };
    let mounts = c
        .mounts
        .iter()
        .filter(|m| m.r#type == "bind")
        .map(|m| cri::Mount {
            container_path: m.destination.clone(),
            host_path: m.source.clone(),
            readonly: !m.rw,
            propagation: match m.propagation.as_str() {
                "rshared" | "shared" => cri::MountPropagation::PropagationBidirectional,
                "rslave" | "slave" => cri::MountPropagation::PropagationHostToContainer,
                _ => cri::MountPropagation::PropagationPrivate,
            } as i32,
            ..Default::default()
        })
        .collect();
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(metadata(c)),
        state: state as i32,
        created_at: c
            .created_at
            .as_ref()
            .map(|t| objects::nanos(t.seconds, t.nanos))
            .unwrap_or(0),
        started_at: time(st, TimeOf::Started),
        finished_at: if state == cri::ContainerState::ContainerExited {
            time(st, TimeOf::Finished)
        } else {
            0
        },
        exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        image_id: c.image_id.clone(),
        reason,
        message,
        labels: map_of(c, objects::LABELS),
        annotations: map_of(c, objects::ANNOTATIONS),
        mounts,
        log_path: label(c, objects::LOG_PATH).into(),
        resources: crate::resources::status(c),
        ..Default::default()
    }
}

/// ListContainers with the kubelet's filter.
pub async fn list_filtered(
    b: &Backends,
    filter: Option<cri::ContainerFilter>,
) -> Result<Vec<cri::Container>, Status> {
    let filter = filter.unwrap_or_default();
    Ok(sandboxes::list(b, objects::KIND_CONTAINER)
        .await?
        .iter()
        .filter(|c| objects::matches(c, &filter.id, &filter.label_selector))
        .filter(|c| objects::in_pod(c, &filter.pod_sandbox_id))
        .filter(|c| {
            filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == state(c) as i32)
        })
        .map(|c| cri::Container {
            id: c.id.clone(),
            pod_sandbox_id: label(c, objects::SANDBOX_ID).into(),
            metadata: Some(metadata(c)),
            image: Some(image_spec(c)),
            image_ref: c.image_id.clone(),
            image_id: c.image_id.clone(),
            state: state(c) as i32,
            created_at: c
                .created_at
                .as_ref()
                .map(|t| objects::nanos(t.seconds, t.nanos))
                .unwrap_or(0),
            labels: map_of(c, objects::LABELS),
            annotations: map_of(c, objects::ANNOTATIONS),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> api::Container {
        let cfg = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: "/var/log/pods/x".into(),
            ..Default::default()
        };
        let c = sandboxes::sandbox_container("pause", &cfg).unwrap();
        api::Container {
            id: "sb1".into(),
            labels: c.labels,
            ..Default::default()
        }
    }

    fn config() -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 2,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            command: vec!["sh".into()],
            args: vec!["-c".into(), "echo hi".into()],
            envs: vec![cri::KeyValue {
                key: "A".into(),
                value: "b".into(),
            }],
            log_path: "app/0.log".into(),
            mounts: vec![cri::Mount {
                container_path: "/data".into(),
                host_path: "/tmp".into(),
                readonly: true,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn container_joins_its_sandbox() {
        let c = container_config(&sandbox(), &config()).unwrap();
        assert_eq!(c.network_mode, "container:sb1");
        assert_eq!(
            (c.ipc_mode.as_str(), c.uts_mode.as_str()),
            ("container:sb1", "container:sb1")
        );
        // NamespaceMode::POD is 0: the pid namespace too, unless CONTAINER is asked for.
        assert_eq!(c.pid_mode, "container:sb1");
        assert!(c.entrypoint_set);
        assert_eq!(c.entrypoint, vec!["sh"]);
        assert_eq!(c.cmd, vec!["-c", "echo hi"]);
        assert_eq!(c.env, vec!["A=b"]);
        assert_eq!(c.binds, vec!["/tmp:/data:ro,rprivate"]);
        assert_eq!(c.labels[objects::LOG_PATH], "/var/log/pods/x/app/0.log");
        assert_eq!(
            (c.log_path.as_str(), c.log_format.as_str()),
            ("/var/log/pods/x/app/0.log", "cri")
        );
        assert_eq!(c.labels[objects::SANDBOX_ID], "sb1");
        assert_eq!(
            container_name(&sandbox(), config().metadata.as_ref().unwrap()),
            "k8s_app_web_default_u1_2"
        );
        let record = api::Container {
            labels: c.labels,
            state: Some(api::ContainerState {
                status: "exited".into(),
                exit_code: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = status(&record);
        assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
        assert_eq!((s.reason.as_str(), s.exit_code), ("Error", 1));
        assert_eq!(s.metadata.unwrap().attempt, 2);
    }

    #[test]
    fn devices_are_mapped() {
        let mut cfg = config();
        cfg.devices = vec![cri::Device {
            container_path: "/dev/myzero".into(),
            host_path: "/dev/zero".into(),
            permissions: "mrw".into(),
        }];
        let c = container_config(&sandbox(), &cfg).unwrap();
        assert_eq!(
            c.devices,
            [api::DeviceMapping {
                path_on_host: "/dev/zero".into(),
                path_in_container: "/dev/myzero".into(),
                cgroup_permissions: "mrw".into(),
            }]
        );
    }

    #[test]
    fn security_and_resources() {
        let mut cfg = config();
        cfg.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_quota: 50_000,
                cpu_period: 100_000,
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                run_as_group: Some(cri::Int64Value { value: 50 }),
                readonly_rootfs: true,
                no_new_privs: true,
                ..Default::default()
            }),
        });
        let c = container_config(&sandbox(), &cfg).unwrap();
        assert_eq!((c.cpu_quota, c.cpu_period), (50_000, 100_000));
        assert_eq!(c.memory, 64 << 20);
        assert_eq!(c.user, "1000:50");
        assert!(c.read_only);
        assert_eq!(
            c.security_opt,
            vec!["no-new-privileges", "seccomp=unconfined"]
        );
        if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            sc.run_as_user = None;
            sc.seccomp = Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            });
        }
        assert!(
            container_config(&sandbox(), &cfg).is_err(),
            "a group without a user"
        );
        if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            sc.run_as_group = None;
        }
        let c = container_config(&sandbox(), &cfg).unwrap();
        assert_eq!(c.security_opt, vec!["no-new-privileges"]);

        let sc = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut());
        let sc = sc.unwrap();
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: "/etc/profile.json".into(),
        });
        let c = container_config(&sandbox(), &cfg).unwrap();
        assert_eq!(c.seccomp_profile_path, "/etc/profile.json");
        let sc = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut());
        let sc = sc.unwrap();
        sc.seccomp = None;
        #[allow(deprecated)]
        {
            sc.seccomp_profile_path = "localhost//var/lib/p.json".into();
        }
        let c = container_config(&sandbox(), &cfg).unwrap();
        assert_eq!(c.seccomp_profile_path, "/var/lib/p.json");
        let mut cfg = config();
        cfg.mounts[0].propagation = cri::MountPropagation::PropagationBidirectional as i32;
        let c = container_config(&sandbox(), &cfg).unwrap();
        assert_eq!(c.binds, vec!["/tmp:/data:ro,rshared"]);
    }

    #[test]
    fn bad_input_is_refused() {
        let mut cfg = config();
        cfg.metadata = None;
        assert!(container_config(&sandbox(), &cfg).is_err());
        let mut cfg = config();
        cfg.mounts[0].propagation = 7;
        assert_eq!(
            container_config(&sandbox(), &cfg).unwrap_err().code(),
            Code::InvalidArgument
        );
        let mut cfg = config();
        cfg.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::Localhost as i32,
                    localhost_ref: "relative.json".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            container_config(&sandbox(), &cfg).unwrap_err().code(),
            Code::InvalidArgument
        );
        let mut cfg = config();
        cfg.image = None;
        assert!(container_config(&sandbox(), &cfg).is_err());
    }
}
