//! Services with their locators built: made once per config load and asked on every refresh.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use futures_util::future::join_all;

use super::BackendSet;
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
    /// The last answer and the locators' sets it was made from, so that the same sets (a
    /// locator that keeps its answer returns the very same) give the same answer without
    /// merging or normalizing again. Weak: this holds no set alive.
    last: Mutex<Option<Merged>>,
}

/// An answer of the service and the sets of its locators it came from.
struct Merged {
    from: Vec<Weak<Vec<Backend>>>,
    answer: Weak<Vec<Backend>>,
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
            last: Mutex::new(None),
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
        self.locate_set().await.map(Arc::unwrap_or_clone)
    }

    /// [`BuiltService::locate`] as a shared set: while the locators answer with the sets they
    /// gave last time, this is the answer it gave last time, the same allocation.
    pub async fn locate_set(&self) -> Result<BackendSet, Vec<LocateError>> {
        let timeout = self.config.timeout.0;
        let ctx = &self.ctx;
        let results = join_all(self.locators.iter().map(|l| async move {
            let started = Instant::now();
            // On expiry the locate future is dropped, which kills a plugin's process group.
            let result = tokio::time::timeout(timeout, l.locate_set(ctx))
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
        let mut sets = Vec::new();
        let mut errors = Vec::new();
        for (result, _) in results {
            match result {
                Ok(found) => sets.push(found),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(merged) = last.as_ref()
            && merged.from.len() == sets.len()
            && merged
                .from
                .iter()
                .zip(&sets)
                .all(|(was, now)| std::ptr::eq(was.as_ptr(), Arc::as_ptr(now)))
            && let Some(answer) = merged.answer.upgrade()
        {
            return Ok(answer);
        }
        let answer = merge(&sets);
        *last = Some(Merged {
            from: sets.iter().map(Arc::downgrade).collect(),
            answer: Arc::downgrade(&answer),
        });
        Ok(answer)
    }

    /// Each locator's last run (for the status API).
    pub fn locator_records(&self) -> Vec<LocatorStatus> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn record(&self, results: &[(Result<BackendSet, LocateError>, std::time::Duration)]) {
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

/// The locators' sets as one, sorted and free of repeats; a single set that already is, is
/// taken as it is.
fn merge(sets: &[BackendSet]) -> BackendSet {
    if let [set] = sets
        && set.windows(2).all(|w| w[0].cmp_key(&w[1]).is_lt())
    {
        return Arc::clone(set);
    }
    let mut backends = Vec::with_capacity(sets.iter().map(|s| s.len()).sum());
    for set in sets {
        backends.extend(set.iter().cloned());
    }
    backend::normalize(&mut backends);
    Arc::new(backends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(targets: &[&str]) -> BackendSet {
        Arc::new(
            targets
                .iter()
                .map(|t| {
                    let (address, port) = backend::parse_target(t).unwrap();
                    Backend::new(address, port.unwrap())
                })
                .collect(),
        )
    }

    fn endpoints(set: &BackendSet) -> Vec<String> {
        set.iter().map(Backend::endpoint).collect()
    }

    #[test]
    fn a_single_normalized_set_is_the_answer_itself_and_others_are_normalized() {
        let sorted = set(&["10.0.0.1:80", "10.0.0.2:80"]);
        assert!(Arc::ptr_eq(&merge(std::slice::from_ref(&sorted)), &sorted));
        let repeated = set(&["10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80"]);
        let merged = merge(std::slice::from_ref(&repeated));
        assert!(!Arc::ptr_eq(&merged, &repeated));
        assert_eq!(endpoints(&merged), ["10.0.0.1:80", "10.0.0.2:80"]);
        let two = merge(&[sorted, set(&["10.0.0.3:80", "10.0.0.1:80"])]);
        assert_eq!(
            endpoints(&two),
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
        );
        assert!(merge(&[]).is_empty());
    }
}
