"""docker-py (the `docker` package from PyPI, 7.x) driving berth through its Docker Engine API
gateway, as a Python program would: `docker.from_env()` with DOCKER_HOST pointing at the
gateway's socket. Usage: docker_sdk.py REGISTRY WORKDIR; REGISTRY holds busybox:latest.

Prints `ok - STEP` per step; the first failing step raises, so the exit status says it all.
"""

import io
import os
import sys
import tarfile
import time

import docker

REG, WORK = sys.argv[1], sys.argv[2]
IMG = f"{REG}/busybox:latest"


def ok(step):
    print(f"ok - {step}", flush=True)


def expect(cond, step, got=None):
    if not cond:
        raise AssertionError(f"{step}: got {got!r}")
    ok(step)


# docker-py 7 asks for API 1.45 unless told otherwise; berth serves 1.41, as Docker 20.10 does,
# which refuses 1.45 just the same: "auto" negotiates, as a program written for 20.10 does.
client = docker.from_env(version="auto", timeout=120)
expect(client.ping(), "ping")
expect(client.version()["ApiVersion"] == "1.41", "version", client.version())

# pull
image = client.images.pull(IMG)
expect(f"{REG}/busybox:latest" in image.tags, "pull", image.tags)
expect(client.images.get(IMG).id == image.id, "images.get")

# run attached: the output comes back, a failure raises ContainerError with the exit code
out = client.containers.run(IMG, ["echo", "hello-py"], remove=True)
expect(out == b"hello-py\n", "run attached (remove=True)", out)
try:
    client.containers.run(IMG, ["sh", "-c", "echo oops >&2; exit 3"], remove=True)
    raise AssertionError("a failing command did not raise")
except docker.errors.ContainerError as e:
    expect(e.exit_status == 3 and b"oops" in (e.stderr or b""), "run's failure", e)

# run detached, logs, exec_run, stats, wait
c = client.containers.run(
    IMG,
    ["sh", "-c", "echo started; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"],
    detach=True,
    name="pyweb",
    environment={"V": "42"},
    labels={"made-by": "docker-py"},
)
c.reload()
expect(c.status == "running", "run detached", c.status)
expect(c.labels.get("made-by") == "docker-py", "labels")
for _ in range(100):
    if b"started" in c.logs():
        break
    time.sleep(0.1)
expect(b"started" in c.logs(), "logs", c.logs()[:100])
code, out = c.exec_run(["sh", "-c", "echo v=$V"])
expect(code == 0 and out == b"v=42\n", "exec_run", (code, out))
# A fast process's output is there every time: docker-py reads the 101 answer through a
# buffer, so output sent with it (a process started before the hijack) would be lost.
for i in range(30):
    code, out = c.exec_run(["echo", str(i)])
    expect(code == 0 and out == f"{i}\n".encode(), f"exec_run #{i}", (code, out))
code, out = c.exec_run(["nosuchbinary"])
expect(code == 127 and b"nosuchbinary" in out, "exec_run of a missing binary", (code, out))
code, out = c.exec_run(["sh", "-c", "exit 5"])
expect(code == 5, "exec_run exit code", code)
stats = c.stats(stream=False)
expect(stats["memory_stats"].get("usage", 0) > 0 and "cpu_stats" in stats, "stats", stats)
expect(any(c.id == x.id for x in client.containers.list()), "containers.list")
expect(
    [x.name for x in client.containers.list(filters={"label": "made-by=docker-py"})] == ["pyweb"],
    "containers.list with a label filter",
)
c.stop(timeout=1)
result = c.wait()
expect(result["StatusCode"] in (137, 143), "stop, wait", result)
c.reload()
expect(c.status == "exited", "status after stop", c.status)

# commit what a container wrote
w = client.containers.run(IMG, ["sh", "-c", "echo committed > /f"], detach=True, name="pywriter")
expect(w.wait()["StatusCode"] == 0, "a container that writes")
committed = w.commit(repository="py/committed", tag="v1")
out = client.containers.run("py/committed:v1", ["cat", "/f"], remove=True)
expect(out == b"committed\n", "commit", out)
w.remove()

# build from an in-memory context
ctx = io.BytesIO()
with tarfile.open(fileobj=ctx, mode="w") as tar:
    dockerfile = f"FROM {IMG}\nCOPY greeting /greeting\nRUN cat /greeting > /copied\nCMD [\"cat\", \"/copied\"]\n".encode()
    for name, data in (("Dockerfile", dockerfile), ("greeting", b"built by docker-py\n")):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
ctx.seek(0)
built, logs = client.images.build(fileobj=ctx, custom_context=True, tag="py/built:latest", rm=True)
expect("py/built:latest" in built.tags, "build", built.tags)
expect(any("Step" in (l.get("stream") or "") for l in logs), "build's log")
out = client.containers.run("py/built", remove=True)
expect(out == b"built by docker-py\n", "run the built image", out)

# push to the registry
image.tag(f"{REG}/py/pushed", "v1")
lines = list(client.images.push(f"{REG}/py/pushed", tag="v1", stream=True, decode=True))
expect(not any("error" in l for l in lines) and any("digest" in (l.get("status") or "") for l in lines),
       "push", lines[-3:])

# networks: two containers reach each other by name on a user network
net = client.networks.create("pynet", driver="bridge", labels={"made-by": "docker-py"})
expect(net.name == "pynet", "networks.create")
srv = client.containers.run(
    IMG,
    ["sh", "-c", "mkdir -p /w && echo served > /w/index.html && httpd -f -p 80 -h /w"],
    detach=True, name="pysrv", network="pynet",
)
out = None
for _ in range(50):
    try:
        out = client.containers.run(IMG, ["wget", "-qO-", "http://pysrv/index.html"], remove=True, network="pynet")
        break
    except docker.errors.ContainerError:
        time.sleep(0.2)
expect(out == b"served\n", "a container reaches another by name", out)
net.reload()
expect(srv.id in [x.id for x in net.containers], "network's containers")
srv.remove(force=True)
net.remove()
expect("pynet" not in [n.name for n in client.networks.list()], "networks.remove")

# volumes: what one container writes, the next reads
vol = client.volumes.create("pyvol", labels={"made-by": "docker-py"})
client.containers.run(IMG, ["sh", "-c", "echo kept > /data/f"], remove=True, volumes={"pyvol": {"bind": "/data", "mode": "rw"}})
out = client.containers.run(IMG, ["cat", "/data/f"], remove=True, volumes=["pyvol:/data:ro"])
expect(out == b"kept\n", "volumes", out)
expect("pyvol" in [v.name for v in client.volumes.list()], "volumes.list")
vol.remove()

# remove
c.remove()
expect("pyweb" not in [x.name for x in client.containers.list(all=True)], "remove")
try:
    client.containers.get("pyweb")
    raise AssertionError("a removed container is still there")
except docker.errors.NotFound:
    ok("a removed container is NotFound")
client.images.remove("py/built:latest")
client.images.remove("py/committed:v1")
ok("images.remove")
print("all done")
