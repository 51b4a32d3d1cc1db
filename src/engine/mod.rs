//! The engine: everything built from one config (the services with their locators, the compiled
//! templates) plus the state it keeps (last good sets, owed reloads, hook acknowledgements).
//!
//! Data flows one way: [`Engine::locate`] asks a service's locators, [`Engine::judge`] applies the
//! guard against the last good set, [`Engine::accept`] makes an answer the service's set, and
//! [`Engine::apply`] renders, installs, checks, reloads and runs hooks. `elasticd render` does
//! all of it once ([`Engine::run_pass`]); the daemon calls the pieces on its own schedule. It
//! never publishes partial data: a service whose locators fail, or whose answer the guard refuses,
//! keeps its last good set, and an output whose service has no good set yet is left as it is.

mod apply;
mod health;
mod hooks;
mod judge;
mod locate;
mod recover;
mod report;
mod state;

pub use hooks::hook_key;
pub use judge::{GuardLimit, GuardVerdict, Judged, guard_verdict};
pub use locate::BuiltService;
pub use report::{
    FrontendReport, FrontendStatus, HookReport, OutputReport, OutputStatus, PassOptions,
    PassProblem, PassReport, ServiceReport, ServiceStatus,
};
pub use state::{State, StateError};

pub use crate::backend::BackendSet;

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::join_all;
use indexmap::IndexMap;

use crate::config::Config;
use crate::frontend::{ReloadAction, SpecAction};
use crate::locator::LocateError;
use crate::render::{RenderError, Renderer};

/// A config made runnable, and the state of its services and frontends.
pub struct Engine {
    config: Arc<Config>,
    renderer: Renderer,
    services: IndexMap<String, Arc<BuiltService>>,
    state: State,
    /// The sets as of the last clean apply, for the change summaries of reload plugins.
    applied: IndexMap<String, BackendSet>,
    /// Probe states and loops of the services with `health:`.
    health: crate::health::Checker,
    /// Per service, why it fails open, as of the last apply.
    fail_open: std::collections::HashMap<String, Option<String>>,
    /// The sets the last apply rendered (health-filtered).
    rendered: IndexMap<String, BackendSet>,
    /// Per output, what it was last rendered from while its file matched, so that an apply
    /// whose sets are the same skips rendering it.
    memo: Vec<Option<apply::Memo>>,
    /// Whether anything probes: the daemon's loops, or a one-shot `--health`.
    health_active: bool,
}

impl Engine {
    /// Compiles the templates and builds every service's locators; template errors are all
    /// returned together.
    pub fn new(config: Config) -> Result<Self, Vec<RenderError>> {
        let renderer = Renderer::new(&config.outputs)?;
        let services = build_services(&config, &IndexMap::new());
        declare_series(&config);
        Ok(Engine {
            config: Arc::new(config),
            renderer,
            services,
            state: State::default(),
            applied: IndexMap::new(),
            health: crate::health::Checker::new(),
            fail_open: Default::default(),
            rendered: IndexMap::new(),
            memo: Vec::new(),
            health_active: false,
        })
    }

    /// Starts from a saved state (a one-shot run's `state_file`).
    pub fn with_state(mut self, state: State) -> Self {
        self.applied = state.last_good.clone();
        self.state = state;
        self
    }

    /// The config everything was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Last good sets, owed reloads and hook acknowledgements.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The built service `name`; the same value until a new config changes that service.
    pub fn service(&self, name: &str) -> Option<&Arc<BuiltService>> {
        self.services.get(name)
    }

    /// Asks the locators of service `name`; `None` for a service the config doesn't have.
    pub async fn locate(&self, name: &str) -> Option<Result<BackendSet, Vec<LocateError>>> {
        Some(self.services.get(name)?.locate_set().await)
    }

    /// Applies the guard to a locate result of service `name`, against its last good set.
    pub fn judge(&self, name: &str, result: Result<BackendSet, Vec<LocateError>>) -> Judged {
        let last = self.state.last_good.get(name);
        let guard = self
            .services
            .get(name)
            .map(|s| s.config.guard.clone())
            .unwrap_or_default();
        judge::judge_service(name, &guard, result, last)
    }

    /// Makes `set` the last good set of `name`; true when it differs from the one before.
    pub fn accept(&mut self, name: &str, set: BackendSet) -> bool {
        if self
            .state
            .last_good
            .get(name)
            .is_some_and(|s| Arc::ptr_eq(s, &set) || **s == *set)
        {
            return false;
        }
        self.state.last_good.insert(name.to_string(), set);
        self.sync_health(name);
        true
    }

    /// Renders from the last good sets and brings every frontend not in `held` up to date, then
    /// runs the `on_change` hooks whose change is applied.
    pub async fn apply(&mut self, options: PassOptions, held: &HashSet<String>) -> PassReport {
        let mut report = PassReport::default();
        let sets = self.rendered_sets();
        let inputs = apply::Inputs {
            config: &self.config,
            renderer: &self.renderer,
            sets: &sets,
            previous: &self.applied,
            options,
            held,
        };
        self.memo.resize(self.config.outputs.len(), None);
        apply::apply(
            &inputs,
            &mut self.memo,
            &mut self.state.pending_reloads,
            &mut report,
        )
        .await;
        hooks::run_hooks(
            &self.config,
            &sets,
            &mut self.state.hooks_acknowledged,
            &self.state.pending_reloads,
            options,
            &mut report,
        )
        .await;
        let clean = !report
            .problems
            .iter()
            .any(|p| matches!(p, PassProblem::Frontend(_) | PassProblem::Install(_)));
        if clean && held.is_empty() && !options.dry_run {
            self.applied = sets.clone();
        }
        self.rendered = sets;
        report
    }

