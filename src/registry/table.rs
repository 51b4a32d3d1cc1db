//! One service's registrations, stored once: the backends themselves are the set the `registry`
//! locator hands out (shared with the engine, not built anew per pass), and beside it each
//! registration's lease data, by id.
//!
//! The set is sorted by endpoint, then id, the order the engine wants, so a service whose only
//! locator is the registry keeps one copy of its backends in all. A change copies the set only
//! when the engine still holds the previous one, once per pass, not once per request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Hold;
use crate::backend::{Address, Backend, BackendSet, CompactString};

/// How a registration stays alive, with what that needs: a lease its TTL, a connection its
/// number. One field for both (16 bytes, as `Hold` alone would be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Lease(Duration),
    Connection(u64),
}

/// A registration's lease data; its address and port find its backend in the set.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Lease {
    ip: IpAddr,
    port: u16,
    keep: Keep,
    /// When it goes: a lease's expiry unless renewed, or the end of a drain (`draining`); none
    /// for a connection.
    until: Option<Instant>,
    /// Deregistered with a drain: weight 0 until `until`, then gone.
    draining: bool,
}

impl Lease {
    /// A new lease of `ttl` from `now`, or a registration held by `connection`.
    pub(super) fn new(ip: IpAddr, port: u16, hold: Hold, ttl: Duration, now: Instant) -> Lease {
        let (keep, until) = match hold {
            Hold::Lease => (Keep::Lease(ttl), Some(now.checked_add(ttl).unwrap_or(now))),
            Hold::Connection(n) => (Keep::Connection(n), None),
        };
        Lease {
            ip,
            port,
            keep,
            until,
            draining: false,
        }
    }

    /// How it is held.
    pub(super) fn hold(&self) -> Hold {
        match self.keep {
            Keep::Lease(_) => Hold::Lease,
            Keep::Connection(n) => Hold::Connection(n),
        }
    }

    /// A lease's TTL; zero for a connection.
    pub(super) fn ttl(&self) -> Duration {
        match self.keep {
            Keep::Lease(ttl) => ttl,
            Keep::Connection(_) => Duration::ZERO,
        }
    }

    /// When the sweep must look at it next.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// Leases only: when it lapses unless renewed.
    pub(super) fn expires(&self) -> Option<Instant> {
        self.until.filter(|_| !self.draining)
    }

    /// After a deregistration with a drain: when it goes.
    pub(super) fn draining_until(&self) -> Option<Instant> {
        self.until.filter(|_| self.draining)
    }

    /// Being drained away.
    pub(super) fn draining(&self) -> bool {
        self.draining
    }

    /// Not lapsed, and not at the end of its drain.
    pub(super) fn live(&self, now: Instant) -> bool {
        self.until.is_none_or(|t| t > now)
    }

    /// Renewed: the lease runs its TTL again from `now`.
    pub(super) fn renew(&mut self, now: Instant) {
        self.until = Some(now.checked_add(self.ttl()).unwrap_or(now));
    }

    /// Takes over how `newer` (a registration of the same backend) is held and until when.
    fn hold_as(&mut self, newer: &Lease) {
        self.keep = newer.keep;
        self.until = newer.until;
        self.draining = newer.draining;
    }
}

/// Where a backend of `(ip, port, id)` sits in (or goes into) a set sorted by endpoint, then id.
fn position(set: &[Backend], ip: IpAddr, port: u16, id: &str) -> Result<usize, usize> {
    let address = Address::Ip(ip);
    set.binary_search_by(|b| {
        (&b.address, b.port, b.id.as_deref().unwrap_or("")).cmp(&(&address, port, id))
    })
}

/// New registrations wait in an unsorted tail of at most this many before they are sorted in:
/// inserting each into its place would move half the list every time, which is quadratic in a
/// flood of registrations (5 GB of copying for 10,000).
const TAIL: usize = 256;

