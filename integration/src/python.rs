//! Clients in other languages for the tests: a Python virtualenv kept between runs (grpcio
//! for the gRPC clients, the `docker` SDK for the gateway), installers with a time limit, and
//! a lock so that test binaries running together install once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with a time limit; None when it could not start or took too long (then killed).
pub fn run_for(mut cmd: Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take()?;
    let mut err = child.stderr.take()?;
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    Some(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

/// The last 15 lines of a child's output, for an error message.
pub fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// An exclusive lock on `dir/name`, held while the returned file is open: one installer at a
/// time, should several test binaries get there together.
pub fn lock_in(dir: &Path, name: &str) -> Result<File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock =
        File::create(dir.join(name)).map_err(|e| format!("cannot lock {}: {e}", dir.display()))?;
    // SAFETY: flock(2) on a descriptor we own; released when `lock` is closed.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    Ok(lock)
}

/// Runs an installer (`what`: pip or npm and its arguments) for up to 10 minutes; when it
/// fails, removes what it left in `partial` (a folder it made) and says why.
pub fn install(c: Command, what: &str, partial: Option<&Path>) -> Result<(), String> {
    let why = match run_for(c, Duration::from_secs(600)) {
        Some(o) if o.status.success() => return Ok(()),
        Some(o) => format!("{what} failed: {}", tail(&o.stderr)),
        None => format!("{what} did not finish in 10 minutes"),
    };
    if let Some(p) = partial {
        let _ = std::fs::remove_dir_all(p);
    }
    Err(why)
}

/// A Python interpreter that can `imports`, from the virtualenv kept between runs in
/// `/var/cache/berth-ci/pyenv` (`BERTH_PYENV` to move it): created when missing, and
/// `packages` pip-installed into it when it cannot import them yet; or the reason there is none.
pub fn python_with(packages: &[&str], imports: &str) -> Result<PathBuf, String> {
    let venv = std::env::var_os("BERTH_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/berth-ci/pyenv"));
    let python = venv.join("bin/python");
    let usable = |py: &Path| {
        let mut c = Command::new(py);
        c.args(["-c", imports]);
        run_for(c, Duration::from_secs(60)).is_some_and(|o| o.status.success())
    };
    if usable(&python) {
        return Ok(python);
    }
    if !crate::have("python3") {
        return Err("python3 is not installed".into());
    }
    let parent = venv.parent().ok_or("BERTH_PYENV has no parent folder")?;
    let _lock = lock_in(parent, ".pyenv.lock")?;
    if usable(&python) {
        return Ok(python);
    }
    let fresh = !python.exists();
    if fresh {
        let mut c = Command::new("python3");
        c.args(["-m", "venv", "--clear"]).arg(&venv);
        match run_for(c, Duration::from_secs(120)) {
            Some(o) if o.status.success() => {}
            Some(o) => {
                return Err(format!(
                    "python3 -m venv failed (apt-get install python3-venv?): {}",
                    tail(&o.stderr)
                ))
            }
            None => return Err("python3 -m venv did not finish".into()),
        }
    }
    let mut c = Command::new(&python);
    c.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(packages);
    let partial = fresh.then_some(venv.as_path());
    install(c, &format!("pip install {}", packages.join(" ")), partial)?;
    if usable(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import {imports:?} after pip install",
            python.display()
        ))
    }
}
