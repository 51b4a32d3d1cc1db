//! The election key of a shared locator: where it lives in etcd, and the canonical form of its
//! settings that the key hashes.
//!
//! Every member that should share an election must compute the same key, including members
//! running different elasticd versions during an upgrade. So the hash is not taken over any Rust
//! type (whose fields, defaults or `Debug` text change between versions) but over the locator
//! **as written in the config file**, turned into JSON and serialized canonically: object keys
//! sorted, no whitespace, numbers and strings as `serde_json` writes them. Two configs that mean
//! the same locator in the same words (quoting, key order, flow or block style aside) give the
//! same key; a new optional setting in a later version changes nothing unless it is written.
//!
//! The canonical document is versioned by its `form` field ([`KEY_FORM`]). Changing what goes
//! into it (or how it is serialized) splits every fleet during an upgrade, so it needs a new
//! form number and a release note; `tests::the_key_of_a_known_config_is_pinned` fails first.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::ClusterConfig;
use crate::yaml::{Node, NodeKind};

/// The version of the canonical document the election key hashes.
pub const KEY_FORM: u64 = 1;

/// The locator kinds that take settings from the top-level `aws` section: that section (as
/// written) is part of their form, since it can change their answer.
const INHERITS_AWS: &[&str] = &["ec2", "asg"];

/// Where one shared locator lives in etcd, and what it is called in logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetKey {
    /// `{prefix}/fleets/{fleet}/{environment}/{hash}`; the leader and data keys are below it.
    pub dir: String,
    /// The service the locator works for (on this host).
    pub service: String,
    /// `INDEX:KIND`, as in the other metrics.
    pub locator: String,
}

impl FleetKey {
    /// The key whose creator leads (its value is the leader's member name).
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.dir)
    }

    /// The key holding the published [`super::Record`].
    pub fn data_key(&self) -> String {
        format!("{}/data", self.dir)
    }
}

/// A YAML node as plain JSON, without locations: what the user wrote, whatever Rust types it is
/// read into later.
pub fn written(node: &Node) -> Value {
    match &node.kind {
        NodeKind::Null => Value::Null,
        NodeKind::Bool(b) => Value::Bool(*b),
        NodeKind::Int(i) => Value::from(*i),
        // NaN and infinities have no JSON number; their text is just as stable.
        NodeKind::Float(f) => serde_json::Number::from_f64(*f)
            .map_or_else(|| Value::String(f.to_string()), Value::Number),
        NodeKind::Str(s) => Value::String(s.clone()),
        NodeKind::Seq(items) => Value::Array(items.iter().map(written).collect()),
        NodeKind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = k.as_scalar_text().unwrap_or_else(|| canonical(&written(k)));
                    (key, written(v))
                })
                .collect::<Map<String, Value>>(),
        ),
    }
}

/// The key beside a locator's kind that shares it, or keeps it host-local, whatever
/// `cluster.share` says of its kind (`- exec: {...}` then `shared: false`).
pub const SHARED_KEY: &str = "shared";

/// A locator entry as fleet mode sees it, kept in the config: what its election key hashes, and
/// the entry's own `shared:` choice.
#[derive(Debug, Clone, PartialEq)]
pub struct LocatorForm {
    /// The settings part of the canonical form ([`locator_form`]).
    pub settings: Value,
    /// `shared:` as written beside the kind; `None` follows `cluster.share`.
    pub shared: Option<bool>,
}

/// The locator item `item` (`{ec2: {...}}`) as written, with the top-level `aws` section when
/// its kind inherits from it, and its `shared:` choice. `shared` is left out of the hashed
/// settings: members that agree a locator is shared (one by `shared: true`, one by
/// `cluster.share`) meet in one election, and entries without it keep the keys they had.
pub fn locator_form(item: &Node, top_aws: Option<&Node>) -> LocatorForm {
    let mut locator = written(item);
    let shared = locator
        .as_object_mut()
        .and_then(|m| m.remove(SHARED_KEY))
        .and_then(|v| v.as_bool());
    let inherits = locator
        .as_object()
        .is_some_and(|m| m.keys().any(|k| INHERITS_AWS.contains(&k.as_str())));
    let mut settings = json!({ "locator": locator });
    if inherits && let (Some(aws), Some(map)) = (top_aws, settings.as_object_mut()) {
        map.insert("aws".into(), written(aws));
    }
    LocatorForm { settings, shared }
}

/// `value` serialized canonically: keys sorted at every level, compact.
pub fn canonical(value: &Value) -> String {
    let mut sorted = value.clone();
    sorted.sort_all_objects();
    sorted.to_string()
}

/// The document whose SHA-256 names the election of a locator with settings `form` (from
/// [`locator_form`]) used by `service` with default port `port`.
pub fn key_document(form: &Value, service: &str, port: Option<u16>) -> String {
    let mut doc = json!({ "form": KEY_FORM, "service": service, "port": port });
    if let (Some(map), Some(settings)) = (doc.as_object_mut(), form.as_object()) {
        for (k, v) in settings {
            map.insert(k.clone(), v.clone());
        }
    }
    canonical(&doc)
}

