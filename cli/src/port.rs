//! `berth port`: the command; the parsing and the lines it prints are `berth_cli::ports`.

use crate::client::{Context, Error};
use crate::ports;
use clap::Args;

#[derive(Debug, Args)]
pub struct PortArgs {
    /// The container
    pub container: String,
    /// Only this container port: PORT[/tcp|/udp]
    pub private_port: Option<String>,
}

/// `berth port CONTAINER [PRIVATE_PORT[/PROTO]]`.
pub async fn port(ctx: &Context, a: PortArgs) -> u8 {
    let c = match crate::containers::get(ctx, &a.container).await {
        Ok(c) => c,
        Err(e) => return crate::fail(e),
    };
    let ports = c.network_settings.map(|n| n.ports).unwrap_or_default();
    match ports::port_lines(&ports, a.private_port.as_deref()) {
        Err(e) => crate::fail(Error::Local(e)),
        Ok(lines) if lines.is_empty() && a.private_port.is_some() => {
            let want = a.private_port.as_deref().unwrap_or_default();
            let want = ports::private_port_key(want).unwrap_or_else(|_| want.to_string());
            eprintln!(
                "berth: Error: No public port '{want}' published for {}",
                a.container
            );
            1
        }
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            0
        }
    }
}
