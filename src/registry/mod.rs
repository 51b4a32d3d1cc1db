//! The push registry: backends that announce themselves over the server's API instead of being
//! found by polling. A registration is a lease (gone when not renewed within its TTL) or bound to
//! a connection (gone when it closes). The `registry` locator reads the store; every change wakes
//! the daemon ([`Registry::changed`]), which locates that service at once.
//!
//! One store per process ([`global`]), like the metrics: the server writes into it and the
//! locators read it without a handle threaded through the engine. The daemon tells it which
//! services take registrations and under which limits ([`Registry::configure`]).

mod input;
mod table;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use crate::secret::Secret;
pub use input::{check_id, read_tokens};

use crate::backend::{Address, Backend, BackendSet, Labels};
use crate::metrics::{ServiceLabels, metrics};
use input::{echo, target_of, ttl_of};
use table::{Lease, Table};

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

/// Registration `id` as the API shows it.
fn view(
    service: &str,
    id: &str,
    lease: &Lease,
    backend: &Backend,
    environment: Option<&str>,
    now: Instant,
) -> LeaseView {
    let left = |t: Instant| t.saturating_duration_since(now).as_secs_f64();
    let hold = lease.hold();
    LeaseView {
        id: id.to_string(),
        service: service.to_string(),
        address: backend.address.to_string(),
        port: backend.port,
        weight: backend.weight,
        meta: backend.tags.clone(),
        environment: environment.map(str::to_string),
        mode: match hold {
            Hold::Lease => "lease",
            Hold::Connection(_) => "connection",
        },
        ttl_seconds: (hold == Hold::Lease).then_some(lease.ttl().as_secs_f64()),
        expires_in_seconds: lease.expires().map(left),
        draining_seconds: lease.draining_until().map(left),
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
    table: Table,
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
        .filter_map(|s| s.table.earliest())
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
        let environment: Option<Arc<str>> = environment.map(Arc::from);
        let mut old = std::mem::take(&mut inner.services);
        if inner.environment != environment {
            // Every registration stated the old environment: the new one would refuse them.
            let dropped: usize = old.values().map(|s| s.table.len()).sum();
            if dropped > 0 {
                tracing::warn!(
                    "the environment changed from {} to {}: {} dropped",
                    show(&inner.environment.as_deref().map(str::to_string)),
                    show(&environment.as_deref().map(str::to_string)),
                    crate::value::count(dropped, "registration")
                );
            }
            old.clear();
        }
        inner.environment = environment;
        for (name, policy) in services {
            let table = old.remove(&name).map(|s| s.table).unwrap_or_default();
            inner.services.insert(name, Service { policy, table });
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
        let existing = svc.table.get(id);
        match (existing.map(|(l, _)| l.hold()), hold) {
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
            (None, _) if svc.table.len() >= svc.policy.max_registrations => {
                return Err(RegistryError::Full {
                    service: service.to_string(),
                    max: svc.policy.max_registrations,
                });
            }
            _ => {}
        }
        let mut backend = Backend::new(Address::Ip(ip), port);
        backend.weight = weight;
        backend.id = Some(id.into());
        backend.tags = registration.meta.clone();
        backend.source = shared_registry_source();
        // A lease that lapsed but was not swept yet is a new registration, not a renewal.
        let unchanged =
            existing.is_some_and(|(l, b)| *b == backend && !l.draining() && l.live(now));
        let lease = Lease::new(ip, port, hold, ttl, now);
        let view = view(service, id, &lease, &backend, expected.as_deref(), now);
        let deadline = lease.deadline();
        svc.table.put(id, lease, backend);
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
        let mut guard = self.lock();
        // Split borrows: the service's table and the daemon's environment.
        let inner = &mut *guard;
        let svc = inner
            .services
            .get_mut(service)
            .ok_or_else(|| RegistryError::NotRegistry(service.to_string()))?;
        let unknown = || RegistryError::UnknownLease {
            service: service.to_string(),
            id: id.to_string(),
        };
        let lease = svc.table.lease_mut(id).ok_or_else(unknown)?;
        if lease.hold() != Hold::Lease {
            return Err(RegistryError::Conflict {
                id: id.to_string(),
                held: "an open connection",
            });
        }
        if lease.draining() || !lease.live(now) {
            // Lapsed (or being removed): the client must register it again, with its data.
            return Err(unknown());
        }
        lease.renew(now);
        let (lease, backend) = svc.table.get(id).ok_or_else(unknown)?;
        Ok(view(
            service,
            id,
            lease,
            backend,
            inner.environment.as_deref(),
            now,
        ))
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
        let found = match drain.filter(|d| !d.is_zero()) {
            None => svc.table.remove(id),
            Some(drain) => {
                // A drain outlives the lease and the connection that held it.
                let until = now.checked_add(drain).unwrap_or(now);
                let found = svc.table.drain(id, until);
                if found {
                    lower(&mut inner.sweep_at, Some(until));
                }
                found
            }
        };
        if !found {
            return Err(RegistryError::UnknownLease {
                service: service.to_string(),
                id: id.to_string(),
            });
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
        if svc.table.get(id).map(|(l, _)| l.hold()) != Some(Hold::Connection(connection)) {
            return false;
        }
        svc.table.remove(id);
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
        let environment = inner.environment.as_deref();
        Ok(svc
            .table
            .iter()
            .filter(|(_, l, _)| l.live(now))
            .map(|(id, l, b)| view(service, id, l, b, environment, now))
            .collect())
    }

    /// The live backends of `service` (none when it takes no registrations); a draining one
    /// has weight 0. The set is the store's own, shared: while nothing changes, every call
    /// hands out the same one.
    pub fn backends(&self, service: &str, now: Instant) -> BackendSet {
        let mut inner = self.lock();
        if inner.sweep_at.is_some_and(|t| t <= now) {
            // What lapsed goes before the set is handed out, not only when the sweep's timer
            // fires.
            self.sweep(&mut inner, now);
            inner.sweep_at = earliest(&inner);
        }
        inner
            .services
            .get_mut(service)
            .map(|s| s.table.set())
            .unwrap_or_default()
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
        let environment = inner.environment.as_deref().map(str::to_string);
        for (service, svc) in &inner.services {
            for (id, lease, backend) in svc.table.iter() {
                if lease.draining() {
                    continue;
                }
                registrations.push(Saved {
                    service: service.clone(),
                    id: id.to_string(),
                    address: backend.address.to_string(),
                    port: backend.port,
                    weight: backend.weight,
                    meta: backend.tags.clone(),
                    environment: environment.clone(),
                    ttl_seconds: (lease.hold() == Hold::Lease).then_some(lease.ttl().as_secs()),
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
            if svc.table.sweep(now) {
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

/// Sets `elasticd_registrations{service}`.
fn count(inner: &Inner, service: &str) {
    if let Some(svc) = inner.services.get(service) {
        let n = i64::try_from(svc.table.len()).unwrap_or(i64::MAX);
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
