//! Docker's views of volumes: `volume inspect` (and the API's list entries) and the
//! `volume ls` filters.

use crate::filters::{label_matches, name_matches, Filters};
use crate::time;
use berth_api::volumes::v1 as vapi;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The volume's driver: `local` unless the service says otherwise.
pub fn volume_driver(v: &vapi::Volume) -> &str {
    if v.driver.is_empty() {
        "local"
    } else {
        &v.driver
    }
}

/// Docker's `volume inspect` object (also each entry of `GET /volumes`).
pub fn volume_inspect(v: &vapi::Volume) -> Value {
    json!({
        "CreatedAt": time::rfc3339(v.created_at.as_ref()),
        "Driver": volume_driver(v),
        "Labels": v.labels.iter().collect::<BTreeMap<_, _>>(),
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": Value::Null,
        "Scope": "local",
    })
}

/// A volume with Docker's `UsageData` (`GET /system/df`): its size (-1 when not measured)
/// and how many containers use it.
pub fn volume_with_usage(v: &vapi::Volume) -> Value {
    let mut j = volume_inspect(v);
    j["UsageData"] = json!({"Size": v.size, "RefCount": v.ref_count});
    j
}

/// Docker's volume filters (`volume ls -f`, `GET /volumes?filters=`): name, label, driver,
/// dangling (no container uses it).
pub fn volume_filter(filters: &[String]) -> Result<impl Fn(&vapi::Volume) -> bool, String> {
    let filters = Filters::parse(filters, |k, v| match (k, v) {
        ("dangling", "true" | "1" | "false" | "0") => Ok(()),
        ("dangling", _) => Err(format!("invalid filter 'dangling={v}'")),
        ("name" | "label" | "driver", _) => Ok(()),
        _ => Err(format!("invalid filter '{k}'")),
    })?;
    Ok(move |vol: &vapi::Volume| {
        filters.matches(|k, v| match k {
            "name" => name_matches(&vol.name, v),
            "label" => label_matches(&vol.labels, v),
            "driver" => volume_driver(vol) == v,
            "dangling" => (vol.ref_count == 0) == matches!(v, "true" | "1"),
            _ => false,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_filters_and_shape() {
        let mut a = vapi::Volume {
            name: "data".into(),
            ref_count: 1,
            size: 10,
            ..Default::default()
        };
        a.labels.insert("app".into(), "web".into());
        let b = vapi::Volume {
            name: "cache".into(),
            ..Default::default()
        };
        let kept = |f: &[&str]| {
            let keep = volume_filter(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            [&a, &b]
                .into_iter()
                .filter(|v| keep(v))
                .map(|v| v.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(&["dangling=true"]), ["cache"]);
        assert_eq!(kept(&["label=app=web"]), ["data"]);
        assert_eq!(kept(&["name=ca", "driver=local"]), ["cache"]);
        assert!(volume_filter(&["size=1".into()]).is_err());
        let j = volume_with_usage(&a);
        assert_eq!(j["UsageData"], json!({"Size": 10, "RefCount": 1}));
        assert_eq!(j["Driver"], "local");
        assert_eq!(j["Options"], Value::Null);
    }
}
