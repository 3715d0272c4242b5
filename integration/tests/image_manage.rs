//! Image management through the CLI (issue #4): tag, rmi with Docker's rules, dangling
//! images, history, prune and garbage collection, commit, and push round trips through a real
//! registry (read back by skopeo and by a second berthd).

use berth_integration::{or_skip, Berthd, Dockerd, Engine, Registry};
use std::path::Path;
use std::process::Command;

/// A registry with busybox, a berthd that pulled it, and the name it pulled it by.
fn setup() -> Option<(Registry, Berthd, String)> {
    Engine::start().map(|e| (e.reg, e.d, e.img))
}

fn blobs(d: &Berthd) -> usize {
    count_files(&d.root().join("image/content/blobs/sha256"))
}

fn count_files(p: &Path) -> usize {
    std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0)
}

fn snapshots(d: &Berthd) -> Vec<String> {
    // `berth` has no snapshot verb yet; the snapshot folder per namespace shows them.
    let out = Command::new("find")
        .arg(d.root().join("snapshot"))
        .args(["-maxdepth", "4", "-type", "d", "-name", "fs"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn tag_untag_and_delete_follow_docker() {
    let (_reg, d, img) = or_skip!(setup());
    let id = d
        .ok(&["image", "inspect", "-f", "{{.Id}}", &img])
        .trim()
        .to_string();
    d.ok(&["tag", &img, "mine:1"]);
    d.ok(&["image", "tag", "mine:1", "other/name:2"]);
    let ls = d.ok(&["images"]);
    assert!(ls.contains("mine") && ls.contains("other/name"), "{ls}");
    assert_eq!(
        d.ok(&["image", "inspect", "-f", "{{.Id}}", "mine:1"])
            .trim(),
        id
    );

    // An id with several names needs -f.
    let (code, err) = d.fails(&["rmi", &id[7..19]]);
    assert_eq!(code, 125);
    assert!(err.contains("referenced in multiple repositories"), "{err}");

    // Untagging one name keeps the image and its blobs.
    let before = blobs(&d);
    let out = d.ok(&["rmi", "mine:1"]);
    assert!(out.contains("Untagged: mine:1"), "{out}");
    assert!(!out.contains("Deleted"), "{out}");
    assert_eq!(blobs(&d), before);

    // A container using the image blocks removing its last name...
    d.ok(&["image", "rm", "other/name:2"]);
    d.ok(&["create", "--name", "user", &img, "true"]);
    let (_, err) = d.fails(&["rmi", &img]);
    assert!(
        err.contains("container") && err.contains("is using"),
        "{err}"
    );
    // ...and its id, unless forced.
    let (_, err) = d.fails(&["rmi", &id]);
    assert!(err.contains("stopped container"), "{err}");
    d.ok(&["rm", "user"]);

    // The last name: untagged and deleted, blobs and snapshots collected.
    let out = d.ok(&["rmi", &img]);
    assert!(
        out.contains("Untagged:") && out.contains(&format!("Deleted: {id}")),
        "{out}"
    );
    assert_eq!(blobs(&d), 0, "blobs left after the last image went");
    assert!(
        snapshots(&d).is_empty(),
        "snapshots left: {:?}",
        snapshots(&d)
    );
    let (code, err) = d.fails(&["rmi", &img]);
    assert_eq!(code, 125);
    assert!(err.contains("No such image"), "{err}");

    // It pulls again cleanly after collection.
    d.ok(&["pull", "-q", &img]);
    d.ok(&["run", "--rm", &img, "true"]);
}

#[test]
fn history_and_commit() {
    let (_reg, d, img) = or_skip!(setup());
    let base_layers = d
        .ok(&["image", "inspect", "-f", "{{json .RootFS.Layers}}", &img])
        .trim()
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let hist = d.ok(&["history", &img]);
    assert!(hist.starts_with("IMAGE"), "{hist}");

    d.ok(&[
        "run",
        "--name",
        "changer",
        &img,
        "sh",
        "-c",
        "echo vim > /usr-vim-installed && mkdir -p /a/b && echo x > /a/b/c && rm /bin/ls",
    ]);
    let o = d.berth(&[
        "commit",
        "-m",
        "add vim",
        "-c",
        "ENV EDITOR=vim",
        "changer",
        "joker/ubuntu:vim",
    ]);
    assert!(
        o.status.success(),
        "commit: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");

    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "joker/ubuntu:vim",
            "cat",
            "/usr-vim-installed"
        ])
        .trim(),
        "vim"
    );
    assert_eq!(
        d.ok(&["run", "--rm", "joker/ubuntu:vim", "cat", "/a/b/c"])
            .trim(),
        "x"
    );
    // A deletion is a whiteout in the new layer.
    let o = d.berth(&["run", "--rm", "joker/ubuntu:vim", "test", "-e", "/bin/ls"]);
    assert_eq!(o.status.code(), Some(1), "the deleted file came back");
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "joker/ubuntu:vim",
            "sh",
            "-c",
            "echo $EDITOR"
        ])
        .trim(),
        "vim"
    );
    let layers = d.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .RootFS.Layers}}",
        "joker/ubuntu:vim",
    ]);
    assert!(
        layers
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .starts_with(&format!("{base_layers},")),
        "base {base_layers} new {layers}"
    );
    let hist = d.ok(&["history", "--no-trunc", "joker/ubuntu:vim"]);
    let first = hist.lines().nth(1).unwrap_or_default();
    assert!(first.starts_with(&id), "{hist}");
    assert!(first.contains("add vim"), "{hist}");
    assert!(first.contains("echo vim > /usr-vim-installed"), "{hist}");
    let q = d.ok(&["history", "-q", "joker/ubuntu:vim"]);
    assert_eq!(q.lines().next(), Some(&id[7..19]));

    // Committing again under the same name leaves the first image dangling; prune takes it.
    d.ok(&["commit", "changer", "joker/ubuntu:vim"]);
    let ls = d.ok(&["images"]);
    assert!(ls.contains("<none>"), "{ls}");
    let pruned = d.ok(&["image", "prune", "-f"]);
    assert!(pruned.contains(&format!("deleted: {id}")), "{pruned}");
    assert!(!d.ok(&["images"]).contains("<none>"));
    d.ok(&["rm", "changer"]);
}

