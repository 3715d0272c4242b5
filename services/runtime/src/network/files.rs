//! A task's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`, written beside its log and
//! bind-mounted into the container. On user networks the hosts files of the containers list
//! each other ([`Peer`]) and are rewritten in place as containers come and go.

use super::{Attached, Networks};
use crate::error::{Error, Result};
use berth_api::containers::v1::{Container, Endpoint};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A running container on a user network, as the others' hosts files list it.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) ip: String,
    pub(super) names: Vec<String>,
    pub(super) hosts: PathBuf,
    /// Its own lines (localhost, itself, --add-host), before the peers.
    pub(super) base: String,
}

impl Peer {
    /// Container `c` at `ip` on `network`, listed by its name, its short id and its aliases
    /// there, with its hosts file.
    pub(super) fn of(c: &Container, network: &str, ip: &str, hosts: PathBuf, base: String) -> Peer {
        let mut names = vec![c.name.clone(), c.id[..12.min(c.id.len())].to_string()];
        for a in aliases_on(c, network) {
            if !names.contains(&a) {
                names.push(a);
            }
        }
        Peer {
            ip: ip.to_string(),
            names,
            hosts,
            base,
        }
    }
}

/// The aliases of container `c` on `network`: `--network-alias` on the network it joins at
/// start (its first), and those `network connect --alias` gave.
pub(crate) fn aliases_on(c: &Container, network: &str) -> Vec<String> {
    let mut out = Vec::new();
    if c.networks.first().is_some_and(|n| n == network) {
        if let Some(config) = &c.config {
            out.extend(config.network_aliases.iter().cloned());
        }
    }
    for a in c.network_aliases.iter().filter(|a| a.network == network) {
        out.extend(a.aliases.iter().cloned());
    }
    out
}

/// A running container's hosts file and its own lines (`hosts.base`), as `attach` wrote
/// them beside its log.
pub(super) fn own_hosts(c: &Container) -> (PathBuf, String) {
    let hosts = PathBuf::from(&c.log_path).with_file_name("hosts");
    let base = std::fs::read_to_string(hosts.with_extension("base")).unwrap_or_default();
    (hosts, base)
}

/// The files of one task being attached, in its container's folder `dir`: its hostname, its
/// `--add-host` lines and its resolv.conf, ready to write.
pub(super) struct TaskFiles<'a> {
    pub(super) dir: &'a Path,
    pub(super) hostname: &'a str,
    /// `--add-host` lines.
    pub(super) extra: String,
    pub(super) resolv: String,
}

impl TaskFiles<'_> {
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write_hostname(&self) -> Result<()> {
        write_file(&self.path("hostname"), &format!("{}\n", self.hostname))
    }

    /// hosts, resolv.conf and hostname as bind mounts into the container.
    pub(super) fn mounts(&self) -> Vec<(PathBuf, &'static str)> {
        vec![
            (self.path("hosts"), "/etc/hosts"),
            (self.path("resolv.conf"), "/etc/resolv.conf"),
            (self.path("hostname"), "/etc/hostname"),
        ]
    }

    /// `--network container:`: the other container's namespace (`joined`: its init's pid
    /// and its folder), hosts and resolv.conf; a hostname file of its own.
    pub(super) fn join(&self, joined: Option<(u32, PathBuf)>) -> Result<Attached> {
        let (pid, other_dir) = joined.ok_or_else(|| {
            Error::FailedPrecondition("the container to join is not running".into())
        })?;
        let mut out = Attached {
            netns: Some(PathBuf::from(format!("/proc/{pid}/ns/net"))),
            ..Default::default()
        };
        for (file, dest) in [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")] {
            let f = other_dir.join(file);
            if f.exists() {
                out.files.push((f, dest));
            }
        }
        self.write_hostname()?;
        out.files.push((self.path("hostname"), "/etc/hostname"));
        Ok(out)
    }

    /// `--network none`: a namespace of its own with only lo; localhost in its hosts file.
    pub(super) fn alone(&self) -> Result<Attached> {
        write_file(
            &self.path("hosts"),
            &format!("{}{}", localhost_lines(), self.extra),
        )?;
        self.finish_alone()
    }

    /// resolv.conf and hostname written after the hosts file, for a task with no bridge.
    pub(super) fn finish_alone(&self) -> Result<Attached> {
        write_file(&self.path("resolv.conf"), &self.resolv)?;
        self.write_hostname()?;
        Ok(Attached {
            files: self.mounts(),
            ..Default::default()
        })
    }

    /// The files of a task on bridge networks: its hosts file lists localhost, itself (at
    /// its first address), `--add-host`, then ([`Networks::refresh_hosts`]) its peers on
    /// user networks. Returns its own lines, also kept as `hosts.base`.
    pub(super) fn write_bridged(&self, c: &Container, endpoints: &[Endpoint]) -> Result<String> {
        let mut base = localhost_lines();
        if let Some(e) = endpoints.first() {
            let mut names = vec![self.hostname.to_string()];
            if c.name != self.hostname {
                names.push(c.name.clone());
            }
            base.push_str(&format!("{}\t{}\n", e.ip_address, names.join(" ")));
        }
        base.push_str(&self.extra);
        let hosts = self.path("hosts");
        write_file(&self.path("resolv.conf"), &self.resolv)?;
        self.write_hostname()?;
        write_file(&hosts, &base)?;
        write_file(&hosts.with_extension("base"), &base)?;
        Ok(base)
    }
}

