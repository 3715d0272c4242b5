//! The HTTP/1.1 upgrade to SPDY/3.1 as Kubernetes' clients (client-go, so the kubelet's
//! streaming client and crictl) make it: `Connection: Upgrade`, `Upgrade: SPDY/3.1` and one
//! or more `X-Stream-Protocol-Version` values, answered `101 Switching Protocols` with the
//! chosen version; the connection then carries a SPDY session.
//!
//! ```ignore
//! // in an axum/hyper 1 handler, with the request (its body unread):
//! let upgrade = match berth_spdy::upgrade::negotiate(&mut req, &[berth_spdy::remotecommand::PROTOCOL_V4]) {
//!     Ok(upgrade) => upgrade,
//!     Err(refused) => return refused.into_response(), // 400 or 403 with the reason
//! };
//! let response = upgrade.response();
//! tokio::spawn(async move {
//!     let session = upgrade.session(Default::default()).await?;
//!     // …
//! });
//! return response; // the 101
//! ```

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::session::{Session, SessionConfig};

/// The `Upgrade` token of SPDY/3.1.
pub const SPDY_31: &str = "SPDY/3.1";
/// The header carrying the stream protocols a client offers and the one the server chose.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// The header listing what the server accepts, when nothing offered matched.
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";

/// Why a request cannot be upgraded; [`Refusal::into_response`] answers it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("unable to upgrade: the request asks for no SPDY/3.1 upgrade (Connection: Upgrade, Upgrade: SPDY/3.1)")]
    NotAnUpgrade,
    #[error("unable to upgrade: none of the offered stream protocols ({offered}) is supported ({supported})")]
    NoCommonProtocol { offered: String, supported: String },
    #[error("unable to upgrade: the connection cannot be taken over (not an HTTP/1.1 server connection)")]
    NotUpgradable,
}

impl Refusal {
    /// The HTTP answer Kubernetes gives: 400, or 403 with the accepted versions.
    pub fn into_response(self) -> Response<String> {
        let status = match self {
            Refusal::NoCommonProtocol { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut response = Response::new(format!("{self}\n"));
        *response.status_mut() = status;
        if let Refusal::NoCommonProtocol { supported, .. } = &self {
            for protocol in supported.split(", ") {
                if let Ok(value) = HeaderValue::from_str(protocol) {
                    response
                        .headers_mut()
                        .append(ACCEPTED_PROTOCOLS_HEADER, value);
                }
            }
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// An accepted upgrade: the chosen protocol, the 101 to send, and the connection to come.
#[derive(Debug)]
pub struct Upgrade {
    protocol: &'static str,
    on_upgrade: OnUpgrade,
}

/// Checks that `request` asks for SPDY/3.1 and picks the first protocol the client offers
/// that is in `supported` (client-go lists its preferred first).
pub fn negotiate<B>(
    request: &mut Request<B>,
    supported: &[&'static str],
) -> Result<Upgrade, Refusal> {
    if !asks_for_spdy(request.headers()) {
        return Err(Refusal::NotAnUpgrade);
    }
    let offered = offered_protocols(request.headers());
    let protocol = offered
        .iter()
        .find_map(|offer| supported.iter().find(|s| s.eq_ignore_ascii_case(offer)))
        .copied()
        .ok_or_else(|| Refusal::NoCommonProtocol {
            offered: if offered.is_empty() {
                "none".into()
            } else {
                offered.join(", ")
            },
            supported: supported.join(", "),
        })?;
    let on_upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(Refusal::NotUpgradable)?;
    Ok(Upgrade {
        protocol,
        on_upgrade,
    })
}

fn asks_for_spdy(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade_spdy = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case(SPDY_31));
    connection_upgrade && upgrade_spdy
}

/// The protocols offered, in order: several header lines and comma-separated lists alike.
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

impl Upgrade {
    /// The stream protocol chosen, e.g. `v4.channel.k8s.io`.
    pub fn protocol(&self) -> &'static str {
        self.protocol
    }

    /// The `101 Switching Protocols` to answer the request with (any body type).
    pub fn response<B: Default>(&self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static(SPDY_31));
        headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(self.protocol));
        response
    }

    /// Waits for the connection once the 101 is sent, and serves SPDY on it.
    pub async fn session(self, config: SessionConfig) -> Result<Session, hyper::Error> {
        let upgraded = self.on_upgrade.await?;
        Ok(Session::serve(TokioIo::new(upgraded), config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/exec/abc");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).unwrap();
        request
            .extensions_mut()
            .insert(hyper::upgrade::on(Request::new(())));
        request
    }

    #[test]
    fn picks_the_clients_first_supported_protocol() {
        let mut req = request(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            (PROTOCOL_HEADER, "v5.channel.k8s.io"),
            (PROTOCOL_HEADER, "v4.channel.k8s.io, v3.channel.k8s.io"),
        ]);
        let upgrade = negotiate(&mut req, &["v3.channel.k8s.io", "v4.channel.k8s.io"]).unwrap();
        assert_eq!(upgrade.protocol(), "v4.channel.k8s.io");
        let response: Response<()> = upgrade.response();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[PROTOCOL_HEADER], "v4.channel.k8s.io");
        assert_eq!(response.headers()[header::UPGRADE], "SPDY/3.1");
    }

    #[test]
    fn refuses_requests_that_do_not_ask_for_spdy() {
        let mut req = request(&[("Upgrade", "websocket"), ("Connection", "Upgrade")]);
        let refusal = negotiate(&mut req, &["v4.channel.k8s.io"]).unwrap_err();
        assert!(matches!(refusal, Refusal::NotAnUpgrade));
        assert_eq!(refusal.into_response().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn refuses_unknown_protocols_with_what_is_accepted() {
        let mut req = request(&[
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "spdy/3.1"),
            (PROTOCOL_HEADER, "v1.channel.k8s.io"),
        ]);
        let refusal = negotiate(&mut req, &["v4.channel.k8s.io"]).unwrap_err();
        let response = refusal.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[ACCEPTED_PROTOCOLS_HEADER],
            "v4.channel.k8s.io"
        );
        assert!(response.body().contains("v1.channel.k8s.io"));
    }
}
