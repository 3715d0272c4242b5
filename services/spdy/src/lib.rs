//! SPDY/3.1 and Kubernetes' streaming protocols, server side: what the CRI service's
//! streaming server speaks to the kubelet and crictl for `exec`, `attach` and `port-forward`.
//!
//! There is no maintained SPDY crate, so this one is written from the SPDY/3.1 draft, with
//! moby/spdystream (the Go SPDY under client-go) in mind as the peer. It depends on no berth
//! crate. Layers, bottom up:
//! - [`frame`]: the frames (SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY,
//!   HEADERS, WINDOW_UPDATE, DATA), parsed and written with every length bounded;
//!   [`compress`] and [`dictionary`]: header blocks through one zlib stream per direction
//!   primed with SPDY/3's dictionary.
//! - [`session`]: a server session over any tokio `AsyncRead + AsyncWrite`; the streams the
//!   client opens arrive as [`session::Stream`]s (`AsyncRead + AsyncWrite`, with headers).
//! - [`upgrade`]: the HTTP/1.1 `Upgrade: SPDY/3.1` handshake on a hyper 1 (or axum) request,
//!   with `X-Stream-Protocol-Version` negotiation.
//! - [`remotecommand`] (`v4.channel.k8s.io`) and [`portforward`] (`portforward.k8s.io`).
//!
//! How the CRI service uses it, in an axum/hyper handler for the URL its `Exec` returned:
//!
//! ```ignore
//! use berth_spdy::{remotecommand, upgrade};
//! let channels = remotecommand::Channels::from_query(req.uri().query().unwrap_or(""))?;
//! let upgrade = match upgrade::negotiate(&mut req, &[remotecommand::PROTOCOL_V4]) {
//!     Ok(upgrade) => upgrade,
//!     Err(refused) => return refused.into_response(), // 400/403, as the kubelet answers
//! };
//! let response = upgrade.response(); // 101 Switching Protocols
//! tokio::spawn(async move {
//!     let session = upgrade.session(Default::default()).await?;
//!     let mut command = remotecommand::accept(session, channels, remotecommand::DEFAULT_STREAM_TIMEOUT).await?;
//!     // copy command.stdin → the process, the process → command.stdout / command.stderr
//!     // (take() them; dropping a stream closes it), apply command.resize's sizes, then:
//!     command.finish(remotecommand::Outcome::Exited(code)).await
//! });
//! response
//! ```
//!
//! Port-forward is the same with `portforward::PROTOCOL_V1` and
//! `PortForward::new(session, timeout)`, whose `next()` yields a [`portforward::ForwardRequest`]
//! per connection (port, data stream, error stream).

pub mod compress;
pub mod dictionary;
pub mod frame;
pub mod portforward;
pub mod remotecommand;
pub mod session;
pub mod upgrade;
