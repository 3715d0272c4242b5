//! The image config's `config` section (Env, Cmd, Labels, WorkingDir, …) as build steps read
//! and edit it, kept as the JSON object the image service stores so that fields berth does
//! not know pass through untouched.
//!
//! Every edit a config-only instruction makes is here and nowhere else, so that the image
//! service's typed config module can take its place in one swap.

use crate::dockerfile::Healthcheck;
use serde_json::{json, Map, Value};

/// The `config` section of an image config.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImageConfig(Map<String, Value>);

/// The Healthcheck durations and count a new HEALTHCHECK inherits when it leaves them unset.
const HEALTHCHECK_INHERITED: [&str; 5] = [
    "Interval",
    "Timeout",
    "StartPeriod",
    "StartInterval",
    "Retries",
];

impl ImageConfig {
    /// The `config` section of an image config JSON; empty when it has none.
    pub fn from_image_config(config: &[u8]) -> ImageConfig {
        ImageConfig(
            serde_json::from_slice::<Value>(config)
                .ok()
                .and_then(|v| v.get("config").and_then(|c| c.as_object().cloned()))
                .unwrap_or_default(),
        )
    }

    /// The section as JSON, as `Images.Commit` takes it.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&Value::Object(self.0.clone()))
    }

    fn strings(&self, key: &str) -> Option<Vec<String>> {
        self.0.get(key).and_then(|v| v.as_array()).map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    }

    fn text(&self, key: &str) -> &str {
        self.0.get(key).and_then(|v| v.as_str()).unwrap_or("")
    }

    /// The object under `key`, made (or replaced, when it is something else) as needed.
    fn object(&mut self, key: &str) -> &mut Value {
        let m = self.0.entry(key).or_insert_with(|| json!({}));
        if !m.is_object() {
            *m = json!({});
        }
        m
    }

    /// `Env`, as `NAME=value` strings.
    pub fn env(&self) -> Vec<String> {
        self.strings("Env").unwrap_or_default()
    }

    /// The value `Env` gives `name`.
    pub fn env_value(&self, name: &str) -> Option<String> {
        self.env().into_iter().find_map(|e| {
            e.split_once('=')
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    /// ENV: each pair replaces the variable of its name (or a bare `NAME` entry), in order.
    pub fn set_env(&mut self, pairs: &[(String, String)]) {
        let mut env = self.env();
        for (k, v) in pairs {
            env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k.as_str()) && e != k);
            env.push(format!("{k}={v}"));
        }
        self.0.insert("Env".into(), json!(env));
    }

    /// LABEL (and `build --label`): each pair set in `Labels`.
    pub fn add_labels<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a String, &'a String)>) {
        let labels = self.object("Labels");
        for (k, v) in pairs {
            labels[k] = json!(v);
        }
    }

    /// `WorkingDir`; empty when unset.
    pub fn working_dir(&self) -> &str {
        self.text("WorkingDir")
    }

    pub fn set_working_dir(&mut self, dir: &str) {
        self.0.insert("WorkingDir".into(), json!(dir));
    }

    /// `User`; empty when unset.
    pub fn user(&self) -> &str {
        self.text("User")
    }

    pub fn set_user(&mut self, user: &str) {
        self.0.insert("User".into(), json!(user));
    }

    pub fn set_cmd(&mut self, cmd: &[String]) {
        self.0.insert("Cmd".into(), json!(cmd));
    }

    /// ENTRYPOINT; it clears `Cmd` unless the stage set one itself (`keep_cmd`), as Docker
    /// does, so that a base image's CMD does not become the new entrypoint's arguments.
    pub fn set_entrypoint(&mut self, entrypoint: &[String], keep_cmd: bool) {
        self.0.insert("Entrypoint".into(), json!(entrypoint));
        if !keep_cmd {
            self.0.insert("Cmd".into(), Value::Null);
        }
    }

    pub fn add_volumes(&mut self, volumes: &[String]) {
        let m = self.object("Volumes");
        for v in volumes {
            m[v] = json!({});
        }
    }

    /// EXPOSE: `ports` as Docker's `80/tcp` keys.
    pub fn add_exposed_ports(&mut self, ports: &[String]) {
        let m = self.object("ExposedPorts");
        for p in ports {
            m[p] = json!({});
        }
    }

    pub fn set_stop_signal(&mut self, signal: &str) {
        self.0.insert("StopSignal".into(), json!(signal));
    }

    /// `Shell`, when it names one.
    pub fn shell(&self) -> Option<Vec<String>> {
        self.strings("Shell").filter(|sh| !sh.is_empty())
    }

    pub fn set_shell(&mut self, shell: &[String]) {
        self.0.insert("Shell".into(), json!(shell));
    }

    /// HEALTHCHECK (`None`: NONE). Docker merges the step's config with its parent's when it
    /// commits: fields left unset (zero) keep the previous HEALTHCHECK's, even under NONE.
    pub fn set_healthcheck(&mut self, check: Option<&Healthcheck>) {
        let mut v = match check {
            None => json!({"Test": ["NONE"]}),
            Some(h) => {
                let mut m = Map::new();
                m.insert("Test".into(), json!(h.test()));
                for (k, d) in [
                    ("Interval", h.interval),
                    ("Timeout", h.timeout),
                    ("StartPeriod", h.start_period),
                    ("StartInterval", h.start_interval),
                ] {
                    if !d.is_zero() {
                        m.insert(k.into(), json!(d.as_nanos() as u64));
                    }
                }
                if h.retries > 0 {
                    m.insert("Retries".into(), json!(h.retries));
                }
                Value::Object(m)
            }
        };
        if let (Some(prev), Some(m)) = (
            self.0.get("Healthcheck").and_then(|p| p.as_object()),
            v.as_object_mut(),
        ) {
            for k in HEALTHCHECK_INHERITED {
                if let (false, Some(p)) = (m.contains_key(k), prev.get(k)) {
                    m.insert(k.into(), p.clone());
                }
            }
        }
        self.0.insert("Healthcheck".into(), v);
    }

    /// ONBUILD: the trigger, as written, added to `OnBuild`.
    pub fn add_onbuild(&mut self, trigger: &str) {
        let list = self.0.entry("OnBuild").or_insert_with(|| json!([]));
        if !list.is_array() {
            *list = json!([]);
        }
        list.as_array_mut().expect("an array").push(json!(trigger));
    }

    /// A base image's ONBUILD triggers, taken out of the config (they run once, in the stage
    /// that builds on it, and are not inherited further).
    pub fn take_onbuild(&mut self) -> Vec<String> {
        let triggers = self.strings("OnBuild").unwrap_or_default();
        if !triggers.is_empty() {
            self.0.insert("OnBuild".into(), Value::Null);
        }
        triggers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_replaces_by_name_in_order() {
        let mut c = ImageConfig::from_image_config(br#"{"config":{"Env":["A=1","B","C=3"]}}"#);
        c.set_env(&[("B".into(), "2".into()), ("A".into(), "x=y".into())]);
        assert_eq!(c.env(), vec!["C=3", "B=2", "A=x=y"]);
        assert_eq!(c.env_value("A").as_deref(), Some("x=y"));
        assert_eq!(c.env_value("Z"), None);
    }

    #[test]
    fn onbuild_triggers_are_taken_once() {
        let mut c = ImageConfig::default();
        c.add_onbuild("RUN make");
        assert_eq!(c.take_onbuild(), vec!["RUN make"]);
        assert!(c.take_onbuild().is_empty());
    }

    #[test]
    fn a_field_of_another_type_is_replaced() {
        let mut c = ImageConfig::from_image_config(br#"{"config":{"Labels":null,"X":1}}"#);
        c.add_labels([(&"a".to_string(), &"b".to_string())]);
        let v: Value = serde_json::from_slice(&c.to_json().unwrap()).unwrap();
        assert_eq!(v, json!({"Labels": {"a": "b"}, "X": 1}));
    }
}
