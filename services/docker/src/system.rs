//! Docker's views of the engine as a whole: `info` (the API's JSON and the CLI's text, from
//! the same figures) and `system df` (the API's JSON and the CLI's table).

use crate::host;
use crate::usage::{binary_size, human_size};
use berth_api::containers::v1 as capi;
use berth_api::volumes::v1 as vapi;
use serde_json::{json, Value};

/// What `info` counts, from the services' answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InfoFigures {
    pub containers: usize,
    pub running: usize,
    pub paused: usize,
    pub images: usize,
    /// berthd's persistent root (Docker's `DockerRootDir`).
    pub root: String,
    /// The snapshotter images are unpacked with.
    pub snapshotter: String,
    /// berthd's version.
    pub server_version: String,
}

/// Docker's `/info` JSON.
pub fn info_json(f: &InfoFigures) -> Value {
    json!({
        "ID": host::id(),
        "Containers": f.containers,
        "ContainersRunning": f.running - f.paused.min(f.running),
        "ContainersPaused": f.paused,
        "ContainersStopped": f.containers.saturating_sub(f.running),
        "Images": f.images,
        "Driver": crate::storage_driver(&f.snapshotter),
        "DriverStatus": [["Snapshotter", f.snapshotter]],
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
        "DockerRootDir": f.root,
        "Name": host::hostname(),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": f.server_version,
        "Runtimes": {"berth": {"path": "berth-shim"}},
        "DefaultRuntime": "berth",
        "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": ["name=seccomp,profile=default"],
        "Warnings": null,
    })
}

/// The `Server:` part of `docker info`'s text, from the `/info` JSON.
pub fn info_text(i: &Value) -> String {
    let s = |k: &str| match &i[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    let list = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let mut out = String::from("Server:\n");
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!(" Containers: {}", s("Containers")));
    line(format!("  Running: {}", s("ContainersRunning")));
    line(format!("  Paused: {}", s("ContainersPaused")));
    line(format!("  Stopped: {}", s("ContainersStopped")));
    line(format!(" Images: {}", s("Images")));
    line(format!(" Server Version: {}", s("ServerVersion")));
    line(format!(" Storage Driver: {}", s("Driver")));
    for pair in i["DriverStatus"].as_array().into_iter().flatten() {
        line(format!(
            "  {}: {}",
            pair[0].as_str().unwrap_or(""),
            pair[1].as_str().unwrap_or("")
        ));
    }
    line(format!(" Logging Driver: {}", s("LoggingDriver")));
    line(format!(" Cgroup Driver: {}", s("CgroupDriver")));
    line(format!(" Cgroup Version: {}", s("CgroupVersion")));
    line(" Plugins:".into());
    line(format!("  Volume: {}", list(&i["Plugins"]["Volume"])));
    line(format!("  Network: {}", list(&i["Plugins"]["Network"])));
    line(format!("  Log: {}", list(&i["Plugins"]["Log"])));
    line(" Swarm: inactive".into());
    let runtimes: Vec<&str> = i["Runtimes"]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    line(format!(" Runtimes: {}", runtimes.join(" ")));
    line(format!(" Default Runtime: {}", s("DefaultRuntime")));
    line(format!(" Init Binary: {}", s("InitBinary")));
    line(" Security Options:".into());
    for o in i["SecurityOptions"].as_array().into_iter().flatten() {
        let mut parts = o.as_str().unwrap_or("").split(',');
        line(format!(
            "  {}",
            parts.next().unwrap_or("").trim_start_matches("name=")
        ));
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                let mut k = k.to_string();
                k[..1].make_ascii_uppercase();
                line(format!("   {k}: {v}"));
            }
        }
    }
    line(format!(" Kernel Version: {}", s("KernelVersion")));
    line(format!(" Operating System: {}", s("OperatingSystem")));
    line(format!(" OSType: {}", s("OSType")));
    line(format!(" Architecture: {}", s("Architecture")));
    line(format!(" CPUs: {}", s("NCPU")));
    let mem = i["MemTotal"].as_u64().unwrap_or(0);
    line(format!(" Total Memory: {}", binary_size(mem)));
    line(format!(" Name: {}", s("Name")));
    line(format!(" ID: {}", s("ID")));
    line(format!(" Docker Root Dir: {}", s("DockerRootDir")));
    line(format!(" Debug Mode: {}", s("Debug")));
    line(format!(" Experimental: {}", s("ExperimentalBuild")));
    line(" Insecure Registries:".into());
    line(format!(
        " Live Restore Enabled: {}",
        s("LiveRestoreEnabled")
    ));
    out
}

