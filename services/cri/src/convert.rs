//! berth's image views in the CRI's terms: references written in full (as containerd's CRI
//! does: `docker.io/library/busybox:latest`), the image's user, the verbose info of
//! ImageStatus, and the kubelet's AuthConfig as the per-request registry auth of a pull.

use base64::Engine as _;
use berth_api::cri::v1 as cri;
use berth_api::images::v1::InspectImageResponse;
use berth_api::types::v1::RegistryAuth;
use std::collections::HashMap;
use tonic::Status;

/// `name` written in full (registry, repository, tag or digest), or as given when it is no
/// image reference.
pub fn full_reference(name: &str) -> String {
    berth_core::Reference::parse(name)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| name.to_string())
}

/// The uid or user name an image runs as by default, from its config's `User` (`uid`,
/// `name`, `uid:gid`, `name:group`): a number is the uid, anything else the user name; the
/// group is not part of the CRI's image view.
pub fn image_user(config_json: &[u8]) -> (Option<i64>, String) {
    let config: serde_json::Value = serde_json::from_slice(config_json).unwrap_or_default();
    let user = config
        .pointer("/config/User")
        .and_then(|u| u.as_str())
        .unwrap_or_default();
    let user = user.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

/// The CRI's view of an inspected image: its id is the config digest.
pub fn image(inspect: &InspectImageResponse) -> cri::Image {
    let summary = inspect.summary.clone().unwrap_or_default();
    let (uid, username) = image_user(&inspect.config);
    let mut repo_tags: Vec<String> = inspect
        .repo_tags
        .iter()
        .map(|t| full_reference(t))
        .collect();
    repo_tags.sort();
    let mut repo_digests: Vec<String> = inspect
        .repo_digests
        .iter()
        .map(|d| full_reference(d))
        .collect();
    repo_digests.sort();
    cri::Image {
        id: summary.id.clone(),
        repo_tags,
        repo_digests,
        size: summary.size.max(0) as u64,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: summary.id,
            ..Default::default()
        }),
        pinned: false,
    }
}

/// ImageStatus' verbose `info`: key `info`, a JSON object with the image config (as
/// containerd's `imageSpec`), the chain id of its unpacked layers and their snapshotter.
pub fn verbose_info(inspect: &InspectImageResponse) -> HashMap<String, String> {
    let config: serde_json::Value =
        serde_json::from_slice(&inspect.config).unwrap_or(serde_json::Value::Null);
    let info = serde_json::json!({
        "imageSpec": config,
        "chainID": inspect.chain_id,
        "snapshotter": inspect.snapshotter,
        "manifest": inspect.manifest.as_ref().map(|m| &m.digest),
    });
    HashMap::from([("info".to_string(), info.to_string())])
}

/// The kubelet's credentials for one pull as the image service's per-request registry auth;
/// `None` when it sent none. `auth` is Docker's base64 `user:password`. A registry token (a
/// bearer token to send as is) is refused: berth's registry client answers the registry's
/// challenges with a user name and password or an identity token.
pub fn registry_auth(auth: Option<&cri::AuthConfig>) -> Result<Option<RegistryAuth>, Status> {
    let Some(a) = auth else { return Ok(None) };
    if !a.registry_token.is_empty() {
        return Err(Status::invalid_argument(
            "AuthConfig.registry_token is not supported by berth: send a user name and password (or auth)",
        ));
    }
    let (mut username, mut password) = (a.username.clone(), a.password.clone());
    if !a.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Status::invalid_argument("AuthConfig.auth is not base64 of \"user:password\"")
            })?;
        let (u, p) = decoded.split_once(':').ok_or_else(|| {
            Status::invalid_argument("AuthConfig.auth must be base64 of \"user:password\"")
        })?;
        (username, password) = (u.to_string(), p.to_string());
    }
    if username.is_empty() && password.is_empty() && a.identity_token.is_empty() {
        return Ok(None);
    }
    Ok(Some(RegistryAuth {
        username,
        password,
        identity_token: a.identity_token.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_written_in_full() {
        assert_eq!(
            full_reference("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            full_reference("gcr.io/k8s-staging-cri-tools/test-image-tag:test"),
            "gcr.io/k8s-staging-cri-tools/test-image-tag:test"
        );
        assert_eq!(full_reference("Not A Reference"), "Not A Reference");
    }

    #[test]
    fn the_user_is_a_uid_or_a_name() {
        let user = |u: &str| image_user(format!(r#"{{"config":{{"User":"{u}"}}}}"#).as_bytes());
        assert_eq!(user("1002"), (Some(1002), String::new()));
        assert_eq!(user("www-data"), (None, "www-data".to_string()));
        assert_eq!(user("1003:1004"), (Some(1003), String::new()));
        assert_eq!(user("www-data:1004"), (None, "www-data".to_string()));
        assert_eq!(user(""), (None, String::new()));
        assert_eq!(image_user(b"{}"), (None, String::new()));
        assert_eq!(image_user(b"not json"), (None, String::new()));
    }

    #[test]
    fn auth_configs_become_registry_auth() {
        assert_eq!(registry_auth(None).unwrap(), None);
        assert_eq!(
            registry_auth(Some(&cri::AuthConfig::default())).unwrap(),
            None
        );
        let plain = cri::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        let a = registry_auth(Some(&plain)).unwrap().unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
        let encoded = cri::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("alice:s3:cret"),
            ..Default::default()
        };
        let a = registry_auth(Some(&encoded)).unwrap().unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("alice", "s3:cret")
        );
        for bad in [
            "%%%",
            &base64::engine::general_purpose::STANDARD.encode("nocolon"),
        ] {
            let e = registry_auth(Some(&cri::AuthConfig {
                auth: bad.into(),
                ..Default::default()
            }))
            .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
        let token = cri::AuthConfig {
            registry_token: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            registry_auth(Some(&token)).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
