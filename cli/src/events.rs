//! `berth events`: the daemon's container and image events as Docker prints them, subscribing
//! again when the daemon drops a subscriber that fell behind.

use crate::client::{Context, Error};
use crate::stdio::write_stdout;
use berth_api::events::v1 as eapi;
use clap::Args;
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Filter: type=…, event=…, container=…, image=…
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Events of every namespace
    #[arg(long)]
    pub all_namespaces: bool,
    /// Show the events kept since this time (a duration like 10m, RFC 3339 or Unix seconds)
    #[arg(long)]
    pub since: Option<String>,
    /// Stop at this time (same forms as --since)
    #[arg(long)]
    pub until: Option<String>,
}

pub use berth_docker::events::event_line;

pub async fn events(ctx: &Context, a: EventsArgs) -> Result<(), Error> {
    let now = berth_api::prost_types::Timestamp::from(std::time::SystemTime::now());
    let moment = |s: &Option<String>| {
        s.as_deref()
            .map(|s| berth_docker::time::parse_moment(s, &now))
            .transpose()
            .map_err(Error::Local)
    };
    let (mut since, until) = (moment(&a.since)?, moment(&a.until)?);
    loop {
        let mut s = ctx
            .events()
            .subscribe(ctx.req(eapi::SubscribeRequest {
                filters: a.filter.clone(),
                all_namespaces: a.all_namespaces,
                // Only the first subscription replays; one after a lag follows from then on.
                since: since.take(),
                until,
            }))
            .await?
            .into_inner();
        loop {
            match s.next().await {
                Some(Ok(e)) => write_stdout(format!("{}\n", event_line(&e)).as_bytes())?,
                Some(Err(st)) if st.code() == tonic::Code::ResourceExhausted => {
                    eprintln!("berth: warning: {}; subscribing again", st.message());
                    break;
                }
                Some(Err(st)) => return Err(st.into()),
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_like_docker() {
        let e = eapi::Envelope {
            timestamp: Some(berth_api::prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            namespace: "default".into(),
            r#type: "container".into(),
            action: "die".into(),
            id: "abc".into(),
            attributes: [("name", "web"), ("exitCode", "0"), ("image", "busybox")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(
            event_line(&e),
            "2023-11-14T22:13:20.000000000Z container die abc (exitCode=0, image=busybox, name=web)"
        );
    }
}
