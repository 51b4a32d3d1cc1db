//! The `cluster:` section (fleet mode), read only by builds with the `etcd` feature.

use super::{Loader, Problem};
use crate::fleet::ClusterConfig;
use crate::yaml::Node;

impl Loader {
    pub(super) fn cluster(&mut self, key: &Node, value: &Node) -> Option<ClusterConfig> {
        if !cfg!(feature = "etcd") {
            self.problems.push(Problem::at(
                key,
                format!("`cluster`: {}", crate::fleet::NOT_BUILT),
            ));
            return None;
        }
        let cluster = self.take::<ClusterConfig>(value)?;
        for (field, message) in cluster.problems() {
            self.problems
                .push(Problem::at(value.get(field).unwrap_or(value), message));
        }
        Some(cluster)
    }
}
