//! The Prometheus metrics every layer records into, and their text exposition for `/metrics`.
//!
//! One registry per process ([`metrics`]): the engine, the frontends and the AWS call counter
//! record where the event happens, without a handle threaded through every call. Names follow
//! the Prometheus conventions: prefix `elasticd_`, base units (seconds), `_total` on counters.
//! Label values are the config's own names (services, frontends, outputs, locators), so the
//! number of series is bounded by the config, never by what a locator returns.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A float gauge (timestamps, ratios).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Labels `{service}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The service's name in the config.
    pub service: String,
}

/// Labels `{service,locator}`; `locator` is the locator's position and kind (`0:ec2`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocatorLabels {
    /// The service's name in the config.
    pub service: String,
    /// `INDEX:KIND`, stable while the config is.
    pub locator: String,
}

/// Labels `{service,reason}` of a guard that held.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabels {
    /// The service's name in the config.
    pub service: String,
    /// `min_backends` or `max_removed_ratio`.
    pub reason: String,
}

/// Labels `{output,result}` of a render.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenderLabels {
    /// The output's path.
    pub output: String,
    /// `unchanged`, `written`, `failed` or `not_applied`.
    pub result: String,
}

/// Labels `{frontend}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrontendLabels {
    /// The frontend's name in the config.
    pub frontend: String,
}

/// Labels `{frontend,method,result}` of a reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// The frontend's name in the config.
    pub frontend: String,
    /// `signal`, `command`, `runtime_api`, `vcl_swap`, `master_socket` or `plugin`.
    pub method: String,
    /// `success` or `failure`.
    pub result: String,
}

/// Labels `{service,result}` of an `on_change` hook run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    /// The service's name in the config.
    pub service: String,
    /// `success` or `failure`.
    pub result: String,
}

/// Labels `{api,operation,result}` of a cloud API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudLabels {
    /// `ec2` or `autoscaling`.
    pub api: String,
    /// `DescribeInstances`, say.
    pub operation: String,
    /// `success` (HTTP 2xx), `error` (the API answered with an error), `transport_error` (no
    /// answer: connection or TLS failure) or `timeout` (the attempt was cut short).
    pub result: String,
}

/// Labels `{version,features}` of the build.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    features: String,
}

/// Labels `{service,backend}` of a probed backend; `backend` is its `address:port`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The service's name in the config.
    pub service: String,
    /// `address:port`.
    pub backend: String,
}

/// Labels `{service,to}` of a health transition; `to` is `healthy` or `unhealthy`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthTransitionLabels {
    /// The service's name in the config.
    pub service: String,
    /// The new state.
    pub to: String,
}

/// Labels `{result}` of a fleet election: `won` or `lost`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ElectionLabels {
    /// `won` or `lost`.
    pub result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric elasticd exports.