#[test]
fn push_round_trip() {
    let (reg, d, img) = or_skip!(setup());
    let target = format!("{}/jokerl/hello-world:v1", reg.addr);
    d.ok(&["tag", &img, &target]);
    let o = d.berth(&["push", &target]);
    assert!(
        o.status.success(),
        "push: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let digest = d
        .ok(&["image", "inspect", "-f", "{{index .RepoDigests 0}}", &img])
        .trim()
        .rsplit('@')
        .next()
        .unwrap()
        .to_string();
    assert!(out.contains(&format!("v1: digest: {digest}")), "{out}");

    // skopeo made the registry's image, so it is installed.
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(&digest));
    // The real docker CLI pulls what berth pushed and runs it.
    if let Some(docker) = Dockerd::start() {
        docker.ok(&["pull", &target]);
        let id = docker.ok(&["image", "inspect", "-f", "{{.Id}}", &target]);
        assert_eq!(
            id.trim(),
            d.ok(&["image", "inspect", "-f", "{{.Id}}", &target]).trim(),
            "docker sees another image id"
        );
        let out = docker.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            &target,
            "echo",
            "in-docker",
        ]);
        assert_eq!(out.trim(), "in-docker");
    }

    // Pushing again sends nothing: every blob exists.
    let again = d.ok(&["push", &target]);
    assert!(again.contains(&digest), "{again}");

    // Pull it back after removing the local name, and run it.
    d.ok(&["image", "rm", &target]);
    d.ok(&["image", "pull", "-q", &target]);
    assert_eq!(
        d.ok(&["run", "--rm", &target, "echo", "back"]).trim(),
        "back"
    );

    // Another berthd pulls what was pushed.
    let d2 = Berthd::start("");
    d2.ok(&["pull", "-q", &target]);
    assert_eq!(
        d2.ok(&["run", "--rm", &target, "echo", "there"]).trim(),
        "there"
    );

    // A commit pushes too, its base layers mounted or already there.
    d.ok(&[
        "run",
        "--name",
        "c1",
        &target,
        "sh",
        "-c",
        "echo new > /new",
    ]);
    let o = d.berth(&["commit", "c1", &format!("{}/jokerl/committed:1", reg.addr)]);
    if o.status.success() {
        let committed = format!("{}/jokerl/committed:1", reg.addr);
        d.ok(&["push", &committed]);
        d2.ok(&["pull", "-q", &committed]);
        assert_eq!(
            d2.ok(&["run", "--rm", &committed, "cat", "/new"]).trim(),
            "new"
        );
    }
    d.ok(&["rm", "c1"]);

    // So does a built image.
    let ctx = berth_integration::TempDir::new("berth-it-build-push");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {target}\nRUN echo built > /b\nCOPY Dockerfile /\nCMD [\"cat\", \"/b\"]\n"),
    )
    .unwrap();
    let built = format!("{}/jokerl/built:1", reg.addr);
    d.ok(&["build", "-q", "-t", &built, ctx.path().to_str().unwrap()]);
    let ls = d.ok(&["images"]);
    assert!(ls.contains("jokerl/built"), "a built image is listed: {ls}");
    assert!(
        !ls.contains("<none>"),
        "build steps stay out of image ls: {ls}"
    );
    assert!(
        d.ok(&["images", "-a"]).contains("<none>"),
        "image ls -a shows build steps"
    );
    // A plain prune keeps the build cache; a rebuild still hits it.
    d.ok(&["image", "prune", "-f"]);
    let again = d.ok(&["build", "-t", &built, ctx.path().to_str().unwrap()]);
    assert!(again.contains("Using cache"), "{again}");
    d.ok(&["push", &built]);
    d2.ok(&["pull", "-q", &built]);
    assert_eq!(d2.ok(&["run", "--rm", &built]).trim(), "built");

    // Pushing a name that is not here, or to a digest, fails clearly.
    let (code, err) = d.fails(&["push", &format!("{}/nothing:here", reg.addr)]);
    assert_eq!(code, 125);
    assert!(err.contains("does not exist locally"), "{err}");
}
