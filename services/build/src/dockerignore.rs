//! `.dockerignore` rules: which paths of the build context are left out. Pure code, no I/O.
//!
//! [`DockerIgnore::parse`] reads the file's text; [`DockerIgnore::excluded`] answers for one
//! path relative to the context root (`/`-separated).

/// The parsed rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Cleaned pattern, `/`-separated, split at `/`.
    parts: Vec<String>,
    /// A `!` exception: re-includes what it matches.
    exception: bool,
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<DockerIgnore, String> {
        let _ = text;
        todo!()
    }

    /// Whether `rel_path` (relative to the context root, `/`-separated) is left out of the
    /// context. `is_dir` tells whether it is a directory.
    pub fn excluded(&self, rel_path: &str, is_dir: bool) -> bool {
        let _ = (rel_path, is_dir);
        todo!()
    }

    /// Whether a walker may skip everything below the directory `rel_dir`: it is excluded
    /// and no `!` exception could re-include anything inside it.
    pub fn skip_dir(&self, rel_dir: &str) -> bool {
        let _ = rel_dir;
        todo!()
    }

    /// Whether no rule is present (everything is included).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}
