//! Whether pods can get a network: the CNI configuration the way libcni finds it (the first
//! loadable `*.conflist`, `*.conf` or `*.json` of the configuration folder, by file name)
//! and every plugin it names present in a plugin folder. The CRI's Status reports the answer
//! as its NetworkReady condition.

use std::path::{Path, PathBuf};

/// A usable network configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The network's `name`.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// Its plugins' types, in order.
    pub plugins: Vec<String>,
}

/// The network pods would join, or why there is none (a message a person can act on).
pub fn ready_network(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<Network, String> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(conf_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect(),
        Err(e) => {
            return Err(format!(
                "cannot read the CNI config folder {} ([cri] cni_conf_dir): {e}",
                conf_dir.display()
            ))
        }
    };
    files.sort();
    let mut problems = Vec::new();
    for file in files {
        match load(&file) {
            Ok(network) => {
                check_plugins(&network, bin_dirs)?;
                return Ok(network);
            }
            Err(e) => problems.push(format!("{}: {e}", file.display())),
        }
    }
    let mut message = format!(
        "no network config found in {} ([cri] cni_conf_dir)",
        conf_dir.display()
    );
    if !problems.is_empty() {
        message.push_str(&format!("; unusable: {}", problems.join("; ")));
    }
    Err(message)
}

/// One configuration file: a list (`plugins`) or a single plugin (`type`).
fn load(file: &Path) -> Result<Network, String> {
    let text = std::fs::read(file).map_err(|e| e.to_string())?;
    let json: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("not JSON: {e}"))?;
    let name = json
        .get("name")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .ok_or("no \"name\"")?
        .to_string();
    let plugin_type = |p: &serde_json::Value| {
        p.get("type")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    let plugins: Vec<String> = match json.get("plugins") {
        Some(list) => {
            let list = list.as_array().ok_or("\"plugins\" is not a list")?;
            list.iter()
                .map(|p| plugin_type(p).ok_or("a plugin without \"type\""))
                .collect::<Result<_, _>>()?
        }
        None => vec![plugin_type(&json).ok_or("no \"plugins\" and no \"type\"")?],
    };
    if plugins.is_empty() {
        return Err("an empty \"plugins\" list".into());
    }
    Ok(Network {
        name,
        file: file.to_path_buf(),
        plugins,
    })
}

/// Every plugin of `network` is an executable file in one of `bin_dirs`.
fn check_plugins(network: &Network, bin_dirs: &[PathBuf]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for plugin in &network.plugins {
        if plugin.contains('/') {
            return Err(format!(
                "network {}: plugin type {plugin:?} is not a plain name",
                network.name
            ));
        }
        let found = bin_dirs.iter().any(|d| {
            std::fs::metadata(d.join(plugin))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
        if !found {
            let dirs: Vec<String> = bin_dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(format!(
                "network {} ({}): CNI plugin {plugin:?} not found in {} ([cri] cni_bin_dir; Debian's package containernetworking-plugins)",
                network.name,
                network.file.display(),
                dirs.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn plugin(dir: &Path, name: &str) {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_conflist_with_its_plugins_is_ready() {
        let t = tempfile::tempdir().unwrap();
        let (conf, bin) = (t.path().join("net.d"), t.path().join("bin"));
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let e = ready_network(&conf, std::slice::from_ref(&bin)).unwrap_err();
        assert!(e.contains("no network config found"), "{e}");
        std::fs::write(conf.join("00-broken.conf"), "{").unwrap();
        std::fs::write(
            conf.join("10-pods.conflist"),
            r#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        plugin(&bin, "bridge");
        let e = ready_network(&conf, std::slice::from_ref(&bin)).unwrap_err();
        assert!(
            e.contains("\"portmap\" not found") && e.contains("pods"),
            "{e}"
        );
        plugin(&bin, "portmap");
        let n = ready_network(&conf, &[t.path().join("none"), bin]).unwrap();
        assert_eq!(n.name, "pods");
        assert_eq!(n.plugins, ["bridge", "portmap"]);
    }

    #[test]
    fn single_plugin_configs_and_bad_files() {
        let t = tempfile::tempdir().unwrap();
        plugin(t.path(), "loopback");
        std::fs::write(
            t.path().join("a.conf"),
            r#"{"name":"lo","type":"loopback"}"#,
        )
        .unwrap();
        let n = ready_network(t.path(), &[t.path().to_path_buf()]).unwrap();
        assert_eq!(n.plugins, ["loopback"]);

        let bad = tempfile::tempdir().unwrap();
        std::fs::write(
            bad.path().join("a.conflist"),
            r#"{"name":"x","plugins":[]}"#,
        )
        .unwrap();
        std::fs::write(bad.path().join("b.json"), r#"{"type":"bridge"}"#).unwrap();
        std::fs::write(bad.path().join("c.txt"), "ignored").unwrap();
        let e = ready_network(bad.path(), &[]).unwrap_err();
        assert!(
            e.contains("empty \"plugins\"") && e.contains("no \"name\""),
            "{e}"
        );
        let e = ready_network(&t.path().join("missing"), &[]).unwrap_err();
        assert!(e.contains("cannot read the CNI config folder"), "{e}");
    }
}
