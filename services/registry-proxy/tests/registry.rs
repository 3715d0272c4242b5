//! The Registry service against a real registry: Debian's `docker-registry` with a busybox
//! image pushed by skopeo.

mod common;

use berth_registry_proxy::credentials::Anonymous;
use berth_registry_proxy::DockerConfig;
use common::{
    descriptor, free_port, have_tools, non_loopback_ipv4, sha256, skip, Service, TestRegistry,
};
use std::sync::Arc;
use tonic::Code;

const TOOLS: &[&str] = &["docker-registry", "skopeo", "umoci"];

#[tokio::test]
async fn resolves_and_fetches_a_pushed_image() {
    if !have_tools(TOOLS) {
        return;
    }
    let reg = TestRegistry::start();
    reg.push_busybox("busybox");
    let svc = Service::start("", Arc::new(Anonymous)).await;
    let reference = format!("{}/busybox", reg.addr);

    let resolved = svc.resolve(&reference).await.unwrap();
    assert_eq!(resolved.name, format!("{reference}:latest"));
    let manifest_desc = resolved.descriptor.unwrap();
    assert_eq!(manifest_desc.media_type, berth_core::media::OCI_MANIFEST);
    assert!(manifest_desc.size > 0);

    // skopeo's view of the same manifest.
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}:latest"))
        .output()
        .unwrap()
        .stdout;
    assert_eq!(manifest_desc.digest, sha256(&raw));
    assert_eq!(manifest_desc.size, raw.len() as i64);

    // By digest, the same descriptor.
    let by_digest = svc
        .resolve(&format!("{reference}@{}", manifest_desc.digest))
        .await
        .unwrap();
    assert_eq!(by_digest.descriptor.as_ref(), Some(&manifest_desc));

    let (manifest, total) = svc.fetch(&reference, &manifest_desc, true).await.unwrap();
    assert_eq!(manifest, raw);
    assert_eq!(total, manifest_desc.size);

    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let as_desc = |v: &serde_json::Value| {
        descriptor(
            v["mediaType"].as_str().unwrap(),
            v["digest"].as_str().unwrap(),
            v["size"].as_i64().unwrap(),
        )
    };
    let config = as_desc(&manifest["config"]);
    let layer = as_desc(&manifest["layers"][0]);
    for blob in [&config, &layer] {
        // The repository may carry a tag; it is ignored.
        let (data, total) = svc
            .fetch(&format!("{reference}:whatever"), blob, false)
            .await
            .unwrap();
        assert_eq!(sha256(&data), blob.digest);
        assert_eq!(total, blob.size);
    }
    assert!(layer.size > 500_000, "the layer holds busybox");

    // A size that is not the blob's: DataLoss.
    let mut wrong_size = config.clone();
    wrong_size.size += 1;
    let err = svc.fetch(&reference, &wrong_size, false).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains("size mismatch"), "{}", err.message());

    // Content the registry corrupted (same length, other bytes): DataLoss, as it streams.
    let path = reg.blob_path(&config.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = svc.fetch(&reference, &config, false).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert_eq!(
        err.message(),
        format!(
            "blob {} from {}: digest mismatch, got {}",
            config.digest,
            reg.addr,
            sha256(&bytes)
        )
    );
}

