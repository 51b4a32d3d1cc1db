//! Health checks in the engine: which backends are probed (each service's last good set), and
//! the sets the frontends get (the last good sets filtered by health, or failing open).

use std::sync::Arc;

use indexmap::IndexMap;
use tokio::sync::mpsc;

use super::Engine;
use crate::backend::Backend;
use crate::health::HealthEvent;
use crate::metrics::{ServiceLabels, metrics};
use crate::status::{HealthStatus, ProbeFailure};

impl Engine {
    /// Starts the probe loops (the daemon; inside tokio) for every service's last good set, and
    /// from then on for every set accepted; returns the transitions, once.
    pub fn start_health(&mut self) -> Option<mpsc::UnboundedReceiver<HealthEvent>> {
        let events = self.health.start();
        self.health_active = true;
        let names: Vec<String> = self.state.last_good.keys().cloned().collect();
        for name in names {
            self.sync_health(&name);
        }
        events
    }

    /// Probes the last good set of every service with `health:` once (rise and fall of 1), for
    /// one-shot runs.
    pub async fn probe_health_once(&mut self) {
        self.health_active = true;
        for (name, service) in &self.services {
            let (Some(config), Some(set)) =
                (&service.config.health, self.state.last_good.get(name))
            else {
                continue;
            };
            self.health.probe_once(name, config, set).await;
        }
    }

    /// Makes the probed set of `name` its last good set (a service without one is left alone:
    /// after a SIGHUP its states wait for its first answer).
    pub(super) fn sync_health(&mut self, name: &str) {
        let Some(set) = self.state.last_good.get(name) else {
            return;
        };
        let config = self
            .services
            .get(name)
            .and_then(|s| s.config.health.as_ref());
        self.health.set_targets(name, config, set);
    }

    /// Forgets the probes of services the config no longer has, or that lost `health:`.
    pub(super) fn retain_health(&mut self) {
        let services = &self.services;
        self.health.retain_services(|name| {
            services
                .get(name)
                .is_some_and(|s| s.config.health.is_some())
        });
    }

    /// The sets to render: each last good set, filtered by health where the service has it
    /// and something probes (a one-shot run without `--health` renders the sets as they are).
    /// Entering and leaving fail-open is logged here, once each.
    pub(super) fn rendered_sets(&mut self) -> IndexMap<String, super::BackendSet> {
        if !self.health_active {
            return self.state.last_good.clone();
        }
        let mut sets = IndexMap::new();
        for (name, set) in &self.state.last_good {
            let Some(service) = self.services.get(name) else {
                sets.insert(name.clone(), Arc::clone(set));
                continue;
            };
            let Some(config) = &service.config.health else {
                sets.insert(name.clone(), Arc::clone(set));
                continue;
            };
            let filtered = self
                .health
                .filter(name, config, service.config.guard.min_backends, set);
            let was = self.fail_open.get(name).cloned().flatten();
            match (&was, &filtered.fail_open) {
                // Before the first probes (start-up, `initial: unhealthy`) this is expected.
                (None, Some(reason)) if filtered.unchecked == filtered.unhealthy => {
                    tracing::info!(
                        service = %name,
                        "health checks fail open: {reason}; keeping every backend in"
                    )
                }
                (None, Some(reason)) => tracing::warn!(
                    service = %name,
                    "health checks fail open: {reason}; keeping every backend in"
                ),
                (Some(_), None) => {
                    tracing::info!(service = %name, "health checks no longer fail open")
                }
                _ => {}
            }
            metrics()
                .health_fail_open
                .get_or_create(&ServiceLabels {
                    service: name.clone(),
                })
                .set(i64::from(filtered.fail_open.is_some()));
            self.fail_open
                .insert(name.clone(), filtered.fail_open.clone());
            // The same backends as the last apply's share its set, so that it is seen unchanged.
            let filtered = match self.rendered.get(name) {
                Some(before) if **before == filtered.backends => Arc::clone(before),
                _ => Arc::new(filtered.backends),
            };
            sets.insert(name.clone(), filtered);
        }
        sets
    }

    /// The last good set of `name` with each backend's health state (for the status API).
    /// A service without `health:` shares its set as it is (no copy).
    pub fn backends_with_health(&self, name: &str) -> Option<super::BackendSet> {
        let set = self.state.last_good.get(name)?;
        let Some(config) = self
            .services
            .get(name)
            .and_then(|s| s.config.health.as_ref())
        else {
            return Some(Arc::clone(set));
        };
        let initial = config.initial == crate::health::Initial::Healthy;
        Some(Arc::new(
            set.iter()
                .map(|b| Backend {
                    healthy: Some(self.health.health(name, b).map_or(initial, |h| h.healthy)),
                    ..b.clone()
                })
                .collect(),
        ))
    }

    /// The health checks of `name` as the status API shows them; `None` without `health:`.
    pub fn health_status(&self, name: &str) -> Option<HealthStatus> {
        let config = self.services.get(name)?.config.health.as_ref()?;
        let set = self
            .state
            .last_good
            .get(name)
            .map(|s| s.as_slice())
            .unwrap_or_default();
        let mut status = HealthStatus {
            probe: config.probe.kind().to_string(),
            ..HealthStatus::default()
        };
        for b in set {
            let state = self.health.health(name, b);
            let healthy = state
                .as_ref()
                .map_or(config.initial == crate::health::Initial::Healthy, |s| {
                    s.healthy
                });
            if healthy {
                status.healthy += 1;
                continue;
            }
            status.unhealthy += 1;
            let reason = match state {
                Some(s) => s.last_error.unwrap_or_else(|| match s.probed {
                    true => format!(
                        "passed {} of {} to rise",
                        s.passes,
                        crate::value::count(config.rise as usize, "check")
                    ),
                    false => "not checked yet".to_string(),
                }),
                None => "not checked yet".to_string(),
            };
            status.failing.push(ProbeFailure {
                backend: b.endpoint(),
                reason,
            });
        }
        let reason = self.fail_open.get(name).cloned().flatten();
        status.fail_open = reason.is_some();
        status.fail_open_reason = reason;
        Some(status)
    }
}
