use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not compiled in: a target folder shared by two checkouts (CI
    // keeps one outside the clone) reuses the compiled script, which must see its own checkout.
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "berth/types/v1/types.proto",
        "berth/content/v1/content.proto",
        "berth/images/v1/images.proto",
        "berth/snapshots/v1/snapshots.proto",
        "berth/containers/v1/containers.proto",
        "berth/tasks/v1/tasks.proto",
        "berth/version/v1/version.proto",
        "berth/registry/v1/registry.proto",
        "berth/events/v1/events.proto",
        "berth/volumes/v1/volumes.proto",
        "berth/networks/v1/networks.proto",
        "berth/build/v1/build.proto",
        "berth/namespaces/v1/namespaces.proto",
        "berth/leases/v1/leases.proto",
        // Kubernetes' CRI (package runtime.v1), vendored: see its header
        "k8s/cri/v1/api.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| proto_root.join(f)).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // protox, a protobuf compiler in Rust with the well-known types built in, so the build
    // needs no protoc and no include files from the system (Debian splits them into
    // libprotobuf-dev, which a minimal install leaves out).
    let fds = protox::compile(&paths, [&proto_root])?;
    // Served by the reflection service.
    std::fs::write(
        out.join("berth_descriptor.bin"),
        protox::prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
