//! The Events service over a real unix socket: publish, subscribe, filters, namespaces and a
//! subscriber that never reads.

use berth_api::events::v1 as api;
use berth_api::events::v1::events_client::EventsClient;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

struct Harness {
    _dir: tempfile::TempDir,
    client: EventsClient<Channel>,
    broker: berth_events::Broker,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start(capacity: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("events.sock");
    let broker = berth_events::Broker::new(capacity);
    let service = berth_events::serve_with(broker.clone());
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    let channel = berth_core::grpc::channel(&format!("unix://{}", sock.display())).unwrap();
    Harness {
        _dir: dir,
        client: EventsClient::new(channel),
        broker,
        server,
    }
}

fn event(t: &str, action: &str, id: &str, name: &str) -> api::Envelope {
    api::Envelope {
        r#type: t.into(),
        action: action.into(),
        id: id.into(),
        attributes: [("name".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

async fn publish(h: &Harness, ns: &str, e: api::Envelope) {
    h.client
        .clone()
        .publish(berth_core::grpc::request(
            ns,
            api::PublishRequest { event: Some(e) },
        ))
        .await
        .unwrap();
}

async fn subscribe(
    h: &Harness,
    ns: &str,
    filters: &[&str],
    all: bool,
) -> tonic::Streaming<api::Envelope> {
    let s = h
        .client
        .clone()
        .subscribe(berth_core::grpc::request(
            ns,
            api::SubscribeRequest {
                since: None,
                until: None,
                filters: filters.iter().map(|s| s.to_string()).collect(),
                all_namespaces: all,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // The server subscribed before it answered.
    assert!(h.broker.subscribers() > 0);
    s
}

async fn next(s: &mut tonic::Streaming<api::Envelope>) -> api::Envelope {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("an event within 5s")
        .expect("the stream goes on")
        .expect("no error")
}

async fn nothing_more(s: &mut tonic::Streaming<api::Envelope>) {
    assert!(
        tokio::time::timeout(Duration::from_millis(200), s.next())
            .await
            .is_err(),
        "no further event expected"
    );
}

#[tokio::test]
async fn publish_then_receive() {
    let h = start(64).await;
    let mut s = subscribe(&h, "default", &[], false).await;
    publish(&h, "default", event("container", "start", "abc", "web")).await;
    let e = next(&mut s).await;
    assert_eq!(
        (e.r#type.as_str(), e.action.as_str(), e.id.as_str()),
        ("container", "start", "abc")
    );
    assert_eq!(e.namespace, "default");
    assert_eq!(e.attributes["name"], "web");
    assert!(e.timestamp.is_some_and(|t| t.seconds > 0));
}

#[tokio::test]
async fn filters_select_events() {
    let h = start(64).await;
    let mut s = subscribe(&h, "default", &["type=container", "event=die"], false).await;
    let mut named = subscribe(&h, "default", &["container=web"], false).await;
    publish(&h, "default", event("container", "start", "abc", "web")).await;
    publish(&h, "default", event("image", "die", "busybox", "")).await;
    publish(&h, "default", event("container", "die", "def", "db")).await;
    publish(&h, "default", event("container", "die", "abc", "web")).await;
    assert_eq!(next(&mut s).await.id, "def");
    assert_eq!(next(&mut s).await.id, "abc");
    nothing_more(&mut s).await;
    assert_eq!(next(&mut named).await.action, "start");
    assert_eq!(next(&mut named).await.action, "die");
    nothing_more(&mut named).await;
}

#[tokio::test]
async fn bad_filters_and_events_are_refused() {
    let h = start(64).await;
    let e = h
        .client
        .clone()
        .subscribe(api::SubscribeRequest {
            since: None,
            until: None,
            filters: vec!["colour=red".into()],
            all_namespaces: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("colour"), "{}", e.message());
    let e = h
        .client
        .clone()
        .publish(api::PublishRequest {
            event: Some(api::Envelope::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn namespaces_are_separate_unless_all() {
    let h = start(64).await;
    let mut dflt = subscribe(&h, "default", &[], false).await;
    let mut other = subscribe(&h, "other", &[], false).await;
    let mut all = subscribe(&h, "default", &[], true).await;
    publish(&h, "other", event("container", "create", "o1", "x")).await;
    publish(&h, "default", event("container", "create", "d1", "y")).await;
    let e = next(&mut other).await;
    assert_eq!((e.id.as_str(), e.namespace.as_str()), ("o1", "other"));
    nothing_more(&mut other).await;
    assert_eq!(next(&mut dflt).await.id, "d1");
    nothing_more(&mut dflt).await;
    assert_eq!(next(&mut all).await.id, "o1");
    assert_eq!(next(&mut all).await.id, "d1");
    // A call without namespace metadata works in `default`.
    h.client
        .clone()
        .publish(api::PublishRequest {
            event: Some(event("image", "pull", "busybox:latest", "")),
        })
        .await
        .unwrap();
    assert_eq!(next(&mut dflt).await.id, "busybox:latest");
}

#[tokio::test]
async fn a_slow_subscriber_never_blocks_publishers() {
    let h = start(16).await;
    let mut slow = subscribe(&h, "default", &[], false).await;
    // Fill its queue and the connection's buffers without reading: gRPC publishes still
    // return promptly.
    let t0 = std::time::Instant::now();
    for i in 0..300 {
        publish(
            &h,
            "default",
            event("container", "start", &i.to_string(), "n"),
        )
        .await;
    }
    // Then a burst faster than anyone reads (in-process, as berthd's own services may).
    for i in 0..10_000 {
        h.broker
            .publish(event("container", "start", &format!("burst{i}"), "n"));
    }
    publish(&h, "default", event("container", "start", "last", "n")).await;
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "publishing went at the slow subscriber's pace"
    );
    // The slow one first gets what was queued for it, then a clear error.
    let mut got = 0;
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(5), slow.next())
            .await
            .unwrap_or_else(|_| panic!("the slow subscriber hears something after {got}"))
        {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => break e,
            None => panic!("the stream ended without telling it lagged"),
        }
    };
    assert!(got < 10_301, "it got {got}");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("missed"), "{}", err.message());
    // A new subscriber works normally.
    let mut fresh = subscribe(&h, "default", &[], false).await;
    publish(&h, "default", event("container", "stop", "z", "n")).await;
    assert_eq!(next(&mut fresh).await.id, "z");
}

#[tokio::test]
async fn a_gone_subscriber_is_cleaned_up() {
    let h = start(16).await;
    let s = subscribe(&h, "default", &[], false).await;
    drop(s);
    // The subscriber task notices the closed stream (on the next event at the latest).
    for _ in 0..50 {
        publish(&h, "default", event("container", "start", "x", "n")).await;
        if h.broker.subscribers() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the subscriber was never dropped");
}
