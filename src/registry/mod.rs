//! The push registry: backends that announce themselves over the server's API instead of being
//! found by polling. A registration is a lease (gone when not renewed within its TTL) or bound to
//! a connection (gone when it closes). The `registry` locator reads the store; every change wakes
//! the daemon ([`Registry::changed`]), which locates that service at once.
//!
//! One store per process ([`global`]), like the metrics: the server writes into it and the
//! locators read it without a handle threaded through the engine. The daemon tells it which
//! services take registrations and under which limits ([`Registry::configure`]).

mod input;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use crate::secret::Secret;
pub use input::{check_id, read_tokens};

use crate::backend::{Address, Backend, CompactString, Labels};
use crate::metrics::{ServiceLabels, metrics};
use input::{echo, target_of, ttl_of};

/// The `source` of every registered backend.
pub const SOURCE: &str = "registry";

/// [`SOURCE`] as a [`Backend::source`], allocated once for the process.
fn shared_registry_source() -> Arc<str> {
    static S: OnceLock<Arc<str>> = OnceLock::new();
    S.get_or_init(|| Arc::from(SOURCE)).clone()
}

/// The longest registration id and meta key accepted.
pub const MAX_ID_LEN: usize = 128;
/// The most meta entries one registration may carry.
pub const MAX_META: usize = 32;
/// The longest meta key.
pub const MAX_META_KEY: usize = 64;
/// The longest meta value.
pub const MAX_META_VALUE: usize = 256;

/// The ranges a registered address must fall in when `allow` is not set: loopback, RFC 1918 and
/// IPv6 unique local addresses, so that a token holder can't point frontends at the internet.
pub const DEFAULT_ALLOW: [&str; 6] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fc00::/7",
];

/// The CIDRs of [`DEFAULT_ALLOW`].
pub fn default_allow() -> Vec<IpNet> {
    DEFAULT_ALLOW
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// The limits of one service that takes registrations (its `registry` locator's settings).
#[derive(Debug, Clone)]
pub struct Policy {
    /// TTL of a lease that names none.
    pub ttl_default: Duration,
    /// The shortest TTL accepted.
    pub ttl_min: Duration,
    /// The longest TTL accepted.
    pub ttl_max: Duration,
    /// Registrations the service holds at most.
    pub max_registrations: usize,
    /// CIDRs a registered address must fall in.
    pub allow: Vec<IpNet>,
    /// Tokens that may register into this service besides the server's own.
    pub tokens: Vec<Secret>,
}

/// A TTL as a client writes it: seconds as a number, or a duration string (`"10s"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Ttl {
    /// Whole seconds.
    Seconds(u64),
    /// `10s`, `1m30s`.
    Text(String),
}

/// What a client sends to register: the body of `PUT /api/v1/registry/{service}/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// An IP address (host names can't be checked against `allow`).
    pub address: String,
    /// The TCP port, 1-65535.
    pub port: u32,
    /// Weight, 1-100 (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// Labels for the templates (escaped where rendered, like every tag).
    #[serde(default)]
    pub meta: Labels,
    /// The lease's TTL (default the service's `ttl_default`); ignored on a connection.
    #[serde(default)]
    pub ttl: Option<Ttl>,
    /// The environment the backend belongs to; must be the daemon's.
    #[serde(default)]
    pub environment: Option<String>,
}

/// How a registration stays alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Until `now + ttl`, renewed by the client.
    Lease,
    /// As long as the connection with this number is open.
    Connection(u64),
}

/// One registration as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseView {
    /// The registration's id within its service.
    pub id: String,
    /// The service.
    pub service: String,
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Weight now (0 while draining).
    pub weight: u32,
    /// Labels.
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub meta: Labels,
    /// The environment it stated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// `lease` or `connection`.
    pub mode: &'static str,
    /// The lease's TTL in seconds (leases only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<f64>,
    /// Seconds left before the lease lapses (leases only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<f64>,
    /// Seconds left of a drain, while it is draining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draining_seconds: Option<f64>,
}

