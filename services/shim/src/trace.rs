//! The shim's part in a trace: it times its work for a traced request and hands the timings
//! back; it exports nothing itself.
//!
//! The runtime passes a W3C `traceparent` with `--traceparent` (create) and in the `start`
//! request. The shim then records a [`SpanRecord`] for `create` (from its start to the
//! verdict), `start` (the request) and `exit` (from the init's death to the exit status being
//! recorded, output drained), and hands the finished ones back in its next answer to `state`,
//! `start` or `delete`; the runtime exports them as children of the given context under the
//! service name `berth-shim`. An untraced shim records nothing. Linking an OTLP exporter (and
//! the async runtime it needs) would multiply the shim's memory; this costs a few hundred bytes
//! while tracing is on.

use crate::protocol::{Response, SpanRecord};
use std::sync::Mutex;

/// The spans of one shim: the `start` request's trace (the `exit` span's parent) and the
/// spans not handed over yet.
#[derive(Debug, Default)]
pub struct Trace {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    start_parent: Option<String>,
    done: Vec<SpanRecord>,
}

/// A traceparent as the runtime sends it: `00-<32 hex>-<16 hex>-<2 hex>`. Anything else is
/// ignored rather than carried back.
fn valid(traceparent: &str) -> bool {
    traceparent.len() == 55
        && traceparent
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-')
}

impl Trace {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records finished work under `parent` (nothing without one).
    pub fn record(
        &self,
        name: &str,
        parent: Option<&str>,
        start_ns: u64,
        error: Option<&str>,
        attributes: &[(&str, serde_json::Value)],
    ) {
        let Some(parent) = parent.filter(|p| valid(p)) else {
            return;
        };
        let span = SpanRecord {
            name: name.to_string(),
            parent: parent.to_string(),
            start_ns,
            end_ns: SpanRecord::now_ns(),
            error: error.map(str::to_string),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        self.lock().done.push(span);
    }

    /// Remembers the `start` request's trace, under which the `exit` span goes.
    pub fn set_start_parent(&self, parent: Option<String>) {
        self.lock().start_parent = parent.filter(|p| valid(p));
    }

    /// The `start` request's trace, if it had one.
    pub fn start_parent(&self) -> Option<String> {
        self.lock().start_parent.clone()
    }

    /// Moves the finished spans into `answer`.
    pub fn hand_over(&self, answer: &mut Response) {
        answer.spans = std::mem::take(&mut self.lock().done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn untraced_work_records_nothing() {
        let t = Trace::default();
        t.record("create", None, 1, None, &[]);
        t.record("create", Some("not a traceparent"), 1, None, &[]);
        t.set_start_parent(Some("00-zz".into()));
        assert_eq!(t.start_parent(), None);
        let mut r = Response::ok();
        t.hand_over(&mut r);
        assert!(r.spans.is_empty());
    }

    #[test]
    fn spans_are_handed_over_once() {
        let t = Trace::default();
        t.set_start_parent(Some(TP.into()));
        let start = t.start_parent();
        t.record("start", start.as_deref(), 5, None, &[]);
        t.record(
            "exit",
            start.as_deref(),
            6,
            Some("boom"),
            &[("exit_code", 3.into())],
        );
        let mut r = Response::ok();
        t.hand_over(&mut r);
        assert_eq!(r.spans.len(), 2);
        assert_eq!(
            (r.spans[0].name.as_str(), r.spans[0].parent.as_str()),
            ("start", TP)
        );
        assert!(r.spans[0].end_ns >= r.spans[0].start_ns);
        assert_eq!(r.spans[1].error.as_deref(), Some("boom"));
        assert_eq!(r.spans[1].attributes["exit_code"], 3);
        let mut again = Response::ok();
        t.hand_over(&mut again);
        assert!(again.spans.is_empty(), "each span goes once");
    }
}
