//! The probe scheduler: one tokio task per probed backend (no thread), all of them sharing one
//! semaphore that bounds the probes running at once, each probe under its timeout. Between
//! probes a backend may keep its last connection open (see [`super::http`]); a second budget,
//! from the open-file limit, bounds those. A backend is probed only while it is in the current
//! set of a service with `health:`; its task ends when it leaves the set or the service's
//! config goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{HealthConfig, Initial, Session, Startup, Target, Unhealthy};
use crate::backend::{Address, Backend};
use crate::metrics::{BackendLabels, HealthTransitionLabels, metrics};

/// Probes running at once across all services, at most: one socket each.
pub const MAX_CONCURRENT_PROBES: usize = 256;

/// Connections kept open between probes across all services, at most, whatever the open-file
/// limit allows.
pub const MAX_KEPT_CONNECTIONS: usize = 100_000;

/// How many connections may stay open between probes: half the open-file limit, less what the
/// running probes and the rest of the daemon (files, the server, child processes) may need.
/// Backends past the budget connect anew for each probe.
pub fn kept_connection_budget() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct passed and nothing else.
    let soft = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX),
        _ => 1024,
    };
    (soft / 2)
        .saturating_sub(MAX_CONCURRENT_PROBES)
        .min(MAX_KEPT_CONNECTIONS)
}

type Key = (Address, u16);

/// What is known about one backend of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// Whether it is used.
    pub healthy: bool,
    /// Probes passed in a row.
    pub passes: u32,
    /// Probes failed in a row.
    pub fails: u32,
    /// Whether any probe has run yet.
    pub probed: bool,
    /// Why the last probe failed, if it did.
    pub last_error: Option<String>,
}

/// A backend changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// The service it belongs to.
    pub service: String,
    /// Its `address:port`.
    pub backend: String,
    /// Its new state.
    pub healthy: bool,
    /// Why the last probe failed, when it went unhealthy.
    pub reason: Option<String>,
}

struct Shared {
    /// Where the probe ticks count from (see [`on_tick`]).
    epoch: Instant,
    semaphore: Semaphore,
    kept: Arc<Semaphore>,
    states: Mutex<HashMap<String, HashMap<Key, TargetHealth>>>,
    events: mpsc::UnboundedSender<HealthEvent>,
}

struct ServiceProbes {
    config: Arc<HealthConfig>,
    tasks: HashMap<Key, AbortHandle>,
}

/// The probe scheduler of a daemon, or the one-shot prober of `render --health`.
pub struct Checker {
    shared: Arc<Shared>,
    services: HashMap<String, ServiceProbes>,
    events: Option<mpsc::UnboundedReceiver<HealthEvent>>,
    /// Whether probe loops run (the daemon); otherwise only [`Checker::probe_once`] probes.
    running: bool,
    /// Services that have had a set: the first set of the others is their start-up round.
    seen: std::collections::HashSet<String>,
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}

