//! Dockerfiles and `.dockerignore` files as Docker reads them. Pure code, no I/O, few
//! dependencies, so that every part of berth that speaks Dockerfile can share it: the build
//! service (whole Dockerfiles), the image service (`commit --change` instructions) and the CLI
//! (which files of a build context to send).
//!
//! - [`dockerfile`]: the parser ([`dockerfile::parse`], [`dockerfile::parse_instruction`]),
//!   Docker's variable substitution ([`dockerfile::expand`]) and the history text of each
//!   step ([`dockerfile::history_text`]).
//! - [`dockerignore`]: `.dockerignore` rules ([`dockerignore::DockerIgnore`]).
//!
//! ```
//! use berth_dockerfile::dockerfile::{self, Args};
//!
//! let inst = dockerfile::parse_instruction("ENV A=1", 1, '\\').unwrap();
//! assert_eq!(inst.args, Args::Env(vec![("A".into(), "1".into())]));
//! ```

pub mod dockerfile;
pub mod dockerignore;
