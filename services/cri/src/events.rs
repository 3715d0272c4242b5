//! GetContainerEvents, for the kubelet's evented PLEG: berth's own container events in
//! namespace `k8s.io` (Events.Subscribe, `type=container`) turned into the CRI's.
//!
//! The runtime publishes `create` (Containers.Create), `start` (Tasks.Start), `die` (the
//! task's exit recorded) and `destroy` (Containers.Delete), each with the container's labels
//! as attributes, so the CRI objects among them are known by their `io.berth.cri.kind` even
//! once the record is gone. Each becomes CONTAINER_CREATED/STARTED/STOPPED/DELETED_EVENT
//! about the container or — as containerd sends them too — the pod sandbox, with the pod's
//! PodSandboxStatus and the ContainerStatuses of its containers at that moment (built by
//! [`crate::sandboxes::status`] and [`crate::containers::status`]).
//!
//! One subscription to the events service per client stream. The client is fed through a
//! bounded queue: one that does not read loses events (each drop logged), while the
//! subscription keeps reading, so neither the runtime nor the events service waits on it.

use crate::objects;
use crate::sandboxes::{self, members};
use crate::{from_service, req, Backends};
use berth_api::cri::v1 as cri;
use berth_api::events::v1 as eapi;
use berth_api::events::v1::events_client::EventsClient;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

/// Events kept for a client that does not read yet; more are dropped, as containerd does.
pub const CLIENT_QUEUE: usize = 1000;

/// The stream of one GetContainerEvents client.
pub type ContainerEvents = ReceiverStream<Result<cri::ContainerEventResponse, Status>>;

/// The CRI's event type of a berth container event's action, if it has one.
pub fn event_type(action: &str) -> Option<cri::ContainerEventType> {
    Some(match action {
        "create" => cri::ContainerEventType::ContainerCreatedEvent,
        "start" => cri::ContainerEventType::ContainerStartedEvent,
        "die" => cri::ContainerEventType::ContainerStoppedEvent,
        "destroy" => cri::ContainerEventType::ContainerDeletedEvent,
        _ => return None,
    })
}

/// The sandbox an event is about: itself for a sandbox, its pod's for a container; None for
/// what is not a CRI object.
fn sandbox_of(e: &eapi::Envelope) -> Option<String> {
    let attribute = |k: &str| e.attributes.get(k).map(String::as_str).unwrap_or("");
    match attribute(objects::KIND) {
        objects::KIND_SANDBOX => Some(e.id.clone()),
        objects::KIND_CONTAINER => Some(attribute(objects::SANDBOX_ID).to_string()),
        _ => None,
    }
}

/// Subscribes to berth's events for one client; its stream ends when the client goes or
/// the events service ends the subscription (the kubelet then subscribes again).
pub async fn subscribe(b: Arc<Backends>) -> Result<ContainerEvents, Status> {
    let mut events = EventsClient::new(b.events.clone())
        .subscribe(req(eapi::SubscribeRequest {
            filters: vec!["type=container".into()],
            ..Default::default()
        }))
        .await
        .map_err(|e| from_service("subscribing to berth's events", e))?
        .into_inner();
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = events.message() => next,
            };
            let envelope = match next {
                Ok(Some(e)) => e,
                Ok(None) => {
                    let _ = tx.try_send(Err(Status::unavailable(
                        "berth's events service ended the subscription; subscribe again",
                    )));
                    return;
                }
                Err(e) => {
                    let _ = tx.try_send(Err(from_service("berth's events", e)));
                    return;
                }
            };
            let Some(event) = response(&b, &envelope).await else {
                continue;
            };
            if !offer(&tx, event) {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Queues `event` for the client without waiting: dropped (and logged) when its queue is
/// full. False once the client is gone.
fn offer(
    tx: &mpsc::Sender<Result<cri::ContainerEventResponse, Status>>,
    event: cri::ContainerEventResponse,
) -> bool {
    match tx.try_send(Ok(event)) {
        Ok(()) => true,
        Err(TrySendError::Full(Ok(dropped))) => {
            tracing::warn!(
                container = %dropped.container_id,
                kind = dropped.container_event_type,
                "a GetContainerEvents client does not read: event dropped"
            );
            true
        }
        Err(TrySendError::Full(Err(_))) => true,
        Err(TrySendError::Closed(_)) => false,
    }
}

/// The CRI event of berth event `e`, with the pod's statuses as they are now; None when
/// `e` is not about a CRI object or not of a kind the CRI has.
async fn response(b: &Backends, e: &eapi::Envelope) -> Option<cri::ContainerEventResponse> {
    let kind = event_type(&e.action)?;
    let sandbox_id = sandbox_of(e)?;
    let (pod_sandbox_status, containers_statuses) = match pod_now(b, &sandbox_id).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(container = %e.id, error = %err.message(), "GetContainerEvents: cannot read the pod's status");
            (None, Vec::new())
        }
    };
    Some(cri::ContainerEventResponse {
        container_id: e.id.clone(),
        container_event_type: kind as i32,
        created_at: e
            .timestamp
            .map(|t| objects::nanos(t.seconds, t.nanos))
            .unwrap_or(0),
        pod_sandbox_status,
        containers_statuses,
    })
}