pub struct Metrics {
    /// `elasticd_locate_duration_seconds{service,locator}`.
    pub locate_duration: HistogramFamily<LocatorLabels>,
    /// `elasticd_locate_failures_total{service,locator}`.
    pub locate_failures: Family<LocatorLabels, Counter>,
    /// `elasticd_locate_last_success_timestamp_seconds{service,locator}`.
    pub locate_last_success: Family<LocatorLabels, FloatGauge>,
    /// `elasticd_backends{service}`: the size of the last good set.
    pub backends: Family<ServiceLabels, Gauge>,
    /// `elasticd_guard_held_total{service,reason}`.
    pub guard_held: Family<GuardLabels, Counter>,
    /// `elasticd_renders_total{output,result}`.
    pub renders: Family<RenderLabels, Counter>,
    /// `elasticd_check_failures_total{frontend}`.
    pub check_failures: Family<FrontendLabels, Counter>,
    /// `elasticd_reloads_total{frontend,method,result}`.
    pub reloads: Family<ReloadLabels, Counter>,
    /// `elasticd_last_reload_success{frontend}`: 1 when the last reload worked, 0 when not.
    pub last_reload_success: Family<FrontendLabels, Gauge>,
    /// `elasticd_hook_runs_total{service,result}`.
    pub hook_runs: Family<HookLabels, Counter>,
    /// `elasticd_cloud_api_calls_total{api,operation,result}`.
    pub cloud_api_calls: Family<CloudLabels, Counter>,
    /// `elasticd_registrations{service}`: registrations the push registry holds.
    pub registrations: Family<ServiceLabels, Gauge>,
    /// `elasticd_config_last_reload_success`: 1 when the last config load worked.
    pub config_last_reload_success: Gauge,
    /// `elasticd_config_last_reload_success_timestamp_seconds`.
    pub config_last_reload_success_timestamp: FloatGauge,
    /// `elasticd_backend_up{service,backend}`: 1 while a probed backend is healthy, 0 when not.
    pub backend_up: Family<BackendLabels, Gauge>,
    /// `elasticd_health_transitions_total{service,to}`.
    pub health_transitions: Family<HealthTransitionLabels, Counter>,
    /// `elasticd_health_fail_open{service}`: 1 while unhealthy backends are kept in (fail open).
    pub health_fail_open: Family<ServiceLabels, Gauge>,
    /// `elasticd_ready`: 1 when `/readyz` would answer 200, set on each scrape.
    pub ready: Gauge,
    /// `elasticd_fleet_leader{service,locator}`: 1 while this member leads the shared locator.
    pub fleet_leader: Family<LocatorLabels, Gauge>,
    /// `elasticd_fleet_data_age_seconds{service,locator}`: how long the fleet data has gone
    /// unconfirmed (0 while etcd is healthy).
    pub fleet_data_age: Family<LocatorLabels, FloatGauge>,
    /// `elasticd_fleet_elections_total{result}`.
    pub fleet_elections: Family<ElectionLabels, Counter>,
    /// `elasticd_fleet_watch_restarts_total`: etcd watches started again (disconnect, compaction).
    pub fleet_watch_restarts: Counter,
    registry: Registry,
    before_encode: Mutex<Option<ScrapeHook>>,
}

/// Run before each exposition, to set gauges that depend on the time of the scrape.
pub type ScrapeHook = Box<dyn Fn(&Metrics) + Send + Sync>;

