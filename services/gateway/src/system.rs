//! `/_ping`, `/version` and `/info`.

use crate::error::{json_body, ApiError};
use crate::version::{API_VERSION, MIN_API_VERSION};
use crate::{host, Services};
use axum::extract::State;
use axum::response::IntoResponse;
use berth_api::containers::v1::{containers_client::ContainersClient, ListContainersRequest};
use berth_api::images::v1::{images_client::ImagesClient, ListImagesRequest};
use berth_api::tasks::v1::{tasks_client::TasksClient, ListTasksRequest, Status};
use berth_api::version::v1::{version_client::VersionClient, VersionRequest};
use serde_json::json;

/// `/_ping`, `/version`, `/info`.
pub fn routes() -> axum::Router<Services> {
    use axum::routing::get;
    axum::Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
}

/// `GET|HEAD /_ping`: "OK", never cached.
pub async fn ping() -> impl IntoResponse {
    (
        [
            (
                http::header::CACHE_CONTROL,
                "no-cache, no-store, must-revalidate",
            ),
            (http::header::PRAGMA, "no-cache"),
            (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (http::HeaderName::from_static("builder-version"), "1"),
        ],
        "OK",
    )
}

/// `GET /version`.
pub async fn version(State(s): State<Services>) -> Result<impl IntoResponse, ApiError> {
    let v = VersionClient::new(s.version.clone())
        .version(s.req(VersionRequest {}))
        .await?
        .into_inner();
    let kernel = if v.kernel.is_empty() {
        host::kernel_version()
    } else {
        v.kernel
    };
    // The engine's fields, shown at the top and again as its component's details (as
    // Docker does).
    let engine = json!({
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": v.revision,
        "GoVersion": "n/a (Rust)",
        "Os": "linux",
        "Arch": host::go_arch(),
        "KernelVersion": kernel,
        "BuildTime": "",
    });
    let mut details = engine.clone();
    details["Experimental"] = json!("false");
    let mut out = engine;
    out["Platform"] = json!({"Name": format!("berth {}", v.version)});
    out["Components"] = json!([{"Name": "Engine", "Version": v.version, "Details": details}]);
    out["Version"] = json!(v.version);
    Ok(json_body(&out))
}

/// `GET /info`: the counts come from the runtime and image services.
pub async fn info(State(s): State<Services>) -> Result<impl IntoResponse, ApiError> {
    let containers = ContainersClient::new(s.runtime.clone())
        .list(s.req(ListContainersRequest {}))
        .await?
        .into_inner()
        .containers
        .len();
    let running = TasksClient::new(s.runtime.clone())
        .list(s.req(ListTasksRequest {}))
        .await?
        .into_inner()
        .tasks
        .iter()
        .filter(|t| t.status == Status::Running as i32)
        .count();
    let images = ImagesClient::new(s.image.clone())
        .max_decoding_message_size(64 << 20)
        .list(s.req(ListImagesRequest {
            filters: vec![],
            all: false,
        }))
        .await?
        .into_inner()
        .images;
    let images = berth_docker::image_list(&images).len();
    let version = env!("CARGO_PKG_VERSION");
    Ok(json_body(&json!({
        "ID": host::id(),
        "Containers": containers,
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers.saturating_sub(running),
        "Images": images,
        "Driver": berth_docker::storage_driver(&s.snapshotter),
        "DriverStatus": [["Snapshotter", s.snapshotter]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Log": ["json-file"]},
        "MemoryLimit": true,
        "SwapLimit": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "PidsLimit": true,
        "IPv4Forwarding": host::sysctl_on("net/ipv4/ip_forward"),
        "BridgeNfIptables": host::sysctl_on("net/bridge/bridge-nf-call-iptables"),
        "BridgeNfIp6tables": host::sysctl_on("net/bridge/bridge-nf-call-ip6tables"),
        "Debug": false,
        "NFd": 0,
        "NGoroutines": 0,
        "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": host::cgroup_version(),
        "NEventsListener": 0,
        "KernelVersion": host::kernel_version(),
        "OperatingSystem": host::operating_system(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": []},
        "NCPU": host::ncpu(),
        "MemTotal": host::mem_total(),
        "DockerRootDir": s.root,
        "Name": host::hostname(),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": version,
        "Runtimes": {"berth": {"path": "berth-shim"}},
        "DefaultRuntime": "berth",
        "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": ["name=seccomp,profile=default"],
        "Warnings": null,
    })))
}
