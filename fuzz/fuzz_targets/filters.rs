//! `-f KEY=VALUE` filters of the CLI listings (berth_cli::filters): one filter a line; never
//! a panic, including name= regular expressions and label= tests.
#![no_main]

use berth_cli::filters::{label_matches, name_matches, Filters};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fuzz_target!(|text: &str| {
    let lines: Vec<String> = text.lines().map(String::from).collect();
    let Ok(f) = Filters::parse(&lines, |_, _| Ok(())) else {
        return;
    };
    let labels: HashMap<String, String> = [("a", "1"), ("com.example", ""), ("=", "=")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for name in ["web", "/web", "", "a.b-c_d"] {
        let _ = f.matches(|k, v| match k {
            "name" => name_matches(name, v),
            "label" => label_matches(&labels, v),
            _ => false,
        });
    }
    let _ = f.has("name");
});
