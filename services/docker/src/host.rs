//! The host's facts that Docker's `version` and `info` show, read from /proc, /sys and /etc
//! of the host this runs on (berthd's, for the gateway and a local CLI).

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The kernel release (`uname -r`).
pub fn kernel_version() -> String {
    read("/proc/sys/kernel/osrelease")
}

/// The host name.
pub fn hostname() -> String {
    read("/proc/sys/kernel/hostname")
}

/// `PRETTY_NAME` of /etc/os-release.
pub fn operating_system() -> String {
    pretty_name(&read("/etc/os-release")).unwrap_or_else(|| "Linux".to_string())
}

fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(v.trim_matches('"').to_string())
    })
}

/// Bytes of memory (`MemTotal` of /proc/meminfo).
pub fn mem_total() -> i64 {
    mem_total_of(&read("/proc/meminfo"))
}

fn mem_total_of(meminfo: &str) -> i64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The CPUs this process may run on.
pub fn ncpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// "2" on a unified cgroup hierarchy, else "1" (v1 and hybrid hosts).
pub fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

/// Docker's architecture name (Go's: amd64, arm64…).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Whether the sysctl at /proc/sys/`key` is 1.
pub fn sysctl_on(key: &str) -> bool {
    read(&format!("/proc/sys/{key}")) == "1"
}

/// A stable id of this host: its machine id.
pub fn id() -> String {
    read("/etc/machine-id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_and_meminfo() {
        assert_eq!(
            pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
        assert_eq!(
            mem_total_of("MemTotal:       16384 kB\nMemFree: 1 kB"),
            16 << 20
        );
    }
}
