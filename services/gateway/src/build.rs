//! `POST /build` (`docker build` with the classic builder, `DOCKER_BUILDKIT=0`): the body is
//! the context tar (maybe compressed: the build service detects it), passed on to the build
//! service as it arrives; the Dockerfile is read by the service from the context at
//! `dockerfile`. The steps stream back as Docker's `{"stream": …}` lines, worded by
//! berth-docker as `berth build` prints them. `POST /build/prune` (`docker builder prune`)
//! is the build service's Prune, as `berth builder prune` calls it.

use crate::error::ApiError;
use crate::request::Params;
use crate::stream::{json_lines, Lines};
use crate::Services;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use berth_api::build::v1::build_client::BuildClient;
use berth_api::build::v1::{
    build_request, build_response, BuildHeader, BuildRequest, PruneBuildCacheRequest,
};
use tokio_stream::StreamExt as _;

/// The build service's header for a query, or Docker's 400 for what berth cannot do.
fn header(q: &Params) -> Result<BuildHeader, ApiError> {
    let tags = q.all("t");
    for t in &tags {
        berth_core::Reference::parse(t)
            .map_err(|e| ApiError::bad_parameter(format!("invalid tag {t:?}: {e}")))?;
    }
    if !q.get("remote").is_empty() {
        return Err(ApiError::bad_parameter(
            "remote build contexts (a URL) are not supported: send the context as the body",
        ));
    }
    if q.truthy("squash") {
        return Err(ApiError::bad_parameter("squash is not supported"));
    }
    if q.truthy("pull") {
        return Err(ApiError::bad_parameter(
            "pull is not supported: berth's builder pulls a base image only when it is missing",
        ));
    }
    if !matches!(q.get("extrahosts"), "" | "[]" | "null") {
        return Err(ApiError::bad_parameter("extrahosts is not supported"));
    }
    if q.get("version") == "2" {
        return Err(ApiError::bad_parameter(
            "BuildKit is not supported: use the classic builder (DOCKER_BUILDKIT=0)",
        ));
    }
    match q.get("platform") {
        "" | "linux" | "linux/amd64" => {}
        p => {
            return Err(ApiError::bad_parameter(format!(
                "platform {p:?} is not supported: berth builds for linux/amd64"
            )))
        }
    }
    let network = match q.get("networkmode") {
        "" | "default" | "bridge" => String::new(),
        n => n.to_string(),
    };
    Ok(BuildHeader {
        tags,
        dockerfile: String::new(),
        dockerfile_name: String::new(),
        dockerfile_path: q.get("dockerfile").to_string(),
        build_args: q.string_map("buildargs")?,
        no_cache: q.truthy("nocache"),
        target: q.get("target").to_string(),
        labels: q.string_map("labels")?,
        snapshotter: String::new(),
        network,
    })
}

/// `POST /build`.
pub async fn build(State(s): State<Services>, q: Params, body: Body) -> Result<Response, ApiError> {
    let h = header(&q)?;
    let quiet = q.truthy("q");
    let first = BuildRequest {
        item: Some(build_request::Item::Header(h)),
    };
    let context = body.into_data_stream().filter_map(|chunk| {
        chunk.ok().map(|data| BuildRequest {
            item: Some(build_request::Item::Context(data.to_vec())),
        })
    });
    let requests = tokio_stream::once(first).chain(context);
    Ok(json_lines(move |lines| async move {
        let mut stream = BuildClient::new(s.build.clone())
            .build(s.req(requests))
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        while let Some(m) = stream.next().await {
            let item = m.map_err(|e| e.message().to_string())?.item;
            if !send_item(&lines, item, quiet).await {
                break;
            }
        }
        Ok(())
    }))
}

/// `POST /build/prune?all=&filters=&keep-storage=`: `{"CachesDeleted": […], "SpaceReclaimed": N}`.
pub async fn prune(
    State(s): State<Services>,
    q: Params,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    let filters =
        berth_docker::filters::json_pairs(q.get("filters")).map_err(ApiError::bad_parameter)?;
    if let Some(f) = filters.first() {
        return Err(ApiError::bad_parameter(format!(
            "berth's build cache prune takes no filters (got {f}): it removes every unused cache image"
        )));
    }
    if !matches!(q.get("keep-storage"), "" | "0") {
        return Err(ApiError::bad_parameter(
            "berth's build cache prune does not support keep-storage: it removes every unused cache image",
        ));
    }
    let r = BuildClient::new(s.build.clone())
        .prune(s.req(PruneBuildCacheRequest {
            all: q.truthy("all"),
        }))
        .await?
        .into_inner();
    let body = serde_json::json!({
        "CachesDeleted": r.caches_deleted,
        "SpaceReclaimed": r.space_reclaimed,
    });
    Ok(crate::error::json_body(&body).into_response())
}

/// Docker's lines for one item of the build's stream; false when the client has gone.
async fn send_item(lines: &Lines, item: Option<build_response::Item>, quiet: bool) -> bool {
    use berth_docker::{aux_line, stream_line};
    let text = |s: String| stream_line(&format!("{s}\n"));
    let out = match item {
        Some(build_response::Item::Result(r)) => {
            let mut out = vec![aux_line(serde_json::json!({ "ID": r.image_id }))];
            if quiet {
                // Docker's quiet build says the id alone (the CLI prints it).
                out.push(text(r.image_id.clone()));
            } else {
                out.push(text(berth_docker::build_built(&r.image_id)));
                out.extend(r.tags.iter().map(|t| text(berth_docker::build_tagged(t))));
            }
            out
        }
        _ if quiet => vec![],
        Some(build_response::Item::Step(st)) => {
            vec![text(berth_docker::build_step(
                st.number,
                st.total,
                &st.instruction,
            ))]
        }
        Some(build_response::Item::Message(m)) => vec![text(m)],
        Some(build_response::Item::Stdout(b)) | Some(build_response::Item::Stderr(b)) => {
            vec![stream_line(&String::from_utf8_lossy(&b))]
        }
        Some(build_response::Item::Done(d)) => {
            vec![text(berth_docker::build_step_done(&d.image_id))]
        }
        None => vec![],
    };
    for line in out {
        if !lines.send(line).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_becomes_the_header() {
        let q = Params::parse(Some(
            "t=a%3A1&t=b&dockerfile=other%2FDockerfile&buildargs=%7B%22X%22%3A%221%22%2C%22Y%22%3Anull%7D&nocache=1&networkmode=default&rm=1&forcerm=0&pull=0",
        ));
        let h = header(&q).unwrap();
        assert_eq!(h.tags, vec!["a:1", "b"]);
        assert_eq!(h.dockerfile_path, "other/Dockerfile");
        assert_eq!(h.build_args.len(), 1);
        assert_eq!(h.build_args["X"], "1");
        assert!(h.no_cache);
        assert_eq!(h.network, "");
    }

    #[test]
    fn what_berth_cannot_do_is_refused() {
        for bad in [
            "t=UPPER%2FCase%3A%3Abad",
            "pull=1",
            "squash=1",
            "remote=https%3A%2F%2Fx",
            "platform=linux%2Farm64",
            "buildargs=%5B",
            "version=2",
        ] {
            assert_eq!(
                header(&Params::parse(Some(bad))).unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }
}
