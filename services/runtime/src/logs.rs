//! Container logs: one json-file log per container, `<root>/containers/<ns>/<id>/container.log`
//! (rotated by the shim to `container.log.1`), written by every run of the container and kept
//! until the container is removed. `Tasks.Logs` reads it back. A container whose config names
//! its own `log_path` (the CRI's) is logged there instead, in its `log_format` (json-file or
//! the CRI's lines), and read back from there.
//!
//! [`Logs`] owns the containers' own folders (`<root>/containers/<ns>/<id>/`: the log, and the
//! hosts/resolv.conf/hostname files the network writes there) and the log size limit every
//! task's spec carries.

use crate::error::{Error, Result};
use crate::lifecycle::{state_of, STATUS_RESTARTING, STATUS_RUNNING};
use crate::metadata::Store;
use berth_api::containers::v1::Container;
use berth_api::tasks::v1::LogEntry;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Annotations: where the shim writes the container's log, and in which format.
pub use berth_shim::bundle::{ANNOTATION_LOG_FORMAT, ANNOTATION_LOG_PATH};

/// A config's own log path and format, checked: an absolute path without `..`, and a format
/// the shim writes.
pub fn check_log_config(config: &berth_api::containers::v1::ContainerConfig) -> Result<()> {
    let path = Path::new(&config.log_path);
    if !config.log_path.is_empty()
        && (!path.is_absolute()
            || path
                .components()
                .any(|c| c == std::path::Component::ParentDir))
    {
        return Err(Error::InvalidArgument(format!(
            "log path {:?} must be an absolute path without '..'",
            config.log_path
        )));
    }
    if berth_shim::logfile::LogFormat::parse(&config.log_format).is_none() {
        return Err(Error::InvalidArgument(format!(
            "log format {:?} is not one berth writes: json-file or cri",
            config.log_format
        )));
    }
    Ok(())
}

/// How often `follow` looks for new lines.
const POLL: Duration = Duration::from_millis(100);

/// The containers' folders and logs under the runtime's root.
#[derive(Debug, Clone)]
pub struct Logs {
    /// The runtime's persistent folder.
    root: PathBuf,
    /// The container records, to tell whether a followed log may still grow.
    store: Store,
    /// `container.log` rotates at this size.
    max_size: u64,
}

impl Logs {
    /// The folders under `root` (the runtime's), logs rotating at `max_size` bytes.
    pub fn new(root: &Path, store: Store, max_size: u64) -> Logs {
        Logs {
            root: root.to_path_buf(),
            store,
            max_size,
        }
    }

    /// The folder of a container's own files (its log).
    pub fn container_dir(&self, ns: &str, id: &str) -> PathBuf {
        self.root.join("containers").join(ns).join(id)
    }

    /// The container's log file.
    pub fn log_path(&self, ns: &str, id: &str) -> PathBuf {
        self.container_dir(ns, id).join("container.log")
    }

    /// Where the container is logged: its config's own log path, else its folder's log.
    pub fn file_of(&self, ns: &str, container: &Container) -> PathBuf {
        match container.config.as_ref().map(|c| c.log_path.as_str()) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => self.log_path(ns, &container.id),
        }
    }

    /// The stored spec with what a task of it needs at run time: the log path and size.
    pub(crate) fn task_spec(&self, ns: &str, container: &Container) -> Result<Vec<u8>> {
        let mut spec: serde_json::Value = serde_json::from_slice(&container.spec)
            .map_err(|e| Error::Spec(format!("stored spec of {}: {e}", container.id)))?;
        let dir = self.container_dir(ns, &container.id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create folder", &dir, e))?;
        let Some(obj) = spec.as_object_mut() else {
            return Err(Error::Spec(format!(
                "stored spec of {} is not an object",
                container.id
            )));
        };
        let annotations = obj
            .entry("annotations")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(
                ANNOTATION_LOG_PATH.to_string(),
                self.file_of(ns, container).display().to_string().into(),
            );
            let format = container
                .config
                .as_ref()
                .map(|c| c.log_format.clone())
                .unwrap_or_default();
            if !format.is_empty() {
                a.insert(ANNOTATION_LOG_FORMAT.to_string(), format.into());
            }
            a.insert(
                crate::spec::ANNOTATION_LOG_MAX_SIZE.to_string(),
                self.max_size.to_string().into(),
            );
        }
        serde_json::to_vec(&spec).map_err(|e| Error::Spec(e.to_string()))
    }

    /// Whether a container may still write to its log.
    fn may_log(&self, ns: &str, id: &str) -> bool {
        match self.store.get(ns, id) {
            Ok(Some(c)) => {
                let st = state_of(&c);
                st.status == STATUS_RUNNING || st.status == STATUS_RESTARTING
            }
            _ => false,
        }
    }
}