    /// Re-checks files that an earlier run installed but did not see through to a reload (it
    /// was killed, or the reload failed): passing ones owe their frontend a reload, failing ones
    /// get their backups back. Call once at start-up, before the first apply.
    pub async fn recover(&mut self) -> Vec<PassProblem> {
        recover::recover(&self.config, &mut self.state.pending_reloads).await
    }

    /// The sets the last apply rendered: the last good sets, filtered by health.
    pub fn rendered(&self) -> &IndexMap<String, BackendSet> {
        &self.rendered
    }

    /// The sets as of the last clean apply.
    pub fn applied(&self) -> &IndexMap<String, BackendSet> {
        &self.applied
    }

    /// One pass over everything: locate every service at once, judge, accept, apply.
    pub async fn run_pass(&mut self, options: PassOptions) -> PassReport {
        let located = join_all(self.services.values().map(|s| s.locate_set())).await;
        let mut judged = Vec::new();
        for (name, result) in self.services.keys().zip(located) {
            judged.push((name.clone(), self.judge(name, result)));
        }
        let mut services = Vec::new();
        let mut problems = Vec::new();
        for (name, j) in judged {
            services.push(j.report);
            problems.extend(j.problems);
            if let Some(set) = j.fresh {
                self.accept(&name, set);
            }
        }
        let config = Arc::clone(&self.config);
        self.state
            .last_good
            .retain(|name, _| config.services.contains_key(name));
        if options.health {
            self.probe_health_once().await;
        }
        let mut report = self.apply(options, &HashSet::new()).await;
        report.services = services;
        problems.append(&mut report.problems);
        report.problems = problems;
        report
    }

    /// Builds every service's locators again (fleet mode was just turned on: shared locators
    /// are wrapped when built). Last good sets are kept.
    pub fn rebuild_services(&mut self) {
        self.services = build_services(&self.config, &IndexMap::new());
    }

    /// Swaps in a new config: templates are compiled again, services whose settings are the same
    /// keep their built locators and last good sets, the others are built anew and start over.
    /// Returns the names of the services that changed (new ones included).
    pub fn reconfigure(&mut self, new: Config) -> Result<Vec<String>, Vec<RenderError>> {
        let renderer = Renderer::new(&new.outputs)?;
        let changed: Vec<String> = new
            .services
            .iter()
            .filter(|(name, s)| self.services.get(*name).is_none_or(|b| &b.config != *s))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &changed {
            self.state.last_good.shift_remove(name);
        }
        self.state
            .last_good
            .retain(|name, _| new.services.contains_key(name));
        self.services = build_services(&new, &self.services);
        declare_series(&new);
        self.renderer = renderer;
        // Templates, vars or outputs may differ: everything renders again once.
        self.memo.clear();
        self.config = Arc::new(new);
        self.retain_health();
        let names: Vec<String> = self.state.last_good.keys().cloned().collect();
        for name in names {
            self.sync_health(&name);
        }
        Ok(changed)
    }
}

/// Creates every metric series the config's names label at zero (see
/// [`crate::metrics::Metrics::declare_service`]).
fn declare_series(config: &Config) {
    let m = crate::metrics::metrics();
    for (name, service) in &config.services {
        let locators: Vec<String> = service
            .locators
            .iter()
            .enumerate()
            .map(|(i, l)| locate::locator_id(i, &l.kind()))
            .collect();
        m.declare_service(name, &locators, !service.on_change.is_empty());
    }
    for (name, frontend) in &config.frontends {
        let mut methods = Vec::new();
        if let Some(action) = &frontend.reload {
            methods.push(action.method());
            if let ReloadAction::Spec(SpecAction::HaproxyRuntime(runtime)) = action {
                methods.push(runtime.fallback.method());
            }
        }
        m.declare_frontend(name, &methods);
    }
    for output in &config.outputs {
        m.declare_output(&output.path.display().to_string());
    }
}

/// Builds the services of `config`, reusing those of `old` whose settings are unchanged.
fn build_services(
    config: &Config,
    old: &IndexMap<String, Arc<BuiltService>>,
) -> IndexMap<String, Arc<BuiltService>> {
    config
        .services
        .iter()
        .map(|(name, service)| {
            let built = match old.get(name) {
                Some(b) if b.config == *service && same_context(config, b) => Arc::clone(b),
                _ => Arc::new(BuiltService::build(config, name, service)),
            };
            (name.clone(), built)
        })
        .collect()
}

// The environment and base directory reach locators too; a change there rebuilds them.
fn same_context(config: &Config, built: &BuiltService) -> bool {
    built.environment() == config.environment.as_deref() && built.base_dir() == config.base_dir
}
