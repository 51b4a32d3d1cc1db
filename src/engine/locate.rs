//! Services with their locators built: made once per config load and asked on every refresh.

use std::sync::Mutex;
use std::time::Instant;

use futures_util::future::join_all;

use crate::backend::{self, Backend};
use crate::config::{Config, ServiceConfig};
use crate::locator::{LocateContext, LocateError, Locator};
use crate::metrics::{LocatorLabels, metrics, unix_seconds};
use crate::status::{Failure, LocatorStatus, Timestamp};

/// One service with its locators built, as long-lived as the config it came from.
pub struct BuiltService {
    /// The service's settings as loaded (compared on SIGHUP to keep or rebuild it).
    pub config: ServiceConfig,
    locators: Vec<Box<dyn Locator>>,
    ctx: LocateContext,
    /// Each locator's last run, for the status API; its metrics are recorded beside it.
    records: Mutex<Vec<LocatorStatus>>,
}

/// How the status API and the `locator` label name a service's locator: `INDEX:KIND`.
pub(super) fn locator_id(index: usize, kind: &str) -> String {
    format!("{index}:{kind}")
}

impl BuiltService {
    /// Builds the locators of service `name` of `config`.
    pub fn build(config: &Config, name: &str, service: &ServiceConfig) -> Self {
        let ctx = LocateContext {
            service: name.to_string(),
            environment: config.environment.clone(),
            default_port: service.port,
            base_dir: config.base_dir.clone(),
        };
        // In fleet mode a shared locator asks the fleet's leader instead of running here.
        let period = service.refresh.period();
        let locators: Vec<Box<dyn Locator>> = service
            .locators
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let form = service.fleet_forms.get(i);
                crate::fleet::wrap(l.build(), i, l, form, &ctx, period)
            })
            .collect();
        let records = service
            .locators
            .iter()
            .zip(&locators)
            .enumerate()
            .map(|(i, (config, built))| LocatorStatus {
                id: locator_id(i, &config.kind()),
                describe: built.describe(),
                ..LocatorStatus::default()
            })
            .collect();
        BuiltService {
            config: service.clone(),
            locators,
            records: Mutex::new(records),
            ctx,
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.ctx.service
    }

    /// The config's `environment` the locators were built with.
    pub fn environment(&self) -> Option<&str> {
        self.ctx.environment.as_deref()
    }

    /// The config directory the locators were built with.
    pub fn base_dir(&self) -> &std::path::Path {
        &self.ctx.base_dir
    }

    /// Asks every locator at once, each within the service's `timeout`; any failure means the
    /// service has no answer this time. The answer is sorted and free of repeats.
    pub async fn locate(&self) -> Result<Vec<Backend>, Vec<LocateError>> {
        let timeout = self.config.timeout.0;
        let ctx = &self.ctx;
        let results = join_all(self.locators.iter().map(|l| async move {
            let started = Instant::now();
            // On expiry the locate future is dropped, which kills a plugin's process group.
            let result = tokio::time::timeout(timeout, l.locate(ctx))
                .await
                .unwrap_or_else(|_| {
                    Err(LocateError::Timeout {
                        locator: l.describe(),
                        timeout,
                    })
                });
            (result, started.elapsed())
        }))
        .await;
        self.record(&results);
        let mut backends = Vec::new();
        let mut errors = Vec::new();
        for (result, _) in results {
            match result {
                // The first answer is taken as it is: extending an empty list would copy it.
                Ok(found) if backends.is_empty() => backends = found,
                Ok(found) => backends.extend(found),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            backend::normalize(&mut backends);
            Ok(backends)
        } else {
            Err(errors)
        }
    }

    /// Each locator's last run (for the status API).
    pub fn locator_records(&self) -> Vec<LocatorStatus> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn record(&self, results: &[(Result<Vec<Backend>, LocateError>, std::time::Duration)]) {
        let Ok(mut records) = self.records.lock() else {
            return;
        };
        let now = Timestamp::now();
        for (record, (result, took)) in records.iter_mut().zip(results) {
            let labels = LocatorLabels {
                service: self.ctx.service.clone(),
                locator: record.id.clone(),
            };
            let m = metrics();
            m.locate_duration
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
            record.last_duration_seconds = took.as_secs_f64();
            match result {
                Ok(found) => {
                    m.locate_last_success
                        .get_or_create(&labels)
                        .set(unix_seconds(now.0));
                    record.last_success_at = Some(now);
                    record.last_count = found.len();
                    record.last_error = None;
                    record.consecutive_failures = 0;
                }
                Err(e) => {
                    m.locate_failures.get_or_create(&labels).inc();
                    record.last_error = Some(Failure {
                        message: e.to_string(),
                        at: now,
                    });
                    record.consecutive_failures = record.consecutive_failures.saturating_add(1);
                }
            }
        }
    }
}