/// Sorts `tail` into the sorted `list`, whose entries are unique under `order`. In place: only
/// the part from where the smallest new entry goes is sorted again, with no scratch buffer (a
/// stable sort's would be half the list).
fn sort_in<T>(list: &mut Vec<T>, tail: &mut Vec<T>, order: impl Fn(&T, &T) -> std::cmp::Ordering) {
    if tail.is_empty() {
        return;
    }
    tail.sort_unstable_by(&order);
    let from = tail
        .first()
        .map_or(0, |first| list.partition_point(|e| order(e, first).is_lt()));
    // Grown by a sixteenth at a time, not doubled: at most that much of a list of 10,000 stands
    // unused for as long as it is kept, and it is not moved every few registrations.
    if list.capacity().saturating_sub(list.len()) < tail.len() {
        list.reserve_exact(tail.len().max(list.len() / 16));
    }
    list.append(tail);
    if let Some(rest) = list.get_mut(from..) {
        rest.sort_unstable_by(&order);
    }
    tail.shrink_to_fit();
}

fn by_endpoint(a: &Backend, b: &Backend) -> std::cmp::Ordering {
    fn key(b: &Backend) -> (&Address, u16, &str) {
        (&b.address, b.port, b.id.as_deref().unwrap_or(""))
    }
    key(a).cmp(&key(b))
}

fn by_id(a: &(CompactString, Lease), b: &(CompactString, Lease)) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
}

/// Where a registration's lease or backend is.
#[derive(Clone, Copy)]
enum At {
    /// In the sorted list, at this index.
    Sorted(usize),
    /// In the tail, at this index.
    Tail(usize),
}

/// One service's registrations.
#[derive(Default)]
pub(super) struct Table {
    /// The backends, sorted by endpoint then id; handed out as they are.
    set: BackendSet,
    /// Backends of new registrations, not yet sorted into `set`.
    fresh: Vec<Backend>,
    /// Lease data, sorted by id; ids are short, so they are stored inline.
    leases: Vec<(CompactString, Lease)>,
    /// Lease data of new registrations, not yet sorted into `leases`.
    new_leases: Vec<(CompactString, Lease)>,
}

impl Table {
    /// How many registrations it holds.
    pub(super) fn len(&self) -> usize {
        self.leases.len().saturating_add(self.new_leases.len())
    }

    /// The backends, shared: the new ones sorted in first.
    pub(super) fn set(&mut self) -> BackendSet {
        self.sort_in_backends();
        Arc::clone(&self.set)
    }

    fn sort_in_backends(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        match Arc::get_mut(&mut self.set) {
            Some(set) => sort_in(set, &mut self.fresh, by_endpoint),
            None => {
                // Held by the engine: build the new set in one allocation of the right size
                // instead of copying the old one and growing the copy.
                let mut set = Vec::with_capacity(self.set.len().saturating_add(self.fresh.len()));
                set.extend_from_slice(&self.set);
                sort_in(&mut set, &mut self.fresh, by_endpoint);
                self.set = Arc::new(set);
            }
        }
    }

    fn find(&self, id: &str) -> Option<At> {
        if let Ok(i) = self.leases.binary_search_by(|(k, _)| k.as_str().cmp(id)) {
            return Some(At::Sorted(i));
        }
        self.new_leases
            .iter()
            .position(|(k, _)| k == id)
            .map(At::Tail)
    }

    fn lease_at(&self, at: At) -> Option<&Lease> {
        match at {
            At::Sorted(i) => self.leases.get(i),
            At::Tail(i) => self.new_leases.get(i),
        }
        .map(|(_, l)| l)
    }

    fn lease_at_mut(&mut self, at: At) -> Option<&mut Lease> {
        match at {
            At::Sorted(i) => self.leases.get_mut(i),
            At::Tail(i) => self.new_leases.get_mut(i),
        }
        .map(|(_, l)| l)
    }

    /// Where the backend of `(ip, port, id)` is.
    fn find_backend(&self, ip: IpAddr, port: u16, id: &str) -> Option<At> {
        if let Ok(i) = position(&self.set, ip, port, id) {
            return Some(At::Sorted(i));
        }
        let address = Address::Ip(ip);
        self.fresh
            .iter()
            .position(|b| b.address == address && b.port == port && b.id.as_deref() == Some(id))
            .map(At::Tail)
    }

