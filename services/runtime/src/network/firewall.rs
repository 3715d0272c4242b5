//! The iptables rules of a bridge network, one set per bridge (not per container, which would
//! cost the plugins several iptables runs per start): masquerading of traffic that leaves the
//! subnet, and `FORWARD` accepts for the bridge (hosts where Docker set the `FORWARD` policy to
//! DROP and loaded `br_netfilter` would otherwise drop the containers' traffic). Every rule
//! carries the comment `berth:<bridge>`, so the rules of a bridge can be found and removed
//! again, also after a crash, and two instances with different bridges never touch each
//! other's rules.
//!
//! Networks are isolated from each other as Docker's are, in two shared chains that
//! `FORWARD` jumps to first: `BERTH-ISOLATION-1` sends what leaves a bridge for another
//! interface to `BERTH-ISOLATION-2`, which drops it if that interface is another berth bridge.

use std::process::Command;

/// One rule: its table, chain and match/target arguments.
struct Rule {
    table: &'static str,
    chain: &'static str,
    args: Vec<String>,
}

fn comment(bridge: &str) -> String {
    format!("berth:{bridge}")
}

fn rules(bridge: &str, subnet: &str, internal: bool) -> Vec<Rule> {
    let tag = |mut v: Vec<String>| {
        v.extend([
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            comment(bridge),
        ]);
        v
    };
    let s = |x: &str| x.to_string();
    let mut out = Vec::new();
    if internal {
        out.push(Rule {
            table: "filter",
            chain: "FORWARD",
            args: tag(vec![
                s("-i"),
                s(bridge),
                s("-o"),
                s(bridge),
                s("-j"),
                s("ACCEPT"),
            ]),
        });
        for dir in ["-i", "-o"] {
            out.push(Rule {
                table: "filter",
                chain: "FORWARD",
                args: tag(vec![s(dir), s(bridge), s("-j"), s("DROP")]),
            });
        }
    } else {
        out.push(Rule {
            table: "nat",
            chain: "POSTROUTING",
            args: tag(vec![
                s("-s"),
                s(subnet),
                s("!"),
                s("-o"),
                s(bridge),
                s("-j"),
                s("MASQUERADE"),
            ]),
        });
        for dir in ["-i", "-o"] {
            out.push(Rule {
                table: "filter",
                chain: "FORWARD",
                args: tag(vec![s(dir), s(bridge), s("-j"), s("ACCEPT")]),
            });
        }
    }
    out
}

fn iptables(table: &str, op: &str, chain: &str, args: &[String]) -> std::io::Result<bool> {
    let out = Command::new("iptables")
        .args(["-w", "5", "-t", table, op, chain])
        .args(args)
        .output()?;
    if !out.status.success() && op != "-C" && op != "-D" {
        return Err(std::io::Error::other(format!(
            "iptables -t {table} {op} {chain} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.status.success())
}

const ISOLATION_1: &str = "BERTH-ISOLATION-1";
const ISOLATION_2: &str = "BERTH-ISOLATION-2";

/// The isolation rules of a bridge, in the two shared chains.
fn isolation(bridge: &str) -> Vec<Rule> {
    let tag = vec![
        "-m".to_string(),
        "comment".into(),
        "--comment".into(),
        comment(bridge),
    ];
    let s = |x: &str| x.to_string();
    vec![
        Rule {
            table: "filter",
            chain: ISOLATION_1,
            args: [
                vec![s("-i"), s(bridge), s("!"), s("-o"), s(bridge)],
                tag.clone(),
                vec![s("-j"), s(ISOLATION_2)],
            ]
            .concat(),
        },
        Rule {
            table: "filter",
            chain: ISOLATION_2,
            args: [vec![s("-o"), s(bridge)], tag, vec![s("-j"), s("DROP")]].concat(),
        },
    ]
}

/// The isolation chains exist and `FORWARD` jumps to them before anything else.
fn ensure_isolation_chains() -> std::io::Result<()> {
    for chain in [ISOLATION_1, ISOLATION_2] {
        // Fails when it exists already, which is what is wanted.
        let _ = Command::new("iptables")
            .args(["-w", "5", "-t", "filter", "-N", chain])
            .output()?;
    }
    let jump = vec!["-j".to_string(), ISOLATION_1.to_string()];
    let out = Command::new("iptables")
        .args(["-w", "5", "-t", "filter", "-S", "FORWARD"])
        .output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let first = listing.lines().find(|l| l.starts_with("-A "));
    if first != Some(&format!("-A FORWARD -j {ISOLATION_1}")) {
        while iptables("filter", "-D", "FORWARD", &jump)? {}
        iptables("filter", "-I", "FORWARD", &jump)?;
    }
    Ok(())
}

/// Adds the rules of a bridge that are missing (the accepts first in `FORWARD`, after the
/// jump to the isolation chains).
pub fn ensure(bridge: &str, subnet: &str, internal: bool) -> Result<(), String> {
    let run = || -> std::io::Result<()> {
        for r in rules(bridge, subnet, internal).iter().rev() {
            if !iptables(r.table, "-C", r.chain, &r.args)? {
                let op = if r.chain == "FORWARD" { "-I" } else { "-A" };
                iptables(r.table, op, r.chain, &r.args)?;
            }
        }
        ensure_isolation_chains()?;
        for r in isolation(bridge) {
            if !iptables(r.table, "-C", r.chain, &r.args)? {
                iptables(r.table, "-A", r.chain, &r.args)?;
            }
        }
        Ok(())
    };
    run().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            "iptables is not installed: install the Debian package iptables".to_string()
        } else {
            format!("cannot set up the firewall rules of bridge {bridge}: {e}")
        }
    })
}

/// Removes every rule tagged for `bridge`, whatever its subnet was.
pub fn remove(bridge: &str) {
    let tag = comment(bridge);
    for table in ["filter", "nat"] {
        let Ok(out) = Command::new("iptables")
            .args(["-w", "5", "-t", table, "-S"])
            .output()
        else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `-A CHAIN args…`: the same words with -D remove it.
            let Some(rest) = line.strip_prefix("-A ") else {
                continue;
            };
            if !rest.contains(&format!("--comment {tag}"))
                && !rest.contains(&format!("--comment \"{tag}\""))
            {
                continue;
            }
            let words: Vec<String> = rest
                .split_whitespace()
                .map(|w| w.trim_matches('"').to_string())
                .collect();
            if let Some((chain, args)) = words.split_first() {
                let _ = iptables(table, "-D", chain, args);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_sets() {
        let r = rules("berth0", "10.77.0.0/24", false);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].table, "nat");
        assert!(r[0]
            .args
            .join(" ")
            .contains("-s 10.77.0.0/24 ! -o berth0 -j MASQUERADE"));
        assert!(r
            .iter()
            .all(|r| r.args.ends_with(&["berth:berth0".to_string()])));
        let r = rules("br-x", "10.77.1.0/24", true);
        assert!(r.iter().all(|r| r.table == "filter"));
        assert!(!r.iter().any(|r| r.args.contains(&"MASQUERADE".to_string())));
    }
}
