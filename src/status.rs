//! What the daemon knows about itself, as plain values: the document behind `/api/v1/status`,
//! the status page and `elasticd status`.
//!
//! The daemon keeps one [`Status`] up to date and publishes a copy after every event; readers
//! never lock the event loop. The JSON form is the stable API (`docs/openapi.yaml`): fields are
//! only ever added within `/api/v1`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::Backend;

/// How many applied changes the status keeps.
pub const RECENT_CHANGES: usize = 50;

/// How many endpoints a change record names of those added, and of those removed: 10,000
/// registrations arriving over 50 passes would otherwise keep 10,000 endpoint texts in the
/// status, and put them all on the status page.
pub const CHANGE_ENDPOINTS: usize = 20;

/// A point in time, written as RFC 3339 in UTC (`2026-12-01T23:00:00.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Timestamp(SystemTime::now())
    }

    /// How long ago, or zero for a time in the future.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.0).unwrap_or(Duration::ZERO)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let time: chrono::DateTime<chrono::Utc> = self.0.into();
        s.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let time = chrono::DateTime::parse_from_rfc3339(&text).map_err(serde::de::Error::custom)?;
        Ok(Timestamp(time.with_timezone(&chrono::Utc).into()))
    }
}

/// A failure with the time it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// What went wrong, as logged.
    pub message: String,
    /// When.
    pub at: Timestamp,
}

/// The whole document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// elasticd's version.
    pub version: String,
    /// When the daemon started.
    pub started_at: Timestamp,
    /// The config file and its last load.
    pub config: ConfigStatus,
    /// Per service, in config order.
    pub services: Vec<ServiceStatus>,
    /// Per frontend, in config order.
    pub frontends: Vec<FrontendStatus>,
    /// Per output, in config order.
    pub outputs: Vec<OutputStatus>,
    /// The last [`RECENT_CHANGES`] applied changes, newest first.
    pub changes: VecDeque<Change>,
    /// Fleet mode: each shared locator's election and data (empty without `cluster:`).
    #[serde(default)]
    pub fleet: Vec<FleetStatus>,
}

/// One shared locator in fleet mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// The service it works for.
    pub service: String,
    /// `INDEX:KIND`.
    pub locator: String,
    /// Its directory in etcd.
    pub key: String,
    /// `leader`, `follower`, `electing` or `fallback` (asking the locator itself).
    pub role: String,
    /// Who leads it, when known.
    pub leader: Option<String>,
    /// The revision of the set in use.
    pub revision: Option<u64>,
    /// Why the fleet data can't be trusted now (etcd unreachable, no leader), if so.
    pub degraded: Option<String>,
    /// How long the data has gone unconfirmed (0 while etcd is healthy).
    pub data_age_seconds: f64,
}

/// The config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// Its path.
    pub path: String,
    /// When it was last loaded successfully.
    pub loaded_at: Timestamp,
    /// Why the last SIGHUP could not use the file (the old config still runs), if it failed.
    pub last_reload_error: Option<Failure>,
}

/// One service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// How often it is located, in seconds (a cron schedule's typical period).
    pub refresh_seconds: f64,
    /// Whether it has a good set; until it has, its outputs are left as they are.
    pub has_good_set: bool,
    /// The last good set (sorted, no repeats); shared, so that publishing a status is cheap.
    pub backends: Arc<Vec<Backend>>,
    /// When the set last changed.
    pub changed_at: Option<Timestamp>,
    /// When the locators last answered with a set the guard accepted.
    pub last_success_at: Option<Timestamp>,
    /// The last failure (locators or guard), cleared by the next success.
    pub last_error: Option<Failure>,
    /// Locate attempts that failed in a row.
    pub consecutive_failures: u32,
    /// When the next locate is due (schedule or backoff, whichever is later).
    pub next_refresh_at: Option<Timestamp>,
    /// Each locator's own record.
    pub locators: Vec<LocatorStatus>,
    /// The guard's last verdict.
    pub guard: GuardStatus,
    /// The health checks, for a service with `health:` (each backend has `healthy` then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
}

/// The health checks of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// The probe kind (`http`, `tcp`).
    pub probe: String,
    /// Backends passing their checks.
    pub healthy: usize,
    /// Backends failing them (or not yet passed, for new ones).
    pub unhealthy: usize,
    /// Whether unhealthy backends are kept in because too many failed.
    pub fail_open: bool,
    /// Why, with numbers, while failing open.
    pub fail_open_reason: Option<String>,
    /// Why each unhealthy backend's last probe failed.
    pub failing: Vec<ProbeFailure>,
}