/// A container as `/system/df` lists it: Docker's container list fields, with its sizes
/// (Containers.Sizes; 0 when not measured).
fn df_container(c: &capi::Container, size: Option<&capi::ContainerSize>) -> Value {
    let config = c.config.clone().unwrap_or_default();
    let state = c.state.clone().unwrap_or_default();
    let command: Vec<String> = config
        .entrypoint
        .iter()
        .chain(config.cmd.iter())
        .cloned()
        .collect();
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": c.image,
        "ImageID": c.image_id,
        "Command": command.join(" "),
        "Created": c.created_at.map_or(0, |t| t.seconds),
        "State": if state.status.is_empty() { "created".to_string() } else { state.status },
        "Status": "",
        "SizeRw": size.map_or(0, |z| z.rw),
        "SizeRootFs": size.map_or(0, |z| z.root_fs),
        "Labels": c.labels,
        "Mounts": [],
    })
}

/// Docker's `/system/df`: the images (entries of [`crate::image_list`], each with how many
/// containers use it), the containers (with their `sizes` by id), the volumes (with
/// `UsageData`), no build cache.
pub fn df_json(
    images: Vec<Value>,
    containers: &[capi::Container],
    sizes: &std::collections::HashMap<String, capi::ContainerSize>,
    volumes: &[vapi::Volume],
) -> Value {
    let mut layers = 0i64;
    let images: Vec<Value> = images
        .into_iter()
        .map(|mut e| {
            let id = e["Id"].as_str().unwrap_or("").to_string();
            let users = containers.iter().filter(|c| c.image_id == id).count();
            layers += e["Size"].as_i64().unwrap_or(0);
            e["Containers"] = json!(users);
            e["SharedSize"] = json!(0);
            e
        })
        .collect();
    json!({
        "LayersSize": layers,
        "Images": images,
        "Containers": containers
            .iter()
            .map(|c| df_container(c, sizes.get(&c.id)))
            .collect::<Vec<_>>(),
        "Volumes": volumes.iter().map(crate::volumes::volume_with_usage).collect::<Vec<_>>(),
        "BuildCache": [],
    })
}

/// Docker's RECLAIMABLE cell: the size, with its share of the total when there is one.
fn reclaimable(part: u64, total: u64) -> String {
    match (part * 100).checked_div(total) {
        Some(percent) => format!("{} ({percent}%)", human_size(part)),
        None => human_size(part),
    }
}

