//! The container's log, with size-based rotation and RFC 3339 time, in one of two formats
//! ([`LogFormat`]): Docker's json-file lines (`container.log`), or the CRI's lines the
//! kubelet reads (`2024-05-06T07:08:09.123456789Z stdout F hello`, `P` for a partial line).

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Formats a time as RFC 3339 with nanoseconds in UTC: `2024-05-06T07:08:09.123456789Z`.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// The current time as [`rfc3339_nanos`].
pub fn now_rfc3339() -> String {
    rfc3339_nanos(SystemTime::now())
}

// Howard Hinnant's days → civil date algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[derive(Serialize)]
struct Entry<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Docker's json-file: `{"log":"hello\n","stream":"stdout","time":"…"}`.
    #[default]
    JsonFile,
    /// The CRI's: `TIME STREAM F|P TEXT`, the newline not part of TEXT; `P` when the line
    /// goes on in the next entry.
    Cri,
}

impl LogFormat {
    /// The format named by the `io.berth.log-format` annotation (`json-file` or `cri`).
    pub fn parse(name: &str) -> Option<LogFormat> {
        match name {
            "" | "json-file" => Some(LogFormat::JsonFile),
            "cri" => Some(LogFormat::Cri),
            _ => None,
        }
    }
}

/// Longest partial line kept before it is written out without a newline (as Docker does).
const MAX_PARTIAL: usize = 16 * 1024;

/// Writes container output as json-file lines, rotating at `max_size` bytes.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: Option<u64>,
    partial: [Vec<u8>; 2],
    format: LogFormat,
}

