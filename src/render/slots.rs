//! Server slots: a fixed set of named servers that backends move into and out of.
//!
//! HAProxy's Runtime API can change a server's address, port, weight and state, but a running
//! HAProxy cannot gain a server its config did not declare (`add server` needs dynamic-server
//! support and cannot use `default-server`). An output with `vars.slots: N` therefore renders N
//! servers named by position; a backend that stays keeps its slot, so a change of the backend
//! set is a change of a few slots' addresses and states, which the `haproxy_runtime` reload
//! action applies without a reload.
//!
//! The previous assignment is read back from the installed file, which always matches what
//! HAProxy runs. When there are more backends than slots, the count grows to the next multiple
//! of `slots` (one reload, with room to spare); it never shrinks by itself, because a shrink
//! would cost another reload and a fleet that hovers around the limit would reload again and
//! again.

use std::collections::HashMap;

use crate::backend::Backend;
use crate::frontend::haproxy_file::{self, BackendSection};

/// The largest `slots` value accepted (each slot is a server line and a server in HAProxy).
pub const MAX_SLOTS: u64 = 10_000;

/// Per slot (index 0 is slot 1), the index into `backends` of the backend it holds.
pub fn assign(
    backends: &[Backend],
    slots: usize,
    previous: Option<&BackendSection>,
) -> Vec<Option<usize>> {
    let slots = slots.max(1);
    let previous_count = previous.map_or(0, |p| p.servers.len());
    let needed = backends.len().div_ceil(slots) * slots;
    let total = slots.max(needed).max(previous_count);
    let mut assigned: Vec<Option<usize>> = vec![None; total];

    // Where each endpoint was; a repeated endpoint keeps its first slot only.
    let mut was: HashMap<(String, u16), usize> = HashMap::new();
    if let Some(previous) = previous {
        for (slot, server) in previous.servers.iter().enumerate() {
            if !server.disabled {
                was.entry((server.address.clone(), server.port))
                    .or_insert(slot);
            }
        }
    }
    let mut newcomers = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        match was.remove(&(b.address.to_string(), b.port)) {
            Some(slot) => assigned[slot] = Some(i),
            None => newcomers.push(i),
        }
    }
    let mut free = (0..total)
        .filter(|s| assigned[*s].is_none())
        .collect::<Vec<_>>();
    free.reverse();
    for i in newcomers {
        // `total` is at least the number of backends, so a free slot is always left.
        if let Some(slot) = free.pop() {
            assigned[slot] = Some(i);
        }
    }
    assigned
}

/// The section of a previously installed file that holds the slots: the one named `backend`,
/// else the first.
pub fn previous_section(previous: &[u8], backend: &str) -> Option<BackendSection> {
    let text = String::from_utf8_lossy(previous);
    let mut file = haproxy_file::parse(&text);
    let index =
        file.backends
            .iter()
            .position(|b| b.name == backend)
            .or(if file.backends.is_empty() {
                None
            } else {
                Some(0)
            })?;
    Some(file.backends.swap_remove(index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Address, Backend};

    fn set(hosts: &[u8]) -> Vec<Backend> {
        hosts
            .iter()
            .map(|h| Backend::new(Address::Ip(format!("127.0.0.{h}").parse().unwrap()), 80))
            .collect()
    }

    fn section(slots: &[Option<u8>]) -> BackendSection {
        let text: String = slots
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Some(h) => format!("    server web_s{} 127.0.0.{h}:80 weight 1\n", i + 1),
                None => format!("    server web_s{} 0.0.0.0:0 disabled\n", i + 1),
            })
            .collect();
        previous_section(format!("backend web\n{text}").as_bytes(), "web").unwrap()
    }

    /// Slot contents as host numbers, for readable assertions.
    fn hosts(backends: &[Backend], assigned: &[Option<usize>]) -> Vec<Option<String>> {
        assigned
            .iter()
            .map(|s| s.map(|i| backends[i].address.to_string().replace("127.0.0.", "")))
            .collect()
    }

    #[test]
    fn backends_that_stay_keep_their_slots_and_newcomers_fill_gaps() {
        let prev = section(&[Some(2), Some(3), None, Some(5)]);
        let now = set(&[3, 5, 7, 8]);
        let got = assign(&now, 4, Some(&prev));
        let s = |x: &str| Some(x.to_string());
        assert_eq!(hosts(&now, &got), vec![s("7"), s("3"), s("8"), s("5")]);
    }

    #[test]
    fn a_fresh_file_fills_slots_in_order() {
        let now = set(&[2, 3]);
        let got = assign(&now, 4, None);
        assert_eq!(got, vec![Some(0), Some(1), None, None]);
        assert_eq!(assign(&[], 3, None), vec![None, None, None]);
    }

    #[test]
    fn overflow_grows_to_the_next_multiple_and_never_shrinks() {
        let prev = section(&[Some(2), Some(3)]);
        let now = set(&[2, 3, 4]);
        let got = assign(&now, 2, Some(&prev));
        assert_eq!(got, vec![Some(0), Some(1), Some(2), None]);
        // Back to one backend: the four slots stay.
        let grown = section(&[Some(2), Some(3), Some(4), None]);
        let got = assign(&set(&[4]), 2, Some(&grown));
        assert_eq!(got, vec![None, None, Some(0), None]);
    }

    #[test]
    fn the_named_section_is_used_else_the_first() {
        let text = b"backend a\n  server a_s1 127.0.0.1:1\nbackend b\n  server b_s1 127.0.0.2:1\n";
        assert_eq!(previous_section(text, "b").unwrap().name, "b");
        assert_eq!(previous_section(text, "zzz").unwrap().name, "a");
        assert!(previous_section(b"# nothing\n", "a").is_none());
    }
}
