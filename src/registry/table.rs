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

/// Room for `more` entries without doubling: a list of 10,000 grows by an eighth, so that at most
/// that much of it stands unused for as long as it is kept.
fn make_room<T>(list: &mut Vec<T>) {
    if list.len() == list.capacity() {
        list.reserve_exact(list.len() / 8 + 8);
    }
}

/// One service's registrations.
#[derive(Default)]
pub(super) struct Table {
    /// The backends, sorted by endpoint then id; handed out as they are.
    set: BackendSet,
    /// Lease data, sorted by id; ids are short, so they are stored inline.
    leases: Vec<(CompactString, Lease)>,
}

impl Table {
    /// How many registrations it holds.
    pub(super) fn len(&self) -> usize {
        self.leases.len()
    }

    /// The backends, shared.
    pub(super) fn set(&self) -> BackendSet {
        Arc::clone(&self.set)
    }

    fn find(&self, id: &str) -> Result<usize, usize> {
        self.leases.binary_search_by(|(k, _)| k.as_str().cmp(id))
    }

    /// The backend of a lease held in this table.
    fn backend_of(&self, id: &str, lease: &Lease) -> Option<&Backend> {
        position(&self.set, lease.ip, lease.port, id)
            .ok()
            .and_then(|i| self.set.get(i))
    }

    /// Registration `id`: its lease data and backend.
    pub(super) fn get(&self, id: &str) -> Option<(&Lease, &Backend)> {
        let (_, lease) = self.leases.get(self.find(id).ok()?)?;
        Some((lease, self.backend_of(id, lease)?))
    }

    /// Registration `id`'s lease data, to renew it.
    pub(super) fn lease_mut(&mut self, id: &str) -> Option<&mut Lease> {
        let i = self.find(id).ok()?;
        self.leases.get_mut(i).map(|(_, l)| l)
    }

    /// Every registration by id, with its backend.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Lease, &Backend)> {
        self.leases
            .iter()
            .filter_map(|(id, lease)| Some((id.as_str(), lease, self.backend_of(id, lease)?)))
    }

    /// Stores registration `id` (new, or replacing what it was). When only its lease changes,
    /// the set is left alone: a renewal costs no copy of it.
    pub(super) fn put(&mut self, id: &str, lease: Lease, backend: Backend) {
        match self.find(id) {
            Ok(i) => {
                let Some((_, old)) = self.leases.get_mut(i) else {
                    return;
                };
                let (ip, port) = (old.ip, old.port);
                let same = position(&self.set, ip, port, id)
                    .ok()
                    .and_then(|at| self.set.get(at))
                    .is_some_and(|b| *b == backend);
                if same {
                    old.hold_as(&lease);
                    return;
                }
                *old = lease;
                let set = Arc::make_mut(&mut self.set);
                if let Ok(at) = position(set, ip, port, id) {
                    set.remove(at);
                }
                insert(set, backend);
            }
            Err(i) => {
                make_room(&mut self.leases);
                self.leases.insert(i, (id.into(), lease));
                insert(Arc::make_mut(&mut self.set), backend);
            }
        }
    }

    /// Removes registration `id`; false when there is none.
    pub(super) fn remove(&mut self, id: &str) -> bool {
        let Ok(i) = self.find(id) else {
            return false;
        };
        let (_, lease) = self.leases.remove(i);
        let set = Arc::make_mut(&mut self.set);
        if let Ok(at) = position(set, lease.ip, lease.port, id) {
            set.remove(at);
        }
        true
    }

    /// Drains registration `id` until `until`: its backend stays with weight 0 and
    /// `state: draining`, held by no lease or connection any more. False when there is none.
    pub(super) fn drain(&mut self, id: &str, until: Instant) -> bool {
        let Ok(i) = self.find(id) else {
            return false;
        };
        let Some((_, lease)) = self.leases.get_mut(i) else {
            return false;
        };
        lease.keep = Keep::Lease(lease.ttl());
        lease.until = Some(until);
        lease.draining = true;
        let (ip, port) = (lease.ip, lease.port);
        let set = Arc::make_mut(&mut self.set);
        if let Ok(at) = position(set, ip, port, id)
            && let Some(b) = set.get_mut(at)
        {
            b.weight = 0;
            b.meta.insert("state", "draining");
        }
        true
    }

    /// Drops the registrations not live at `now`; true when any went.
    pub(super) fn sweep(&mut self, now: Instant) -> bool {
        if self.leases.iter().all(|(_, l)| l.live(now)) {
            return false;
        }
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
        self.leases.iter().filter_map(|(_, l)| l.deadline()).min()
    }
}

/// Puts `backend` into its place in a set sorted by endpoint, then id.
fn insert(set: &mut Vec<Backend>, backend: Backend) {
    let (Address::Ip(ip), Some(id)) = (&backend.address, backend.id.as_deref()) else {
        return;
    };
    let at = position(set, *ip, backend.port, id).unwrap_or_else(|at| at);
    make_room(set);
    set.insert(at, backend);
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

    fn endpoints(t: &Table) -> Vec<String> {
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
            t.put(id, lease(ip, port, now), backend(ip, port, id));
        }
        assert_eq!(
            endpoints(&t),
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
        t.put(
            "z",
            lease("10.0.0.9", 80, now),
            backend("10.0.0.9", 80, "z"),
        );
        assert_eq!(
            endpoints(&t).last().map(String::as_str),
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
        t.put(
            "a",
            lease("10.0.0.1", 80, now),
            backend("10.0.0.1", 80, "a"),
        );
        let handed_out = t.set();
        let later = now + Duration::from_secs(5);
        t.put(
            "a",
            lease("10.0.0.1", 80, later),
            backend("10.0.0.1", 80, "a"),
        );
        assert!(Arc::ptr_eq(&handed_out, &t.set()));
        assert_eq!(
            t.get("a").map(|(l, _)| l.until),
            Some(Some(later + Duration::from_secs(10)))
        );
        t.put(
            "b",
            lease("10.0.0.2", 80, now),
            backend("10.0.0.2", 80, "b"),
        );
        assert!(!Arc::ptr_eq(&handed_out, &t.set()));
        assert_eq!(handed_out.len(), 1);
        let copy = Arc::as_ptr(&t.set());
        t.put(
            "c",
            lease("10.0.0.3", 80, now),
            backend("10.0.0.3", 80, "c"),
        );
        // Nobody else holds it now: changed in place.
        assert_eq!(Arc::as_ptr(&t.set()), copy);
    }

    #[test]
    fn a_drain_keeps_the_backend_with_weight_zero_and_the_sweep_drops_what_lapsed() {
        let now = Instant::now();
        let mut t = Table::default();
        t.put(
            "a",
            lease("10.0.0.1", 80, now),
            backend("10.0.0.1", 80, "a"),
        );
        t.put(
            "b",
            lease("10.0.0.1", 80, now),
            backend("10.0.0.1", 80, "b"),
        );
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
        assert_eq!(endpoints(&t), ["b=10.0.0.1:80", "c=10.0.0.2:80"]);
        assert!(t.sweep(now + Duration::from_secs(30)));
        assert_eq!(endpoints(&t), ["c=10.0.0.2:80"]);
        assert_eq!(t.earliest(), Some(now + Duration::from_secs(60)));
    }
}