/// Why the store refused a request. The server maps each to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The service takes no registrations (no `registry` locator).
    #[error("service `{0}` takes no registrations (it has no `registry` locator)")]
    NotRegistry(String),
    /// A field of the registration is unusable.
    #[error("`{field}`: {reason}")]
    BadField {
        /// The field (`address`, `port`, `ttl`, `meta.KEY`, `id`).
        field: String,
        /// Why.
        reason: String,
    },
    /// The address is outside the service's `allow` ranges.
    #[error("address {address} is outside the ranges service `{service}` allows ({allow})")]
    NotAllowed {
        /// The service.
        service: String,
        /// The address.
        address: String,
        /// The ranges, comma-separated.
        allow: String,
    },
    /// The registration's environment is not the daemon's.
    #[error("environment {} does not match this daemon's environment {}", show(.offered), show(.expected))]
    Environment {
        /// What the daemon runs as.
        expected: Option<String>,
        /// What the registration stated.
        offered: Option<String>,
    },
    /// The service already holds `max_registrations`.
    #[error("service `{service}` already holds its maximum of {max} registrations")]
    Full {
        /// The service.
        service: String,
        /// Its `max_registrations`.
        max: usize,
    },
    /// No registration with this id.
    #[error("service `{service}` has no registration `{id}`")]
    UnknownLease {
        /// The service.
        service: String,
        /// The id.
        id: String,
    },
    /// The id is held by a connection (or a lease) and this request is of the other kind.
    #[error("registration `{id}` is held by {held}; use another id")]
    Conflict {
        /// The id.
        id: String,
        /// `an open connection` or `a lease`.
        held: &'static str,
    },
}

fn show(env: &Option<String>) -> String {
    match env {
        Some(e) => format!("`{}`", echo(e)),
        None => "(none)".into(),
    }
}

/// One registration, held compactly: ids and meta live once here, and the backends the
/// locator hands out are built from it when asked for.
struct Entry {
    ip: IpAddr,
    port: u16,
    weight: u32,
    /// Most registrations carry none; an empty set allocates nothing, and every backend built
    /// from the entry shares it.
    meta: Labels,
    /// The daemon's environment as it stated it (shared, not a copy per registration).
    environment: Option<Arc<str>>,
    hold: Hold,
    ttl: Duration,
    /// When it goes: a lease's expiry unless renewed, or the end of a drain (`draining`); none
    /// for a connection. One field for both, since a drain ends the lease (10,000 registrations
    /// are 160 KB less).
    until: Option<Instant>,
    /// Deregistered with a drain: weight 0 until `until`, then gone.
    draining: bool,
}

impl Entry {
    /// When the sweep must look at it next.
    fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// Leases only: when it lapses unless renewed.
    fn expires(&self) -> Option<Instant> {
        self.until.filter(|_| !self.draining)
    }

    /// After a deregistration with a drain: when it goes.
    fn draining_until(&self) -> Option<Instant> {
        self.until.filter(|_| self.draining)
    }

    fn meta(&self) -> Labels {
        self.meta.clone()
    }

    /// The backend a frontend gets for it (weight 0 and `state: draining` while draining).
    fn backend(&self, id: &str) -> Backend {
        let mut b = Backend::new(Address::Ip(self.ip), self.port);
        b.weight = self.weight;
        b.id = Some(id.into());
        b.tags = self.meta();
        b.source = shared_registry_source();
        if self.draining {
            b.weight = 0;
            b.meta.insert("state", "draining");
        }
        b
    }

    fn view(&self, service: &str, id: &str, now: Instant) -> LeaseView {
        let left = |t: Instant| t.saturating_duration_since(now).as_secs_f64();
        LeaseView {
            id: id.to_string(),
            service: service.to_string(),
            address: self.ip.to_string(),
            port: self.port,
            weight: if self.draining { 0 } else { self.weight },
            meta: self.meta(),
            environment: self.environment.as_deref().map(str::to_string),
            mode: match self.hold {
                Hold::Lease => "lease",
                Hold::Connection(_) => "connection",
            },
            ttl_seconds: (self.hold == Hold::Lease).then_some(self.ttl.as_secs_f64()),
            expires_in_seconds: self.expires().map(left),
            draining_seconds: self.draining_until().map(left),
        }
    }
}

/// A registration as the daemon keeps it across restarts (beside its `state_file`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// The service.
    pub service: String,
    /// The registration's id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: u32,
    /// Labels.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub meta: Labels,
    /// The environment it stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// A lease's TTL in seconds; none for a connection, which gets `ttl_default` to reconnect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// The registrations file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedFile {
    /// The file format (1).
    pub version: u32,
    /// Every registration, drains aside.
    pub registrations: Vec<Saved>,
}

struct Service {
    policy: Policy,
    /// By id; a boxed `str` is the id's bytes and a length, no spare capacity.
    /// Keyed by id; ids are short, so they are stored inline, not as one allocation each.
    entries: BTreeMap<CompactString, Entry>,
}

