//! The `cluster:` section (fleet mode), read only by builds with the `etcd` feature.

use std::path::Path;

use super::{Config, Loader, Problem};
use crate::fleet::ClusterConfig;
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