fn locate_histogram() -> Histogram {
    // 5 ms to about 41 s: a file locator to a slow, retried cloud API call.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("elasticd");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                features: FEATURES.join(","),
            })
            .set(1);
        registry.register(
            "build_info",
            "The version and cargo features of this build (value 1)",
            build_info,
        );
        let metrics = Metrics {
            locate_duration: Family::new_with_constructor(locate_histogram),
            locate_failures: Family::default(),
            locate_last_success: Family::default(),
            backends: Family::default(),
            guard_held: Family::default(),
            renders: Family::default(),
            check_failures: Family::default(),
            reloads: Family::default(),
            last_reload_success: Family::default(),
            hook_runs: Family::default(),
            cloud_api_calls: Family::default(),
            registrations: Family::default(),
            config_last_reload_success: Gauge::default(),
            config_last_reload_success_timestamp: FloatGauge::default(),
            backend_up: Family::default(),
            health_transitions: Family::default(),
            health_fail_open: Family::default(),
            ready: Gauge::default(),
            fleet_leader: Family::default(),
            fleet_data_age: Family::default(),
            fleet_elections: Family::default(),
            fleet_watch_restarts: Counter::default(),
            registry: Registry::default(),
            before_encode: Mutex::new(None),
        };
        registry.register(
            "backend_up",
            "1 while the probed backend passes its health checks, 0 when it does not",
            metrics.backend_up.clone(),
        );
        registry.register(
            "health_transitions",
            "Backends that changed health state, by the new state",
            metrics.health_transitions.clone(),
        );
        registry.register(
            "health_fail_open",
            "1 while the service keeps unhealthy backends in because too many failed",
            metrics.health_fail_open.clone(),
        );
        // The families are shared handles: the registry holds clones that read the same values.
        registry.register(
            "locate_duration_seconds",
            "How long one locator took to answer (or fail)",
            metrics.locate_duration.clone(),
        );
        registry.register(
            "locate_failures",
            "Locator runs that failed or timed out",
            metrics.locate_failures.clone(),
        );
        registry.register(
            "locate_last_success_timestamp_seconds",
            "When the locator last answered, as a Unix time",
            metrics.locate_last_success.clone(),
        );
        registry.register(
            "backends",
            "Backends in the service's last good set",
            metrics.backends.clone(),
        );
        registry.register(
            "guard_held",
            "Answers the guard refused, by the limit that refused them",
            metrics.guard_held.clone(),
        );
        registry.register(
            "renders",
            "Outputs rendered, by what happened to the file",
            metrics.renders.clone(),
        );
        registry.register(
            "check_failures",
            "Frontend config checks that failed (the files were restored)",
            metrics.check_failures.clone(),
        );
        registry.register(
            "reloads",
            "Frontend reloads and in-place updates, by method and result",
            metrics.reloads.clone(),
        );
        registry.register(
            "last_reload_success",
            "1 when the frontend's last reload worked, 0 when it failed",
            metrics.last_reload_success.clone(),
        );
        registry.register(
            "hook_runs",
            "on_change hook runs, by result",
            metrics.hook_runs.clone(),
        );
        registry.register(
            "cloud_api_calls",
            "Requests sent to cloud APIs, retries included",
            metrics.cloud_api_calls.clone(),
        );
        registry.register(
            "registrations",
            "Registrations (leases and connections) the push registry holds",
            metrics.registrations.clone(),
        );
        registry.register(
            "config_last_reload_success",
            "1 when the last config load (start or SIGHUP) worked, 0 when it failed",
            metrics.config_last_reload_success.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully, as a Unix time",
            metrics.config_last_reload_success_timestamp.clone(),
        );
        registry.register(
            "ready",
            "1 when every service has a good set and every frontend is applied (what /readyz says)",
            metrics.ready.clone(),
        );
        registry.register(
            "fleet_leader",
            "1 while this member leads the shared locator in fleet mode, 0 when it follows",
            metrics.fleet_leader.clone(),
        );
        registry.register(
            "fleet_data_age_seconds",
            "How long the fleet data of a shared locator has gone unconfirmed by etcd",
            metrics.fleet_data_age.clone(),
        );
        registry.register(
            "fleet_elections",
            "Fleet elections this member took part in, by result",
            metrics.fleet_elections.clone(),
        );
        registry.register(
            "fleet_watch_restarts",
            "etcd watches started again after a disconnect or a compaction",
            metrics.fleet_watch_restarts.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Sets what runs before each [`Metrics::encode`], replacing an earlier hook: readiness
    /// depends on the time (data goes stale without any event), so it is worked out per scrape.
    pub fn before_encode(&self, hook: ScrapeHook) {
        *self
            .before_encode
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// The text exposition format (OpenMetrics text, which Prometheus reads).
    pub fn encode(&self) -> String {
        if let Some(hook) = self
            .before_encode
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            hook(self);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Creates the series of `service` at zero, so that they exist before anything happens:
    /// Prometheus's `increase()` misses the first event of a counter that appears at 1.
    pub fn declare_service(&self, service: &str, locators: &[String], hooks: bool) {
        for locator in locators {
            let labels = LocatorLabels {
                service: service.to_string(),
                locator: locator.clone(),
            };
            drop(self.locate_failures.get_or_create(&labels));
        }
        for reason in GUARD_REASONS {
            drop(self.guard_held.get_or_create(&GuardLabels {
                service: service.to_string(),
                reason: reason.to_string(),
            }));
        }
        for ok in [true, false].into_iter().filter(|_| hooks) {
            drop(self.hook_runs.get_or_create(&HookLabels {
                service: service.to_string(),
                result: outcome(ok).to_string(),
            }));
        }
    }

    /// Creates the series of `frontend` at zero; `methods` are the ways it can reload.
    pub fn declare_frontend(&self, frontend: &str, methods: &[&str]) {
        drop(self.check_failures.get_or_create(&FrontendLabels {
            frontend: frontend.to_string(),
        }));
        for method in methods {
            for ok in [true, false] {
                drop(self.reloads.get_or_create(&ReloadLabels {
                    frontend: frontend.to_string(),
                    method: method.to_string(),
                    result: outcome(ok).to_string(),
                }));
            }
        }
    }

    /// Creates the render series of `output` at zero.
    pub fn declare_output(&self, output: &str) {
        for result in RENDER_RESULTS {
            drop(self.renders.get_or_create(&RenderLabels {
                output: output.to_string(),
                result: result.to_string(),
            }));
        }
    }

    /// Counts an answer of `service` that the guard refused, by the limit's key.
    pub fn guard_held(&self, service: &str, reason: &str) {
        self.guard_held
            .get_or_create(&GuardLabels {
                service: service.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts what one render did to `output` (`unchanged`, `written`, `failed`, `not_applied`).
    pub fn rendered(&self, output: &str, result: &str) {
        self.renders
            .get_or_create(&RenderLabels {
                output: output.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a failed config check of `frontend`.
    pub fn check_failed(&self, frontend: &str) {
        self.check_failures
            .get_or_create(&FrontendLabels {
                frontend: frontend.to_string(),
            })
            .inc();
    }

    /// Counts a reload (or in-place update) of `frontend` and records whether it worked.
    pub fn reloaded(&self, frontend: &str, method: &str, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                frontend: frontend.to_string(),
                method: method.to_string(),
                result: outcome(ok).to_string(),
            })
            .inc();
        self.last_reload_success
            .get_or_create(&FrontendLabels {
                frontend: frontend.to_string(),
            })
            .set(i64::from(ok));
    }

    /// Counts a run of one of `service`'s `on_change` hooks.
    pub fn hook_ran(&self, service: &str, ok: bool) {
        self.hook_runs
            .get_or_create(&HookLabels {
                service: service.to_string(),
                result: outcome(ok).to_string(),
            })
            .inc();
    }

    /// Counts one request attempt to a cloud API; `api` and `operation` come from the SDK's own
    /// operation names, never from a response.
    pub fn cloud_call(&self, api: &str, operation: &str, result: &str) {
        self.cloud_api_calls
            .get_or_create(&CloudLabels {
                api: api.to_string(),
                operation: operation.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Records a successful config load now.
    pub fn config_loaded(&self) {
        self.config_last_reload_success.set(1);
        self.config_last_reload_success_timestamp
            .set(unix_seconds(SystemTime::now()));
    }
}

/// The `reason` label values of `elasticd_guard_held_total`: the guard's config keys.
pub const GUARD_REASONS: [&str; 2] = ["min_backends", "max_removed_ratio"];

/// The `result` label values of `elasticd_renders_total`.
pub const RENDER_RESULTS: [&str; 4] = ["unchanged", "written", "failed", "not_applied"];

fn outcome(ok: bool) -> &'static str {
    if ok { "success" } else { "failure" }
}

/// The cargo features this binary was built with.
pub const FEATURES: &[&str] = &[
    #[cfg(feature = "aws")]
    "aws",
    #[cfg(feature = "etcd")]
    "etcd",
];

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// `time` as seconds since the Unix epoch (0 before it).
pub fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::new();
        m.reloads
            .get_or_create(&ReloadLabels {
                frontend: "web".into(),
                method: "signal".into(),
                result: "success".into(),
            })
            .inc();
        m.locate_duration
            .get_or_create(&LocatorLabels {
                service: "web".into(),
                locator: "0:file".into(),
            })
            .observe(0.003);
        let text = m.encode();
        assert!(text.contains("elasticd_build_info{"), "{text}");
        assert!(
            text.contains(
                r#"elasticd_reloads_total{frontend="web",method="signal",result="success"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE elasticd_locate_duration_seconds histogram"));
    }

    #[test]
    fn declared_series_start_at_zero_and_reloads_set_the_gauge() {
        let m = Metrics::new();
        m.declare_frontend("fe", &["runtime_api", "command"]);
        m.declare_service("web", &["0:file".into()], false);
        let text = m.encode();
        for series in [
            r#"elasticd_check_failures_total{frontend="fe"} 0"#,
            r#"elasticd_reloads_total{frontend="fe",method="command",result="failure"} 0"#,
            r#"elasticd_guard_held_total{service="web",reason="max_removed_ratio"} 0"#,
            r#"elasticd_locate_failures_total{service="web",locator="0:file"} 0"#,
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
        assert!(
            !text.contains("elasticd_hook_runs_total"),
            "no hooks: {text}"
        );
        m.reloaded("fe", "command", false);
        assert!(
            m.encode()
                .contains(r#"elasticd_last_reload_success{frontend="fe"} 0"#)
        );
        m.reloaded("fe", "command", true);
        let text = m.encode();
        assert!(text.contains(r#"elasticd_last_reload_success{frontend="fe"} 1"#));
        assert!(text.contains(
            r#"elasticd_reloads_total{frontend="fe",method="command",result="success"} 1"#
        ));
    }

    #[test]
    fn the_scrape_hook_runs_before_each_exposition() {
        let m = Metrics::new();
        assert!(m.encode().contains("elasticd_ready 0"));
        m.before_encode(Box::new(|m| {
            m.ready.set(1);
        }));
        assert!(m.encode().contains("elasticd_ready 1"));
    }
}
