//! `POST /images/create?fromSrc=-` (`docker import FILE|- [REPO[:TAG]]`): the body is a
//! rootfs tarball (plain or gzip) that becomes a one-layer image through the image service's
//! CommitLayer with no parent, Docker's `changes` (`--change`: CMD, ENV, WORKDIR…) and
//! `message`. The answer is Docker's JSON stream ending with the new image's id.

use crate::error::ApiError;
use crate::images::images;
use crate::request::Params;
use crate::stream::json_lines;
use crate::Services;
use axum::body::Body;
use axum::response::Response;
use berth_api::images::v1 as api;
use berth_core::Reference;
use tokio_stream::StreamExt as _;

/// The name an import gives its image: `repo` (which may carry the tag) and `tag`; empty
/// for an untagged import.
fn import_reference(repo: &str, tag: &str) -> Result<String, ApiError> {
    if repo.is_empty() {
        return Ok(String::new());
    }
    let name = if tag.is_empty() {
        repo.to_string()
    } else {
        format!("{repo}:{tag}")
    };
    Reference::parse(&name)
        .map(|r| r.to_string())
        .map_err(|e| ApiError::bad_parameter(e.to_string()))
}

/// The CommitLayer header of an import, or Docker's 400 for what berth cannot import.
fn import_header(q: &Params) -> Result<api::CommitRequest, ApiError> {
    let source = q.get("fromSrc");
    if source != "-" {
        return Err(ApiError::bad_parameter(format!(
            "berth does not import from URLs ({source}): send the tarball as the request's body (docker import - or docker import FILE)"
        )));
    }
    let message = q.get("message");
    Ok(api::CommitRequest {
        reference: import_reference(q.get("repo"), q.get("tag"))?,
        changes: q.all("changes"),
        // Docker's history comment of an import.
        comment: if message.is_empty() {
            "Imported from -".to_string()
        } else {
            message.to_string()
        },
        ..Default::default()
    })
}

/// Imports the body as a one-layer image. A body that breaks off cancels the image
/// service's call, so a truncated tarball never becomes an image.
pub async fn import(s: Services, q: Params, body: Body) -> Result<Response, ApiError> {
    let header = import_header(&q)?;
    Ok(json_lines(move |lines| async move {
        let (tx, rx) = tokio::sync::mpsc::channel::<api::CommitLayerRequest>(4);
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut client = images(&s);
        let call = async {
            client
                .commit_layer(s.req(requests))
                .await
                .map_err(|e| e.message().to_string())
        };
        let pump = async move {
            let mut item = api::commit_layer_request::Item::Header(header);
            let mut chunks = body.into_data_stream();
            loop {
                let sent = tx.send(api::CommitLayerRequest { item: Some(item) }).await;
                if sent.is_err() {
                    // The call ended early: its own answer says why.
                    return Ok(());
                }
                item = match chunks.next().await {
                    Some(Ok(data)) => api::commit_layer_request::Item::Data(data.to_vec()),
                    Some(Err(e)) => return Err(format!("reading the tarball: {e}")),
                    None => return Ok(()),
                };
            }
        };
        let (r, ()) = tokio::try_join!(call, pump)?;
        // Docker's CLI prints the status: the image's id.
        lines
            .send(serde_json::json!({ "status": r.into_inner().id }))
            .await;
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_becomes_the_commit() {
        let q = Params::parse(Some(
            "fromSrc=-&repo=imp%3A1&message=hello&changes=CMD+%5B%22sh%22%5D&changes=ENV+A%3Db",
        ));
        let h = import_header(&q).unwrap();
        assert_eq!(h.reference, "docker.io/library/imp:1");
        assert_eq!(h.changes, ["CMD [\"sh\"]", "ENV A=b"]);
        assert_eq!(h.comment, "hello");
        assert!(h.parent.is_empty());
        let q = Params::parse(Some("fromSrc=-&repo=imp&tag=2"));
        let h = import_header(&q).unwrap();
        assert_eq!(h.reference, "docker.io/library/imp:2");
        assert_eq!(h.comment, "Imported from -");
        let untagged = import_header(&Params::parse(Some("fromSrc=-"))).unwrap();
        assert!(untagged.reference.is_empty());
    }

    #[test]
    fn urls_and_bad_names_are_refused() {
        let e = import_header(&Params::parse(Some("fromSrc=http%3A%2F%2Fx%2Fa.tar"))).unwrap_err();
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        assert!(
            e.message.contains("berth does not import from URLs"),
            "{}",
            e.message
        );
        let e = import_header(&Params::parse(Some("fromSrc=-&repo=Bad"))).unwrap_err();
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
    }
}
