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
    let d = (now - seconds).max(0);
    let s = match d {
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
    };
    format!("{s} ago")
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
    fn tables_align() {
        let t = table(&[
            vec!["A".into(), "BB".into()],
            vec!["CCC".into(), "D".into()],
        ]);
        assert_eq!(t, "A     BB\nCCC   D\n");
    }
}
