//! What the verbs share: acting on each named object in turn and the exit code that follows
//! (`each`, `done`), `--label K=V` values, and Docker's ways of printing what a verb found
//! (`lookup_all` then `print_objects`, for every `inspect`) or removed (`print_deleted`, for
//! every `prune`).

use crate::client::Error;
use crate::template::Format;
use std::collections::BTreeMap;

/// `--label K=V` values (a lone `K` is an empty label), later ones winning.
pub fn parse_labels(labels: &[String]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

pub fn done(r: Result<(), Error>) -> u8 {
    match r {
        Ok(()) => 0,
        Err(e) => crate::fail(e),
    }
}

/// Runs `f` for every name, printing errors as they come; the exit code of the last error.
pub(crate) async fn each<F, Fut>(names: &[String], mut f: F) -> u8
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let mut code = 0;
    for n in names {
        if let Err(e) = f(n.clone()).await {
            code = crate::fail(e);
        }
    }
    code
}

/// Prints what a prune removed as Docker does: `Deleted KIND:`, one line each, a blank line;
/// nothing when it removed nothing.
pub fn print_deleted(kind: &str, deleted: &[String]) {
    if !deleted.is_empty() {
        println!("Deleted {kind}:");
        for d in deleted {
            println!("{d}");
        }
        println!();
    }
}

/// Looks every name up with `get`: the objects found and the errors, each in order.
pub async fn lookup_all<F, Fut>(
    names: &[String],
    mut get: F,
) -> (Vec<serde_json::Value>, Vec<Error>)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, Error>>,
{
    let (mut objects, mut errors) = (Vec::new(), Vec::new());
    for n in names {
        match get(n.clone()).await {
            Ok(o) => objects.push(o),
            Err(e) => errors.push(e),
        }
    }
    (objects, errors)
}

/// Prints objects as a JSON array, or each through a template; the exit code.
pub fn print_objects(
    objects: Vec<serde_json::Value>,
    format: Option<&str>,
    errors: Vec<Error>,
) -> u8 {
    let mut code = 0;
    match format {
        Some(f) => match Format::parse(f) {
            Ok(t) => {
                for o in &objects {
                    match t.render(o) {
                        Ok(s) => println!("{s}"),
                        Err(e) => code = crate::fail(Error::Local(e)),
                    }
                }
            }
            Err(e) => return crate::fail(Error::Local(e)),
        },
        None => println!(
            "{}",
            serde_json::to_string_pretty(&objects).unwrap_or_default()
        ),
    }
    for e in errors {
        code = crate::fail(e);
    }
    code
}
