//! Image references (berth_core::reference): parsing never panics, and what parses prints
//! back to a reference that parses to the same thing.
#![no_main]

use berth_core::{Digest, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let _ = s.parse::<Digest>();
    let _ = Reference::parse_name_only(s);
    let Ok(r) = Reference::parse(s) else { return };
    let printed = r.to_string();
    let again = Reference::parse(&printed)
        .unwrap_or_else(|e| panic!("{s:?} parsed as {printed:?}, which does not parse: {e}"));
    assert_eq!(again, r, "{s:?} -> {printed:?}");
    let familiar = r.familiar();
    let again = Reference::parse(&familiar)
        .unwrap_or_else(|e| panic!("{s:?}'s familiar form {familiar:?} does not parse: {e}"));
    assert_eq!(again, r, "{s:?} -> familiar {familiar:?}");
    let _ = (
        r.repository(),
        r.familiar_repository(),
        r.domain(),
        r.path(),
        r.tag(),
    );
});
