//! The JSON requests written to a plugin's stdin (protocol 1; see `plugins/README.md`).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{PROTOCOL_VERSION, PluginKind};
use crate::backend::{Backend, CompactString, Labels};

/// A backend as plugins see it: every field present, `null` or `{}` when unknown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendObject {
    /// IP address or host name.
    pub address: String,
    /// TCP port.
    pub port: u16,
    /// Relative weight.
    pub weight: u32,
    /// Locator-specific identity.
    pub id: Option<CompactString>,
    /// Human name.
    pub name: Option<CompactString>,
    /// Zone.
    pub zone: Option<CompactString>,
    /// Labels.
    pub tags: Labels,
    /// Other facts the locator knew.
    pub meta: Labels,
}

impl From<&Backend> for BackendObject {
    fn from(b: &Backend) -> Self {
        BackendObject {
            address: b.address.to_string(),
            port: b.port,
            weight: b.weight,
            id: b.id.clone(),
            name: b.name.clone(),
            zone: b.zone.clone(),
            tags: b.tags.clone(),
            meta: b.meta.clone(),
        }
    }
}

/// How one service's backend set changed, for action plugins.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceChange {
    /// The service.
    pub service: String,
    /// Backends in the new set and not in the old one (by address and port).
    pub added: Vec<BackendObject>,
    /// Backends in the old set and not in the new one.
    pub removed: Vec<BackendObject>,
    /// The whole new set.
    pub backends: Vec<BackendObject>,
}

impl ServiceChange {
    /// The change from `old` (none: nothing was known) to `new`.
    pub fn between(service: &str, old: Option<&[Backend]>, new: &[Backend]) -> Self {
        let (added, removed) = crate::backend::diff(old.unwrap_or_default(), new);
        ServiceChange {
            service: service.to_string(),
            added: added.into_iter().map(BackendObject::from).collect(),
            removed: removed.into_iter().map(BackendObject::from).collect(),
            backends: new.iter().map(BackendObject::from).collect(),
        }
    }
}

/// An output written by the change an action plugin hears about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrittenOutput {
    /// The file.
    pub path: PathBuf,
    /// The frontend that reads it.
    pub frontend: Option<String>,
}

/// What an action plugin is told about a change.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChangeSummary {
    /// Per service concerned.
    pub changes: Vec<ServiceChange>,
    /// The outputs written.
    pub outputs: Vec<WrittenOutput>,
}

fn common(
    kind: PluginKind,
    environment: Option<&str>,
    options: &Map<String, Value>,
) -> Map<String, Value> {
    let mut request = Map::new();
    request.insert("protocol".into(), json!(PROTOCOL_VERSION));
    request.insert("kind".into(), json!(kind.as_str()));
    request.insert("environment".into(), json!(environment));
    request.insert("options".into(), Value::Object(options.clone()));
    request
}

/// The request of a locator plugin.
pub fn locator(
    environment: Option<&str>,
    options: &Map<String, Value>,
    service: &str,
    default_port: Option<u16>,
) -> Value {
    let mut request = common(PluginKind::Locator, environment, options);
    request.insert("service".into(), json!(service));
    request.insert("default_port".into(), json!(default_port));
    Value::Object(request)
}

/// The request of a renderer plugin; `context` is what a template would get.
pub fn renderer(
    environment: Option<&str>,
    options: &Map<String, Value>,
    output: &Path,
    frontend: Option<&str>,
    context: Value,
) -> Value {
    let mut request = common(PluginKind::Renderer, environment, options);
    request.insert("output".into(), json!(output));
    request.insert("frontend".into(), json!(frontend));
    request.insert("context".into(), context);
    Value::Object(request)
}

/// The request of a frontend's `reload: {exec: ...}` action.
pub fn reload(
    environment: Option<&str>,
    options: &Map<String, Value>,
    frontend: &str,
    summary: &ChangeSummary,
) -> Value {
    let mut request = common(PluginKind::Action, environment, options);
    request.insert("event".into(), json!("reload"));
    request.insert("frontend".into(), json!(frontend));
    insert_summary(&mut request, summary);
    Value::Object(request)
}

/// The request of a service's `on_change` hook.
pub fn change(
    environment: Option<&str>,
    options: &Map<String, Value>,
    service: &str,
    summary: &ChangeSummary,
) -> Value {
    let mut request = common(PluginKind::Action, environment, options);
    request.insert("event".into(), json!("change"));
    request.insert("service".into(), json!(service));
    insert_summary(&mut request, summary);
    Value::Object(request)
}

fn insert_summary(request: &mut Map<String, Value>, summary: &ChangeSummary) {
    request.insert("changes".into(), json!(summary.changes));
    request.insert("outputs".into(), json!(summary.outputs));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(endpoints: &[&str]) -> Vec<Backend> {
        endpoints
            .iter()
            .map(|e| {
                let (a, p) = crate::backend::parse_target(e).unwrap();
                Backend::new(a, p.unwrap())
            })
            .collect()
    }

    #[test]
    fn change_lists_added_removed_and_current() {
        let old = backends(&["127.0.0.1:80", "127.0.0.2:80"]);
        let new = backends(&["127.0.0.2:80", "127.0.0.3:80"]);
        let change = ServiceChange::between("web", Some(&old), &new);
        let value = serde_json::to_value(&change).unwrap();
        assert_eq!(value["added"][0]["address"], "127.0.0.3");
        assert_eq!(value["removed"][0]["address"], "127.0.0.1");
        assert_eq!(value["backends"].as_array().unwrap().len(), 2);
        // Every field is present, so plugins need no defaults.
        assert_eq!(value["added"][0]["id"], Value::Null);
        assert_eq!(value["added"][0]["tags"], json!({}));
    }

    #[test]
    fn requests_carry_the_common_fields() {
        let options: Map<String, Value> = json!({"zone": "Z1"}).as_object().unwrap().clone();
        let request = locator(Some("prod"), &options, "web", Some(8080));
        assert_eq!(
            request,
            json!({"protocol": 1, "kind": "locator", "environment": "prod",
                   "options": {"zone": "Z1"}, "service": "web", "default_port": 8080})
        );
    }
}