/// One line of a json-file log.
#[derive(serde::Deserialize)]
struct Line {
    log: String,
    #[serde(default)]
    stream: String,
    #[serde(default)]
    time: String,
}

/// Parses one CRI log line, `TIME STREAM P|F TEXT`; the newline belongs to `F` lines.
fn parse_cri_line(line: &[u8]) -> Option<LogEntry> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    if !matches!(stream, "stdout" | "stderr") || !matches!(tag, b"P" | b"F") {
        return None;
    }
    let time = chrono::DateTime::parse_from_rfc3339(time).ok()?;
    let mut data = text.to_vec();
    if tag == b"F" {
        data.push(b'\n');
    }
    Some(LogEntry {
        stream: stream.into(),
        time: Some(prost_types::Timestamp {
            seconds: time.timestamp(),
            nanos: time.timestamp_subsec_nanos() as i32,
        }),
        data,
    })
}

/// Parses one log line, json-file or CRI; `None` for a line that is neither.
pub fn parse_line(line: &[u8]) -> Option<LogEntry> {
    if line.first() != Some(&b'{') {
        return parse_cri_line(line);
    }
    let l: Line = serde_json::from_slice(line).ok()?;
    let time = chrono::DateTime::parse_from_rfc3339(&l.time)
        .ok()
        .map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        });
    Some(LogEntry {
        stream: if l.stream.is_empty() {
            "stdout".into()
        } else {
            l.stream
        },
        time,
        data: l.log.into_bytes(),
    })
}

/// Every complete line of the rotated file and then the current one, and a [`Follower`]
/// placed after them in the current file.
pub fn read_all(path: &Path) -> (Vec<Vec<u8>>, Follower) {
    let mut lines = Vec::new();
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    if let Ok(data) = std::fs::read(PathBuf::from(rotated)) {
        split_lines(&data, &mut lines);
    }
    let mut follower = Follower {
        path: path.to_path_buf(),
        file: None,
    };
    if let Ok(file) = std::fs::File::open(path) {
        follower.file = Some((file, 0));
        lines.extend(follower.read_open());
    }
    (lines, follower)
}

/// Where a followed log has been read to. It holds the file open: lines written before the
/// container was removed (its folder deleted) or before a rotation are still read, as
/// Docker's follower reads its open file to the end.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    /// The file being read and the offset after its last complete line.
    file: Option<(std::fs::File, u64)>,
}

impl Follower {
    /// The new complete lines: the rest of the open file, then, once that is read and the
    /// path names another file (rotated, or created since), that file from its start.
    pub fn read_more(&mut self) -> Vec<Vec<u8>> {
        let lines = self.read_open();
        if !lines.is_empty() {
            return lines;
        }
        let Ok(next) = std::fs::File::open(&self.path) else {
            return lines;
        };
        let same = match (&self.file, next.metadata()) {
            (Some((f, _)), Ok(m)) => f.metadata().is_ok_and(|o| o.ino() == m.ino()),
            _ => false,
        };
        if same {
            return lines;
        }
        self.file = Some((next, 0));
        self.read_open()
    }

    /// Complete lines from the open file's offset to its end.
    fn read_open(&mut self) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let Some((f, offset)) = self.file.as_mut() else {
            return lines;
        };
        // Truncated under us (copytruncate): from its start.
        if f.metadata().is_ok_and(|m| m.len() < *offset) {
            *offset = 0;
        }
        let mut data = Vec::new();
        if f.seek(SeekFrom::Start(*offset)).is_ok() && f.read_to_end(&mut data).is_ok() {
            *offset += split_lines(&data, &mut lines) as u64;
        }
        lines
    }
}

/// Appends the complete lines of `data`; returns how many bytes they used.
fn split_lines(data: &[u8], out: &mut Vec<Vec<u8>>) -> usize {
    let mut used = 0;
    while let Some(n) = data[used..].iter().position(|b| *b == b'\n') {
        let line = &data[used..used + n];
        if !line.is_empty() {
            out.push(line.to_vec());
        }
        used += n + 1;
    }
    used
}

