//! The `config` section of an image config — what a container made from the image runs with
//! (Docker's `container.Config`) — typed, and the one place that edits it.
//!
//! - [`ContainerConfig`]: the section, with the fields berth edits typed and every other
//!   field kept as it came. Each typed field is a [`Field`]: absent, `null` or a value, as the
//!   JSON had it, so that a config copied through a commit keeps its shape (Docker writes
//!   `"Cmd": null`) and so its digest.
//! - [`Change`]: a config-only Dockerfile instruction with its values final (expanded,
//!   shell form already wrapped); [`ContainerConfig::apply`] applies one as Docker does. The
//!   build's config-only steps, `commit --change` ([`crate::changes`] parses those texts into
//!   changes) and commit's run overrides ([`ContainerConfig::apply_run`]) all edit through it.
//!
//! ```
//! use berth_image::config::{Change, ContainerConfig};
//!
//! let mut c = ContainerConfig::from_json(serde_json::json!({"Env": ["A=1"], "Cmd": ["sh"]})).unwrap();
//! c.apply(Change::Env(vec![("A".into(), "2".into())]));
//! c.apply(Change::Entrypoint { argv: vec!["/init".into()], keep_cmd: false });
//! assert_eq!(c.to_json()["Env"], serde_json::json!(["A=2"]));
//! assert_eq!(c.to_json()["Cmd"], serde_json::Value::Null);
//! ```

use berth_api::images::v1::RunOverrides;
use berth_dockerfile::dockerfile::Healthcheck;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// A field of the config as the JSON has it: left out, `null`, or set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T> Field<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }

    /// The value, when set.
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }
}

impl<T: Default> Field<T> {
    /// The value, made (empty) when the field is absent or null.
    fn get_or_default(&mut self) -> &mut T {
        if !matches!(self, Field::Set(_)) {
            *self = Field::Set(T::default());
        }
        match self {
            Field::Set(v) => v,
            _ => unreachable!("just set"),
        }
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Set(v) => v.serialize(s),
            Field::Absent | Field::Null => s.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(d)?.map_or(Field::Null, Field::Set))
    }
}

/// The image config's `config` section. Field names are Docker's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user: Field<String>,
    /// `"80/tcp"` → `{}`.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub exposed_ports: Field<Map<String, Value>>,
    /// `K=V` entries.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub env: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub entrypoint: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub cmd: Field<Vec<String>>,
    /// Path → `{}`.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub volumes: Field<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub working_dir: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub labels: Field<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub stop_signal: Field<String>,
    /// ONBUILD triggers, as written.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub on_build: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub shell: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub healthcheck: Field<HealthConfig>,
    /// Every other field (Hostname, Image, ArgsEscaped, …), as it came.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `Healthcheck`: durations in nanoseconds, as Docker stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["CMD", args…]`, `["CMD-SHELL", command]` or `["NONE"]`.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub test: Field<Vec<String>>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub interval: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub timeout: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub start_period: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub start_interval: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub retries: Field<i64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl HealthConfig {
    /// A Dockerfile's HEALTHCHECK (`None` for `HEALTHCHECK NONE`): durations and retries it
    /// does not give (zero) are left absent, for [`Change::Healthcheck`] to inherit.
    pub fn from_dockerfile(check: Option<&Healthcheck>) -> Self {
        let Some(h) = check else {
            return HealthConfig {
                test: Field::Set(vec!["NONE".to_string()]),
                ..Default::default()
            };
        };
        let nanos = |d: Duration| {
            if d.is_zero() {
                Field::Absent
            } else {
                Field::Set(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            }
        };
        HealthConfig {
            test: Field::Set(h.test()),
            interval: nanos(h.interval),
            timeout: nanos(h.timeout),
            start_period: nanos(h.start_period),
            start_interval: nanos(h.start_interval),
            retries: if h.retries > 0 {
                Field::Set(i64::from(h.retries))
            } else {
                Field::Absent
            },
            other: Map::new(),
        }
    }
}

