//! Docker's JSON progress messages (`docker pull`, `docker push`, `docker build`, `docker load`)
//! made from berth's stream items, and the lines the `berth` CLI prints for the same events,
//! so that both fronts word them alike.
//!
//! - [`pull_header`], [`pull_progress`], [`pull_trailer`]: `POST /images/create`'s stream
//!   from the image service's Pull progress (`berth.types.v1.Progress`).
//! - [`push_progress`], [`push_trailer`]: `POST /images/{name}/push`'s stream.
//! - [`build_step`], [`build_step_done`], [`build_built`], [`build_tagged`]: the classic
//!   builder's lines, as `berth build` prints them and `POST /build` streams them.
//! - [`stream_line`], [`error_line`], [`aux_line`]: the shapes every stream shares.

use berth_api::types::v1::Progress;
use serde_json::{json, Value};

/// Docker's HumanSize: decimal units, three significant digits ("4.26MB", "125MB", "2MB").
pub fn human_size(bytes: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes.max(0) as f64;
    let mut i = 0;
    while v >= 999.5 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let decimals = if v >= 99.95 {
        0
    } else if v >= 9.995 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", units[i])
}

/// Docker's progress bar for `current` of `total` bytes: `[=====>      ]  1.2MB/2.4MB`.
pub fn progress_bar(current: i64, total: i64) -> String {
    if total <= 0 {
        return format!("{:>8}", human_size(current));
    }
    let filled = ((current.clamp(0, total) * 50) / total) as usize;
    let (bar, arrow) = if filled >= 50 {
        ("=".repeat(50), ">")
    } else {
        ("=".repeat(filled), ">")
    };
    let pad = " ".repeat(50usize.saturating_sub(filled).saturating_sub(1));
    format!(
        "[{bar}{arrow}{pad}] {:>8}/{}",
        human_size(current),
        human_size(total)
    )
}

/// A platform as Docker's clients write it (`os/arch[/variant]`) for the image service's
/// Pull; `None` for an empty one (the host's).
pub fn platform(p: &str) -> Option<berth_api::types::v1::Platform> {
    if p.is_empty() {
        return None;
    }
    let mut parts = p.splitn(3, '/');
    Some(berth_api::types::v1::Platform {
        os: parts.next().unwrap_or_default().to_string(),
        architecture: parts.next().unwrap_or_default().to_string(),
        variant: parts.next().unwrap_or_default().to_string(),
    })
}

/// The label berth's CLI and Docker's stream show for a progress `action` of the image
/// service ("downloaded" → "Download complete").
pub fn progress_label(action: &str) -> &str {
    match action {
        "resolving" => "Resolving",
        "downloading" => "Downloading",
        "verifying" => "Verifying Checksum",
        "downloaded" => "Download complete",
        "exists" => "Already exists",
        "extracting" => "Extracting",
        "extracted" => "Pull complete",
        "done" => "Done",
        "preparing" => "Preparing",
        "waiting" => "Waiting",
        "pushing" => "Pushing",
        "pushed" => "Pushed",
        "mounted" => "Mounted from",
        "layer-exists" => "Layer already exists",
        other => other,
    }
}

/// Whether `action` ends its line's work (a bar is finished).
pub fn progress_final(action: &str) -> bool {
    matches!(
        action,
        "extracted" | "exists" | "done" | "pushed" | "mounted" | "layer-exists"
    )
}

fn status(status: &str, id: &str) -> Value {
    json!({ "status": status, "progressDetail": {}, "id": id })
}

fn counted(status: &str, p: &Progress) -> Value {
    json!({
        "status": status,
        "progressDetail": { "current": p.current, "total": p.total },
        "progress": progress_bar(p.current, p.total),
        "id": p.id,
    })
}

/// `{"status":"Pulling from library/busybox","id":"latest"}`: the first line of a pull of
/// `repository` (its path, without the registry for Docker Hub's) at `tag` (or digest).
pub fn pull_header(path: &str, tag: &str) -> Value {
    json!({ "status": format!("Pulling from {path}"), "id": tag })
}

