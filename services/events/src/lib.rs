//! berth's Events service: what happens to containers, images and volumes, as a stream.
//!
//! Services call `Publish` when something happens (a container starts, dies, an image is
//! pulled); clients call `Subscribe` and get every event from then on, in their namespace (or
//! every namespace with `all_namespaces`), optionally filtered the way `docker events
//! --filter` filters (same key ORs, different keys AND).
//!
//! The fan-out is in memory ([`Broker`], a tokio broadcast channel), and publishing never
//! waits for subscribers. The broker also keeps a bounded history — the last
//! [`HISTORY_EVENTS`] events, none older than [`HISTORY_AGE`] — so that a subscriber with
//! `since` first gets what happened since then (`docker events --since 10m`); `until` ends
//! its stream. Nothing is written to disk: a restarted berthd remembers no events. A subscriber that falls more than
//! [`DEFAULT_CAPACITY`] events behind gets a `ResourceExhausted` error that says how many
//! events it missed, and should subscribe again.
//!
//! Other services publish through a [`Publisher`] (an ordered, never-blocking queue to the
//! Events service at a channel).
//!
//! ```no_run
//! let events = berth_events::serve();
//! # let _ = events;
//! ```

mod publisher;
pub use publisher::Publisher;

use berth_api::events::v1 as api;
use berth_api::events::v1::events_server::{Events, EventsServer};
use berth_api::prost_types::Timestamp;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// How many events a subscriber may fall behind before it is told it lags.
pub const DEFAULT_CAPACITY: usize = 4096;

/// How many past events the broker keeps for subscribers with `since`.
pub const HISTORY_EVENTS: usize = 4096;

/// How long the broker keeps a past event for subscribers with `since`.
pub const HISTORY_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// How many matching events wait in a subscriber's own queue before its gRPC stream takes
/// them; past this the subscriber lags behind the broadcast instead of slowing anyone down.
const SUBSCRIBER_QUEUE: usize = 64;

/// The in-memory fan-out: cheap to clone, every clone publishes to the same subscribers.
#[derive(Debug, Clone)]
pub struct Broker {
    tx: broadcast::Sender<Arc<api::Envelope>>,
    /// The recent past, oldest first; publishing sends under its lock, so a subscriber that
    /// takes the history and subscribes under it sees every event exactly once.
    history: Arc<std::sync::Mutex<std::collections::VecDeque<Arc<api::Envelope>>>>,
}

impl Default for Broker {
    fn default() -> Self {
        Broker::new(DEFAULT_CAPACITY)
    }
}

impl Broker {
    /// A broker whose subscribers may lag `capacity` events behind.
    pub fn new(capacity: usize) -> Broker {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Broker {
            tx,
            history: Arc::default(),
        }
    }

    /// Sends an event to every current subscriber; never blocks. Fills in the timestamp
    /// when the event has none. Returns how many subscribers there were.
    pub fn publish(&self, mut event: api::Envelope) -> usize {
        let now = now();
        if event.timestamp.is_none() {
            event.timestamp = Some(now);
        }
        let event = Arc::new(event);
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.push_back(event.clone());
        let oldest = now.seconds - HISTORY_AGE.as_secs() as i64;
        while history.len() > HISTORY_EVENTS
            || history
                .front()
                .is_some_and(|e| e.timestamp.is_some_and(|t| t.seconds < oldest))
        {
            history.pop_front();
        }
        self.tx.send(event).unwrap_or(0)
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<api::Envelope>> {
        self.tx.subscribe()
    }

    /// The kept events at or after `since`, oldest first, and a receiver of every event
    /// published after them.
    pub fn subscribe_since(
        &self,
        since: &Timestamp,
    ) -> (
        Vec<Arc<api::Envelope>>,
        broadcast::Receiver<Arc<api::Envelope>>,
    ) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let past = history
            .iter()
            .filter(|e| e.timestamp.is_some_and(|t| !before(&t, since)))
            .cloned()
            .collect();
        (past, self.tx.subscribe())
    }

    /// How many subscribers listen right now.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Whether `a` is earlier than `b`.
fn before(a: &Timestamp, b: &Timestamp) -> bool {
    (a.seconds, a.nanos) < (b.seconds, b.nanos)
}

/// Which events a subscriber wants: `key=value` filters, Docker's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    by_key: BTreeMap<String, Vec<String>>,
}

