//! The `created_by` text of each build step, as Docker's classic builder records it in the
//! image history (`/bin/sh -c #(nop)  CMD ["sh"]`, `|1 V=2 /bin/sh -c make`, …).

use super::duration::go_duration;
use super::{Args, Healthcheck, Instruction};
use berth_quote::{go_quote, go_quote_list, go_quote_rune};
use std::time::Duration;

/// Docker classic builder's `created_by` for `inst`, run with the stage's `shell`
/// (`["/bin/sh", "-c"]` by default). See [`history_text_with_args`].
pub fn history_text(inst: &Instruction, shell: &[String]) -> String {
    history_text_with_args(inst, shell, &[])
}

/// Docker classic builder's `created_by` text.
///
/// - RUN: the command it ran (`/bin/sh -c make`, or an exec form's argv joined by spaces),
///   prefixed by `|N K=V …` (sorted) when `build_args` is not empty: pass the build args in
///   effect for the step, as Docker does.
/// - Every other instruction: `SHELL #(nop) ` and a description. Most use Docker's commit
///   message, hence two spaces after `#(nop)`: `CMD ["a" "b"]` and `ENTRYPOINT […]` (Go's `%q`
///   of the argv, shell form already wrapped in `shell`), `ENV K=V …`, `LABEL K=V …`,
///   `ARG K[=V] …`, `EXPOSE 80 …`, `USER u`, `VOLUME [/a /b]`, `SHELL [/bin/bash -c]`,
///   `STOPSIGNAL SIGTERM`, `MAINTAINER x`, `ONBUILD trigger`,
///   `HEALTHCHECK &{["CMD-SHELL" "…"] "30s" "0s" "0s" '\x03'}` (Go's `%q` of the config).
///   WORKDIR, COPY and ADD have one space: `WORKDIR /abs`, `COPY SOURCES in DEST ` (trailing
///   space kept).
///
/// Values are printed as found in `inst`: the executor passes an instruction whose args it has
/// expanded where Docker records expanded values (ENV, LABEL, ARG, EXPOSE, USER, VOLUME,
/// STOPSIGNAL), with WORKDIR's resolved absolute path, and for COPY/ADD with `sources`
/// replaced by Docker's description (`file:<hex>`, `dir:<hex>`, `multi:<hex>`, or the URL).
/// FROM records no history of its own; it gets `#(nop)  FROM image` here for completeness.
pub fn history_text_with_args(
    inst: &Instruction,
    shell: &[String],
    build_args: &[(String, String)],
) -> String {
    let nop = |comment: String| format!("{} #(nop)  {comment}", shell.join(" "));
    let nop1 = |comment: String| format!("{} #(nop) {comment}", shell.join(" "));
    let pairs = |kv: &[(String, String)]| {
        kv.iter()
            .map(|(k, v)| format!(" {k}={v}"))
            .collect::<String>()
    };
    match &inst.args {
        Args::Run { command, .. } => {
            let mut parts = Vec::new();
            if !build_args.is_empty() {
                let mut env: Vec<String> =
                    build_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                env.sort();
                parts.push(format!("|{}", env.len()));
                parts.extend(env);
            }
            parts.extend(command.argv(shell));
            parts.join(" ")
        }
        Args::Cmd(c) => nop(format!("CMD {}", go_quote_list(&c.argv(shell)))),
        Args::Entrypoint(c) => nop(format!("ENTRYPOINT {}", go_quote_list(&c.argv(shell)))),
        Args::Env(kv) => nop(format!("ENV{}", pairs(kv))),
        Args::Label(kv) => nop(format!("LABEL{}", pairs(kv))),
        Args::Arg(args) => {
            let list: Vec<String> = args
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            nop(format!("ARG {}", list.join(" ")))
        }
        Args::Expose(ports) => nop(format!("EXPOSE {}", ports.join(" "))),
        Args::User(u) => nop(format!("USER {u}")),
        Args::Volume(v) => nop(format!("VOLUME [{}]", v.join(" "))),
        Args::Shell(v) => nop(format!("SHELL [{}]", v.join(" "))),
        Args::StopSignal(s) => nop(format!("STOPSIGNAL {s}")),
        Args::Maintainer(m) => nop(format!("MAINTAINER {m}")),
        Args::Onbuild(t) => nop(format!("ONBUILD {t}")),
        Args::Healthcheck(h) => nop(format!("HEALTHCHECK {}", go_quote_healthcheck(h.as_ref()))),
        Args::Workdir(w) => nop1(format!("WORKDIR {w}")),
        Args::Copy { sources, dest, .. } => nop1(format!("COPY {} in {dest} ", sources.join(" "))),
        Args::Add { sources, dest, .. } => nop1(format!("ADD {} in {dest} ", sources.join(" "))),
        Args::From { image, .. } => nop(format!("FROM {image}")),
    }
}