#[derive(Default)]
struct Inner {
    environment: Option<Arc<str>>,
    services: HashMap<String, Service>,
    /// Services whose registrations changed since the daemon last asked.
    dirty: BTreeSet<String>,
    /// Counts changes, so that the saver knows when to write.
    generation: u64,
    /// No lease lapses and no drain ends before this (it may be earlier than the first real
    /// deadline: renewals move deadlines later without touching it), so that most wake-ups
    /// need no look at every registration.
    sweep_at: Option<Instant>,
}

/// Lowers `slot` to `deadline` when that is earlier.
fn lower(slot: &mut Option<Instant>, deadline: Option<Instant>) {
    *slot = match (*slot, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

/// The first deadline of all, looked for in every registration.
fn earliest(inner: &Inner) -> Option<Instant> {
    inner
        .services
        .values()
        .flat_map(|s| s.entries.values())
        .filter_map(Entry::deadline)
        .min()
}

/// The store of registrations.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    notify: Notify,
}

/// The process's store.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::default)
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; it stays usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the daemon's environment and the services that take registrations (start and
    /// SIGHUP). Services kept keep their registrations; those gone lose them.
    pub fn configure(&self, environment: Option<String>, services: Vec<(String, Policy)>) {
        let mut inner = self.lock();
        inner.environment = environment.map(Arc::from);
        let mut old = std::mem::take(&mut inner.services);
        for (name, policy) in services {
            let entries = old.remove(&name).map(|s| s.entries).unwrap_or_default();
            inner.services.insert(name, Service { policy, entries });
        }
        for name in old.keys() {
            metrics().registrations.remove(&ServiceLabels {
                service: name.clone(),
            });
        }
        let names: Vec<String> = inner.services.keys().cloned().collect();
        for name in names {
            count(&inner, &name);
        }
        inner.sweep_at = earliest(&inner);
        drop(inner);
        // Woken for the next expiry, which the new services may have changed.
        self.notify.notify_one();
    }

    /// True when a scoped token of `service` is `offered`.
    pub fn scoped_token(&self, service: &str, offered: &[u8]) -> bool {
        self.lock()
            .services
            .get(service)
            .is_some_and(|s| s.policy.tokens.iter().any(|t| t.matches(offered)))
    }

    /// True when `service` takes registrations.
    pub fn has_service(&self, service: &str) -> bool {
        self.lock().services.contains_key(service)
    }

    /// Registers (or renews) `id` in `service`. A lease is renewed by registering it again; a
    /// renewal that changes nothing does not wake the daemon.
    pub fn register(
        &self,
        service: &str,
        id: &str,
        registration: &Registration,
        hold: Hold,
        now: Instant,
    ) -> Result<LeaseView, RegistryError> {
        check_id(id)?;
        let mut inner = self.lock();
        let expected = inner.environment.clone();
        let svc = inner
            .services
            .get_mut(service)
            .ok_or_else(|| RegistryError::NotRegistry(service.to_string()))?;
        if registration.environment.as_deref() != expected.as_deref() {
            return Err(RegistryError::Environment {
                expected: expected.as_deref().map(str::to_string),
                offered: registration.environment.clone(),
            });
        }
        let (ip, port, weight) = target_of(service, registration, &svc.policy)?;
        let ttl = match hold {
            Hold::Lease => ttl_of(registration.ttl.as_ref(), &svc.policy)?,
            Hold::Connection(_) => Duration::ZERO,
        };
        let existing = svc.entries.get(id);
        match (existing.map(|e| e.hold), hold) {
            (Some(Hold::Connection(a)), Hold::Connection(b)) if a != b => {
                return Err(RegistryError::Conflict {
                    id: id.to_string(),
                    held: "an open connection",
                });
            }
            (Some(Hold::Connection(_)), Hold::Lease) => {
                return Err(RegistryError::Conflict {
                    id: id.to_string(),
                    held: "an open connection",
                });
            }
            (None, _) if svc.entries.len() >= svc.policy.max_registrations => {
                return Err(RegistryError::Full {
                    service: service.to_string(),
                    max: svc.policy.max_registrations,
                });
            }
            _ => {}
        }
        let meta = registration.meta.clone();
        // A lease that lapsed but was not swept yet is a new registration, not a renewal.
        let unchanged = existing.is_some_and(|e| {
            (e.ip, e.port, e.weight) == (ip, port, weight)
                && e.meta == meta
                && !e.draining
                && e.until.is_none_or(|t| t > now)
        });
        let entry = Entry {
            ip,
            port,
            weight,
            meta,
            environment: expected,
            hold,
            ttl,
            until: (hold == Hold::Lease).then(|| now.checked_add(ttl).unwrap_or(now)),
            draining: false,
        };
        let view = entry.view(service, id, now);
        let deadline = entry.deadline();
        match svc.entries.get_mut(id) {
            Some(slot) => *slot = entry,
            None => {
                svc.entries.insert(id.into(), entry);
            }
        }
        lower(&mut inner.sweep_at, deadline);
        // A renewal only moves an expiry later: the sweep's timer, set for the earlier one,
        // wakes, finds nothing lapsed and sets itself again. So renewals wake nobody.
        if !unchanged {
            self.changed_locked(&mut inner, service);
        }
        Ok(view)
    }

    /// Renews lease `id` of `service` without changing it.
    pub fn renew(&self, service: &str, id: &str, now: Instant) -> Result<LeaseView, RegistryError> {
        let mut inner = self.lock();
        let svc = inner
            .services
            .get_mut(service)
            .ok_or_else(|| RegistryError::NotRegistry(service.to_string()))?;
        let unknown = || RegistryError::UnknownLease {
            service: service.to_string(),
            id: id.to_string(),
        };
        let entry = svc.entries.get_mut(id).ok_or_else(unknown)?;
        if entry.hold != Hold::Lease {
            return Err(RegistryError::Conflict {
                id: id.to_string(),
                held: "an open connection",
            });
        }
        if entry.draining || entry.until.is_some_and(|t| t <= now) {
            // Lapsed (or being removed): the client must register it again, with its data.
            return Err(unknown());
        }
        entry.until = Some(now.checked_add(entry.ttl).unwrap_or(now));
        Ok(entry.view(service, id, now))
    }

    /// Removes `id` at once, or after `drain` with weight 0 meanwhile.
    pub fn deregister(
        &self,
        service: &str,
        id: &str,
        drain: Option<Duration>,
        now: Instant,
    ) -> Result<(), RegistryError> {
        let mut inner = self.lock();
        let svc = inner
            .services
            .get_mut(service)
            .ok_or_else(|| RegistryError::NotRegistry(service.to_string()))?;
        match drain.filter(|d| !d.is_zero()) {
            None => {
                svc.entries
                    .remove(id)
                    .ok_or_else(|| RegistryError::UnknownLease {
                        service: service.to_string(),
                        id: id.to_string(),
                    })?;
            }
            Some(drain) => {
                let entry = svc
                    .entries
                    .get_mut(id)
                    .ok_or_else(|| RegistryError::UnknownLease {
                        service: service.to_string(),
                        id: id.to_string(),
                    })?;
                // A drain outlives the lease and the connection that held it.
                entry.until = Some(now.checked_add(drain).unwrap_or(now));
                entry.draining = true;
                entry.hold = Hold::Lease;
                let deadline = entry.deadline();
                lower(&mut inner.sweep_at, deadline);
            }
        }
        self.changed_locked(&mut inner, service);
        Ok(())
    }

    /// Removes `id` if connection `connection` still holds it (the connection closed).
    pub fn disconnect(&self, service: &str, id: &str, connection: u64) -> bool {
        let mut inner = self.lock();
        let Some(svc) = inner.services.get_mut(service) else {
            return false;
        };
        if svc.entries.get(id).map(|e| e.hold) != Some(Hold::Connection(connection)) {
            return false;
        }
        svc.entries.remove(id);
        self.changed_locked(&mut inner, service);
        true
    }

    /// Every registration of `service`, by id.
    pub fn list(&self, service: &str, now: Instant) -> Result<Vec<LeaseView>, RegistryError> {
        let inner = self.lock();
        let svc = inner
            .services
            .get(service)
            .ok_or_else(|| RegistryError::NotRegistry(service.to_string()))?;
        Ok(svc
            .entries
            .iter()
            .filter(|(_, e)| live(e, now))
            .map(|(id, e)| e.view(service, id, now))
            .collect())
    }

    /// The live backends of `service` (none when it takes no registrations); a draining one
    /// has weight 0.
    pub fn backends(&self, service: &str, now: Instant) -> Vec<Backend> {
        let inner = self.lock();
        let Some(svc) = inner.services.get(service) else {
            return Vec::new();
        };
        // Sized up front: collected from a filter, the list would grow by doubling and keep up
        // to half of it unused, for as long as the set is the service's last good one.
        let mut backends = Vec::with_capacity(svc.entries.len());
        backends.extend(
            svc.entries
                .iter()
                .filter(|(_, e)| live(e, now))
                .map(|(id, e)| e.backend(id)),
        );
        backends
    }

    /// Waits until registrations change (or lapse), and names the services that changed.
    /// Cancel-safe: what changed stays recorded until a call returns it.
    pub async fn changed(&self) -> Vec<String> {
        loop {
            let next = {
                let mut inner = self.lock();
                let now = Instant::now();
                if inner.sweep_at.is_some_and(|t| t <= now) {
                    self.sweep(&mut inner, now);
                    inner.sweep_at = earliest(&inner);
                }
                if !inner.dirty.is_empty() {
                    return std::mem::take(&mut inner.dirty).into_iter().collect();
                }
                inner.sweep_at
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    /// Changes so far; a saver writes when it moved.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Every registration but those draining away, to write beside the state file.
    pub fn save(&self) -> SavedFile {
        let inner = self.lock();
        let mut registrations = Vec::new();
        for (service, svc) in &inner.services {
            for (id, e) in &svc.entries {
                if e.draining {
                    continue;
                }
                registrations.push(Saved {
                    service: service.clone(),
                    id: id.to_string(),
                    address: e.ip.to_string(),
                    port: e.port,
                    weight: e.weight,
                    meta: e.meta(),
                    environment: e.environment.as_deref().map(str::to_string),
                    ttl_seconds: (e.hold == Hold::Lease).then_some(e.ttl.as_secs()),
                });
            }
        }
        registrations.sort_by(|a, b| (&a.service, &a.id).cmp(&(&b.service, &b.id)));
        SavedFile {
            version: 1,
            registrations,
        }
    }

    /// Takes saved registrations back after a restart, each as a lease with one TTL of grace
    /// (a connection's gets `ttl_default`, for its client to reconnect). Each goes through the
    /// checks of a new registration; what fails them is returned, and not restored.
    pub fn restore(&self, file: SavedFile, now: Instant) -> (usize, Vec<String>) {
        let mut restored = 0;
        let mut problems = Vec::new();
        for saved in file.registrations {
            let mut r = Registration {
                address: saved.address,
                port: u32::from(saved.port),
                weight: Some(saved.weight),
                meta: saved.meta,
                ttl: saved.ttl_seconds.map(Ttl::Seconds),
                environment: saved.environment,
            };
            let mut result = self.register(&saved.service, &saved.id, &r, Hold::Lease, now);
            if matches!(&result, Err(RegistryError::BadField { field, .. }) if field == "ttl") {
                // The limits changed since: the service's default fits them.
                r.ttl = None;
                result = self.register(&saved.service, &saved.id, &r, Hold::Lease, now);
            }
            match result {
                Ok(_) => restored += 1,
                Err(e) => problems.push(format!(
                    "service `{}`, registration `{}`: {e}",
                    saved.service,
                    echo(&saved.id)
                )),
            }
        }
        (restored, problems)
    }

    /// Drops lapsed leases and finished drains.
    fn sweep(&self, inner: &mut Inner, now: Instant) {
        let mut gone = Vec::new();
        for (name, svc) in &mut inner.services {
            let before = svc.entries.len();
            svc.entries.retain(|_, e| live(e, now));
            if svc.entries.len() != before {
                gone.push(name.clone());
            }
        }
        for name in gone {
            inner.generation = inner.generation.wrapping_add(1);
            tracing::info!(service = %name, "registrations lapsed");
            count(inner, &name);
            inner.dirty.insert(name);
        }
    }

    fn changed_locked(&self, inner: &mut Inner, service: &str) {
        inner.generation = inner.generation.wrapping_add(1);
        count(inner, service);
        inner.dirty.insert(service.to_string());
        self.notify.notify_one();
    }
}

fn live(e: &Entry, now: Instant) -> bool {
    e.until.is_none_or(|t| t > now)
}

/// Sets `elasticd_registrations{service}`.
fn count(inner: &Inner, service: &str) {
    if let Some(svc) = inner.services.get(service) {
        let n = i64::try_from(svc.entries.len()).unwrap_or(i64::MAX);
        metrics()
            .registrations
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .set(n);
    }
}

#[cfg(test)]
mod tests;
