//! `berth top CONTAINER [ps OPTIONS]` and `berth stats [--no-stream] [-a] [CONTAINER…]`:
//! Docker's output from Tasks.ListPids and Tasks.Metrics; the shapes and the CPU % math are
//! berth-docker's, the same the gateway answers `docker top` and `docker stats` with.

use crate::client::{Context, Error};
use berth_api::containers::v1 as capi;
use berth_api::tasks::v1 as tapi;
use berth_docker::usage;
use clap::Args;
use serde_json::Value;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The container's name or id
    pub container: String,
    /// Options for ps (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Containers by name or id (default: every running one)
    pub containers: Vec<String>,
}

/// `berth top`: the `ps` of the container's host (run by the runtime service, Tasks.ListPids
/// with `ps_args`) on the container's processes, as Docker's table.
pub async fn top(ctx: &Context, a: TopArgs) -> Result<(), Error> {
    let answer = ctx
        .tasks()
        .list_pids(ctx.req(tapi::ListPidsRequest {
            container_id: a.container,
            ps_args: Some(a.ps_args.join(" ")),
        }))
        .await?
        .into_inner();
    let t = usage::top_json(&answer);
    let cells = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut rows = vec![cells(&t["Titles"])];
    rows.extend(t["Processes"].as_array().into_iter().flatten().map(cells));
    print!("{}", crate::format::table(&rows));
    Ok(())
}

/// One sample of a container, host figures included (empty when it does not run).
async fn sample(ctx: &Context, id: &str) -> tapi::Metrics {
    ctx.tasks()
        .metrics(ctx.req(tapi::MetricsRequest {
            container_id: id.to_string(),
        }))
        .await
        .ok()
        .and_then(|r| r.into_inner().metrics)
        .unwrap_or_default()
}

/// The containers to show: those named, else the running ones (every one with `all`).
async fn chosen(ctx: &Context, a: &StatsArgs) -> Result<Vec<capi::Container>, Error> {
    if a.containers.is_empty() {
        let list = ctx
            .containers()
            .list(ctx.req(capi::ListContainersRequest {}))
            .await?
            .into_inner()
            .containers;
        let running = |c: &capi::Container| c.state.as_ref().is_some_and(|s| s.status == "running");
        return Ok(list.into_iter().filter(|c| a.all || running(c)).collect());
    }
    let mut out = Vec::new();
    for name in &a.containers {
        let c = ctx
            .containers()
            .get(ctx.req(capi::GetContainerRequest { id: name.clone() }))
            .await?
            .into_inner()
            .container
            .unwrap_or_default();
        out.push(c);
    }
    Ok(out)
}

/// `berth stats`: Docker's table, each figure from two samples a second apart; with
/// `--no-stream` once, else again every second.
pub async fn stats(ctx: &Context, a: StatsArgs) -> Result<(), Error> {
    let containers = chosen(ctx, &a).await?;
    let mut pre = Vec::new();
    for c in &containers {
        pre.push(sample(ctx, &c.id).await);
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let mut rows = Vec::new();
        for (c, before) in containers.iter().zip(pre.iter_mut()) {
            let now = sample(ctx, &c.id).await;
            let j = usage::stats_json(&c.id, &c.name, &now, Some(&*before));
            let id = if a.no_trunc {
                &c.id[..]
            } else {
                &c.id[..12.min(c.id.len())]
            };
            rows.push(usage::stats_row(&j, id));
            *before = now;
        }
        let out = crate::template::list(usage::STATS_TABLE, usage::STATS_COLUMNS, &rows)
            .map_err(Error::Local)?;
        if a.no_stream {
            print!("{out}");
            return Ok(());
        }
        // Docker's screen: cleared, then the table.
        print!("\x1b[2J\x1b[H{out}");
    }
}
