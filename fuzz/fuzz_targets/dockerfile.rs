//! Dockerfile parsing (berth_build::dockerfile::parse): any text gives a Dockerfile or a
//! ParseError, never a panic; what parses can be described for the history and its stages
//! looked up.
#![no_main]

use berth_build::dockerfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(df) = dockerfile::parse(text) else {
        return;
    };
    assert!(!df.stages.is_empty(), "a parsed Dockerfile has a stage");
    let shell = ["/bin/sh".to_string(), "-c".to_string()];
    let args = [("A".to_string(), "1".to_string())];
    for st in &df.stages {
        let _ = df.stage_index(&st.base);
        if let Some(n) = &st.name {
            assert_eq!(df.stage_index(n), Some(st.index), "stage {n:?}");
        }
        for inst in std::iter::once(&st.from).chain(&st.instructions) {
            let _ = dockerfile::history_text(inst, &shell);
            let _ = dockerfile::history_text_with_args(inst, &shell, &args);
            // An instruction reparsed on its own (as ONBUILD triggers are) must not panic.
            let _ = dockerfile::parse_instruction(&inst.original, inst.line, df.escape);
        }
    }
    for a in &df.global_args {
        let _ = dockerfile::history_text(a, &shell);
    }
});
