//! The `cluster:` section (fleet mode), read only by builds with the `etcd` feature.

use std::path::Path;

use super::{Loader, Problem};
use crate::fleet::ClusterConfig;
use crate::yaml::Node;

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
