//! Output the way Docker prints it: sizes, ages, ids.

/// Docker's HumanSize: decimal units, three significant digits ("4.26MB", "125MB", "2MB").
pub fn size(bytes: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes.max(0) as f64;
    let mut i = 0;
    while v >= 999.5 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let decimals = if v >= 99.95 {
        0
    } else if v >= 9.995 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", units[i])
}

/// Docker's HumanDuration, as in "2 weeks ago".
pub fn ago(seconds: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    format!("{} ago", duration(now - seconds))
}

/// Docker's HumanDuration of `d` seconds: "Less than a second", "5 seconds", "About a minute".
pub fn duration(d: i64) -> String {
    let d = d.max(0);
    match d {
        d if d < 1 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        d if d < 60 => format!("{d} seconds"),
        d if d < 120 => "About a minute".to_string(),
        d if d < 3600 => format!("{} minutes", d / 60),
        d if d < 7200 => "About an hour".to_string(),
        d if d < 48 * 3600 => format!("{} hours", d / 3600),
        d if d < 7 * 24 * 3600 * 2 => format!("{} days", d / 86400),
        d if d < 30 * 24 * 3600 * 3 => format!("{} weeks", d / (7 * 86400)),
        d if d < 365 * 24 * 3600 * 2 => format!("{} months", d / (30 * 86400)),
        d => format!("{} years", d / (365 * 86400)),
    }
}

/// The STATUS column of `ps`: "Up 5 seconds", "Up 5 seconds (Paused)", "Exited (0) 3 seconds
/// ago", "Created"; `status` is the state as Docker names it (see `containers::state_name`).
/// Times are unix seconds (0 = unknown).
pub fn status_text(status: &str, exit_code: i32, started: i64, finished: i64, now: i64) -> String {
    match status {
        "running" => format!("Up {}", duration(now - started)),
        "paused" => format!("Up {} (Paused)", duration(now - started)),
        "restarting" if finished > 0 => {
            format!("Restarting ({exit_code}) {} ago", duration(now - finished))
        }
        "restarting" => format!("Restarting ({exit_code})"),
        "exited" if finished > 0 => {
            format!("Exited ({exit_code}) {} ago", duration(now - finished))
        }
        "exited" => format!("Exited ({exit_code})"),
        "created" | "" => "Created".to_string(),
        "removing" => "Removal In Progress".to_string(),
        "dead" => "Dead".to_string(),
        other => other.to_string(),
    }
}

/// Docker's Ellipsis: at most `max` characters, the last one "…" when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The COMMAND column of `ps`: the command line (arguments with spaces in single quotes,
/// as Docker's daemon joins them), cut to 20 characters, then quoted.
pub fn command(args: &[String], trunc: bool) -> String {
    let c = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let c = if trunc { ellipsis(&c, 20) } else { c };
    serde_json::to_string(&c).unwrap_or_default()
}

/// A protobuf timestamp as RFC 3339 with nanoseconds; Go's zero time when unset.
pub fn rfc3339(t: Option<&berth_api::prost_types::Timestamp>) -> String {
    match t.filter(|t| t.seconds > 0 || t.nanos > 0) {
        Some(t) => chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

/// Go's time.String() of a timestamp in UTC, as `ps` and `network ls` show CreatedAt
/// (`2023-11-14 22:13:20 +0000 UTC`).
pub fn created_at(t: Option<&berth_api::prost_types::Timestamp>) -> String {
    let t = t.cloned().unwrap_or_default();
    chrono::DateTime::from_timestamp(t.seconds, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default()
}

/// RFC 3339 with exactly nine digits of fraction, as `docker logs -t` and `events` print.
pub use berth_docker::log_timestamp as rfc3339_nano_fixed;

/// Labels as Docker and ctr list them: `k=v` pairs sorted by key, joined by commas.
pub fn labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<String> = labels
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// Go's `time.Time.String()` in UTC (`2023-11-14 22:13:20.000000005 +0000 UTC`), as ctr
/// prints a metric's timestamp.
pub fn go_time(t: Option<&berth_api::prost_types::Timestamp>) -> String {
    let t = t.cloned().unwrap_or_default();
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.9f +0000 UTC").to_string())
        .unwrap_or_default()
}

/// Prints rows as left-aligned columns separated by three spaces, like Docker's tables.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(4_260_000), "4.26MB");
        assert_eq!(size(125_000_000), "125MB");
        assert_eq!(size(1_234_567), "1.23MB");
        assert_eq!(size(2_000_000), "2MB");
        assert_eq!(size(2_011_000), "2.01MB");
        assert_eq!(size(999_999), "1MB");
    }

    #[test]
    fn status_like_docker() {
        assert_eq!(status_text("running", 0, 100, 0, 105), "Up 5 seconds");
        assert_eq!(
            status_text("running", 0, 100, 0, 100),
            "Up Less than a second"
        );
        assert_eq!(status_text("running", 0, 100, 0, 101), "Up 1 second");
        assert_eq!(
            status_text("paused", 0, 100, 0, 105),
            "Up 5 seconds (Paused)"
        );
        assert_eq!(
            status_text("running", 0, 0, 0, 100 + 3 * 3600),
            "Up 3 hours"
        );
        assert_eq!(
            status_text("exited", 0, 100, 200, 203),
            "Exited (0) 3 seconds ago"
        );
        assert_eq!(
            status_text("exited", 137, 100, 200, 290),
            "Exited (137) About a minute ago"
        );
        assert_eq!(status_text("created", 0, 0, 0, 5), "Created");
        assert_eq!(
            status_text("restarting", 1, 100, 200, 201),
            "Restarting (1) 1 second ago"
        );
        assert_eq!(status_text("dead", 0, 0, 0, 5), "Dead");
    }

    #[test]
    fn commands_like_docker() {
        let a = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(command(&a(&["sh"]), true), "\"sh\"");
        assert_eq!(
            command(&a(&["sh", "-c", "echo started; while true"]), true),
            "\"sh -c 'echo started…\""
        );
        assert_eq!(
            command(&a(&["sh", "-c", "echo \"hi\""]), false),
            "\"sh -c 'echo \\\"hi\\\"'\""
        );
        assert_eq!(ellipsis("12345678901234567890", 20), "12345678901234567890");
        assert_eq!(ellipsis("123456789012345678901", 20).chars().count(), 20);
    }

    #[test]
    fn times() {
        let t = berth_api::prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        assert_eq!(
            rfc3339_nano_fixed(Some(&t)),
            "2023-11-14T22:13:20.000000005Z"
        );
        assert_eq!(rfc3339(None), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(Some(&t)), "2023-11-14T22:13:20.000000005Z");
    }

    #[test]
    fn labels_and_go_times() {
        let l: std::collections::HashMap<String, String> =
            [("b".into(), "2".into()), ("a".into(), "1".into())].into();
        assert_eq!(labels(&l), "a=1,b=2");
        assert_eq!(labels(&std::collections::HashMap::new()), "");
        let t = berth_api::prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        assert_eq!(go_time(Some(&t)), "2023-11-14 22:13:20.000000005 +0000 UTC");
    }

    #[test]
    fn tables_align() {
        let t = table(&[
            vec!["A".into(), "BB".into()],
            vec!["CCC".into(), "D".into()],
        ]);
        assert_eq!(t, "A     BB\nCCC   D\n");
    }
}
