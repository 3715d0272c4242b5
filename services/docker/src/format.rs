//! How Docker writes times, durations, statuses and commands in its listings and inspect
//! JSON.

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

pub use crate::time::{created_at, rfc3339};

#[cfg(test)]
mod tests {
    use super::*;

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
}
