//! `berth completion SHELL`: berth's completion script for a shell (as `docker completion` and
//! `kubectl completion` print theirs), made by clap_complete from the very command tree that
//! parses berth's arguments, so it knows every command and flag there is. `quickstart.sh`
//! installs bash's, zsh's and fish's.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    pub shell: Shell,
}

/// The completion script of `berth` for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut crate::Cli::command(), "berth", &mut out);
    out
}

/// Prints the script; the exit code.
pub fn completion(a: &CompletionArgs) -> u8 {
    match crate::stdio::write_stdout(&script(a.shell)) {
        Ok(()) => 0,
        Err(e) => crate::fail(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_completes_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = String::from_utf8(script(shell)).unwrap();
            for word in ["run", "ps", "image", "namespace"] {
                assert!(s.contains(word), "{shell}'s script lacks {word}");
            }
        }
        let bash = String::from_utf8(script(Shell::Bash)).unwrap();
        assert!(bash.contains("complete -F _berth"), "{bash}");
        assert!(bash.contains("berth,run)"), "{bash}");
    }
}