/// `docker system df`'s rows (header first) from the `/system/df` JSON.
pub fn df_rows(df: &Value) -> Vec<Vec<String>> {
    let arr = |k: &str| df[k].as_array().cloned().unwrap_or_default();
    let n = |v: &Value| v.as_i64().unwrap_or(0).max(0) as u64;
    let (images, containers, volumes) = (arr("Images"), arr("Containers"), arr("Volumes"));
    let active_images = images.iter().filter(|i| n(&i["Containers"]) > 0).count();
    let image_size: u64 = images.iter().map(|i| n(&i["Size"])).sum();
    let unused_size: u64 = images
        .iter()
        .filter(|i| n(&i["Containers"]) == 0)
        .map(|i| n(&i["Size"]))
        .sum();
    let running = |c: &Value| c["State"] == "running";
    let active_containers = containers.iter().filter(|c| running(c)).count();
    let rw: u64 = containers.iter().map(|c| n(&c["SizeRw"])).sum();
    let rw_stopped: u64 = containers
        .iter()
        .filter(|c| !running(c))
        .map(|c| n(&c["SizeRw"]))
        .sum();
    let used = |v: &Value| n(&v["UsageData"]["RefCount"]) > 0;
    let active_volumes = volumes.iter().filter(|v| used(v)).count();
    let volume_size: u64 = volumes.iter().map(|v| n(&v["UsageData"]["Size"])).sum();
    let volume_unused: u64 = volumes
        .iter()
        .filter(|v| !used(v))
        .map(|v| n(&v["UsageData"]["Size"]))
        .sum();
    let row = |t: &str, total: usize, active: usize, size: u64, reclaim: String| {
        vec![
            t.to_string(),
            total.to_string(),
            active.to_string(),
            human_size(size),
            reclaim,
        ]
    };
    vec![
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
            .map(String::from)
            .to_vec(),
        row(
            "Images",
            images.len(),
            active_images,
            image_size,
            reclaimable(unused_size, image_size),
        ),
        row(
            "Containers",
            containers.len(),
            active_containers,
            rw,
            reclaimable(rw_stopped, rw),
        ),
        row(
            "Local Volumes",
            volumes.len(),
            active_volumes,
            volume_size,
            reclaimable(volume_unused, volume_size),
        ),
        row("Build Cache", 0, 0, 0, human_size(0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_counts_and_reclaimable_like_docker() {
        let images = vec![
            json!({"Id": "sha256:a", "Size": 1_000_000}),
            json!({"Id": "sha256:b", "Size": 3_000_000}),
        ];
        let c = capi::Container {
            id: "c1".into(),
            name: "web".into(),
            image_id: "sha256:a".into(),
            state: Some(capi::ContainerState {
                status: "running".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = vapi::Volume {
            name: "v".into(),
            size: 2000,
            ..Default::default()
        };
        let sizes = [(
            "c1".to_string(),
            capi::ContainerSize {
                rw: 1500,
                root_fs: 1_001_500,
            },
        )]
        .into();
        let df = df_json(images, &[c], &sizes, &[v]);
        assert_eq!(df["LayersSize"], 4_000_000);
        assert_eq!(df["Containers"][0]["SizeRw"], 1500);
        assert_eq!(df["Images"][0]["Containers"], 1);
        assert_eq!(df["Containers"][0]["Names"], json!(["/web"]));
        assert_eq!(df["Volumes"][0]["UsageData"]["Size"], 2000);
        let rows = df_rows(&df);
        assert_eq!(rows[1], ["Images", "2", "1", "4MB", "3MB (75%)"]);
        assert_eq!(rows[2], ["Containers", "1", "1", "1.5kB", "0B (0%)"]);
        assert_eq!(rows[3], ["Local Volumes", "1", "0", "2kB", "2kB (100%)"]);
        assert_eq!(rows[4], ["Build Cache", "0", "0", "0B", "0B"]);
    }

    #[test]
    fn info_text_from_the_json() {
        let j = info_json(&InfoFigures {
            containers: 3,
            running: 1,
            images: 2,
            root: "/var/lib/berth".into(),
            snapshotter: "overlayfs".into(),
            server_version: "0.1.0".into(),
            ..Default::default()
        });
        let t = info_text(&j);
        assert!(
            t.starts_with(
                "Server:\n Containers: 3\n  Running: 1\n  Paused: 0\n  Stopped: 2\n Images: 2\n"
            ),
            "{t}"
        );
        assert!(t.contains(" Storage Driver: overlay2\n  Snapshotter: overlayfs\n"));
        assert!(t.contains(" Docker Root Dir: /var/lib/berth\n"));
        assert!(t.contains("  seccomp\n   Profile: default\n"));
    }
}