#[tokio::test]
async fn missing_things_are_not_found() {
    if !have_tools(TOOLS) {
        return;
    }
    let reg = TestRegistry::start();
    reg.push_busybox("busybox");
    let svc = Service::start("", Arc::new(Anonymous)).await;

    let err = svc
        .resolve(&format!("{}/nothing-here:1", reg.addr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        format!("{}/nothing-here:1: not found in the registry", reg.addr)
    );

    let err = svc
        .resolve(&format!("{}/busybox:nope", reg.addr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let missing = descriptor("", &sha256(b"not in the registry"), 19);
    let err = svc
        .fetch(&format!("{}/busybox", reg.addr), &missing, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("blob sha256:"), "{}", err.message());

    let err = svc.resolve("Not A Reference").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = svc
        .fetch(
            &format!("{}/busybox", reg.addr),
            &descriptor("", "md5:abc", 1),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("unsupported digest algorithm"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_registry_that_is_down_is_unavailable() {
    let svc = Service::start("", Arc::new(Anonymous)).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let err = svc
        .resolve(&format!("{addr}/busybox:latest"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .starts_with(&format!("cannot reach registry {addr}: connection refused")),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn mirrors_go_first_and_upstream_is_the_fallback() {
    if !have_tools(TOOLS) {
        return;
    }
    let reg = TestRegistry::start();
    reg.push_busybox("busybox");
    let down = format!("127.0.0.1:{}", free_port());

    // A mirror that is down: upstream answers.
    let config = format!(
        "[registries.\"{}\"]\nmirrors = [\"http://{down}\"]\n",
        reg.addr
    );
    let svc = Service::start(&config, Arc::new(Anonymous)).await;
    let resolved = svc
        .resolve(&format!("{}/busybox:latest", reg.addr))
        .await
        .unwrap();
    let manifest = resolved.descriptor.unwrap();
    let (data, _) = svc
        .fetch(&format!("{}/busybox", reg.addr), &manifest, true)
        .await
        .unwrap();
    assert_eq!(sha256(&data), manifest.digest);

    // An upstream that is down: the mirror answers for it (with ?ns=, which it ignores).
    let config = format!(
        "[registries.\"{down}\"]\nmirrors = [\"http://{}\"]\n",
        reg.addr
    );
    let svc = Service::start(&config, Arc::new(Anonymous)).await;
    let via_mirror = svc
        .resolve(&format!("{down}/busybox:latest"))
        .await
        .unwrap();
    assert_eq!(via_mirror.name, format!("{down}/busybox:latest"));
    assert_eq!(via_mirror.descriptor.as_ref(), Some(&manifest));
    let (data, _) = svc
        .fetch(&format!("{down}/busybox"), &manifest, true)
        .await
        .unwrap();
    assert_eq!(sha256(&data), manifest.digest);
}

#[tokio::test]
async fn basic_auth_uses_docker_config_credentials() {
    if !have_tools(TOOLS) {
        return;
    }
    let reg = TestRegistry::with_basic_auth("berth", "s3cret");
    reg.push_busybox("private");
    let reference = format!("{}/private:latest", reg.addr);

    // No credentials: a clear Unauthenticated.
    let anonymous = Service::start("", Arc::new(Anonymous)).await;
    let err = anonymous.resolve(&reference).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("run `berth login {}`", reg.addr)),
        "{}",
        err.message()
    );

    // Credentials in a Docker config dir.
    let docker = tempfile::tempdir().unwrap();
    let write_auth = |user_pass: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(user_pass);
        std::fs::write(
            docker.path().join("config.json"),
            format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr),
        )
        .unwrap();
    };
    write_auth("berth:s3cret");
    let svc = Service::start("", Arc::new(DockerConfig::in_dir(docker.path()))).await;
    let manifest = svc.resolve(&reference).await.unwrap().descriptor.unwrap();
    let (data, _) = svc.fetch(&reference, &manifest, true).await.unwrap();
    let layers: serde_json::Value = serde_json::from_slice(&data).unwrap();
    let layer = &layers["layers"][0];
    let layer = descriptor(
        layer["mediaType"].as_str().unwrap(),
        layer["digest"].as_str().unwrap(),
        layer["size"].as_i64().unwrap(),
    );
    let (blob, _) = svc.fetch(&reference, &layer, false).await.unwrap();
    assert_eq!(sha256(&blob), layer.digest);

    // Wrong credentials: refused, said so.
    write_auth("berth:wrong");
    let svc = Service::start("", Arc::new(DockerConfig::in_dir(docker.path()))).await;
    let err = svc.resolve(&reference).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("refused the credentials"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn insecure_registries_fall_back_from_https_to_http() {
    if !have_tools(TOOLS) {
        return;
    }
    let Some(ip) = non_loopback_ipv4() else {
        return skip("this host has no non-loopback IPv4 address");
    };
    let reg = TestRegistry::start_on(ip);
    reg.push_busybox("busybox");
    let reference = format!("{}/busybox:latest", reg.addr);

    // Not marked insecure: HTTPS only, and the error says what to do.
    let svc = Service::start("", Arc::new(Anonymous)).await;
    let err = svc.resolve(&reference).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("mark it insecure"),
        "{}",
        err.message()
    );

    // Insecure: HTTPS without verification fails (it speaks HTTP), plain HTTP works.
    let config = format!("[registries.\"{}\"]\ninsecure = true\n", reg.addr);
    let svc = Service::start(&config, Arc::new(Anonymous)).await;
    let manifest = svc.resolve(&reference).await.unwrap().descriptor.unwrap();
    let (data, _) = svc.fetch(&reference, &manifest, true).await.unwrap();
    assert_eq!(sha256(&data), manifest.digest);
}