/// Docker's line for one Pull progress item; `None` for the items Docker shows no line for
/// (resolving the name and the end, which [`pull_header`] and [`pull_trailer`] say).
pub fn pull_progress(p: &Progress) -> Option<Value> {
    Some(match p.action.as_str() {
        "resolving" | "done" => return None,
        // The first item of a layer: Docker's "Pulling fs layer".
        "downloading" if p.current == 0 => status("Pulling fs layer", &p.id),
        "downloading" | "extracting" => counted(progress_label(&p.action), p),
        action => status(progress_label(action), &p.id),
    })
}

/// The last two lines of a pull: the manifest's digest, and whether anything was new.
pub fn pull_trailer(digest: &str, familiar: &str, newer: bool) -> [Value; 2] {
    let outcome = if newer {
        format!("Status: Downloaded newer image for {familiar}")
    } else {
        format!("Status: Image is up to date for {familiar}")
    };
    [
        json!({ "status": format!("Digest: {digest}") }),
        json!({ "status": outcome }),
    ]
}

/// Docker's line for one Push progress item.
pub fn push_progress(p: &Progress) -> Option<Value> {
    Some(match p.action.as_str() {
        // The push's first item names the repository.
        "preparing" if p.total == 0 && !p.message.is_empty() => json!({ "status": p.message }),
        "pushing" if p.current > 0 => counted("Pushing", p),
        "mounted" => status(&format!("Mounted from {}", p.message), &p.id),
        "done" | "resolving" => return None,
        action => status(progress_label(action), &p.id),
    })
}

/// The line `berth push` prints and Docker's stream ends with: `latest: digest: … size: N`.
pub fn push_summary(tag: &str, digest: &str, size: i64) -> String {
    format!("{tag}: digest: {digest} size: {size}")
}

/// The last two lines of a push: the summary, and the `aux` record docker-py reads.
pub fn push_trailer(tag: &str, digest: &str, size: i64) -> [Value; 2] {
    [
        json!({ "status": push_summary(tag, digest, size) }),
        aux_line(json!({ "Tag": tag, "Digest": digest, "Size": size })),
    ]
}

/// `{"stream": text}`: a line of build or load output (the text ends with its newline).
pub fn stream_line(text: &str) -> Value {
    json!({ "stream": text })
}

/// `{"aux": v}`: a record for programs, beside the lines for people.
pub fn aux_line(v: Value) -> Value {
    json!({ "aux": v })
}

/// Docker's error line that ends a stream in failure: the CLI prints it and exits 1.
pub fn error_line(message: &str) -> Value {
    json!({ "errorDetail": { "message": message }, "error": message })
}

/// `Step 2/5 : RUN make`.
pub fn build_step(number: i32, total: i32, instruction: &str) -> String {
    format!("Step {number}/{total} : {instruction}")
}

/// ` ---> 3f2a1b0c9d8e`: a step's image.
pub fn build_step_done(image_id: &str) -> String {
    format!(" ---> {}", short_id(image_id))
}

/// `Successfully built 3f2a1b0c9d8e`.
pub fn build_built(image_id: &str) -> String {
    format!("Successfully built {}", short_id(image_id))
}

/// `Successfully tagged busybox:latest`, for a tag as the build service normalised it.
pub fn build_tagged(tag: &str) -> String {
    let shown = berth_core::Reference::parse(tag)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| tag.to_string());
    format!("Successfully tagged {shown}")
}

