//! The network endpoints: list (Docker's filters), inspect, create, remove, prune, connect
//! and disconnect, over berth's Networks service. Docker's JSON of a network comes from
//! berth-docker, as the CLI's `network inspect` does.

use crate::error::{json_body, ApiError};
use crate::request::Path;
use crate::request::{Filters, Json};
use crate::Services;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use berth_api::networks::v1 as napi;
use berth_api::networks::v1::networks_client::NetworksClient;
use berth_docker::networks as dn;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use tonic::transport::Channel;

/// `/networks…`.
pub fn routes() -> axum::Router<Services> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

fn networks(s: &Services) -> NetworksClient<Channel> {
    NetworksClient::new(s.runtime.clone())
}

/// `GET /networks?filters=`: every network as `inspect` shows it (`dangling` asks each
/// network for its containers).
pub async fn list(State(s): State<Services>, filters: Filters) -> Result<Response, ApiError> {
    let filters = filters.pairs()?;
    let keep = dn::network_filter(&filters).map_err(ApiError::bad_parameter)?;
    let mut list = networks(&s)
        .list(s.req(napi::ListNetworksRequest {}))
        .await?
        .into_inner()
        .networks;
    if dn::needs_containers(&filters) {
        for n in &mut list {
            let name = n.id.clone();
            *n = networks(&s)
                .get(s.req(napi::GetNetworkRequest { name }))
                .await?
                .into_inner();
        }
    }
    let out: Vec<Value> = list
        .iter()
        .filter(|n| keep(n))
        .map(dn::network_inspect)
        .collect();
    Ok(json_body(&Value::Array(out)).into_response())
}