impl Checker {
    /// A checker with no targets; its loops run only after [`Checker::start`].
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Checker {
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                semaphore: Semaphore::new(MAX_CONCURRENT_PROBES),
                kept: Arc::new(Semaphore::new(kept_connection_budget())),
                states: Mutex::new(HashMap::new()),
                events: tx,
            }),
            services: HashMap::new(),
            events: Some(rx),
            running: false,
            seen: Default::default(),
        }
    }

    /// Makes targets given from now on be probed on their schedule (must run inside tokio);
    /// returns the transitions, once.
    pub fn start(&mut self) -> Option<mpsc::UnboundedReceiver<HealthEvent>> {
        self.running = true;
        self.events.take()
    }

    /// Makes `backends` the probed set of `service` under `config` (`None`: no probes). Backends
    /// that stay keep their state and their task; a changed config restarts the tasks but keeps
    /// each backend's state.
    pub fn set_targets(
        &mut self,
        service: &str,
        config: Option<&HealthConfig>,
        backends: &[Backend],
    ) {
        let Some(config) = config else {
            self.remove_service(service);
            return;
        };
        let startup = self.seen.insert(service.to_string());
        let entry = self
            .services
            .entry(service.to_string())
            .or_insert_with(|| ServiceProbes {
                config: Arc::new(config.clone()),
                tasks: HashMap::new(),
            });
        if *entry.config != *config {
            for (_, task) in entry.tasks.drain() {
                task.abort();
            }
            entry.config = Arc::new(config.clone());
        }
        let wanted: HashMap<Key, &Backend> = backends.iter().map(|b| (key(b), b)).collect();
        entry.tasks.retain(|k, task| {
            let keep = wanted.contains_key(k);
            if !keep {
                task.abort();
            }
            keep
        });
        let mut states = self.shared.lock();
        let service_states = states.entry(service.to_string()).or_default();
        service_states.retain(|k, _| {
            let keep = wanted.contains_key(k);
            if !keep {
                metrics().backend_up.remove(&labels(service, k));
            }
            keep
        });
        for (k, backend) in &wanted {
            if !service_states.contains_key(k) {
                let healthy = config.initial == Initial::Healthy;
                metrics()
                    .backend_up
                    .get_or_create(&labels(service, k))
                    .set(i64::from(healthy));
                service_states.insert(
                    k.clone(),
                    TargetHealth {
                        healthy,
                        passes: 0,
                        fails: 0,
                        probed: false,
                        last_error: None,
                    },
                );
            }
            if self.running && !entry.tasks.contains_key(k) {
                let decisive = startup && config.startup == Startup::Decisive;
                let target = config.target(&backend.address, backend.port);
                let task = tokio::spawn(probe_loop(
                    Arc::clone(&self.shared),
                    service.to_string(),
                    Arc::clone(&entry.config),
                    k.clone(),
                    target,
                    decisive,
                ));
                entry.tasks.insert(k.clone(), task.abort_handle());
            }
        }
    }

    /// Stops probing for `service` and forgets its states.
    pub fn remove_service(&mut self, service: &str) {
        if let Some(probes) = self.services.remove(service) {
            for (_, task) in probes.tasks {
                task.abort();
            }
        }
        if let Some(states) = self.shared.lock().remove(service) {
            for k in states.keys() {
                metrics().backend_up.remove(&labels(service, k));
            }
        }
    }

    /// Keeps only the services `keep` says yes to.
    pub fn retain_services(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self
            .shared
            .lock()
            .keys()
            .filter(|s| !keep(s))
            .cloned()
            .collect();
        for service in gone {
            self.remove_service(&service);
        }
    }

    /// The state of one backend of `service`, if it is probed.
    pub fn health(&self, service: &str, backend: &Backend) -> Option<TargetHealth> {
        self.shared.lock().get(service)?.get(&key(backend)).cloned()
    }

    /// Probes every backend of `backends` once, deciding at once (rise and fall of 1): for
    /// `render --health` and `locate --health`.
    pub async fn probe_once(&mut self, service: &str, config: &HealthConfig, backends: &[Backend]) {
        self.set_targets(service, Some(config), backends);
        let results = probe_once(config, backends).await;
        let mut states = self.shared.lock();
        let service_states = states.entry(service.to_string()).or_default();
        for (backend, result) in backends.iter().zip(results) {
            let state = service_states.entry(key(backend)).or_insert(TargetHealth {
                healthy: false,
                passes: 0,
                fails: 0,
                probed: false,
                last_error: None,
            });
            state.probed = true;
            state.healthy = result.is_ok();
            state.last_error = result.err();
            metrics()
                .backend_up
                .get_or_create(&labels(service, &key(backend)))
                .set(i64::from(state.healthy));
        }
    }

    /// `set` filtered (or marked) by health; see [`filter`].
    pub fn filter(
        &self,
        service: &str,
        config: &HealthConfig,
        min_backends: usize,
        set: &[Backend],
    ) -> Filtered {
        let states = self.shared.lock();
        let service_states = states.get(service);
        let initial = config.initial == Initial::Healthy;
        let state = |b: &Backend| service_states.and_then(|s| s.get(&key(b)));
        let mut filtered = filter(config, min_backends, set, |b| {
            state(b).map_or(initial, |s| s.healthy)
        });
        filtered.unchecked = set
            .iter()
            .filter(|b| state(b).is_none_or(|s| !s.healthy && !s.probed))
            .count();
        if filtered.unchecked > 0
            && let Some(reason) = &mut filtered.fail_open
        {
            reason.push_str(&format!(", {} not checked yet", filtered.unchecked));
        }
        filtered
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for probes in self.services.values() {
            for task in probes.tasks.values() {
                task.abort();
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<Key, TargetHealth>>> {
        // A panic while holding the lock leaves plain counters behind; they stay usable.
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one probe's result; returns whether the backend is between states now.
    fn record(
        &self,
        service: &str,
        k: &Key,
        config: &HealthConfig,
        result: Result<(), String>,
        decisive: bool,
    ) -> bool {
        let mut states = self.lock();
        let Some(state) = states.get_mut(service).and_then(|s| s.get_mut(k)) else {
            return false;
        };
        state.probed = true;
        let was = state.healthy;
        match result {
            Ok(()) => {
                state.fails = 0;
                state.passes = state.passes.saturating_add(1);
                state.last_error = None;
                if !was && (decisive || state.passes >= config.rise) {
                    state.healthy = true;
                }
            }
            Err(reason) => {
                state.passes = 0;
                state.fails = state.fails.saturating_add(1);
                state.last_error = Some(reason);
                if was && (decisive || state.fails >= config.fall) {
                    state.healthy = false;
                }
            }
        }
        let between = if state.healthy {
            state.fails > 0
        } else {
            state.passes > 0
        };
        if state.healthy != was {
            let m = metrics();
            m.backend_up
                .get_or_create(&labels(service, k))
                .set(i64::from(state.healthy));
            m.health_transitions
                .get_or_create(&HealthTransitionLabels {
                    service: service.to_string(),
                    to: if state.healthy {
                        "healthy"
                    } else {
                        "unhealthy"
                    }
                    .to_string(),
                })
                .inc();
            let event = HealthEvent {
                service: service.to_string(),
                backend: endpoint(k),
                healthy: state.healthy,
                reason: state.last_error.clone(),
            };
            // The receiver is gone only when the daemon stops.
            let _ = self.events.send(event);
        }
        between
    }
}

async fn probe_loop(
    shared: Arc<Shared>,
    service: String,
    config: Arc<HealthConfig>,
    k: Key,
    target: Target,
    decisive: bool,
) {
    // A random start spreads the probes of a large set over the whole interval.
    let start = after(config.interval.mul_f64(fastrand::f64()));
    tokio::time::sleep_until(on_tick(shared.epoch, start, config.interval)).await;
    let mut decisive = decisive;
    let mut session = Session::new(Some(Arc::clone(&shared.kept)));
    loop {
        let result = {
            // The wait for a permit does not count against the probe's timeout.
            let Ok(_permit) = shared.semaphore.acquire().await else {
                return;
            };
            config.probe(&target, &mut session).await
        };
        let between = shared.record(&service, &k, &config, result, decisive);
        decisive = false;
        let wait = if between {
            config.transition_interval
        } else {
            config.interval
        };
        let next = after(jittered(wait, config.jitter));
        tokio::time::sleep_until(on_tick(shared.epoch, next, wait)).await;
    }
}

/// `at`, moved later to the next tick of 1/100 of `wait` (1 ms to 20 ms) counted from `epoch`.
/// Probes that fall due on the same tick start on one wake-up of the daemon rather than one
/// each: with 1,000 backends every 2 s, 50 wake-ups a second instead of 500, and a wake-up
/// (the switch into the daemon and out again) costs more than the probes it starts.
pub(super) fn on_tick(epoch: Instant, at: Instant, wait: Duration) -> Instant {
    let tick = (wait / 100).clamp(Duration::from_millis(1), Duration::from_millis(20));
    let since = at.saturating_duration_since(epoch).as_nanos();
    let tick_nanos = tick.as_nanos().max(1);
    let ticks = since.div_ceil(tick_nanos);
    u64::try_from(ticks.saturating_mul(tick_nanos))
        .ok()
        .and_then(|nanos| epoch.checked_add(Duration::from_nanos(nanos)))
        // Past some 584 years of uptime: no tick, no harm.
        .unwrap_or(at)
}

/// Now plus `wait`, or as far as the clock goes.
fn after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

/// `wait` moved by up to `jitter` of itself, either way, so that probes started together drift
/// apart.
fn jittered(wait: Duration, jitter: f64) -> Duration {
    let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
    wait.mul_f64(factor.max(0.0))
}

/// Probes each backend once, all at once within [`MAX_CONCURRENT_PROBES`]; results in order.
pub async fn probe_once(config: &HealthConfig, backends: &[Backend]) -> Vec<Result<(), String>> {
    let semaphore = Semaphore::new(MAX_CONCURRENT_PROBES);
    join_all(backends.iter().map(|b| {
        let semaphore = &semaphore;
        async move {
            let Ok(_permit) = semaphore.acquire().await else {
                return Err("probing stopped".to_string());
            };
            config
                .probe(&config.target(&b.address, b.port), &mut Session::default())
                .await
        }
    }))
    .await
}

/// A service's set as the frontends get it.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    /// The backends to render, each with `healthy` set.
    pub backends: Vec<Backend>,
    /// How many of the set are unhealthy.
    pub unhealthy: usize,
    /// How many of those have not been probed yet (filled in by [`Checker::filter`]).
    pub unchecked: usize,
    /// Why unhealthy backends are kept in, when they are.
    pub fail_open: Option<String>,
}

/// Filters `set` by `healthy`: unhealthy backends are left out (`unhealthy: remove`) or kept
/// with `healthy: false` (`mark`), unless that would take out more than `max_unhealthy_ratio`
/// of the set or leave fewer than `min_backends`; then every backend is rendered as healthy
/// (fail open) and `fail_open` says why.
pub fn filter(
    config: &HealthConfig,
    min_backends: usize,
    set: &[Backend],
    healthy: impl Fn(&Backend) -> bool,
) -> Filtered {
    let marked: Vec<Backend> = set
        .iter()
        .map(|b| Backend {
            healthy: Some(healthy(b)),
            ..b.clone()
        })
        .collect();
    let unhealthy = marked.iter().filter(|b| b.healthy == Some(false)).count();
    let left = set.len().saturating_sub(unhealthy);
    let share = if set.is_empty() {
        0.0
    } else {
        unhealthy as f64 / set.len() as f64
    };
    let fail_open = if unhealthy == 0 {
        None
    } else if share > config.max_unhealthy_ratio {
        Some(format!(
            "{unhealthy} of {} unhealthy ({:.0}%), more than max_unhealthy_ratio {}",
            crate::value::count(set.len(), "backend"),
            share * 100.0,
            config.max_unhealthy_ratio
        ))
    } else if left < min_backends {
        Some(format!(
            "{left} healthy of {}, fewer than min_backends {min_backends}",
            crate::value::count(set.len(), "backend"),
        ))
    } else {
        None
    };
    let backends = match (&fail_open, config.unhealthy) {
        (Some(_), _) => marked
            .into_iter()
            .map(|b| Backend {
                healthy: Some(true),
                ..b
            })
            .collect(),
        (None, Unhealthy::Mark) => marked,
        (None, Unhealthy::Remove) => marked
            .into_iter()
            .filter(|b| b.healthy == Some(true))
            .collect(),
    };
    Filtered {
        backends,
        unhealthy,
        unchecked: 0,
        fail_open,
    }
}

fn key(b: &Backend) -> Key {
    (b.address.clone(), b.port)
}

fn endpoint(k: &Key) -> String {
    Backend::new(k.0.clone(), k.1).endpoint()
}

fn labels(service: &str, k: &Key) -> BackendLabels {
    BackendLabels {
        service: service.to_string(),
        backend: endpoint(k),
    }
}
