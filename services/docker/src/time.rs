//! Docker's ways of writing a time: RFC 3339 (`inspect`), Go's `time.String()` (`ls`'s
//! CreatedAt) and RFC 3339 with nine fraction digits (`events`, `logs -t`).

use berth_api::prost_types::Timestamp;

/// RFC 3339 in UTC with as many fraction digits as needed; Go's zero time when unset.
pub fn rfc3339(t: Option<&Timestamp>) -> String {
    match t.filter(|t| t.seconds > 0 || t.nanos > 0) {
        Some(t) => chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

/// Go's time.String() of a timestamp in UTC, as `ps` and `network ls` show CreatedAt
/// (`2023-11-14 22:13:20 +0000 UTC`).
pub fn created_at(t: Option<&Timestamp>) -> String {
    let t = t.cloned().unwrap_or_default();
    chrono::DateTime::from_timestamp(t.seconds, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default()
}

/// RFC 3339 with exactly nine digits of fraction, as `docker logs -t` and `events` print.
pub fn rfc3339_nano_fixed(t: Option<&Timestamp>) -> String {
    let t = t.cloned().unwrap_or_default();
    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
        .unwrap_or_default()
}

/// A `--since`/`--until` time as Docker reads it: a duration before `now` (`10m`, `1h30m`,
/// `0s`), an RFC 3339 time, a date, or Unix seconds (with an optional `.nanos`).
pub fn parse_moment(s: &str, now: &Timestamp) -> Result<Timestamp, String> {
    let s = s.trim();
    let bad =
        || format!("invalid time {s:?}: use a duration (10m), an RFC 3339 time or Unix seconds");
    if let Some(d) = parse_duration(s) {
        let nanos = i128::from(now.seconds) * 1_000_000_000 + i128::from(now.nanos) - d;
        return Ok(Timestamp {
            seconds: nanos.div_euclid(1_000_000_000) as i64,
            nanos: nanos.rem_euclid(1_000_000_000) as i32,
        });
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        });
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = d.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc();
        return Ok(Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        });
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let seconds: i64 = secs.parse().map_err(|_| bad())?;
    let nanos = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")[..9].parse().map_err(|_| bad())?
    };
    Ok(Timestamp { seconds, nanos })
}

/// Go's duration syntax (`1h30m`, `10s`, `250ms`) in nanoseconds; None if it is not one.
fn parse_duration(s: &str) -> Option<i128> {
    let mut rest = s;
    let mut total: i128 = 0;
    if rest.is_empty() || !rest.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += (n * scale) as i128;
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_as_docker_reads_them() {
        let now = Timestamp {
            seconds: 1000,
            nanos: 0,
        };
        assert_eq!(parse_moment("1m", &now).unwrap().seconds, 940);
        assert_eq!(parse_moment("1h1s", &now).unwrap().seconds, 1000 - 3601);
        assert_eq!(parse_moment("0s", &now).unwrap(), now);
        assert_eq!(parse_moment("500.25", &now).unwrap().nanos, 250_000_000);
        assert_eq!(
            parse_moment("2023-11-14T22:13:20Z", &now).unwrap().seconds,
            1_700_000_000
        );
        assert!(parse_moment("soon", &now).is_err());
    }
}
