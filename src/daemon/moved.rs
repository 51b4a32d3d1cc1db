//! What an apply moved: the services whose set changed, diffed once for the `applied` line and
//! the status's change records.

use std::sync::Arc;

use indexmap::IndexMap;

use crate::backend::{self, Backend, BackendSet};
use crate::value::count;

/// How many endpoints an `applied` line names before it says "and N more".
const NAMED_ENDPOINTS: usize = 5;

/// A service whose set an apply moved, and how: worked out once for the `applied` line and the
/// status's change records.
pub(super) struct Moved<'a> {
    pub(super) name: &'a str,
    pub(super) set: &'a BackendSet,
    pub(super) added: Vec<&'a Backend>,
    pub(super) removed: Vec<&'a Backend>,
}

/// The services of `sets` whose set differs from the one in `before`, with the backends added
/// and removed.
pub(super) fn moved_sets<'a>(
    before: &'a IndexMap<String, BackendSet>,
    sets: &'a IndexMap<String, BackendSet>,
) -> Vec<Moved<'a>> {
    sets.iter()
        .filter_map(|(name, set)| {
            let old = before.get(name);
            if old.is_some_and(|b| Arc::ptr_eq(b, set) || b == set) {
                return None;
            }
            let (added, removed) = backend::diff(old.map_or(&[][..], |b| b.as_slice()), set);
            Some(Moved {
                name,
                set,
                added,
                removed,
            })
        })
        .collect()
}

/// `web +2/-1 (3 backends) [+10.0.0.3:80 +10.0.0.4:80 -10.0.0.1:80]`: a service's change for the
/// `applied` line, naming the first [`NAMED_ENDPOINTS`] endpoints added, then removed.
pub(super) fn change_summary(moved: &Moved) -> String {
    let Moved {
        name,
        set,
        added,
        removed,
    } = moved;
    // Only the named endpoints are formatted, however many changed.
    let mut named = String::new();
    let signed = added
        .iter()
        .map(|b| ('+', b))
        .chain(removed.iter().map(|b| ('-', b)));
    for (i, (sign, b)) in signed.take(NAMED_ENDPOINTS).enumerate() {
        if i > 0 {
            named.push(' ');
        }
        named.push(sign);
        b.write_endpoint(&mut named);
    }
    let all = added.len() + removed.len();
    if all > NAMED_ENDPOINTS {
        named.push_str(&format!(" and {} more", all - NAMED_ENDPOINTS));
    }
    format!(
        "{name} +{}/-{} ({}) [{named}]",
        added.len(),
        removed.len(),
        count(set.len(), "backend")
    )
}
