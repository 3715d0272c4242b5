//! Output the way Docker prints it: sizes, ages, ids.

/// Docker's HumanSize: decimal units, three significant digits ("4.26MB", "125MB", "2MB").
pub use berth_docker::human_size as size;

pub use berth_docker::format::{ago, command, duration, ellipsis, status_text};
pub use berth_docker::time::{created_at, rfc3339, rfc3339_nano_fixed};

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