/// A config-only Dockerfile instruction, its values final: variables expanded, shell form
/// wrapped in the shell, ports as `port/proto`, WORKDIR absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Cmd(Vec<String>),
    /// A new ENTRYPOINT resets CMD, unless `keep_cmd`: a build stage keeps a CMD it set
    /// before, as Docker's builder does; `commit --change` always resets it.
    Entrypoint {
        argv: Vec<String>,
        keep_cmd: bool,
    },
    /// Each replaces a variable of the same name.
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    /// `port/proto` keys.
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    StopSignal(String),
    Shell(Vec<String>),
    /// Fields left absent keep the previous HEALTHCHECK's (even under `["NONE"]`): Docker
    /// merges a step's config with its parent's when it commits.
    Healthcheck(HealthConfig),
    /// A trigger, as written.
    Onbuild(String),
}

impl ContainerConfig {
    /// The section from JSON (an object).
    pub fn from_json(section: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(section)
    }

    /// The `config` section of a whole image config (JSON); empty when it has none.
    pub fn from_image_config(config: &[u8]) -> Result<Self, serde_json::Error> {
        let full: Value = serde_json::from_slice(config)?;
        match full.get("config") {
            Some(section @ Value::Object(_)) => Self::from_json(section.clone()),
            _ => Ok(Self::default()),
        }
    }

    /// A base image's ONBUILD triggers, taken out (set to `null`): they run once, in the
    /// build stage that starts from it, and are not inherited further.
    pub fn take_onbuild(&mut self) -> Vec<String> {
        let triggers = self.on_build.get().cloned().unwrap_or_default();
        if !triggers.is_empty() {
            self.on_build = Field::Null;
        }
        triggers
    }