/// The election key of locator `index` (kind `kind`, written as `form`) of service `service`
/// (port `port`), or `None` when the locator is host-local: marked `shared: false`, or not
/// marked and its kind is not in `share`.
pub fn fleet_key(
    cluster: &ClusterConfig,
    environment: Option<&str>,
    service: &str,
    port: Option<u16>,
    index: usize,
    kind: &str,
    form: &LocatorForm,
) -> Option<FleetKey> {
    let shared = form
        .shared
        .unwrap_or_else(|| cluster.share.iter().any(|k| k == kind));
    if !shared {
        return None;
    }
    let digest = Sha256::digest(key_document(&form.settings, service, port));
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    Some(FleetKey {
        dir: format!(
            "{}/fleets/{}/{}/{hex}",
            cluster.etcd.prefix.trim_end_matches('/'),
            cluster.name,
            environment.unwrap_or("-"),
        ),
        service: service.to_string(),
        locator: format!("{index}:{kind}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterConfig {
        crate::yaml::parse(
            "name: edge\netcd: { endpoints: [http://127.0.0.1:2379] }\nshare: [exec, ec2]",
        )
        .unwrap()
        .deserialize()
        .unwrap()
    }

    fn form(item: &str, aws: Option<&str>) -> LocatorForm {
        let item = crate::yaml::parse(item).unwrap();
        let aws = aws.map(|a| crate::yaml::parse(a).unwrap());
        locator_form(&item, aws.as_ref())
    }

    fn key(env: &str, port: u16, kind: &str, form: &LocatorForm) -> FleetKey {
        fleet_key(&cluster(), Some(env), "web", Some(port), 0, kind, form).unwrap()
    }

    #[test]
    fn the_key_of_a_known_config_is_pinned() {
        // If this fails, members of different versions no longer meet in one election: bump
        // KEY_FORM, and say so in the release notes, rather than change the expected value.
        let f = form(
            "ec2: { filters: { \"tag:role\": web }, port_tag: port }",
            Some("{ region: eu-west-1 }"),
        );
        assert_eq!(
            key_document(&f.settings, "web", Some(80)),
            r#"{"aws":{"region":"eu-west-1"},"form":1,"locator":{"ec2":{"filters":{"tag:role":"web"},"port_tag":"port"}},"port":80,"service":"web"}"#
        );
        assert_eq!(
            key("prod", 80, "ec2", &f).dir,
            "/elasticd/fleets/edge/prod/5cf56d19f58789a87cd991c0"
        );
    }

    #[test]
    fn the_same_locator_in_other_words_shares_one_key() {
        let block = form("exec:\n  timeout: 5s\n  command: [dc, --zone, a]\n", None);
        let flow = form(
            "{exec: {command: [\"dc\", '--zone', a], timeout: 5s}}",
            None,
        );
        assert_eq!(
            key("prod", 80, "exec", &block),
            key("prod", 80, "exec", &flow)
        );
        let other = form("exec: { command: [dc, --zone, b], timeout: 5s }", None);
        assert_ne!(
            key("prod", 80, "exec", &block),
            key("prod", 80, "exec", &other)
        );
        assert_ne!(
            key("prod", 80, "exec", &block).dir,
            key("prod", 81, "exec", &block).dir,
            "the default port changes the answer"
        );
        assert_ne!(
            key("prod", 80, "exec", &block).dir,
            key("test", 80, "exec", &block).dir
        );
        assert!(
            key("prod", 80, "exec", &block)
                .dir
                .starts_with("/elasticd/fleets/edge/prod/")
        );
    }

    #[test]
    fn only_aws_kinds_take_the_top_level_aws_section_along() {
        let a = form(
            "ec2: { filters: { \"tag:role\": web } }",
            Some("{ region: a }"),
        );
        let b = form(
            "ec2: { filters: { \"tag:role\": web } }",
            Some("{ region: b }"),
        );
        assert_ne!(key("prod", 80, "ec2", &a), key("prod", 80, "ec2", &b));
        let e1 = form("exec: { command: [dc] }", Some("{ region: a }"));
        let e2 = form("exec: { command: [dc] }", Some("{ region: b }"));
        assert_eq!(key("prod", 80, "exec", &e1), key("prod", 80, "exec", &e2));
    }

    #[test]
    fn host_local_kinds_are_not_shared() {
        let f = form("file: { path: web.json }", None);
        assert_eq!(
            fleet_key(&cluster(), None, "web", None, 0, "file", &f),
            None
        );
    }

    #[test]
    fn an_entry_marked_shared_overrides_its_kind_and_keeps_the_key_of_its_settings() {
        let c = cluster();
        let plain = form("exec: { command: [dc] }", None);
        assert_eq!(plain.shared, None);
        let local = form("{exec: { command: [dc] }, shared: false}", None);
        assert_eq!(local.shared, Some(false));
        assert_eq!(fleet_key(&c, None, "web", None, 0, "exec", &local), None);
        let by_kind = fleet_key(&c, None, "web", None, 0, "exec", &plain).unwrap();
        // `shared: true` on a kind `share` doesn't list: shared, in the same election as a
        // member that lists the kind instead.
        let marked = form("exec: { command: [dc] }\nshared: true", None);
        assert_eq!(marked.settings, plain.settings);
        let mut without = c.clone();
        without.share.clear();
        assert_eq!(
            fleet_key(&without, None, "web", None, 0, "exec", &plain),
            None
        );
        assert_eq!(
            fleet_key(&without, None, "web", None, 0, "exec", &marked),
            Some(by_kind)
        );
        let file = form("file: { path: web.json }\nshared: true", None);
        assert!(fleet_key(&c, None, "web", None, 0, "file", &file).is_some());
    }
}
