//! elasticd keeps web frontends (nginx, HAProxy, Varnish, Apache httpd) pointed at the live
//! addresses of their backends.
//!
//! An [`engine::Engine`] is built once per config ([`config`]): each service's locators
//! ([`locator`]) and the compiled templates ([`render`]). It asks the locators for backends,
//! holds back answers the guard refuses, renders every output, and for each frontend installs the
//! changed files atomically ([`output`]), checks them with the frontend's own validator and
//! reloads it once ([`frontend`]). `elasticd render` runs that once; the daemon ([`daemon`]) on
//! each service's schedule. See `docs/architecture.md`.
//!
//! Layout, top to bottom. A module imports only modules with a lower number (unit tests aside:
//! they may build fixtures from anything); `tests/layers.rs` checks that this table matches the
//! code.
//!
//! ```text
//! 7 cli        commands, exit codes (the only place that decides them), the report printer
//! 6 daemon     the event loop: schedules, signals as Control messages, settle, backoff
//! 5 engine     Engine: built services and renderer, state; locate, judge, apply, hooks, report
//! 4 config     the file as a whole: Config, Loader (every problem at once), cross-checks, Schedule
//! 3 fleet      fleet mode: ClusterConfig, one etcd election per shared locator, publish, watch
//! 3 render     Tera engines, template context, escaping, slots, OutputConfig, renderer plugins
//! 2 health     `health:` probes (the probes! registry, one file per kind), the probe scheduler
//! 2 register   `elasticd register`: the client that registers a backend and keeps it registered
//! 2 server     the operations server: listeners, TLS, limits, token, JSON API, /metrics, page
//! 2 locator    Locator and LocatorSpec, the locators! registry, one file per kind with its config
//! 2 frontend   FrontendConfig, checks, the reload_actions! registry, HAProxy and Varnish actions
//! 1 plugin     the plugin protocol: PluginCall, running, lookup, requests, on_change hooks
//! 1 status     Status: what the daemon knows about itself, the /api/v1 document, readiness
//! 1 aws        AWS settings and errors; SDK clients (feature `aws`)
//! 1 registry   the push registry: leases and connection-bound registrations, limits, expiry
//! 0 http_client the client of the operations server: hyper HTTP/1.1 and WebSocket, TCP or Unix
//! 0 secret     bearer tokens from files: the one reader and its checks, constant-time compare
//! 0 metrics    the process's Prometheus registry and families, text exposition
//! 0 output     compare, stage, batch install with backup, rollback, diff, locks
//! 0 logline    log and error lines that values cannot forge; the tracing field formatter
//! 0 process    run an argv with a timeout in its own process group; PATH lookup
//! 0 backend    Backend, Address, Labels (compact tags and meta), target parsing, normalize, diff
//! 0 yaml       the located YAML tree and its serde Deserializer
//! 0 value      HumanDuration, FileMode, names, program paths, BoxFuture
//! ```

pub mod aws;
pub mod backend;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod fleet;
pub mod frontend;
pub mod health;
pub mod http_client;
pub mod locator;
pub mod logline;
pub mod metrics;
pub mod output;
pub mod plugin;
pub mod process;
pub mod register;
pub mod registry;
pub mod render;
pub mod secret;
pub mod server;
pub mod status;
pub mod value;
pub mod yaml;
