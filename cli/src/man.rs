//! `berth man DIR` (hidden: for packagers and `quickstart.sh`): one man page per command —
//! berth.1, berth-run.1, berth-image-ls.1, … — made by clap_mangen from the very command tree
//! that parses berth's arguments, so a page cannot drift from the flags it describes.

use crate::client::Error;
use clap::{Args, CommandFactory};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write the pages into (made when missing), e.g. /usr/local/share/man/man1
    pub dir: PathBuf,
}

/// Writes the page of `berth` and of every command under it that is not hidden; their paths.
pub fn write_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = crate::Cli::command();
    // Building names each command as its page does (`berth-image-ls`) and gives every one the
    // global flags.
    cmd.build();
    let mut written = Vec::new();
    write_tree(cmd, dir, &mut written)?;
    Ok(written)
}

fn write_tree(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub.clone(), dir, written)?;
    }
    let page = clap_mangen::Man::new(cmd)
        .source(format!("berth {}", env!("CARGO_PKG_VERSION")))
        .manual("berth manual");
    written.push(page.generate_to(dir)?);
    Ok(())
}

/// Writes the pages into `a.dir`; the exit code.
pub fn man(a: &ManArgs) -> u8 {
    match write_pages(&a.dir) {
        Ok(_) => 0,
        Err(e) => crate::fail(Error::Local(format!(
            "cannot write the man pages to {}: {e}",
            a.dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `berth-image-ls` for `image ls`: the page name of every command that is not hidden.
    fn page_names(cmd: &clap::Command, prefix: &str, names: &mut Vec<String>) {
        let name = match prefix {
            "" => cmd.get_name().to_string(),
            p => format!("{p}-{}", cmd.get_name()),
        };
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            page_names(sub, &name, names);
        }
        names.push(format!("{name}.1"));
    }

    #[test]
    fn every_command_gets_a_man_page() {
        let dir = std::env::temp_dir().join(format!("berth-man-test-{}", std::process::id()));
        let written = write_pages(&dir).unwrap();
        let mut want = Vec::new();
        page_names(&crate::Cli::command(), "", &mut want);
        assert!(want.len() > 60, "{want:?}");
        for name in [
            "berth.1",
            "berth-run.1",
            "berth-image-ls.1",
            "berth-completion.1",
        ] {
            assert!(want.iter().any(|w| w == name), "{name} in {want:?}");
        }
        for name in &want {
            let page = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            assert!(page.starts_with(".ie"), "{name}: {page:?}");
        }
        assert_eq!(written.len(), want.len());
        assert!(!dir.join("berth-man.1").exists());
        let run = std::fs::read_to_string(dir.join("berth-run.1")).unwrap();
        assert!(
            run.contains("berth\\-run") && run.contains("\\-\\-namespace"),
            "{run}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
