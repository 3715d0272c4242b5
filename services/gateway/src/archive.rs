//! `docker save` and `docker load`: `GET /images/{name}/get` and `GET /images/get?names=…`
//! stream the image service's Export in Docker's tar format; `POST /images/load` sends the
//! body to Import and answers Docker's `Loaded image: …` lines.

use crate::error::ApiError;
use crate::images::images;
use crate::request::Params;
use crate::stream::json_lines;
use crate::Services;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::images::v1 as api;
use tokio_stream::StreamExt as _;

/// The tar of `names` in `docker save`'s format; a name that is not here is a 404 before
/// the answer starts.
pub async fn save(s: &Services, names: Vec<String>) -> Result<Response, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad_parameter("no image names given"));
    }
    let mut stream = images(s)
        .export(s.req(api::ExportRequest {
            names,
            format: "docker".into(),
        }))
        .await?
        .into_inner();
    // The first chunk (or the refusal) before the 200 goes out.
    let first = stream.next().await.transpose()?;
    let rest = stream.map(|m| m.map(|c| c.data).map_err(std::io::Error::other));
    let body = tokio_stream::iter(first.map(|c| Ok(c.data))).chain(rest);
    Ok((
        [(http::header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(body),
    )
        .into_response())
}

/// `GET /images/get?names=a&names=b`.
pub async fn save_many(State(s): State<Services>, q: Params) -> Result<Response, ApiError> {
    save(&s, q.all("names")).await
}

/// `POST /images/load?quiet=`: the body is the archive.
pub async fn load(State(s): State<Services>, body: Body) -> Result<Response, ApiError> {
    let header = api::ImportRequest {
        item: Some(api::import_request::Item::Header(api::ImportHeader {
            name: String::new(),
            unpack: true,
            snapshotter: String::new(),
        })),
    };
    let data = body.into_data_stream().filter_map(|chunk| {
        chunk.ok().map(|data| api::ImportRequest {
            item: Some(api::import_request::Item::Data(data.to_vec())),
        })
    });
    let requests = tokio_stream::once(header).chain(data);
    Ok(json_lines(move |lines| async move {
        let mut stream = images(&s)
            .import(s.req(requests))
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        while let Some(m) = stream.next().await {
            if let Some(api::pull_response::Item::Image(i)) =
                m.map_err(|e| e.message().to_string())?.item
            {
                let line = berth_docker::loaded_image(&i.name, &i.name);
                lines
                    .send(berth_docker::stream_line(&format!("{line}\n")))
                    .await;
            }
        }
        Ok(())
    }))
}