/// The filter keys `Subscribe` understands.
pub const FILTER_KEYS: &[&str] = &[
    "type",
    "event",
    "container",
    "image",
    "volume",
    "network",
    "label",
];

impl Filters {
    /// Parses `key=value` strings; `action` is taken as `event`. Unknown keys and strings
    /// without `=` are refused with a message that lists the keys.
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Filters, String> {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in filters {
            let f = f.as_ref();
            let Some((k, v)) = f.split_once('=') else {
                return Err(format!(
                    "bad format of filter {f:?} (expected key=value, key one of {})",
                    FILTER_KEYS.join(", ")
                ));
            };
            let k = k.trim().to_ascii_lowercase();
            let k = if k == "action" {
                "event".to_string()
            } else {
                k
            };
            if !FILTER_KEYS.contains(&k.as_str()) {
                return Err(format!(
                    "invalid filter {k:?} (use one of {})",
                    FILTER_KEYS.join(", ")
                ));
            }
            by_key.entry(k).or_default().push(v.trim().to_string());
        }
        Ok(Filters { by_key })
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Whether an event passes: for every key given, at least one of its values matches.
    pub fn matches(&self, e: &api::Envelope) -> bool {
        self.by_key.iter().all(|(k, values)| {
            values.iter().any(|v| match k.as_str() {
                "type" => e.r#type == *v,
                "event" => action_matches(&e.action, v),
                "container" => e.r#type == "container" && container_matches(e, v),
                "image" => image_matches(e, v),
                "volume" => {
                    e.r#type == "volume"
                        && (e.id == *v || e.attributes.get("name").is_some_and(|n| n == v))
                }
                "network" => {
                    e.r#type == "network"
                        && (e.id.starts_with(v.as_str())
                            || e.attributes.get("name").is_some_and(|n| n == v))
                }
                "label" => label_matches(e, v),
                _ => false,
            })
        })
    }
}

/// `exec_start: sh` style actions match on their first word, as Docker's do.
fn action_matches(action: &str, want: &str) -> bool {
    action == want
        || action
            .split_once(':')
            .is_some_and(|(head, _)| head.trim() == want)
}

fn container_matches(e: &api::Envelope, want: &str) -> bool {
    if want.is_empty() {
        return false;
    }
    e.id.starts_with(want)
        || e.attributes
            .get("name")
            .is_some_and(|n| n == want || n.trim_start_matches('/') == want)
}

/// Docker's matchImage: the image event's id or a container's `image` attribute, compared
/// as given, as a normalized reference, or by repository when the filter has no tag.
fn image_matches(e: &api::Envelope, want: &str) -> bool {
    let mut candidates = Vec::new();
    if e.r#type == "image" {
        candidates.push(e.id.as_str());
        if let Some(n) = e.attributes.get("name") {
            candidates.push(n.as_str());
        }
    }
    if let Some(i) = e.attributes.get("image") {
        candidates.push(i.as_str());
    }
    candidates
        .into_iter()
        .any(|c| !c.is_empty() && reference_matches(c, want))
}

fn reference_matches(have: &str, want: &str) -> bool {
    if have == want {
        return true;
    }
    if want.starts_with("sha256:") || have.starts_with("sha256:") {
        return have.starts_with(want) && want.len() > "sha256:".len();
    }
    let (Ok(h), Ok(w)) = (
        berth_core::Reference::parse(have),
        berth_core::Reference::parse_name_only(want),
    ) else {
        return false;
    };
    if w.tag().is_none() && w.digest().is_none() {
        h.repository() == w.repository()
    } else {
        h.to_string() == w.to_string()
    }
}

fn label_matches(e: &api::Envelope, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => e.attributes.get(k).is_some_and(|x| x == v),
        None => e.attributes.contains_key(want),
    }
}

/// The Events gRPC service over a [`Broker`].
#[derive(Debug, Clone, Default)]
pub struct EventsService {
    broker: Broker,
}

impl EventsService {
    pub fn new(broker: Broker) -> EventsService {
        EventsService { broker }
    }
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
}

/// The Events service with its own broker.
pub fn serve() -> EventsServer<EventsService> {
    serve_with(Broker::default())
}