    fn backend_at(&self, at: At) -> Option<&Backend> {
        match at {
            At::Sorted(i) => self.set.get(i),
            At::Tail(i) => self.fresh.get(i),
        }
    }

    /// The backend of a lease held in this table.
    fn backend_of(&self, id: &str, lease: &Lease) -> Option<&Backend> {
        self.backend_at(self.find_backend(lease.ip, lease.port, id)?)
    }

    /// Takes the backend of `(ip, port, id)` out.
    fn remove_backend(&mut self, ip: IpAddr, port: u16, id: &str) {
        match self.find_backend(ip, port, id) {
            Some(At::Sorted(i)) => {
                Arc::make_mut(&mut self.set).remove(i);
            }
            Some(At::Tail(i)) => {
                self.fresh.swap_remove(i);
            }
            None => {}
        }
    }

    /// Adds a backend (to the tail, sorted in when it is long or the set is handed out).
    fn add_backend(&mut self, backend: Backend) {
        if self.fresh.len() >= TAIL {
            self.sort_in_backends();
        }
        self.fresh.push(backend);
    }

    /// Registration `id`: its lease data and backend.
    pub(super) fn get(&self, id: &str) -> Option<(&Lease, &Backend)> {
        let lease = self.lease_at(self.find(id)?)?;
        Some((lease, self.backend_of(id, lease)?))
    }

    /// Registration `id`'s lease data, to renew it.
    pub(super) fn lease_mut(&mut self, id: &str) -> Option<&mut Lease> {
        let at = self.find(id)?;
        self.lease_at_mut(at)
    }

