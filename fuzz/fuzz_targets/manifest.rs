//! Manifests, indexes and image configs as the image service reads them from a registry or an
//! archive (berth_image::manifest): any bytes give a value or an error, never a panic.
#![no_main]

use berth_core::media;
use berth_image::manifest;
use libfuzzer_sys::fuzz_target;

const MEDIA_TYPES: &[&str] = &[
    "",
    media::OCI_MANIFEST,
    media::DOCKER_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST_LIST,
    "text/plain",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, json)) = data.split_first() else {
        return;
    };
    let media_type = MEDIA_TYPES[usize::from(first) % MEDIA_TYPES.len()];
    if let Ok(m) = manifest::parse_manifest("fuzz", media_type, json) {
        for l in &m.layers {
            let _ = l.digest("layer");
        }
    }
    if let Ok(i) = manifest::parse_index("fuzz", json) {
        for (os, arch) in [
            ("linux", "amd64"),
            ("linux", "arm/v7"),
            ("", ""),
            ("linux", "/"),
        ] {
            let _ = manifest::select_platform("fuzz", &i, os, arch);
        }
    }
    let _ = manifest::parse_config("fuzz", json, usize::from(first >> 4));
});
