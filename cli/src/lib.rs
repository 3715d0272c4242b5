//! The pure parts of the `berth` CLI as a library: parsers and formatters that need no
//! daemon (`-p` specs, `-f` filters, `--format` templates, Docker's output formats) and the
//! client's error type they report through. The binary (src/main.rs) uses them from here; the
//! fuzz targets (fuzz/, outside the workspace) can reach them only because they are a library.

pub mod client;
pub mod filters;
pub mod format;
pub mod ports;
pub mod template;
