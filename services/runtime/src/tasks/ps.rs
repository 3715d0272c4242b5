//! Docker's `top`, on the runtime's own host: `ps` (procps) runs with the caller's options
//! (Docker's default `-ef`), and the rows whose PID column is one of the container's
//! processes are kept, split in as many fields as the header has titles.
//!
//! [`ps_table`] runs ps; [`table_of`] is the pure part (finding the PID column, splitting
//! rows). Options ps refuses come back as InvalidArgument with ps's own message; a host
//! without ps as FailedPrecondition saying what to install.

use crate::error::{Error, Result};

/// Docker's `top` options when the caller gives none.
const DEFAULT_PS_ARGS: &str = "-ef";

/// ps's header titles and the container's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PsTable {
    pub titles: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Runs `ps` with `ps_args` (split at whitespace; empty: `-ef`) and keeps the rows of `pids`.
pub(crate) async fn ps_table(ps_args: &str, pids: &[u32]) -> Result<PsTable> {
    let mut args: Vec<&str> = ps_args.split_whitespace().collect();
    if args.is_empty() {
        args = vec![DEFAULT_PS_ARGS];
    }
    let out = tokio::process::Command::new("ps")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| {
            Error::FailedPrecondition(if e.kind() == std::io::ErrorKind::NotFound {
                "ps is not installed on the host of the runtime service, so top cannot list \
                 the container's processes: install procps there (apt-get install procps)"
                    .to_string()
            } else {
                format!("cannot run ps on the host of the runtime service: {e}")
            })
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("it failed without a message")
            .trim();
        return Err(Error::InvalidArgument(format!(
            "ps {}: {why}",
            args.join(" ")
        )));
    }
    table_of(&String::from_utf8_lossy(&out.stdout), pids)
}

/// The rows of a `ps` output whose PID is one of `pids`: the titles from its header, each row
/// split in as many fields (the last, a command line, keeps its spaces). An output without a
/// `PID` column (options that leave it out) is refused: the rows cannot be told apart.
fn table_of(ps: &str, pids: &[u32]) -> Result<PsTable> {
    let mut lines = ps.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_column = titles.iter().position(|t| t == "PID").ok_or_else(|| {
        Error::InvalidArgument(
            "Couldn't find PID field in ps output: give ps options that show the pid \
             column (-o pid,…)"
                .to_string(),
        )
    })?;
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields = split_row(line, titles.len());
        let pid: Option<u32> = fields.get(pid_column).and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            rows.push(fields);
        }
    }
    Ok(PsTable { titles, rows })
}

/// A line of ps's output in `columns` fields: whitespace separates all but the last, which
/// keeps the rest of the line.
fn split_row(line: &str, columns: usize) -> Vec<String> {
    let mut fields = Vec::with_capacity(columns);
    let mut rest = line.trim_start();
    while fields.len() + 1 < columns {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        fields.push(rest[..end].to_string());
        rest = rest[end..].trim_start();
    }
    fields.push(rest.trim_end().to_string());
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS_EF: &str = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                         root           1       0  0 10:00 ?        00:00:01 /sbin/init splash\n\
                         root         420       1  0 10:01 ?        00:00:00 sleep 300\n\
                         \n";

    #[test]
    fn keeps_the_containers_rows() {
        let t = table_of(PS_EF, &[420, 999]).unwrap();
        assert_eq!(
            t.titles,
            ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        );
        assert_eq!(
            t.rows,
            [[
                "root",
                "420",
                "1",
                "0",
                "10:01",
                "?",
                "00:00:00",
                "sleep 300"
            ]]
        );
        assert!(table_of(PS_EF, &[]).unwrap().rows.is_empty());
    }

    #[test]
    fn the_pid_column_may_be_anywhere() {
        let t = table_of("COMMAND PID\nsleep 7\nsh 8\n", &[8]).unwrap();
        assert_eq!(t.rows, [["sh", "8"]]);
    }

    #[test]
    fn without_a_pid_column_it_is_refused() {
        let e = table_of("USER COMMAND\nroot sh\n", &[1]).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(ref m) if m.contains("PID")),
            "{e}"
        );
        assert!(table_of("", &[1]).is_err());
    }

    #[tokio::test]
    async fn runs_this_hosts_ps() {
        let me = std::process::id();
        match ps_table("-o pid,comm", &[me]).await {
            Ok(t) => {
                assert_eq!(t.titles, ["PID", "COMMAND"]);
                assert_eq!(t.rows.len(), 1, "{t:?}");
                assert_eq!(t.rows[0][0], me.to_string());
            }
            // A host without procps: the error says what to install.
            Err(Error::FailedPrecondition(m)) => assert!(m.contains("procps"), "{m}"),
            Err(e) => panic!("{e}"),
        }
        if let Err(Error::InvalidArgument(m)) = ps_table("--no-such-option", &[me]).await {
            assert!(m.starts_with("ps --no-such-option: "), "{m}");
        }
    }
}