/// The last failed probe of an unhealthy backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeFailure {
    /// `address:port`.
    pub backend: String,
    /// What the probe saw, or `not checked yet`.
    pub reason: String,
}

/// One locator of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocatorStatus {
    /// `INDEX:KIND` (`0:ec2`), as in the metrics' `locator` label.
    pub id: String,
    /// What it asks (`ec2 in eu-west-1 filters ...`).
    pub describe: String,
    /// When it last answered.
    pub last_success_at: Option<Timestamp>,
    /// How many backends it returned then.
    pub last_count: usize,
    /// How long its last run took, in seconds.
    pub last_duration_seconds: f64,
    /// Its last failure, cleared by its next success.
    pub last_error: Option<Failure>,
    /// Runs that failed in a row.
    pub consecutive_failures: u32,
}

/// The guard of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardStatus {
    /// Whether the last answer was refused (the last good set is used instead).
    pub holding: bool,
    /// Why, with numbers, when it holds.
    pub reason: Option<String>,
    /// Answers refused since the daemon started.
    pub held_total: u64,
}

/// One frontend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrontendStatus {
    /// Its name.
    pub name: String,
    /// How it is reloaded (`signal`, `command`, `haproxy_runtime`, `varnish`, `master_socket`,
    /// `exec`), or `none`.
    pub reload_method: String,
    /// The last check of its files.
    pub last_check: Option<Outcome>,
    /// The last reload (or in-place update).
    pub last_reload: Option<Outcome>,
    /// Files changed whose reload has not succeeded yet.
    pub reload_owed: bool,
    /// Failed attempts in a row; retries back off.
    pub consecutive_failures: u32,
    /// When the next retry is due, while failing.
    pub retry_at: Option<Timestamp>,
}

/// The result of a check or reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Whether it worked.
    pub ok: bool,
    /// When.
    pub at: Timestamp,
    /// What happened (`reloaded`, `updated in place`, or the error).
    pub message: String,
}

/// One output file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputStatus {
    /// The file.
    pub path: String,
    /// The frontend it belongs to, if any.
    pub frontend: Option<String>,
    /// The services its template reads.
    pub services: Vec<String>,
    /// SHA-256 of the file as last written or found, hex.
    pub sha256: Option<String>,
    /// When elasticd last wrote it.
    pub written_at: Option<Timestamp>,
    /// What the last apply did: `written`, `unchanged`, `skipped`, `not_applied`, `failed`.
    pub last_result: Option<String>,
}

/// One applied change of a service's set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// When it was applied.
    pub at: Timestamp,
    /// The service.
    pub service: String,
    /// Endpoints added (`10.0.0.3:80`), the first [`CHANGE_ENDPOINTS`] of them.
    pub added: Vec<String>,
    /// Endpoints removed, the first [`CHANGE_ENDPOINTS`] of them.
    pub removed: Vec<String>,
    /// How many were added in all.
    #[serde(default)]
    pub added_count: usize,
    /// How many were removed in all.
    #[serde(default)]
    pub removed_count: usize,
    /// The set's size after it.
    pub backends: usize,
}

/// Why the daemon is not ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotReady {
    /// `service`, `frontend` or `fleet`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// `no_data`, `stale`, `reload_owed`, `check_failing` or `fleet_degraded`.
    pub reason: String,
    /// In words.
    pub message: String,
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    /// True when nothing is listed in `problems`.
    pub ready: bool,
    /// Everything that keeps it from being ready.
    pub problems: Vec<NotReady>,
}

/// Data older than this many refresh periods is stale.
pub const STALE_AFTER_PERIODS: u32 = 3;