    /// The section as a JSON object (keys sorted, as berth always wrote them).
    pub fn to_json(&self) -> Value {
        // Serializing a struct of strings, lists and JSON maps cannot fail.
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// The entrypoint and command, joined: what a container of this config runs.
    pub fn command_line(&self) -> Vec<String> {
        let mut argv = self.entrypoint.get().cloned().unwrap_or_default();
        argv.extend(self.cmd.get().cloned().unwrap_or_default());
        argv
    }

    /// The shell that wraps a shell-form command: SHELL's, or `/bin/sh -c`.
    pub fn shell_or_default(&self) -> Vec<String> {
        match self.shell.get() {
            Some(s) if !s.is_empty() => s.clone(),
            _ => vec!["/bin/sh".to_string(), "-c".to_string()],
        }
    }

    /// The value of the variable `name` in Env (its first entry, as Docker's lexer reads it).
    pub fn env_var(&self, name: &str) -> Option<String> {
        self.env
            .get()?
            .iter()
            .find_map(|e| match e.split_once('=') {
                Some((k, v)) if k == name => Some(v.to_string()),
                _ => None,
            })
    }

    /// Adds a `K=V` (or bare `K`) entry to Env, replacing any of the same name.
    pub fn set_env_entry(&mut self, entry: &str) {
        let name = entry.split('=').next().unwrap_or_default();
        let env = self.env.get_or_default();
        env.retain(|e| e.split('=').next() != Some(name));
        env.push(entry.to_string());
    }

    /// Applies one instruction.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Cmd(argv) => self.cmd = Field::Set(argv),
            Change::Entrypoint { argv, keep_cmd } => {
                self.entrypoint = Field::Set(argv);
                if !keep_cmd {
                    self.cmd = Field::Null;
                }
            }
            Change::Env(pairs) => {
                // Env is written even when it was null and nothing is added.
                let env = self.env.get_or_default();
                for (k, v) in pairs {
                    // By the whole name: an expanded ENV name may hold a `=` (`ENV $K=v`).
                    env.retain(|e| {
                        e.split_once('=').map(|(n, _)| n) != Some(k.as_str()) && *e != k
                    });
                    env.push(format!("{k}={v}"));
                }
            }
            Change::Label(pairs) => self.labels.get_or_default().extend(pairs),
            Change::Expose(ports) => {
                let map = self.exposed_ports.get_or_default();
                for p in ports {
                    map.insert(p, Value::Object(Map::new()));
                }
            }
            Change::Volume(paths) => {
                let map = self.volumes.get_or_default();
                for p in paths {
                    map.insert(p, Value::Object(Map::new()));
                }
            }
            Change::User(u) => self.user = Field::Set(u),
            Change::Workdir(w) => self.working_dir = Field::Set(w),
            Change::StopSignal(s) => self.stop_signal = Field::Set(s),
            Change::Shell(s) => self.shell = Field::Set(s),
            Change::Healthcheck(mut h) => {
                if let Some(prev) = self.healthcheck.get() {
                    for (field, old) in [
                        (&mut h.interval, &prev.interval),
                        (&mut h.timeout, &prev.timeout),
                        (&mut h.start_period, &prev.start_period),
                        (&mut h.start_interval, &prev.start_interval),
                        (&mut h.retries, &prev.retries),
                    ] {
                        if field.is_absent() {
                            *field = old.clone();
                        }
                    }
                }
                self.healthcheck = Field::Set(h);
            }
            Change::Onbuild(t) => self.on_build.get_or_default().push(t),
        }
    }

    /// What `run` overrode, applied as Docker's commit records it: the config the container
    /// ran with. An entrypoint of empty strings (`--entrypoint ""`) clears the image's, and a
    /// new entrypoint without a command clears the command too.
    pub fn apply_run(&mut self, run: &RunOverrides) {
        if run.entrypoint_set {
            let argv: Vec<String> = run
                .entrypoint
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect();
            self.entrypoint = if argv.is_empty() {
                Field::Null
            } else {
                Field::Set(argv)
            };
            if run.cmd.is_empty() {
                self.cmd = Field::Null;
            }
        }
        if !run.cmd.is_empty() {
            self.cmd = Field::Set(run.cmd.clone());
        }
        if !run.env.is_empty() {
            self.env.get_or_default();
            for entry in &run.env {
                self.set_env_entry(entry);
            }
        }
        for (value, field) in [
            (&run.working_dir, &mut self.working_dir),
            (&run.user, &mut self.user),
            (&run.stop_signal, &mut self.stop_signal),
        ] {
            if !value.is_empty() {
                *field = Field::Set(value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> ContainerConfig {
        ContainerConfig::from_json(v).unwrap()
    }

    #[test]
    fn absent_null_and_unknown_fields_survive_a_round_trip() {
        let v = json!({
            "Cmd": null, "Env": ["A=1"], "Hostname": "", "Image": "sha256:x",
            "Labels": {"a": "b"}, "Healthcheck": {"Test": ["NONE"], "Odd": 1}
        });
        let c = config(v.clone());
        assert_eq!(c.cmd, Field::Null);
        assert_eq!(c.entrypoint, Field::Absent);
        assert_eq!(c.to_json(), v);
        assert_eq!(
            serde_json::to_string(&c.to_json()).unwrap(),
            serde_json::to_string(&v).unwrap(),
            "same bytes, keys sorted"
        );
    }

    #[test]
    fn changes_as_a_dockerfile_applies_them() {
        let mut c = config(json!({"Env": ["PATH=/bin", "A=0", "B"], "Volumes": null}));
        c.apply(Change::Env(vec![
            ("A".into(), "1".into()),
            ("B".into(), "2".into()),
        ]));
        c.apply(Change::Label(vec![("a".into(), "b".into())]));
        c.apply(Change::Expose(vec!["80/tcp".into()]));
        c.apply(Change::Volume(vec!["/data".into()]));
        c.apply(Change::Onbuild("RUN x".into()));
        c.apply(Change::Cmd(vec!["sh".into()]));
        c.apply(Change::Entrypoint {
            argv: vec!["/init".into()],
            keep_cmd: true,
        });
        let v = c.to_json();
        assert_eq!(v["Env"], json!(["PATH=/bin", "A=1", "B=2"]));
        assert_eq!(v["Labels"], json!({"a": "b"}));
        assert_eq!(v["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(v["Volumes"], json!({"/data": {}}));
        assert_eq!(v["OnBuild"], json!(["RUN x"]));
        assert_eq!(v["Cmd"], json!(["sh"]));
        c.apply(Change::Entrypoint {
            argv: vec!["/init".into()],
            keep_cmd: false,
        });
        assert_eq!(c.to_json()["Cmd"], Value::Null);
        assert_eq!(c.command_line(), ["/init"]);
    }

    #[test]
    fn healthcheck_keeps_the_previous_durations_it_leaves_unset() {
        let mut c =
            config(json!({"Healthcheck": {"Test": ["CMD", "a"], "Interval": 5, "Retries": 3}}));
        c.apply(Change::Healthcheck(HealthConfig {
            test: Field::Set(vec!["NONE".into()]),
            retries: Field::Set(1),
            ..Default::default()
        }));
        assert_eq!(
            c.to_json()["Healthcheck"],
            json!({"Test": ["NONE"], "Interval": 5, "Retries": 1})
        );
    }

    #[test]
    fn a_dockerfile_healthcheck_and_onbuild_triggers() {
        let df = berth_dockerfile::dockerfile::parse(
            "FROM x\nHEALTHCHECK --interval=5s --retries=2 CMD [\"/ok\"]\n",
        )
        .unwrap();
        let berth_dockerfile::dockerfile::Args::Healthcheck(h) = &df.stages[0].instructions[0].args
        else {
            panic!()
        };
        let mut c = ContainerConfig::from_image_config(
            br#"{"config":{"OnBuild":["RUN a"],"Healthcheck":{"Timeout":7}}}"#,
        )
        .unwrap();
        c.apply(Change::Healthcheck(HealthConfig::from_dockerfile(
            h.as_ref(),
        )));
        assert_eq!(
            c.to_json()["Healthcheck"],
            json!({"Test": ["CMD", "/ok"], "Interval": 5_000_000_000i64, "Timeout": 7, "Retries": 2})
        );
        c.apply(Change::Healthcheck(HealthConfig::from_dockerfile(None)));
        assert_eq!(c.to_json()["Healthcheck"]["Test"], json!(["NONE"]));
        assert_eq!(c.take_onbuild(), ["RUN a"]);
        assert!(c.take_onbuild().is_empty());
        assert_eq!(c.to_json()["OnBuild"], Value::Null);
        assert_eq!(
            ContainerConfig::from_image_config(b"{}").unwrap(),
            ContainerConfig::default()
        );
    }

    /// The build's config-only instructions, as its steps turn them into changes: `(the
    /// instruction, its change)`. ENTRYPOINT comes after a CMD of the stage (`keep_cmd`).
    fn build_steps() -> Vec<(&'static str, Change)> {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let check = |command, interval: u64, timeout: u64, retries| {
            HealthConfig::from_dockerfile(Some(&Healthcheck {
                command,
                interval: Duration::from_millis(interval),
                timeout: Duration::from_millis(timeout),
                start_period: Duration::ZERO,
                start_interval: Duration::ZERO,
                retries,
            }))
        };
        use berth_dockerfile::dockerfile::Command;
        vec![
            (
                "ENV PATH=/opt/bin BARE=now NEW=v NEW=w",
                Change::Env(pairs(&[
                    ("PATH", "/opt/bin"),
                    ("BARE", "now"),
                    ("NEW", "v"),
                    ("NEW", "w"),
                ])),
            ),
            (
                "LABEL a=1 z=first",
                Change::Label(pairs(&[("a", "1"), ("z", "first")])),
            ),
            ("CMD echo hi", Change::Cmd(s(&["/bin/sh", "-c", "echo hi"]))),
            (
                "ENTRYPOINT [\"/init\"]",
                Change::Entrypoint {
                    argv: s(&["/init"]),
                    keep_cmd: true,
                },
            ),
            ("WORKDIR /app", Change::Workdir("/app".into())),
            ("USER 1000", Change::User("1000".into())),
            ("VOLUME /data", Change::Volume(s(&["/data"]))),
            ("EXPOSE 80 53/udp", Change::Expose(s(&["80/tcp", "53/udp"]))),
            ("STOPSIGNAL SIGKILL", Change::StopSignal("SIGKILL".into())),
            (
                "SHELL [\"/bin/ash\", \"-c\"]",
                Change::Shell(s(&["/bin/ash", "-c"])),
            ),
            (
                "HEALTHCHECK --interval=5s --retries=2 CMD true",
                Change::Healthcheck(check(Command::Shell("true".into()), 5000, 0, 2)),
            ),
            (
                "HEALTHCHECK NONE",
                Change::Healthcheck(HealthConfig::from_dockerfile(None)),
            ),
            (
                "HEALTHCHECK --timeout=2s CMD [\"/ok\"]",
                Change::Healthcheck(check(Command::Exec(s(&["/ok"])), 0, 2000, 0)),
            ),
            ("ONBUILD RUN make", Change::Onbuild("RUN make".into())),
        ]
    }

    /// The bytes the build commits after its steps, fixed: image ids and the build cache
    /// depend on them (key order, `null` against absent, `{}` values, Healthcheck fields).
    /// They are those of the build's own config editing before it moved here.
    #[test]
    fn a_build_commits_the_same_bytes() {
        let busybox = br#"{"architecture":"amd64","config":{"ArgsEscaped":true,"Cmd":["sh"],"Entrypoint":null,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","BARE"],"Hostname":"","Image":"sha256:3f57","Labels":{"org":"busybox","z":"last"},"OnBuild":null,"User":"","Volumes":null,"WorkingDir":""},"os":"linux"}"#;
        let bytes = |c: &ContainerConfig| serde_json::to_string(&c.to_json()).unwrap();
        let tail = r#""ExposedPorts":{"53/udp":{},"80/tcp":{}},"Healthcheck":{"Interval":5000000000,"Retries":2,"Test":["CMD","/ok"],"Timeout":2000000000},"#;
        for (base, want) in [
            (
                &b"{}"[..],
                [
                    r#"{"Cmd":["/bin/sh","-c","echo hi"],"Entrypoint":["/init"],"Env":["PATH=/opt/bin","BARE=now","NEW=w"],"#,
                    tail,
                    r#""Labels":{"a":"1","z":"first"},"OnBuild":["RUN make"],"Shell":["/bin/ash","-c"],"StopSignal":"SIGKILL","User":"1000","Volumes":{"/data":{}},"WorkingDir":"/app"}"#,
                ]
                .concat(),
            ),
            (
                &busybox[..],
                [
                    r#"{"ArgsEscaped":true,"Cmd":["/bin/sh","-c","echo hi"],"Entrypoint":["/init"],"Env":["PATH=/opt/bin","BARE=now","NEW=w"],"#,
                    tail,
                    r#""Hostname":"","Image":"sha256:3f57","Labels":{"a":"1","org":"busybox","z":"first"},"OnBuild":["RUN make"],"Shell":["/bin/ash","-c"],"StopSignal":"SIGKILL","User":"1000","Volumes":{"/data":{}},"WorkingDir":"/app"}"#,
                ]
                .concat(),
            ),
        ] {
            let mut c = ContainerConfig::from_image_config(base).unwrap();
            assert!(c.take_onbuild().is_empty());
            for (_, change) in build_steps() {
                c.apply(change);
            }
            assert_eq!(bytes(&c), want);
        }

        // The base image's values untouched; ENTRYPOINT with no CMD of the stage: Cmd null.
        let mut c = ContainerConfig::from_image_config(busybox).unwrap();
        c.apply(Change::Entrypoint {
            argv: vec!["/init".into()],
            keep_cmd: false,
        });
        assert_eq!(
            bytes(&c),
            r#"{"ArgsEscaped":true,"Cmd":null,"Entrypoint":["/init"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","BARE"],"Hostname":"","Image":"sha256:3f57","Labels":{"org":"busybox","z":"last"},"OnBuild":null,"User":"","Volumes":null,"WorkingDir":""}"#
        );

        // An ENV name holding `=` after expansion (`ENV $K=v`) replaces that name only;
        // an empty ENV still writes Env; a base's triggers are taken, leaving null.
        let mut c =
            ContainerConfig::from_image_config(br#"{"config":{"Env":null,"OnBuild":["RUN a"]}}"#)
                .unwrap();
        c.apply(Change::Env(vec![]));
        assert_eq!(bytes(&c), r#"{"Env":[],"OnBuild":["RUN a"]}"#);
        assert_eq!(c.take_onbuild(), ["RUN a"]);
        c.apply(Change::Env(vec![
            ("X".into(), "a".into()),
            ("X=1".into(), "v".into()),
        ]));
        assert_eq!(bytes(&c), r#"{"Env":["X=a","X=1=v"],"OnBuild":null}"#);
    }

    // Moved from cli/src/commit.rs with the merge they test.
    #[test]
    fn run_overrides_reach_the_committed_config() {
        let mut c = config(json!({"Cmd":["sh"],"Env":["PATH=/bin","A=1"],"WorkingDir":"/"}));
        c.apply_run(&RunOverrides {
            cmd: vec!["echo".into(), "hi".into()],
            env: vec!["A=2".into()],
            working_dir: "/tmp".into(),
            ..Default::default()
        });
        let cfg = c.to_json();
        assert_eq!(cfg["Cmd"], json!(["echo", "hi"]));
        assert_eq!(cfg["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(cfg["WorkingDir"], json!("/tmp"));
    }

    #[test]
    fn an_empty_entrypoint_clears_the_image_one() {
        let mut c = config(json!({"Entrypoint":["/init"],"Cmd":["x"]}));
        c.apply_run(&RunOverrides {
            entrypoint_set: true,
            entrypoint: vec!["".into()],
            ..Default::default()
        });
        let cfg = c.to_json();
        assert_eq!(cfg["Entrypoint"], Value::Null);
        assert_eq!(cfg["Cmd"], Value::Null);
    }
}
