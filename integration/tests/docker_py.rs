//! docker-py — the `docker` package from PyPI (7.x), which no one here wrote — drives berth
//! through the Docker Engine API gateway as any Python program would (`docker.from_env()` with
//! DOCKER_HOST): pull, run attached and detached, logs, exec_run, stats, stop and wait, commit,
//! build, push, networks (a container reaching another by name), volumes, remove. The script
//! is `tests/py/docker_sdk.py`; the package goes into the virtualenv the gRPC clients' test
//! keeps (`BERTH_PYENV`, default `/var/cache/berth-ci/pyenv`).

use berth_integration::gateway::Gateway;
use berth_integration::python::{python_with, run_for};
use berth_integration::{skip, TempDir};
use std::path::Path;
use std::time::Duration;

#[test]
fn docker_py_drives_berth_through_the_gateway() {
    let python = match python_with(&["docker>=7,<8"], "import docker") {
        Ok(p) => p,
        Err(why) => return skip(format!("no docker-py: {why}")),
    };
    let Some(g) = Gateway::start() else { return };
    let work = TempDir::new("berth-it-docker-py");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/docker_sdk.py");
    let mut c = g.command(&python);
    c.arg(&script).arg(&g.reg.addr).arg(work.path());
    let o =
        run_for(c, Duration::from_secs(600)).expect("docker_sdk.py did not finish in 10 minutes");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        o.status.success() && out.contains("all done"),
        "docker_sdk.py failed:\n{out}\n{err}\n--- berthd:\n{}",
        g.d.log()
    );
    // Nothing left behind: the script removed what it made.
    let left = g.d.ok(&["ps", "-aq"]);
    assert!(left.trim().is_empty(), "containers left: {left}");
}
