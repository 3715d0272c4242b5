//! Port specs of the CLI (berth_cli::ports): `-p` specs, the publish=/expose= filters of
//! `ps` and `berth port`'s PRIVATE_PORT; never a panic, and what parses is in range.
#![no_main]

use berth_cli::ports;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(bindings) = ports::parse_publish(s) {
        assert!(!bindings.is_empty(), "{s:?} gives no binding");
        for b in &bindings {
            assert!((1..=65535).contains(&b.container_port), "{s:?}: {b:?}");
            assert!(b.host_port <= 65535, "{s:?}: {b:?}");
            assert!(b.protocol == "tcp" || b.protocol == "udp", "{s:?}: {b:?}");
        }
        let _ = ports::ps_column(&bindings);
        let _ = ports::bindings_json(&bindings, true);
        let _ = ports::port_lines(&bindings, None);
        let _ = ports::port_lines(&bindings, Some(s));
    }
    if let Ok((a, b, _)) = ports::parse_port_filter(s) {
        assert!(a <= b, "{s:?}");
    }
    let _ = ports::port_filter_matches(s, 80, "tcp");
    let _ = ports::private_port_key(s);
    let _ = ports::parse_publishes(&[s.to_string(), s.to_string()]);
});
