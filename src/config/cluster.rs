//! The `cluster:` section (fleet mode), read only by builds with the `etcd` feature.

use std::path::Path;

use super::{Config, Loader, Problem};
use crate::fleet::{ClusterConfig, SHAREABLE, SHARED_KEY};
use crate::yaml::{Node, NodeKind};

impl Loader {
    /// The section with its relative paths resolved against `base`, or `None` after a problem
    /// that leaves nothing to use.
    pub(super) fn cluster(
        &mut self,
        key: &Node,
        value: &Node,
        base: &Path,
    ) -> Option<ClusterConfig> {
        if !cfg!(feature = "etcd") {
            self.problems.push(Problem::at(
                key,
                format!("`cluster`: {}", crate::fleet::NOT_BUILT),
            ));
            return None;
        }
        let mut cluster = self.take::<ClusterConfig>(value)?;
        cluster.resolve_paths(base);
        for (field, message) in cluster.problems() {
            self.problems
                .push(Problem::at(value.get(field).unwrap_or(value), message));
        }
        Some(cluster)
    }
}

impl Loader {
    /// Takes `shared:` out of locator entry `item`, where it sits beside the kind (the same
    /// place for every kind: `static`'s settings are a list), so that the kind never sees it;
    /// records what is wrong with it. Its value is read again from the config as written, with
    /// the entry's election form ([`crate::fleet::locator_form`]).
    pub(super) fn take_shared(&mut self, item: &mut Node) {
        let NodeKind::Map(entries) = &mut item.kind else {
            return;
        };
        // Inside the kind's settings is a likely slip: say where it goes, not "unknown field".
        for (kind, settings) in entries.iter_mut() {
            if let NodeKind::Map(inner) = &mut settings.kind
                && let Some(i) = inner.iter().position(|(k, _)| is_shared(k))
            {
                let (key, _) = inner.remove(i);
                let kind = kind.as_scalar_text().unwrap_or_default();
                self.problems.push(Problem::at(
                    &key,
                    format!(
                        "`shared` goes beside the locator's kind, not inside `{kind}:` \
                         (`- {kind}: {{...}}` with `shared: false` on the next line)"
                    ),
                ));
            }
        }
        let Some(i) = entries.iter().position(|(k, _)| is_shared(k)) else {
            return;
        };
        let (_, value) = entries.remove(i);
        // With no kind, or two, the locator's own error says so.
        let kind = match entries.as_slice() {
            [(kind, _)] => kind.as_scalar_text(),
            _ => None,
        };
        match (&value.kind, kind) {
            (NodeKind::Bool(true), Some(kind)) if !SHAREABLE.contains(&kind.as_str()) => {
                self.problems.push(Problem::at(
                    &value,
                    format!(
                        "`shared: true` on a `{kind}` locator: `{kind}` is host-local and can't \
                         be shared; shareable kinds: {}",
                        SHAREABLE.join(", ")
                    ),
                ));
            }
            (NodeKind::Bool(_), _) => {}
            _ => self.problems.push(Problem::at(
                &value,
                "`shared` must be `true` (share this locator through the fleet) or `false` \
                 (run it on every member)",
            )),
        }
    }
}

fn is_shared(key: &Node) -> bool {
    matches!(&key.kind, NodeKind::Str(s) if s == SHARED_KEY)
}

/// Keeps each locator of each service as written, with the top-level `aws` section as written
/// ([`crate::fleet::locator_form`]): fleet mode names a shared locator's election by it, since
/// that (unlike any Rust type's fields) stays the same across elasticd versions.
pub(super) fn fill_fleet_forms(root: &Node, config: &mut Config) {
    let top_aws = root.get("aws");
    for (name, service) in &mut config.services {
        let items = root
            .get("services")
            .and_then(|s| s.get(name))
            .and_then(|s| s.get("locators"));
        if let Some(Node {
            kind: NodeKind::Seq(items),
            ..
        }) = items
        {
            service.fleet_forms = items
                .iter()
                .map(|item| crate::fleet::locator_form(item, top_aws))
                .collect();
        }
    }
}
