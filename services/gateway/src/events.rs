//! `GET /events?since=&until=&filters=`: berth's events as Docker's messages, one JSON
//! object a line. `since` replays what the events service still keeps (a bounded history:
//! see berth-events), `until` ends the stream; without it the stream follows new events
//! until the client hangs up.

use crate::error::ApiError;
use crate::request::filter_pairs;
use crate::request::Query;
use crate::Services;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::events::v1 as eapi;
use berth_api::events::v1::events_client::EventsClient;
use berth_api::prost_types::Timestamp;
use serde::Deserialize;
use tokio_stream::StreamExt;

/// `/events`.
pub fn routes() -> axum::Router<Services> {
    axum::Router::new().route("/events", axum::routing::get(events))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

/// `since`/`until` as Docker's clients send them (Unix seconds, maybe with nanoseconds; or
/// an RFC 3339 time or a duration before now).
fn moment(v: Option<&str>, now: &Timestamp) -> Result<Option<Timestamp>, ApiError> {
    v.filter(|v| !v.is_empty())
        .map(|v| berth_docker::time::parse_moment(v, now))
        .transpose()
        .map_err(ApiError::bad_parameter)
}

/// `GET /events`.
pub async fn events(
    State(s): State<Services>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let filters = filter_pairs(q.filters.as_deref().unwrap_or(""))?;
    let now = Timestamp::from(std::time::SystemTime::now());
    let since = moment(q.since.as_deref(), &now)?;
    let until = moment(q.until.as_deref(), &now)?;
    let stream = EventsClient::new(s.events.clone())
        .subscribe(s.req(eapi::SubscribeRequest {
            filters,
            all_namespaces: false,
            since,
            until,
        }))
        .await?
        .into_inner();
    let lines = stream.map_while(|e| {
        let e = e.ok()?;
        let mut line = serde_json::to_vec(&berth_docker::events::event_message(&e)).ok()?;
        line.push(b'\n');
        Some(Ok::<_, std::convert::Infallible>(line))
    });
    Ok((
        [(http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response())
}
