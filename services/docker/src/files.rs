//! Docker's views of a container's files: `docker diff`'s lines and the API's changes
//! (`[{"Path":"/tmp","Kind":0}]`), and the path stat of `docker cp`
//! (`X-Docker-Container-Path-Stat`: base64 of `{"name","size","mode","mtime","linkTarget"}`,
//! `mode` in Go's `os.FileMode` bits).

use base64::Engine as _;
use berth_api::containers::v1::{Change, PathStat};
use serde_json::{json, Value};

/// The letter `docker diff` shows for a change kind: `C`, `A`, `D`.
pub fn change_letter(kind: i32) -> &'static str {
    match kind {
        1 => "A",
        2 => "D",
        _ => "C",
    }
}

/// `docker diff`'s line of a change: `C /tmp`.
pub fn change_line(c: &Change) -> String {
    format!("{} {}", change_letter(c.kind), c.path)
}

/// `GET /containers/{id}/changes`'s entries.
pub fn changes_json(changes: &[Change]) -> Value {
    Value::Array(
        changes
            .iter()
            .map(|c| json!({ "Path": c.path, "Kind": c.kind }))
            .collect(),
    )
}

/// A path stat as Docker's JSON; `mtime` in RFC 3339 with nanoseconds, as Go writes it.
pub fn path_stat_json(s: &PathStat) -> Value {
    let mtime = s
        .mtime
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    json!({
        "name": s.name,
        "size": s.size,
        "mode": s.mode,
        "mtime": mtime,
        "linkTarget": s.link_target,
    })
}

/// The `X-Docker-Container-Path-Stat` header's value: the stat's JSON in standard base64.
pub fn path_stat_header(s: &PathStat) -> String {
    base64::engine::general_purpose::STANDARD.encode(path_stat_json(s).to_string())
}

/// Whether a Go `os.FileMode` is a folder's.
pub fn is_dir_mode(mode: u32) -> bool {
    mode & (1 << 31) != 0
}

/// Whether a Go `os.FileMode` is a symlink's.
pub fn is_symlink_mode(mode: u32) -> bool {
    mode & (1 << 27) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lines_and_json() {
        let c = [
            Change {
                path: "/tmp".into(),
                kind: 0,
            },
            Change {
                path: "/tmp/x".into(),
                kind: 1,
            },
            Change {
                path: "/etc/group".into(),
                kind: 2,
            },
        ];
        let lines: Vec<String> = c.iter().map(change_line).collect();
        assert_eq!(lines, ["C /tmp", "A /tmp/x", "D /etc/group"]);
        assert_eq!(
            changes_json(&c[..1]).to_string(),
            r#"[{"Kind":0,"Path":"/tmp"}]"#
        );
    }

    #[test]
    fn the_stat_header_is_dockers() {
        let s = PathStat {
            name: "passwd".into(),
            size: 340,
            mode: 0o644,
            mtime: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            link_target: String::new(),
        };
        let header = path_stat_header(&s);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header)
            .unwrap();
        let v: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(
            v,
            json!({"name":"passwd","size":340,"mode":420,
                   "mtime":"2023-11-14T22:13:20.000000005Z","linkTarget":""})
        );
        assert!(is_dir_mode((1 << 31) | 0o755) && !is_dir_mode(0o644));
        assert!(is_symlink_mode((1 << 27) | 0o777));
    }
}