/// An image id's 12 hex characters, as Docker shows it.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// `Loaded image: busybox:latest`, or `Loaded image ID: sha256:…` for an untagged image.
pub fn loaded_image(name: &str, id: &str) -> String {
    if name.is_empty() || name.starts_with("sha256:") {
        format!("Loaded image ID: {id}")
    } else {
        let shown = berth_core::Reference::parse(name)
            .map(|r| r.familiar())
            .unwrap_or_else(|_| name.to_string());
        format!("Loaded image: {shown}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, action: &str, current: i64, total: i64) -> Progress {
        Progress {
            id: id.into(),
            action: action.into(),
            current,
            total,
            message: String::new(),
        }
    }

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(125_000_000), "125MB");
        assert_eq!(human_size(2_000_000), "2MB");
    }

    #[test]
    fn bars_fill_in_fifty_steps() {
        let half = progress_bar(50, 100);
        assert!(half.starts_with(&format!("[{}>", "=".repeat(25))), "{half}");
        assert_eq!(half.find(']'), Some(51), "{half}");
        assert!(half.ends_with("    50B/100B"), "{half}");
        let full = progress_bar(100, 100);
        assert!(
            full.starts_with(&format!("[{}>]", "=".repeat(50))),
            "{full}"
        );
    }

    #[test]
    fn a_pull_reads_like_dockers() {
        assert_eq!(
            pull_header("library/busybox", "latest").to_string(),
            r#"{"id":"latest","status":"Pulling from library/busybox"}"#
        );
        assert_eq!(pull_progress(&p("busybox:latest", "resolving", 0, 0)), None);
        let first = pull_progress(&p("abc", "downloading", 0, 10)).unwrap();
        assert_eq!(first["status"], "Pulling fs layer");
        assert_eq!(first["id"], "abc");
        let mid = pull_progress(&p("abc", "downloading", 5, 10)).unwrap();
        assert_eq!(mid["status"], "Downloading");
        assert_eq!(mid["progressDetail"], json!({"current": 5, "total": 10}));
        assert!(mid["progress"].as_str().unwrap().starts_with('['));
        for (action, shown) in [
            ("verifying", "Verifying Checksum"),
            ("downloaded", "Download complete"),
            ("exists", "Already exists"),
            ("extracted", "Pull complete"),
        ] {
            assert_eq!(
                pull_progress(&p("abc", action, 10, 10)).unwrap()["status"],
                shown
            );
        }
        assert_eq!(pull_progress(&p("x", "done", 0, 0)), None);
        let [digest, outcome] = pull_trailer("sha256:1", "busybox:latest", true);
        assert_eq!(digest["status"], "Digest: sha256:1");
        assert_eq!(
            outcome["status"],
            "Status: Downloaded newer image for busybox:latest"
        );
        let [_, same] = pull_trailer("sha256:1", "busybox:latest", false);
        assert_eq!(
            same["status"],
            "Status: Image is up to date for busybox:latest"
        );
    }

    #[test]
    fn a_push_reads_like_dockers() {
        let mut first = p("r/x:1", "preparing", 0, 0);
        first.message = "The push refers to repository [r/x]".into();
        assert_eq!(
            push_progress(&first).unwrap(),
            json!({"status": "The push refers to repository [r/x]"})
        );
        assert_eq!(
            push_progress(&p("abc", "preparing", 0, 5)).unwrap()["status"],
            "Preparing"
        );
        assert_eq!(
            push_progress(&p("abc", "pushing", 2, 5)).unwrap()["progressDetail"]["current"],
            2
        );
        assert_eq!(
            push_progress(&p("abc", "layer-exists", 5, 5)).unwrap()["status"],
            "Layer already exists"
        );
        assert_eq!(
            push_progress(&p("abc", "pushed", 5, 5)).unwrap()["status"],
            "Pushed"
        );
        let mut m = p("abc", "mounted", 5, 5);
        m.message = "library/busybox".into();
        assert_eq!(
            push_progress(&m).unwrap()["status"],
            "Mounted from library/busybox"
        );
        let [summary, aux] = push_trailer("1", "sha256:d", 528);
        assert_eq!(summary["status"], "1: digest: sha256:d size: 528");
        assert_eq!(
            aux,
            json!({"aux": {"Tag": "1", "Digest": "sha256:d", "Size": 528}})
        );
    }

    #[test]
    fn build_and_load_lines() {
        assert_eq!(build_step(1, 3, "FROM busybox"), "Step 1/3 : FROM busybox");
        let id = "sha256:3f2a1b0c9d8e7f6a5b4c";
        assert_eq!(build_step_done(id), " ---> 3f2a1b0c9d8e");
        assert_eq!(build_built(id), "Successfully built 3f2a1b0c9d8e");
        assert_eq!(
            build_tagged("docker.io/library/x:latest"),
            "Successfully tagged x:latest"
        );
        assert_eq!(
            error_line("boom"),
            json!({"errorDetail": {"message": "boom"}, "error": "boom"})
        );
        assert_eq!(stream_line("a\n"), json!({"stream": "a\n"}));
        assert_eq!(
            loaded_image("docker.io/library/busybox:latest", "sha256:1"),
            "Loaded image: busybox:latest"
        );
        assert_eq!(loaded_image("", "sha256:1"), "Loaded image ID: sha256:1");
    }
}