/// Go's `%q` of a `*container.HealthConfig`: `&{Test Interval Timeout StartPeriod Retries}`
/// as Debian's docker.io (20.10) writes it. Docker 25 added StartInterval to the struct; it
/// shows here only when `--start-interval` is given, which 20.10 does not accept.
fn go_quote_healthcheck(h: Option<&Healthcheck>) -> String {
    let (test, mut durations, retries) = match h {
        Some(h) => (
            h.test(),
            vec![h.interval, h.timeout, h.start_period, h.start_interval],
            h.retries,
        ),
        None => (vec!["NONE".to_string()], vec![Duration::ZERO; 4], 0),
    };
    if durations[3].is_zero() {
        durations.pop();
    }
    let durations: Vec<String> = durations
        .iter()
        .map(|d| go_quote(&go_duration(*d)))
        .collect();
    format!(
        "&{{{} {} {}}}",
        go_quote_list(&test),
        durations.join(" "),
        go_quote_rune(retries)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::tests::{one, sh, strs};

    #[test]
    fn history_text_matches_classic_builder() {
        let h = |text: &str| history_text(&one(text), &sh());
        assert_eq!(h("RUN apt-get update"), "/bin/sh -c apt-get update");
        assert_eq!(h("RUN [\"echo\", \"hi\"]"), "echo hi");
        assert_eq!(h("CMD [\"sh\"]"), "/bin/sh -c #(nop)  CMD [\"sh\"]");
        assert_eq!(
            h("CMD echo \"hi\""),
            r#"/bin/sh -c #(nop)  CMD ["/bin/sh" "-c" "echo \"hi\""]"#
        );
        assert_eq!(
            h("ENTRYPOINT [\"docker-entrypoint.sh\"]"),
            "/bin/sh -c #(nop)  ENTRYPOINT [\"docker-entrypoint.sh\"]"
        );
        assert_eq!(h("ENV A=b C=d"), "/bin/sh -c #(nop)  ENV A=b C=d");
        assert_eq!(h("LABEL a=b"), "/bin/sh -c #(nop)  LABEL a=b");
        assert_eq!(h("ARG V=1 W"), "/bin/sh -c #(nop)  ARG V=1 W");
        assert_eq!(
            h("EXPOSE 80 443/udp"),
            "/bin/sh -c #(nop)  EXPOSE 80 443/udp"
        );
        assert_eq!(h("USER nobody"), "/bin/sh -c #(nop)  USER nobody");
        assert_eq!(h("VOLUME /a /b"), "/bin/sh -c #(nop)  VOLUME [/a /b]");
        assert_eq!(
            h("SHELL [\"/bin/bash\", \"-c\"]"),
            "/bin/sh -c #(nop)  SHELL [/bin/bash -c]"
        );
        assert_eq!(
            h("STOPSIGNAL SIGQUIT"),
            "/bin/sh -c #(nop)  STOPSIGNAL SIGQUIT"
        );
        assert_eq!(
            h("MAINTAINER Tianon"),
            "/bin/sh -c #(nop)  MAINTAINER Tianon"
        );
        assert_eq!(h("ONBUILD RUN make"), "/bin/sh -c #(nop)  ONBUILD RUN make");
        assert_eq!(h("WORKDIR /app"), "/bin/sh -c #(nop) WORKDIR /app");
        assert_eq!(
            h("COPY file:cc64 /usr/local/bin/"),
            "/bin/sh -c #(nop) COPY file:cc64 in /usr/local/bin/ "
        );
        assert_eq!(h("ADD hello /"), "/bin/sh -c #(nop) ADD hello in / ");
        assert_eq!(
            h("HEALTHCHECK --interval=5m --timeout=3s CMD curl -f http://localhost/ || exit 1"),
            r#"/bin/sh -c #(nop)  HEALTHCHECK &{["CMD-SHELL" "curl -f http://localhost/ || exit 1"] "5m0s" "3s" "0s" '\x00'}"#
        );
        assert_eq!(
            h("HEALTHCHECK --retries=3 CMD [\"/ok\"]"),
            r#"/bin/sh -c #(nop)  HEALTHCHECK &{["CMD" "/ok"] "0s" "0s" "0s" '\x03'}"#
        );
        assert_eq!(
            h("HEALTHCHECK NONE"),
            r#"/bin/sh -c #(nop)  HEALTHCHECK &{["NONE"] "0s" "0s" "0s" '\x00'}"#
        );
    }

    #[test]
    fn history_with_build_args_and_custom_shell() {
        let args = vec![
            ("B".to_string(), "2".to_string()),
            ("A".to_string(), "1".to_string()),
        ];
        assert_eq!(
            history_text_with_args(&one("RUN make"), &sh(), &args),
            "|2 A=1 B=2 /bin/sh -c make"
        );
        assert_eq!(
            history_text_with_args(&one("RUN [\"make\", \"all\"]"), &sh(), &args),
            "|2 A=1 B=2 make all"
        );
        // Build args only prefix RUN.
        assert_eq!(
            history_text_with_args(&one("ENV X=1"), &sh(), &args),
            "/bin/sh -c #(nop)  ENV X=1"
        );
        let bash = strs(&["/bin/bash", "-o", "pipefail", "-c"]);
        assert_eq!(
            history_text(&one("RUN a | b"), &bash),
            "/bin/bash -o pipefail -c a | b"
        );
        assert_eq!(
            history_text(&one("CMD [\"x\"]"), &bash),
            "/bin/bash -o pipefail -c #(nop)  CMD [\"x\"]"
        );
    }
}