/// The stream of `Tasks.Logs`.
pub(crate) fn stream(
    logs: Logs,
    ns: String,
    id: String,
    follow: bool,
    tail: Option<usize>,
) -> impl futures::Stream<Item = std::result::Result<LogEntry, tonic::Status>> + Send {
    let path = match logs.store.get(&ns, &id) {
        Ok(Some(c)) => logs.file_of(&ns, &c),
        _ => logs.log_path(&ns, &id),
    };
    async_stream::try_stream! {
        let p = path.clone();
        let (lines, mut follower) = tokio::task::spawn_blocking(move || read_all(&p))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let skip = tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
        for line in lines.into_iter().skip(skip) {
            if let Some(entry) = parse_line(&line) {
                yield entry;
            }
        }
        if follow {
            loop {
                // Read the state first: lines written before the exit are read after it.
                let running = logs.may_log(&ns, &id);
                let more = follower.read_more();
                let got = !more.is_empty();
                for line in more {
                    if let Some(entry) = parse_line(&line) {
                        yield entry;
                    }
                }
                if !running && !got {
                    break;
                }
                if !got {
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_parse() {
        let e = parse_line(b"2024-01-01T00:00:01.25Z stderr F oops").unwrap();
        assert_eq!(
            (e.stream.as_str(), e.data.as_slice()),
            ("stderr", &b"oops\n"[..])
        );
        assert_eq!(e.time.unwrap().nanos, 250_000_000);
        let e = parse_line(b"2024-01-01T00:00:01Z stdout P part with spaces").unwrap();
        assert_eq!(e.data, b"part with spaces");
        let e = parse_line(b"2024-01-01T00:00:01Z stdout F ").unwrap();
        assert_eq!(e.data, b"\n");
        assert!(parse_line(b"2024-01-01T00:00:01Z stdin F x").is_none());
        assert!(parse_line(b"yesterday stdout F x").is_none());
        assert!(parse_line(b"not a line").is_none());
    }

    #[test]
    fn log_configs_are_checked() {
        use berth_api::containers::v1::ContainerConfig;
        let ok = |p: &str, f: &str| {
            check_log_config(&ContainerConfig {
                log_path: p.into(),
                log_format: f.into(),
                ..Default::default()
            })
            .is_ok()
        };
        assert!(ok("", "") && ok("/var/log/pods/a/0.log", "cri") && ok("", "json-file"));
        assert!(!ok("rel/0.log", "cri") && !ok("/a/../b", "") && !ok("", "syslog"));
    }

    #[test]
    fn lines_parse_and_rotated_files_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        std::fs::write(
            dir.path().join("container.log.1"),
            "{\"log\":\"one\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-01T00:00:00.5Z\"}\n",
        )
        .unwrap();
        std::fs::write(
            &log,
            "{\"log\":\"two\\n\",\"stream\":\"stderr\",\"time\":\"2024-01-01T00:00:01Z\"}\nnot json\n{\"log\":\"part",
        )
        .unwrap();
        let (lines, mut pos) = read_all(&log);
        let entries: Vec<_> = lines.iter().filter_map(|l| parse_line(l)).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].data, b"one\n");
        assert_eq!(entries[0].stream, "stdout");
        assert_eq!(entries[0].time.unwrap().nanos, 500_000_000);
        assert_eq!(entries[1].stream, "stderr");
        // The partial line is read once it is complete.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-01T00:00:02Z\"}\n")
            .unwrap();
        let more = pos.read_more();
        assert_eq!(more.len(), 1);
        assert_eq!(parse_line(&more[0]).unwrap().data, b"part\n");
        assert!(pos.read_more().is_empty());
        // A rotation starts over in the new file.
        std::fs::rename(&log, dir.path().join("container.log.1")).unwrap();
        std::fs::write(
            &log,
            "{\"log\":\"three\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-01T00:00:03Z\"}\n",
        )
        .unwrap();
        let more = pos.read_more();
        assert_eq!(parse_line(&more[0]).unwrap().data, b"three\n");
        // Lines written before the container (and its folder) went are still read.
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(
            b"{\"log\":\"four\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-01T00:00:04Z\"}\n",
        )
        .unwrap();
        drop(f);
        std::fs::remove_dir_all(dir.path()).unwrap();
        let more = pos.read_more();
        assert_eq!(parse_line(&more[0]).unwrap().data, b"four\n");
        assert!(pos.read_more().is_empty());
    }
}
