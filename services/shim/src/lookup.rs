//! Resolving the container's executable the way runc/Go's `exec.LookPath` does, with Docker's
//! error messages and exit codes.

use crate::error::Error;
use berth_quote::go_quote;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// PATH used when `process.env` has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn exec_err(name: &str, detail: &str, code: i32) -> Error {
    Error::Exec {
        message: format!("exec: {}: {detail}", go_quote(name)),
        code,
    }
}

/// Whether `path` is a regular file executable by the effective ids.
fn check_executable(path: &Path) -> Result<(), std::io::Error> {
    let md = std::fs::metadata(path)?;
    if md.is_dir() || md.permissions().mode() & 0o111 == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EACCES));
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn describe(e: &std::io::Error) -> String {
    // Go prints errno strings in lower case ("no such file or directory").
    match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file or directory".into(),
        Some(libc::ENOTDIR) => "not a directory".into(),
        Some(libc::EACCES) => "permission denied".into(),
        Some(libc::ELOOP) => "too many levels of symbolic links".into(),
        _ => {
            let s = e.to_string();
            // strip Rust's " (os error N)"
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s.to_lowercase(),
            }
        }
    }
}

/// The exit code Docker uses for an exec-time errno: 127 for "not found", 126 otherwise.
pub fn code_for_errno(errno: i32) -> i32 {
    match errno {
        libc::ENOENT | libc::ENOTDIR => 127,
        _ => 126,
    }
}

/// Resolves `arg0`: a name without `/` is searched in `path_env` (`PATH` of the process env),
/// anything else is checked as is (relative to the current folder).
pub fn find_executable(arg0: &str, path_env: Option<&str>) -> Result<PathBuf, Error> {
    if arg0.contains('/') {
        let p = Path::new(arg0);
        return match std::fs::metadata(p) {
            Err(e) => {
                let code = code_for_errno(e.raw_os_error().unwrap_or(libc::ENOENT));
                Err(exec_err(
                    arg0,
                    &format!("stat {arg0}: {}", describe(&e)),
                    code,
                ))
            }
            Ok(_) => match check_executable(p) {
                Ok(()) => Ok(p.to_path_buf()),
                Err(e) => Err(exec_err(arg0, &describe(&e), 126)),
            },
        };
    }
    let path_env = path_env.unwrap_or(DEFAULT_PATH);
    for dir in path_env.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        if check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(exec_err(arg0, "executable file not found in $PATH", 127))
}

/// The value of `PATH` in an env list (`KEY=VALUE` strings).
pub fn path_from_env(env: &[String]) -> Option<&str> {
    env.iter().rev().find_map(|e| e.strip_prefix("PATH="))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn mk(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn search_path() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        mk(&a, "tool", 0o644); // not executable: skipped
        let want = mk(&b, "tool", 0o755);
        fs::create_dir_all(a.join("dir")).unwrap(); // a directory: skipped
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(find_executable("tool", Some(&path)).unwrap(), want);
        match find_executable("dir", Some(&path)) {
            Err(Error::Exec { message, code }) => {
                assert_eq!(message, "exec: \"dir\": executable file not found in $PATH");
                assert_eq!(code, 127);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_found() {
        match find_executable("foo", Some("/nonexistent-dir-berth")) {
            Err(Error::Exec { message, code }) => {
                assert_eq!(message, "exec: \"foo\": executable file not found in $PATH");
                assert_eq!(code, 127);
            }
            other => panic!("{other:?}"),
        }
        match find_executable("/no/such", None) {
            Err(Error::Exec { message, code }) => {
                assert_eq!(
                    message,
                    "exec: \"/no/such\": stat /no/such: no such file or directory"
                );
                assert_eq!(code, 127);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_executable() {
        let d = tempfile::tempdir().unwrap();
        let f = mk(d.path(), "data", 0o644);
        let fs_ = f.to_str().unwrap();
        match find_executable(fs_, None) {
            Err(Error::Exec { message, code }) => {
                assert_eq!(message, format!("exec: \"{fs_}\": permission denied"));
                assert_eq!(code, 126);
            }
            other => panic!("{other:?}"),
        }
        let ds = d.path().to_str().unwrap();
        match find_executable(ds, None) {
            Err(Error::Exec { code, .. }) => assert_eq!(code, 126),
            other => panic!("{other:?}"),
        }
        let ok = mk(d.path(), "run", 0o700);
        assert_eq!(find_executable(ok.to_str().unwrap(), None).unwrap(), ok);
    }

    #[test]
    fn env_path() {
        let env = vec!["A=1".to_string(), "PATH=/bin:/usr/bin".to_string()];
        assert_eq!(path_from_env(&env), Some("/bin:/usr/bin"));
        assert_eq!(path_from_env(&[]), None);
        assert_eq!(go_quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(code_for_errno(libc::ENOENT), 127);
        assert_eq!(code_for_errno(libc::ENOEXEC), 126);
    }
}
