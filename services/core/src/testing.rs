//! For tests of every berth crate: skipping a test whose prerequisite is missing (a tool, root,
//! the CNI plugins…) without letting it pass by accident in CI.
//!
//! [`skip`] prints `SKIP <test>: <why>` and the test returns — on a developer's machine. Under
//! CI ([`under_ci`]) it panics with the same line instead, so a missing prerequisite fails the
//! test; `integration/run.sh` also counts the `SKIP` lines of its test log and fails under CI
//! when any appear.
//!
//! ```
//! fn test_that_needs_root() {
//!     if !is_root() {
//!         return berth_core::testing::skip("needs root");
//!     }
//!     // …
//! }
//! # fn is_root() -> bool { true }
//! ```

use std::fmt::Display;
use std::io::Write;

/// Whether the tests run under CI: the `CI` variable (set by CI systems, and by `.ci/run`'s
/// callers) is set to anything but the empty string, `0` or `false` (in any case).
pub fn under_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// A prerequisite of the running test is missing: prints `SKIP <test>: <why>` and returns, so
/// that the caller returns too; under CI panics with the same line.
///
/// The line is written to the standard error's descriptor itself, not through `eprintln!`,
/// which libtest captures and shows only for failing tests: so it reaches the test log of a
/// passing run, where `integration/run.sh` counts it. The test is named by its thread (libtest
/// names each test's thread after it).
#[track_caller]
pub fn skip(why: impl Display) {
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(|n| format!(" {n}"))
        .unwrap_or_default();
    let line = format!("SKIP{test}: {why}");
    if under_ci() {
        panic!("{line} — CI is set, so a missing prerequisite fails the test");
    }
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The first of `tools` not found on `PATH`, as a reason for [`skip`].
pub fn missing_tool(tools: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    tools
        .iter()
        .find(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .map(|t| format!("{t} is not installed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_named() {
        assert_eq!(missing_tool(&["sh"]), None);
        assert_eq!(
            missing_tool(&["sh", "no-such-tool-berth"]).as_deref(),
            Some("no-such-tool-berth is not installed")
        );
    }
}