impl Networks {
    /// Rewrites the hosts files of every container on the user networks `networks`, and
    /// `reset` (a container's file and its own lines) when it left them. Under the lock, so
    /// two rewrites never cross.
    pub(super) fn refresh_hosts(&self, networks: &[String], reset: Option<(PathBuf, String)>) {
        let inner = self.inner();
        let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
        if let Some((path, base)) = reset {
            files.insert(path, base);
        }
        for n in networks {
            let Some(peers) = inner.peers.get(n) else {
                continue;
            };
            for p in peers.values() {
                files
                    .entry(p.hosts.clone())
                    .or_insert_with(|| p.base.clone());
            }
        }
        // Every file lists the peers of all the user networks its container is on.
        for (path, content) in files.iter_mut() {
            for peers in inner.peers.values() {
                if !peers.values().any(|p| &p.hosts == path) {
                    continue;
                }
                for p in peers.values().filter(|p| &p.hosts != path) {
                    let line = format!("{}\t{}\n", p.ip, p.names.join(" "));
                    if !content.contains(&line) {
                        content.push_str(&line);
                    }
                }
            }
        }
        for (path, content) in files {
            // In place: the file is bind-mounted into a running container.
            if let Err(e) = write_in_place(&path, &content) {
                tracing::debug!(file = %path.display(), error = %e, "cannot update a hosts file");
            }
        }
        drop(inner);
    }
}

impl Networks {
    /// After a rename: the peers' hosts files list container `<ns>/<id>` by `name`.
    pub fn rename_peer(&self, ns: &str, id: &str, name: &str) {
        let key = format!("{ns}/{id}");
        let mut touched = Vec::new();
        {
            let mut inner = self.inner();
            for (network, peers) in inner.peers.iter_mut() {
                if let Some(p) = peers.get_mut(&key) {
                    if let Some(first) = p.names.first_mut() {
                        *first = name.to_string();
                    }
                    touched.push(network.clone());
                }
            }
        }
        if !touched.is_empty() {
            self.refresh_hosts(&touched, None);
        }
    }
}

pub(super) fn localhost_lines() -> String {
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
     ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        .to_string()
}

/// `--add-host NAME:IP` as hosts lines; `host-gateway` stands for `gateway`.
pub(super) fn extra_hosts(entries: &[String], gateway: &str) -> Result<String> {
    let mut out = String::new();
    for e in entries {
        let (name, ip) = e.split_once(':').ok_or_else(|| {
            Error::InvalidArgument(format!("invalid extra host {e:?}: use NAME:IP"))
        })?;
        let ip = if ip == "host-gateway" && !gateway.is_empty() {
            gateway
        } else {
            ip
        };
        if name.is_empty() || ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "invalid extra host {e:?}: use NAME:IP with an IP address"
            )));
        }
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    Ok(out)
}

/// The host's resolv.conf; systemd-resolved's upstream list when the host points at its stub.
pub(super) fn host_resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if main.contains("nameserver 127.0.0.53") {
        if let Ok(up) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return up;
        }
    }
    main
}

/// The container's resolv.conf from the host's: loopback nameservers dropped (unreachable from
/// a namespace of its own; Google's public ones if none is left), `--dns`, `--dns-search` and
/// `--dns-option` replacing their kind.
pub(super) fn resolv_conf(
    host: &str,
    dns: &[String],
    search: &[String],
    options: &[String],
    host_net: bool,
) -> String {
    let mut servers = Vec::new();
    let mut searches = Vec::new();
    let mut opts = Vec::new();
    for line in host.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(s) = w.next() {
                    let loopback = s.starts_with("127.") || s == "::1";
                    if host_net || !loopback {
                        servers.push(s.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => searches = w.map(str::to_string).collect(),
            Some("options") => opts.extend(w.map(str::to_string)),
            _ => {}
        }
    }
    if !dns.is_empty() {
        servers = dns.to_vec();
    } else if servers.is_empty() {
        servers = vec!["8.8.8.8".into(), "8.8.4.4".into()];
    }
    if !search.is_empty() {
        searches = search
            .iter()
            .filter(|s| s.as_str() != ".")
            .cloned()
            .collect();
    }
    if !options.is_empty() {
        opts = options.to_vec();
    }
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !opts.is_empty() {
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

/// Writes a file for a new task: a fresh inode (a running container still sees the old one).
pub(super) fn write_file(path: &Path, content: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(|e| Error::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot write", path, e))
}

/// Rewrites a file in place (same inode), for a file bind-mounted into a running container.
pub(super) fn write_in_place(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_and_takes_overrides() {
        let host = "search lan\nnameserver 127.0.0.53\nnameserver 192.168.1.1\noptions edns0\n";
        assert_eq!(
            resolv_conf(host, &[], &[], &[], false),
            "search lan\nnameserver 192.168.1.1\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.1\n", &[], &[], &[], false),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            resolv_conf(
                host,
                &["1.1.1.1".into()],
                &["x.org".into()],
                &["ndots:2".into()],
                false
            ),
            "search x.org\nnameserver 1.1.1.1\noptions ndots:2\n"
        );
        assert!(resolv_conf(host, &[], &[], &[], true).contains("127.0.0.53"));
    }

    #[test]
    fn extra_hosts_lines() {
        assert!(extra_hosts(&["db:10.0.0.9".into()], "").unwrap() == "10.0.0.9\tdb\n");
        assert!(extra_hosts(&["db".into()], "").is_err());
        assert_eq!(
            extra_hosts(&["h:host-gateway".into()], "10.77.0.1").unwrap(),
            "10.77.0.1\th\n"
        );
        assert!(extra_hosts(&["h:host-gateway".into()], "").is_err());
    }
}