    /// Every registration by id, with its backend.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Lease, &Backend)> {
        let mut all: Vec<&(CompactString, Lease)> =
            self.leases.iter().chain(&self.new_leases).collect();
        if !self.new_leases.is_empty() {
            all.sort_by(|a, b| by_id(a, b));
        }
        all.into_iter()
            .filter_map(|(id, lease)| Some((id.as_str(), lease, self.backend_of(id, lease)?)))
    }

    /// Stores registration `id` (new, or replacing what it was). When only its lease changes,
    /// the set is left alone: a renewal costs no copy of it.
    pub(super) fn put(&mut self, id: &str, lease: Lease, backend: Backend) {
        let Some(at) = self.find(id) else {
            if self.new_leases.len() >= TAIL {
                sort_in(&mut self.leases, &mut self.new_leases, by_id);
            }
            self.new_leases.push((id.into(), lease));
            self.add_backend(backend);
            return;
        };
        let Some(old) = self.lease_at(at) else {
            return;
        };
        let (ip, port) = (old.ip, old.port);
        if self.backend_of(id, old).is_some_and(|b| *b == backend) {
            if let Some(old) = self.lease_at_mut(at) {
                old.hold_as(&lease);
            }
            return;
        }
        if let Some(old) = self.lease_at_mut(at) {
            *old = lease;
        }
        self.remove_backend(ip, port, id);
        self.add_backend(backend);
    }

    /// Removes registration `id`; false when there is none.
    pub(super) fn remove(&mut self, id: &str) -> bool {
        let lease = match self.find(id) {
            Some(At::Sorted(i)) => self.leases.remove(i).1,
            Some(At::Tail(i)) => self.new_leases.swap_remove(i).1,
            None => return false,
        };
        self.remove_backend(lease.ip, lease.port, id);
        true
    }

    /// Drains registration `id` until `until`: its backend stays with weight 0 and
    /// `state: draining`, held by no lease or connection any more. False when there is none.
    pub(super) fn drain(&mut self, id: &str, until: Instant) -> bool {
        let Some(lease) = self.find(id).and_then(|at| self.lease_at_mut(at)) else {
            return false;
        };
        lease.keep = Keep::Lease(lease.ttl());
        lease.until = Some(until);
        lease.draining = true;
        let (ip, port) = (lease.ip, lease.port);
        let backend = match self.find_backend(ip, port, id) {
            Some(At::Sorted(i)) => Arc::make_mut(&mut self.set).get_mut(i),
            Some(At::Tail(i)) => self.fresh.get_mut(i),
            None => None,
        };
        if let Some(b) = backend {
            b.weight = 0;
            b.meta.insert("state", "draining");
        }
        true
    }

    /// Drops the registrations not live at `now`; true when any went.
    pub(super) fn sweep(&mut self, now: Instant) -> bool {
        let all_live = |list: &[(CompactString, Lease)]| list.iter().all(|(_, l)| l.live(now));
        if all_live(&self.leases) && all_live(&self.new_leases) {
            return false;
        }
        sort_in(&mut self.leases, &mut self.new_leases, by_id);
        self.sort_in_backends();
        self.leases.retain(|(_, l)| l.live(now));
        let leases = &self.leases;
        let kept = |b: &Backend| {
            let id = b.id.as_deref().unwrap_or("");
            leases
                .binary_search_by(|(k, _)| k.as_str().cmp(id))
                .ok()
                .and_then(|i| leases.get(i))
                .is_some_and(|(_, l)| b.address == Address::Ip(l.ip) && b.port == l.port)
        };
        Arc::make_mut(&mut self.set).retain(kept);
        true
    }

    /// The first deadline of its registrations.
    pub(super) fn earliest(&self) -> Option<Instant> {
        self.leases
            .iter()
            .chain(&self.new_leases)
            .filter_map(|(_, l)| l.deadline())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(ip: &str, port: u16, id: &str) -> Backend {
        let mut b = Backend::new(Address::Ip(ip.parse().unwrap()), port);
        b.id = Some(id.into());
        b
    }

    fn lease(ip: &str, port: u16, now: Instant) -> Lease {
        Lease::new(
            ip.parse().unwrap(),
            port,
            Hold::Lease,
            Duration::from_secs(10),
            now,
        )
    }

    /// Registers `id` at `ip:port` with a 10 s lease from `now`.
    fn register(t: &mut Table, id: &str, ip: &str, port: u16, now: Instant) {
        t.put(id, lease(ip, port, now), backend(ip, port, id));
    }

    fn endpoints(t: &mut Table) -> Vec<String> {
        t.set()
            .iter()
            .map(|b| format!("{}={}", b.id.as_deref().unwrap_or(""), b.endpoint()))
            .collect()
    }

    #[test]
    fn the_set_is_sorted_by_endpoint_then_id_whatever_the_order_of_registration() {
        let now = Instant::now();
        let mut t = Table::default();
        for (id, ip, port) in [
            ("z", "10.0.0.1", 80),
            ("a", "10.0.0.3", 80),
            ("m", "10.0.0.1", 80),
            ("b", "10.0.0.2", 81),
            ("c", "10.0.0.2", 80),
        ] {
            register(&mut t, id, ip, port, now);
        }
        assert_eq!(
            endpoints(&mut t),
            [
                "m=10.0.0.1:80",
                "z=10.0.0.1:80",
                "c=10.0.0.2:80",
                "b=10.0.0.2:81",
                "a=10.0.0.3:80"
            ]
        );
        let ids: Vec<&str> = t.iter().map(|(id, _, _)| id).collect();
        assert_eq!(ids, ["a", "b", "c", "m", "z"]);
        // Moved to another address: it leaves its old place.
        register(&mut t, "z", "10.0.0.9", 80, now);
        assert_eq!(
            endpoints(&mut t).last().map(String::as_str),
            Some("z=10.0.0.9:80")
        );
        assert_eq!(t.set().len(), 5);
        assert!(t.remove("m"));
        assert!(!t.remove("m"));
        assert_eq!(t.len(), 4);
        assert_eq!(t.set().len(), 4);
    }

    #[test]
    fn a_renewal_leaves_a_shared_set_uncopied_and_a_change_copies_it_once() {
        let now = Instant::now();
        let mut t = Table::default();
        register(&mut t, "a", "10.0.0.1", 80, now);
        let handed_out = t.set();
        let later = now + Duration::from_secs(5);
        register(&mut t, "a", "10.0.0.1", 80, later);
        assert!(Arc::ptr_eq(&handed_out, &t.set()));
        assert_eq!(
            t.get("a").map(|(l, _)| l.until),
            Some(Some(later + Duration::from_secs(10)))
        );
        register(&mut t, "b", "10.0.0.2", 80, now);
        assert!(!Arc::ptr_eq(&handed_out, &t.set()));
        assert_eq!(handed_out.len(), 1);
        let copy = Arc::as_ptr(&t.set());
        register(&mut t, "c", "10.0.0.3", 80, now);
        // Nobody else holds it now: changed in place.
        assert_eq!(Arc::as_ptr(&t.set()), copy);
    }

    #[test]
    fn any_sequence_of_changes_agrees_with_a_sorted_map() {
        use std::collections::BTreeMap;
        let now = Instant::now();
        let mut t = Table::default();
        let mut model: BTreeMap<String, (String, u16, u32)> = BTreeMap::new();
        let mut seed: u64 = 0x5eed;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut held = Vec::new();
        for step in 0..6_000 {
            let id = format!("r{}", next(1_500));
            let ip = format!("10.0.{}.{}", next(4), next(250) + 1);
            let port = 80 + next(3) as u16;
            match next(10) {
                0..=6 => {
                    let weight = 1 + next(2) as u32;
                    let mut b = backend(&ip, port, &id);
                    b.weight = weight;
                    t.put(&id, lease(&ip, port, now), b);
                    model.insert(id, (ip, port, weight));
                }
                _ => assert_eq!(t.remove(&id), model.remove(&id).is_some()),
            }
            // Handed out now and then, so that new registrations pile up in the tail past its
            // limit in between, and some sets are still held when the table changes.
            if step % 700 == 0 {
                held.push(t.set());
            }
            if step % 1_400 == 0 {
                held.clear();
            }
            assert_eq!(t.len(), model.len());
        }
        let listed: Vec<(String, String, u16, u32)> = t
            .iter()
            .map(|(id, _, b)| (id.to_string(), b.address.to_string(), b.port, b.weight))
            .collect();
        let expected: Vec<(String, String, u16, u32)> = model
            .iter()
            .map(|(id, (ip, port, w))| (id.clone(), ip.clone(), *port, *w))
            .collect();
        assert_eq!(listed, expected);
        let set = t.set();
        assert_eq!(set.len(), model.len());
        assert!(set.windows(2).all(|w| by_endpoint(&w[0], &w[1]).is_lt()));
        for (id, (ip, port, w)) in &model {
            let (_, b) = t.get(id).expect("every registration is found");
            assert_eq!(
                (b.address.to_string(), b.port, b.weight),
                (ip.clone(), *port, *w)
            );
        }
    }

    #[test]
    fn a_drain_keeps_the_backend_with_weight_zero_and_the_sweep_drops_what_lapsed() {
        let now = Instant::now();
        let mut t = Table::default();
        register(&mut t, "a", "10.0.0.1", 80, now);
        register(&mut t, "b", "10.0.0.1", 80, now);
        let mut long = lease("10.0.0.2", 80, now);
        long.keep = Keep::Lease(Duration::from_secs(60));
        long.renew(now);
        t.put("c", long, backend("10.0.0.2", 80, "c"));
        assert!(t.drain("b", now + Duration::from_secs(30)));
        let (lease_b, b) = t.get("b").unwrap();
        assert_eq!((b.weight, b.meta.get("state")), (0, Some("draining")));
        assert!(lease_b.draining());
        assert!(!t.sweep(now + Duration::from_secs(1)));
        assert!(t.sweep(now + Duration::from_secs(10)));
        assert_eq!(endpoints(&mut t), ["b=10.0.0.1:80", "c=10.0.0.2:80"]);
        assert!(t.sweep(now + Duration::from_secs(30)));
        assert_eq!(endpoints(&mut t), ["c=10.0.0.2:80"]);
        assert_eq!(t.earliest(), Some(now + Duration::from_secs(60)));
    }
}
