//! `--format` Go templates of the CLI (berth_cli::template): parsing and rendering any
//! template over an inspect-like object and a listing never panics nor hangs.
#![no_main]

use berth_cli::template::{list, Format};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn object() -> &'static serde_json::Value {
    static O: OnceLock<serde_json::Value> = OnceLock::new();
    O.get_or_init(|| {
        serde_json::json!({
            "ID": "0123456789ab",
            "Names": "web",
            "Image": "busybox",
            "Ports": "0.0.0.0:8080->80/tcp",
            "Size": 4261,
            "Ratio": 0.5,
            "Running": true,
            "Nothing": null,
            "Config": {
                "Env": ["A=1", "B=2"],
                "Labels": {"b": "2", "a": "1"},
                "Cmd": ["sh", "-c", "echo"],
                "Empty": {},
            },
            "Mounts": [{"Source": "/a", "Destination": "/b"}],
        })
    })
}

const COLUMNS: &[(&str, &str)] = &[("ID", "CONTAINER ID"), ("Names", "NAMES")];

fuzz_target!(|s: &str| {
    if let Ok(t) = Format::parse(s) {
        let _ = t.render(object());
        let _ = t.render(&serde_json::Value::Null);
    }
    let _ = list(s, COLUMNS, std::slice::from_ref(object()));
});