/// The Events service over `broker`, so code in the same process can publish directly.
pub fn serve_with(broker: Broker) -> EventsServer<EventsService> {
    EventsServer::new(EventsService::new(broker))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<api::Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(
        &self,
        req: Request<api::PublishRequest>,
    ) -> Result<Response<api::PublishResponse>, Status> {
        let ns = berth_core::grpc::namespace(&req)?;
        let mut event = req
            .into_inner()
            .event
            .ok_or_else(|| Status::invalid_argument("publish needs an event"))?;
        if event.r#type.is_empty() || event.action.is_empty() {
            return Err(Status::invalid_argument(
                "an event needs a type (container, image, volume) and an action",
            ));
        }
        if event.namespace.is_empty() {
            event.namespace = ns;
        } else {
            berth_core::grpc::validate_namespace(&event.namespace)?;
        }
        tracing::debug!(
            namespace = %event.namespace,
            r#type = %event.r#type,
            action = %event.action,
            id = %event.id,
            "event"
        );
        self.broker.publish(event);
        Ok(Response::new(api::PublishResponse {}))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        req: Request<api::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let ns = berth_core::grpc::namespace(&req)?;
        let r = req.into_inner();
        let filters = Filters::parse(&r.filters).map_err(Status::invalid_argument)?;
        let all = r.all_namespaces;
        let wanted = move |e: &api::Envelope| (all || e.namespace == ns) && filters.matches(e);
        // Take the history and subscribe before answering, so nothing published after the
        // call returns is missed.
        let (past, mut events) = match &r.since {
            Some(since) => self.broker.subscribe_since(since),
            None => (Vec::new(), self.broker.subscribe()),
        };
        let until = r.until;
        let after_until = move |e: &api::Envelope| {
            until.is_some_and(|u| e.timestamp.is_some_and(|t| before(&u, &t)))
        };
        let (tx, rx) = mpsc::channel::<Result<api::Envelope, Status>>(SUBSCRIBER_QUEUE);
        tokio::spawn(async move {
            for e in past {
                if after_until(&e) {
                    return;
                }
                if wanted(&e) && tx.send(Ok((*e).clone())).await.is_err() {
                    return;
                }
            }
            let deadline = until.map(|u| {
                let at = std::time::UNIX_EPOCH
                    + std::time::Duration::new(u.seconds.max(0) as u64, u.nanos.max(0) as u32);
                let wait = at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                tokio::time::Instant::now() + wait
            });
            loop {
                let e = tokio::select! {
                    _ = tx.closed() => return,
                    _ = sleep_until(deadline) => return,
                    e = events.recv() => e,
                };
                match e {
                    Ok(e) => {
                        if after_until(&e) {
                            return;
                        }
                        if !wanted(&e) {
                            continue;
                        }
                        // Waiting here only holds this subscriber back; the broadcast keeps
                        // going and this one lags.
                        if tx.send(Ok((*e).clone())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "an events subscriber fell behind");
                        let _ = tx
                            .send(Err(Status::resource_exhausted(format!(
                                "events subscriber fell behind and missed {n} events; subscribe again"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: &str, action: &str, id: &str, attrs: &[(&str, &str)]) -> api::Envelope {
        api::Envelope {
            timestamp: None,
            namespace: "default".into(),
            r#type: t.into(),
            action: action.into(),
            id: id.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn f(s: &[&str]) -> Filters {
        Filters::parse(s).unwrap()
    }

    #[test]
    fn history_is_bounded_and_replayed_from_since() {
        let b = Broker::new(8);
        for i in 0..HISTORY_EVENTS + 10 {
            let mut e = ev("container", "start", &i.to_string(), &[]);
            e.timestamp = Some(Timestamp {
                seconds: now().seconds,
                nanos: i as i32,
            });
            b.publish(e);
        }
        let (all, _) = b.subscribe_since(&Timestamp::default());
        assert_eq!(all.len(), HISTORY_EVENTS, "the oldest are dropped");
        assert_eq!(all[0].id, "10");
        let since = all[HISTORY_EVENTS - 3].timestamp.unwrap();
        let (recent, _) = b.subscribe_since(&since);
        let ids: Vec<_> = recent.iter().map(|e| e.id.as_str()).collect();
        let last = HISTORY_EVENTS + 9;
        assert_eq!(
            ids,
            [
                (last - 2).to_string(),
                (last - 1).to_string(),
                last.to_string()
            ]
        );
        let mut old = ev("image", "pull", "x", &[]);
        old.timestamp = Some(Timestamp {
            seconds: 1,
            nanos: 0,
        });
        let b = Broker::new(8);
        b.publish(old);
        b.publish(ev("image", "pull", "y", &[]));
        let (kept, _) = b.subscribe_since(&Timestamp::default());
        assert_eq!(kept.len(), 1, "events older than HISTORY_AGE are dropped");
        assert!(f(&["network=n1"]).matches(&ev("network", "create", "abc", &[("name", "n1")])));
    }

    #[test]
    fn parse_refuses_bad_filters() {
        assert!(Filters::parse(&["nonsense"]).is_err());
        let e = Filters::parse(&["colour=red"]).unwrap_err();
        assert!(e.contains("colour"), "{e}");
        assert!(Filters::parse::<&str>(&[]).unwrap().is_empty());
        assert_eq!(f(&["action=die"]), f(&["event=die"]));
    }

    #[test]
    fn empty_filters_match_everything() {
        assert!(f(&[]).matches(&ev("image", "pull", "busybox:latest", &[])));
    }

    #[test]
    fn same_key_ors_different_keys_and() {
        let die = ev("container", "die", "abc123", &[("name", "web")]);
        let start = ev("container", "start", "abc123", &[("name", "web")]);
        let pull = ev("image", "pull", "busybox:latest", &[]);
        let both = f(&["event=die", "event=start"]);
        assert!(both.matches(&die) && both.matches(&start) && !both.matches(&pull));
        let and = f(&["type=container", "event=die"]);
        assert!(and.matches(&die) && !and.matches(&start) && !and.matches(&pull));
    }

    #[test]
    fn container_by_id_prefix_or_name() {
        let e = ev("container", "die", "abcdef0123", &[("name", "web")]);
        assert!(f(&["container=abc"]).matches(&e));
        assert!(f(&["container=abcdef0123"]).matches(&e));
        assert!(f(&["container=web"]).matches(&e));
        assert!(!f(&["container=we"]).matches(&e));
        assert!(!f(&["container=other"]).matches(&e));
        // An image event is never a container's.
        assert!(!f(&["container=busy"]).matches(&ev("image", "pull", "busybox:latest", &[])));
    }

    #[test]
    fn image_matches_like_docker() {
        let c = ev(
            "container",
            "start",
            "abc",
            &[("name", "web"), ("image", "busybox:latest")],
        );
        assert!(f(&["image=busybox"]).matches(&c));
        assert!(f(&["image=busybox:latest"]).matches(&c));
        assert!(f(&["image=docker.io/library/busybox:latest"]).matches(&c));
        assert!(!f(&["image=busybox:1.0"]).matches(&c));
        assert!(!f(&["image=alpine"]).matches(&c));
        let i = ev("image", "pull", "127.0.0.1:5000/busybox:latest", &[]);
        assert!(f(&["image=127.0.0.1:5000/busybox"]).matches(&i));
        assert!(!f(&["image=busybox"]).matches(&i));
    }

    #[test]
    fn labels_and_exec_actions() {
        let e = ev(
            "container",
            "exec_start: sh -c ls",
            "abc",
            &[("tier", "web")],
        );
        assert!(f(&["event=exec_start"]).matches(&e));
        assert!(f(&["label=tier"]).matches(&e));
        assert!(f(&["label=tier=web"]).matches(&e));
        assert!(!f(&["label=tier=db"]).matches(&e));
    }

    #[tokio::test]
    async fn broker_fans_out_and_never_blocks() {
        let b = Broker::new(4);
        let mut r1 = b.subscribe();
        let mut r2 = b.subscribe();
        assert_eq!(b.publish(ev("image", "pull", "a", &[])), 2);
        assert_eq!(r1.recv().await.unwrap().id, "a");
        assert_eq!(r2.recv().await.unwrap().id, "a");
        // r2 never reads again: publishing still returns at once.
        for i in 0..100 {
            b.publish(ev("image", "pull", &i.to_string(), &[]));
        }
        assert!(matches!(
            r2.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        let got = r1.recv().await;
        assert!(got.is_err(), "r1 lagged too: it read nothing in between");
    }

    #[test]
    fn publish_fills_in_the_time() {
        let b = Broker::default();
        let mut r = b.subscribe();
        b.publish(ev("image", "tag", "x", &[]));
        let e = r.try_recv().unwrap();
        assert!(e.timestamp.as_ref().is_some_and(|t| t.seconds > 0));
    }
}
