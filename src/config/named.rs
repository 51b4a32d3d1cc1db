//! The named sections (`services`, `frontends`): each item read on its own, and its problems
//! prefixed with its name.

use indexmap::IndexMap;

use super::{Loader, Problem, is_valid_name};
use crate::yaml::{Node, NodeKind};

/// The keys of a service, for the hint about one dedented to the level of the service names.
const SERVICE_KEYS: &[&str] = &[
    "refresh",
    "timeout",
    "port",
    "locators",
    "guard",
    "on_change",
];

impl Loader {
    /// Prefixes the problems found since `before` with the item they are in (`service `web`:
    /// ...`), and adds a hint when the item's name is one of a service's own keys: a `guard:`
    /// indented like the service names is read as a service called `guard`.
    fn name_the_item(&mut self, before: usize, section: &str, name: &str) {
        let what = section.strip_suffix('s').unwrap_or(section);
        let misplaced = section == "services" && SERVICE_KEYS.contains(&name);
        for problem in self.problems.iter_mut().skip(before) {
            problem.message = format!("{what} `{name}`: {}", problem.message);
            if misplaced {
                problem.message.push_str(&format!(
                    " (`{name}` is at the level of the service names, so it is read as a service \
                     called `{name}`; if it belongs to the service above, indent it under that \
                     service)"
                ));
            }
        }
    }

    pub(super) fn named_section<T>(
        &mut self,
        node: &Node,
        section: &str,
        mut take: impl FnMut(&mut Self, &Node) -> Option<T>,
    ) -> IndexMap<String, T> {
        let mut out = IndexMap::new();
        let NodeKind::Map(entries) = &node.kind else {
            if node.kind != NodeKind::Null {
                self.problems.push(Problem::at(
                    node,
                    format!("`{section}` must be a mapping from name to settings"),
                ));
            }
            return out;
        };
        for (key, value) in entries {
            let name = key.as_scalar_text().unwrap_or_default();
            if !is_valid_name(&name) {
                self.problems.push(Problem::at(
                    key,
                    format!(
                        "`{name}` is not a valid name in `{section}`: use letters, digits, `_`, `-` and `.`"
                    ),
                ));
                continue;
            }
            self.declared.insert((section.to_string(), name.clone()));
            let before = self.problems.len();
            let parsed = take(self, value);
            self.name_the_item(before, section, &name);
            if let Some(parsed) = parsed {
                out.insert(name, parsed);
            }
        }
        out
    }
}
