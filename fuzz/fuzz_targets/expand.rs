//! Dockerfile word expansion (berth_build::dockerfile::expand/expand_words): `$VAR`,
//! `${VAR:-…}` and friends, quotes and escapes, with either escape character; never a panic,
//! and with no `$` in the word and no quote or escape, expansion changes nothing.
#![no_main]

use berth_build::dockerfile::{expand, expand_words};
use libfuzzer_sys::fuzz_target;

fn lookup(name: &str) -> Option<String> {
    match name {
        "A" => Some("a".into()),
        "SPACED" => Some(" two  words ".into()),
        "EMPTY" => Some(String::new()),
        "DOLLAR" => Some("$A ${A}".into()),
        "QUOTE" => Some("'\"\\`".into()),
        "LONG" => Some("x".repeat(200)),
        _ => None,
    }
}

fuzz_target!(|word: &str| {
    for escape in ['\\', '`'] {
        let one = expand(word, &lookup, escape);
        let words = expand_words(word, &lookup, escape);
        assert_eq!(one.is_ok(), words.is_ok(), "{word:?}: {one:?} vs {words:?}");
        let plain = !word.contains(['$', '\'', '"', escape]);
        if plain {
            assert_eq!(one.as_deref(), Ok(word), "{word:?} with escape {escape:?}");
        }
    }
});