/// `GET /networks/{id}`.
pub async fn inspect(
    State(s): State<Services>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let n = networks(&s)
        .get(s.req(napi::GetNetworkRequest { name }))
        .await?
        .into_inner();
    Ok(json_body(&dn::network_inspect(&n)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ipam {
    driver: String,
    config: Vec<IpamConfig>,
    options: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamConfig {
    subnet: String,
    #[serde(rename = "IPRange")]
    ip_range: String,
    gateway: String,
    auxiliary_addresses: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    name: String,
    /// Docker 20.10 always refuses a duplicate name; so does berth.
    #[allow(dead_code)]
    check_duplicate: bool,
    driver: String,
    internal: bool,
    /// Every local bridge network takes containers of any kind: nothing to set.
    #[allow(dead_code)]
    attachable: bool,
    ingress: bool,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    options: HashMap<String, String>,
    labels: HashMap<String, String>,
}

/// The Networks.Create request for a Docker create body: what berth cannot honour is a
/// 400, never ignored.
fn create_request(b: CreateBody) -> Result<napi::CreateNetworkRequest, String> {
    if b.name.is_empty() {
        return Err("network name is required".into());
    }
    if !matches!(b.driver.as_str(), "" | "bridge") {
        return Err(format!(
            "network driver {:?} is not supported: use bridge",
            b.driver
        ));
    }
    if b.enable_ipv6 {
        return Err("IPv6 networks are not supported".into());
    }
    if b.ingress {
        return Err("ingress networks are not supported (no swarm)".into());
    }
    if let Some(k) = b.options.keys().next() {
        return Err(format!("network option {k:?} is not supported"));
    }
    let ipam = b.ipam.unwrap_or_default();
    if !matches!(ipam.driver.as_str(), "" | "default") {
        return Err(format!("IPAM driver {:?} is not supported", ipam.driver));
    }
    if !ipam.options.is_empty() {
        return Err("IPAM options are not supported".into());
    }
    if ipam.config.len() > 1 {
        return Err("only one IPAM config (one subnet) is supported".into());
    }
    let config = ipam.config.into_iter().next().unwrap_or_default();
    if !config.ip_range.is_empty() || !config.auxiliary_addresses.is_empty() {
        return Err("IPAM IPRange and AuxiliaryAddresses are not supported".into());
    }
    let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let (subnet, gateway) = (some(&config.subnet), some(&config.gateway));
    dn::check_subnet_gateway(subnet.as_deref(), gateway.as_deref())?;
    Ok(napi::CreateNetworkRequest {
        name: b.name,
        driver: "bridge".into(),
        subnet: subnet.unwrap_or_default(),
        gateway: gateway.unwrap_or_default(),
        internal: b.internal,
        labels: b.labels,
        conflist: String::new(),
    })
}

/// `POST /networks/create`: 201 `{"Id": …, "Warning": ""}`; a name in use is a 409.
pub async fn create(
    State(s): State<Services>,
    Json(body): Json<CreateBody>,
) -> Result<Response, ApiError> {
    let req = create_request(body).map_err(ApiError::bad_parameter)?;
    let n = networks(&s).create(s.req(req)).await?.into_inner();
    let body = json!({"Id": n.id, "Warning": ""});
    Ok((StatusCode::CREATED, json_body(&body)).into_response())
}

/// `DELETE /networks/{id}`: 204; a built-in network is a 403, one in use a 409.
pub async fn remove(
    State(s): State<Services>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let n = networks(&s)
        .get(s.req(napi::GetNetworkRequest { name: name.clone() }))
        .await?
        .into_inner();
    if dn::network_builtin(&n) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} is a pre-defined network and cannot be removed", n.name),
        ));
    }
    networks(&s)
        .remove(s.req(napi::RemoveNetworkRequest { name: n.id }))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /networks/prune`: `{"NetworksDeleted": […]}`. Networks.Prune takes no filters, so
/// any is a 400.
pub async fn prune(State(s): State<Services>, filters: Filters) -> Result<Response, ApiError> {
    if let Some(f) = filters.pairs()?.first() {
        return Err(ApiError::bad_parameter(format!(
            "network prune filter {f:?} is not supported"
        )));
    }
    let r = networks(&s)
        .prune(s.req(napi::PruneNetworksRequest {}))
        .await?
        .into_inner();
    Ok(json_body(&json!({"NetworksDeleted": r.deleted})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointConfig {
    aliases: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConnectBody {
    container: String,
    endpoint_config: Option<EndpointConfig>,
    force: bool,
}

/// `POST /networks/{id}/connect` (Container, EndpointConfig.Aliases): 200.
pub async fn connect(
    State(s): State<Services>,
    Path(network): Path<String>,
    Json(b): Json<ConnectBody>,
) -> Result<Response, ApiError> {
    if b.container.is_empty() {
        return Err(ApiError::bad_parameter("a container is required"));
    }
    let aliases = b
        .endpoint_config
        .and_then(|e| e.aliases)
        .unwrap_or_default();
    networks(&s)
        .attach(s.req(napi::ConnectRequest {
            network,
            container: b.container,
            aliases,
        }))
        .await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /networks/{id}/disconnect` (Container, Force): 200.
pub async fn disconnect(
    State(s): State<Services>,
    Path(network): Path<String>,
    Json(b): Json<ConnectBody>,
) -> Result<Response, ApiError> {
    if b.container.is_empty() {
        return Err(ApiError::bad_parameter("a container is required"));
    }
    networks(&s)
        .detach(s.req(napi::DisconnectRequest {
            network,
            container: b.container,
            force: b.force,
        }))
        .await?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(j: &str) -> CreateBody {
        serde_json::from_str(j).unwrap()
    }

    #[test]
    fn create_bodies_as_docker_sends_them() {
        let r = create_request(body(
            r#"{"Name":"n1","CheckDuplicate":true,"Driver":"bridge","IPAM":{"Driver":"default","Config":[{"Subnet":"10.99.0.0/24","Gateway":"10.99.0.1"}],"Options":{}},"Internal":true,"Attachable":false,"Ingress":false,"Options":{},"Labels":{"a":"b"}}"#,
        ))
        .unwrap();
        assert_eq!(
            (
                r.name.as_str(),
                r.subnet.as_str(),
                r.gateway.as_str(),
                r.internal
            ),
            ("n1", "10.99.0.0/24", "10.99.0.1", true)
        );
        assert_eq!(r.labels["a"], "b");
        for bad in [
            r#"{"Name":"n","Driver":"overlay"}"#,
            r#"{"Name":"n","EnableIPv6":true}"#,
            r#"{"Name":"n","Options":{"com.docker.network.bridge.name":"x"}}"#,
            r#"{"Name":"n","IPAM":{"Config":[{"Gateway":"10.0.0.1"}]}}"#,
            r#"{"Driver":"bridge"}"#,
        ] {
            assert!(create_request(body(bad)).is_err(), "{bad}");
        }
        assert!(crate::request::json::<CreateBody>(b"{nope").is_err());
        assert!(crate::request::json::<CreateBody>(b"{\"Name\":5}").is_err());
    }
}