impl LogWriter {
    /// Opens (appends to) `path`, creating its parent folders.
    pub fn open(path: &Path, max_size: Option<u64>) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                io::Error::new(e.kind(), format!("create {}: {e}", parent.display()))
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max_size: max_size.filter(|m| *m > 0),
            partial: [Vec::new(), Vec::new()],
            format: LogFormat::JsonFile,
        })
    }

    /// The same writer, writing lines in `format`.
    pub fn with_format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Records output bytes of `stream` (`"stdout"` or `"stderr"`); complete lines are written.
    pub fn write(&mut self, stream: &str, data: &[u8]) {
        let idx = usize::from(stream == "stderr");
        let mut buf = std::mem::take(&mut self.partial[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos + 1;
            self.emit(stream, &buf[start..end], false);
            start = end;
        }
        let mut rest = buf.split_off(start);
        while rest.len() >= MAX_PARTIAL {
            let tail = rest.split_off(MAX_PARTIAL);
            self.emit(stream, &rest, true);
            rest = tail;
        }
        self.partial[idx] = rest;
    }

    /// Writes out what is left of unfinished lines (at EOF of the streams).
    pub fn flush_partial(&mut self) {
        for (idx, stream) in ["stdout", "stderr"].iter().enumerate() {
            let rest = std::mem::take(&mut self.partial[idx]);
            if !rest.is_empty() {
                // The stream ended: the last line is whole, without its newline.
                self.emit(stream, &rest, false);
            }
        }
    }

    /// Writes one line (`partial`: it goes on in the next one).
    fn emit(&mut self, stream: &str, line: &[u8], partial: bool) {
        let Some(json) = self.format_line(stream, line, partial) else {
            return;
        };
        if let Some(max) = self.max_size {
            if self.size > 0 && self.size + json.len() as u64 > max {
                self.rotate();
            }
        }
        if let Some(f) = self.file.as_mut() {
            match f.write_all(&json) {
                Ok(()) => self.size += json.len() as u64,
                Err(e) => crate::log(&format!("write {}: {e}", self.path.display())),
            }
        }
    }

    /// `line` as the bytes of one entry of the log's format, its newline included.
    fn format_line(&self, stream: &str, line: &[u8], partial: bool) -> Option<Vec<u8>> {
        let time = now_rfc3339();
        match self.format {
            LogFormat::JsonFile => {
                let text = String::from_utf8_lossy(line);
                let mut json = serde_json::to_vec(&Entry {
                    log: &text,
                    stream,
                    time: &time,
                })
                .ok()?;
                json.push(b'\n');
                Some(json)
            }
            LogFormat::Cri => {
                let text = line.strip_suffix(b"\n").unwrap_or(line);
                let tag = if partial { "P" } else { "F" };
                let mut out = format!("{time} {stream} {tag} ").into_bytes();
                out.extend_from_slice(text);
                out.push(b'\n');
                Some(out)
            }
        }
    }

    /// Closes the file and opens the path again, appending (created when absent): the
    /// kubelet renamed the file to rotate it. Unfinished lines stay buffered for the new
    /// file. On failure the old file is kept, so output is not lost.
    pub fn reopen(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", self.path.display())))?;
        self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(file);
        Ok(())
    }

    fn rotate(&mut self) {
        let mut old = self.path.as_os_str().to_owned();
        old.push(".1");
        self.file = None;
        if let Err(e) = std::fs::rename(&self.path, &old) {
            crate::log(&format!("rotate {}: {e}", self.path.display()));
        }
        if let Err(e) = self.reopen() {
            crate::log(&format!("reopen after rotation: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_format() {
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 5); // 2024-02-29T23:59:59
        assert_eq!(rfc3339_nanos(t), "2024-02-29T23:59:59.000000005Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 0); // 2000-02-29
        assert_eq!(rfc3339_nanos(t), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn reopen_follows_the_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        let mut w = LogWriter::open(&p, None)
            .unwrap()
            .with_format(LogFormat::Cri);
        w.write("stdout", b"one\n");
        let moved = d.path().join("0.log.1");
        std::fs::rename(&p, &moved).unwrap();
        w.write("stdout", b"two\n");
        w.reopen().unwrap();
        w.write("stdout", b"three\n");
        let old = std::fs::read_to_string(&moved).unwrap();
        let new = std::fs::read_to_string(&p).unwrap();
        assert!(old.contains(" stdout F one\n") && old.contains(" stdout F two\n"));
        assert!(
            new.ends_with(" stdout F three\n") && !new.contains("two"),
            "{new}"
        );
    }

    #[test]
    fn lines_and_rotation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("container.log");
        let mut w = LogWriter::open(&p, Some(300)).unwrap();
        w.write("stdout", b"hel");
        w.write("stdout", b"lo\nwor");
        w.write("stderr", b"oops\n");
        let content = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = content
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["log"], "hello\n");
        assert_eq!(lines[0]["stream"], "stdout");
        assert_eq!(lines[1]["log"], "oops\n");
        assert_eq!(lines[1]["stream"], "stderr");
        w.flush_partial();
        let content = std::fs::read_to_string(&p).unwrap();
        assert!(content.contains("\"log\":\"wor\""));
        for _ in 0..5 {
            w.write("stdout", b"0123456789012345678901234567890123456789\n");
        }
        assert!(d.path().join("container.log.1").exists());
        assert!(std::fs::metadata(&p).unwrap().len() <= 300);
    }

    #[test]
    fn cri_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        let mut w = LogWriter::open(&p, None)
            .unwrap()
            .with_format(LogFormat::Cri);
        w.write("stdout", b"hello\nwor");
        w.write("stderr", b"oops\n");
        w.write("stdout", &vec![b'x'; MAX_PARTIAL + 3]);
        w.flush_partial();
        let content = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<Vec<&str>> = content
            .lines()
            .map(|l| l.splitn(4, ' ').collect())
            .collect();
        assert_eq!(lines.len(), 4, "{content}");
        assert!(lines[0][0].ends_with('Z') && lines[0][0].len() == 30);
        assert_eq!(lines[0][1..], ["stdout", "F", "hello"]);
        assert_eq!(lines[1][1..], ["stderr", "F", "oops"]);
        assert_eq!(lines[2][1..3], ["stdout", "P"]);
        assert_eq!(lines[2][3].len(), MAX_PARTIAL);
        assert!(lines[2][3].starts_with("worxxx"));
        assert_eq!(lines[3][1..], ["stdout", "F", "xxxxxx"]);
        assert_eq!(LogFormat::parse("cri"), Some(LogFormat::Cri));
        assert_eq!(LogFormat::parse(""), Some(LogFormat::JsonFile));
        assert_eq!(LogFormat::parse("syslog"), None);
    }
}