impl Status {
    /// Ready when every service has a good set no older than [`STALE_AFTER_PERIODS`] refreshes
    /// and every frontend's files are checked and applied.
    pub fn readiness(&self, now: SystemTime) -> Readiness {
        let mut problems = Vec::new();
        for s in &self.services {
            let problem = |reason: &str, message: String| NotReady {
                kind: "service".into(),
                name: s.name.clone(),
                reason: reason.into(),
                message,
            };
            if !s.has_good_set {
                let why = s
                    .last_error
                    .as_ref()
                    .map_or("no answer yet".to_string(), |e| e.message.clone());
                problems.push(problem("no_data", format!("no good backend set: {why}")));
                continue;
            }
            let limit = Duration::from_secs_f64(s.refresh_seconds.max(0.0))
                .saturating_mul(STALE_AFTER_PERIODS);
            let age = s.last_success_at.map_or(Duration::MAX, |t| t.age(now));
            if age > limit {
                problems.push(problem(
                    "stale",
                    format!(
                        "the last good answer is {} old, more than {STALE_AFTER_PERIODS} refresh periods",
                        humantime::format_duration(Duration::from_secs(age.as_secs()))
                    ),
                ));
            }
        }
        for f in &self.frontends {
            let problem = |reason: &str, message: String| NotReady {
                kind: "frontend".into(),
                name: f.name.clone(),
                reason: reason.into(),
                message,
            };
            if let Some(check) = f.last_check.as_ref().filter(|c| !c.ok) {
                problems.push(problem("check_failing", check.message.clone()));
            } else if f.reload_owed {
                let why = f
                    .last_reload
                    .as_ref()
                    .filter(|r| !r.ok)
                    .map_or("not reloaded yet".to_string(), |r| r.message.clone());
                problems.push(problem("reload_owed", why));
            }
        }
        for f in self.fleet.iter() {
            if let Some(why) = &f.degraded {
                problems.push(NotReady {
                    kind: "fleet".into(),
                    name: format!("{}/{}", f.service, f.locator),
                    reason: "fleet_degraded".into(),
                    message: why.clone(),
                });
            }
        }
        Readiness {
            ready: problems.is_empty(),
            problems,
        }
    }

    /// Records an applied change, dropping the oldest beyond [`RECENT_CHANGES`].
    pub fn push_change(&mut self, change: Change) {
        self.changes.push_front(change);
        self.changes.truncate(RECENT_CHANGES);
    }
}

#[cfg(test)]
impl ServiceStatus {
    /// A service with a good, empty set, just refreshed, nothing wrong: unit tests start here.
    pub(crate) fn sample(name: &str) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            refresh_seconds: 10.0,
            has_good_set: true,
            backends: Arc::default(),
            changed_at: None,
            last_success_at: Some(Timestamp::now()),
            last_error: None,
            consecutive_failures: 0,
            next_refresh_at: None,
            locators: Vec::new(),
            guard: GuardStatus::default(),
            health: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(services: Vec<ServiceStatus>) -> Status {
        Status {
            version: "0".into(),
            started_at: Timestamp::now(),
            config: ConfigStatus {
                path: "c.yaml".into(),
                loaded_at: Timestamp::now(),
                last_reload_error: None,
            },
            services,
            frontends: Vec::new(),
            outputs: Vec::new(),
            changes: VecDeque::new(),
            fleet: Vec::new(),
        }
    }

    #[test]
    fn ready_until_data_is_three_periods_old() {
        let now = SystemTime::now();
        let mut s = ServiceStatus::sample("web");
        s.last_success_at = Some(Timestamp(now - Duration::from_secs(29)));
        assert!(status(vec![s.clone()]).readiness(now).ready);
        s.last_success_at = Some(Timestamp(now - Duration::from_secs(31)));
        let r = status(vec![s]).readiness(now);
        assert!(!r.ready);
        assert_eq!(r.problems[0].reason, "stale");
    }

    #[test]
    fn no_data_names_the_last_error() {
        let mut s = ServiceStatus::sample("web");
        s.has_good_set = false;
        s.last_error = Some(Failure {
            message: "file missing".into(),
            at: Timestamp::now(),
        });
        let r = status(vec![s]).readiness(SystemTime::now());
        assert_eq!(r.problems[0].reason, "no_data");
        assert!(r.problems[0].message.contains("file missing"));
    }

    #[test]
    fn timestamps_round_trip_as_rfc3339() {
        let t = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn changes_are_bounded() {
        let mut st = status(Vec::new());
        for i in 0..(RECENT_CHANGES + 5) {
            st.push_change(Change {
                at: Timestamp::now(),
                service: format!("s{i}"),
                added: Vec::new(),
                removed: Vec::new(),
                added_count: 0,
                removed_count: 0,
                backends: 0,
            });
        }
        assert_eq!(st.changes.len(), RECENT_CHANGES);
        assert_eq!(st.changes[0].service, format!("s{}", RECENT_CHANGES + 4));
    }
}