/// The status of sandbox `id` (None once removed) and of its containers.
async fn pod_now(
    b: &Backends,
    id: &str,
) -> Result<(Option<cri::PodSandboxStatus>, Vec<cri::ContainerStatus>), Status> {
    let sandbox = match sandboxes::get(b, id, objects::KIND_SANDBOX).await {
        Ok(s) => Some(sandboxes::status(&s)),
        Err(e) if e.code() == Code::NotFound => None,
        Err(e) => return Err(e),
    };
    let statuses = members(b, id)
        .await?
        .iter()
        .map(crate::containers::status)
        .collect();
    Ok((sandbox, statuses))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(action: &str, id: &str, attributes: &[(&str, &str)]) -> eapi::Envelope {
        eapi::Envelope {
            r#type: "container".into(),
            action: action.into(),
            id: id.into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn actions_map_to_the_cri_types() {
        use cri::ContainerEventType as T;
        assert_eq!(event_type("create"), Some(T::ContainerCreatedEvent));
        assert_eq!(event_type("start"), Some(T::ContainerStartedEvent));
        assert_eq!(event_type("die"), Some(T::ContainerStoppedEvent));
        assert_eq!(event_type("destroy"), Some(T::ContainerDeletedEvent));
        for other in ["kill", "stop", "oom", "exec_start", "rename", "update"] {
            assert_eq!(event_type(other), None, "{other}");
        }
    }

    #[test]
    fn a_client_that_does_not_read_loses_events_not_the_stream() {
        let (tx, mut rx) = mpsc::channel(1);
        let event = |id: &str| cri::ContainerEventResponse {
            container_id: id.into(),
            ..Default::default()
        };
        assert!(offer(&tx, event("first")));
        assert!(
            offer(&tx, event("dropped")),
            "a full queue drops, never blocks"
        );
        assert_eq!(rx.try_recv().unwrap().unwrap().container_id, "first");
        assert!(rx.try_recv().is_err());
        assert!(offer(&tx, event("next")));
        drop(rx);
        assert!(
            !offer(&tx, event("gone")),
            "a client gone ends the subscription"
        );
    }

    #[test]
    fn only_cri_objects_have_a_pod() {
        let sandbox = envelope("start", "s1", &[(objects::KIND, objects::KIND_SANDBOX)]);
        assert_eq!(sandbox_of(&sandbox).as_deref(), Some("s1"));
        let container = envelope(
            "die",
            "c1",
            &[
                (objects::KIND, objects::KIND_CONTAINER),
                (objects::SANDBOX_ID, "s1"),
            ],
        );
        assert_eq!(sandbox_of(&container).as_deref(), Some("s1"));
        let plain = envelope("die", "d1", &[("name", "web")]);
        assert_eq!(sandbox_of(&plain), None);
    }
}
