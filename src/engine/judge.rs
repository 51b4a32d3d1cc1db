//! The guard: whether a service's new answer is used, or its last good set is kept.

use std::sync::Arc;

use super::BackendSet;
use crate::backend::{self, Backend};
use crate::config::GuardConfig;
use crate::locator::LocateError;
use crate::metrics::metrics;

use super::report::{PassProblem, ServiceReport, ServiceStatus};

/// The limit that made the guard hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardLimit {
    /// Fewer backends than `min_backends`.
    MinBackends,
    /// More of the last good set removed than `max_removed_ratio` allows.
    MaxRemovedRatio,
}

impl GuardLimit {
    /// The config key of the limit, as the `reason` label of `elasticd_guard_held_total`.
    pub fn key(self) -> &'static str {
        match self {
            GuardLimit::MinBackends => "min_backends",
            GuardLimit::MaxRemovedRatio => "max_removed_ratio",
        }
    }
}

/// Why the guard refused an answer: the limit, and a sentence with the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardVerdict {
    /// The limit that held.
    pub limit: GuardLimit,
    /// What the answer had against the limit, for people.
    pub message: String,
}

/// Why the guard refuses `new`, if it does.
pub fn guard_verdict(
    guard: &GuardConfig,
    last: Option<&[Backend]>,
    new: &[Backend],
) -> Option<GuardVerdict> {
    if new.len() < guard.min_backends {
        return Some(GuardVerdict {
            limit: GuardLimit::MinBackends,
            message: format!(
                "locators found {} backend{}, fewer than min_backends {}",
                new.len(),
                if new.len() == 1 { "" } else { "s" },
                guard.min_backends
            ),
        });
    }
    if let (Some(ratio), Some(last)) = (guard.max_removed_ratio, last)
        && !last.is_empty()
    {
        let removed = backend::diff(last, new).1.len();
        let share = removed as f64 / last.len() as f64;
        if share > ratio {
            return Some(GuardVerdict {
                limit: GuardLimit::MaxRemovedRatio,
                message: format!(
                    "{removed} of {} would be removed ({:.0}%), more than max_removed_ratio {ratio}",
                    crate::value::count(last.len(), "backend"),
                    share * 100.0
                ),
            });
        }
    }
    None
}

/// The outcome of one service's locate, after the guard.
pub struct Judged {
    /// For the pass report.
    pub report: ServiceReport,
    /// Locator errors or the guard's reason.
    pub problems: Vec<PassProblem>,
    /// The new set when it is accepted (it becomes the last good set).
    pub fresh: Option<BackendSet>,
}

/// Applies the guard to one service's locate result, against its last good set.
pub fn judge_service(
    name: &str,
    guard: &GuardConfig,
    result: Result<BackendSet, Vec<LocateError>>,
    last: Option<&BackendSet>,
) -> Judged {
    let mut problems = Vec::new();
    let kept_outcome = || match last {
        Some(l) => format!(
            "keeping the last good set of {}",
            crate::value::count(l.len(), "backend")
        ),
        None => "no good set is known yet, so its outputs are left as they are".to_string(),
    };
    // The same set as before (most answers of a steady service): no guard and no diff to work
    // out, so an unchanged answer costs one comparison, of pointers when the locators gave the
    // set they gave last time.
    let same = matches!((&result, last), (Ok(new), Some(last)) if Arc::ptr_eq(new, last) || **new == **last);
    let last = last.map(|l| l.as_slice());
    let fresh = match result {
        Ok(backends) if same => Some(backends),
        Ok(backends) => match guard_verdict(guard, last, &backends) {
            None => Some(backends),
            Some(verdict) => {
                metrics().guard_held(name, verdict.limit.key());
                problems.push(PassProblem::GuardHeld {
                    service: name.to_string(),
                    limit: verdict.limit,
                    reason: verdict.message,
                    outcome: kept_outcome(),
                });
                None
            }
        },
        Err(errors) => {
            problems.extend(errors.into_iter().map(|source| PassProblem::Locate {
                service: name.to_string(),
                source,
            }));
            None
        }
    };
    let (status, count, added, removed) = match (&fresh, last) {
        (Some(set), _) if same => (ServiceStatus::Fresh, set.len(), 0, 0),
        (Some(set), _) => {
            let (added, removed) = backend::diff(last.unwrap_or_default(), set);
            (ServiceStatus::Fresh, set.len(), added.len(), removed.len())
        }
        (None, Some(last)) => (ServiceStatus::KeptLastGood, last.len(), 0, 0),
        (None, None) => (ServiceStatus::NoData, 0, 0, 0),
    };
    Judged {
        report: ServiceReport {
            name: name.to_string(),
            status,
            backends: count,
            added,
            removed,
        },
        problems,
        fresh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(endpoints: &[&str]) -> Vec<Backend> {
        endpoints
            .iter()
            .map(|e| {
                let (a, p) = backend::parse_target(e).unwrap();
                Backend::new(a, p.unwrap())
            })
            .collect()
    }

    #[test]
    fn guard_holds_below_min_backends() {
        let guard = GuardConfig::default();
        let verdict = guard_verdict(&guard, None, &[]).unwrap();
        assert_eq!(verdict.limit, GuardLimit::MinBackends);
        assert!(
            verdict.message.contains("fewer than min_backends 1"),
            "{verdict:?}"
        );
        assert!(guard_verdict(&guard, None, &set(&["10.0.0.1:80"])).is_none());
    }

    #[test]
    fn guard_holds_when_too_many_are_removed() {
        let guard = GuardConfig {
            min_backends: 1,
            max_removed_ratio: Some(0.5),
        };
        let last = set(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]);
        // Half removed is allowed; more is not.
        assert!(
            guard_verdict(&guard, Some(&last), &set(&["10.0.0.1:80", "10.0.0.2:80"])).is_none()
        );
        let verdict = guard_verdict(&guard, Some(&last), &set(&["10.0.0.1:80"])).unwrap();
        assert_eq!(verdict.limit.key(), "max_removed_ratio");
        assert!(verdict.message.contains("3 of 4"), "{verdict:?}");
        // Additions never trip it.
        assert!(guard_verdict(&guard, Some(&last), &set(&["10.0.0.9:80"])).is_some());
        assert!(guard_verdict(&guard, None, &set(&["10.0.0.9:80"])).is_none());
    }
}
