//! One pass: locate, guard, render, compare, stage and check, install, reload, report.
//!
//! The pass is shared by `elasticd render` and the daemon. It never publishes partial data: a
//! service whose locators fail, or whose answer the guard refuses, keeps its last good backend set,
//! and an output whose service has no good set yet is left as it is on disk.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use futures_util::future::join_all;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::backend::{self, Backend};
use crate::config::{Config, GuardConfig, ServiceConfig};
use crate::frontend::{self, FrontendError};
use crate::locator::{LocateContext, LocateError};
use crate::output::{self, InstallError};
use crate::plugin::request::{ChangeSummary, ServiceChange, WrittenOutput};
use crate::render::{PassContext, RenderError, Renderer};

/// What a pass may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    /// Write nothing, reload nothing; report diffs.
    pub dry_run: bool,
    /// Install files but don't reload frontends.
    pub no_reload: bool,
}

/// What survives between passes: last good sets and reloads still owed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PassState {
    /// Per service, the last backend set that passed the guard.
    #[serde(default)]
    pub last_good: IndexMap<String, Vec<Backend>>,
    /// Frontends whose files changed but whose reload has not yet succeeded.
    #[serde(default)]
    pub pending_reloads: BTreeSet<String>,
    /// Per `on_change` hook ([`hook_key`]), the last backend set it exited 0 for.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub hooks_acknowledged: IndexMap<String, Vec<Backend>>,
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {}: {source}", path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a state file.
    #[error("state file {} is not valid: {source}", path.display())]
    Invalid {
        /// The state file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Writing failed.
    #[error(transparent)]
    Install(#[from] InstallError),
}

impl PassState {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Invalid {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PassState::default()),
            Err(source) => Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the state file atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(self).map_err(|source| StateError::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
        output::install_atomically(path, &bytes, 0o600)?;
        Ok(())
    }
}

/// Something that went wrong in a pass (the pass goes on with what it can).
#[derive(Debug, thiserror::Error)]
pub enum PassProblem {
    /// A locator had no answer; the service keeps its last good set.
    #[error("service `{service}`: {source}")]
    Locate {
        /// The service.
        service: String,
        /// What the locator said.
        source: LocateError,
    },
    /// The guard refused the new set.
    #[error("service `{service}`: guard held: {reason}; {outcome}")]
    GuardHeld {
        /// The service.
        service: String,
        /// Which limit, with numbers.
        reason: String,
        /// What is used instead.
        outcome: String,
    },
    /// A template failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A file could not be written.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// A check or reload failed.
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    /// An `on_change` hook failed; it is owed and runs again on the next pass.
    #[error("service `{service}`: on_change hook failed (it will be retried): {source}")]
    Hook {
        /// The service.
        service: String,
        /// What the plugin did.
        source: crate::plugin::PluginError,
    },
}

/// How one service fared.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceStatus {
    /// The locators answered and the guard accepted it.
    Fresh,
    /// The last good set is used (locator failed or guard held).
    KeptLastGood,
    /// No usable set: its outputs are left alone.
    NoData,
}

/// One service's result.
#[derive(Debug, Clone)]
pub struct ServiceReport {
    /// The service.
    pub name: String,
    /// Fresh, kept, or none.
    pub status: ServiceStatus,
    /// Size of the set used this pass.
    pub backends: usize,
    /// Endpoints added since the last good set.
    pub added: Vec<String>,
    /// Endpoints removed since the last good set.
    pub removed: Vec<String>,
}

/// What happened to one output.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputStatus {
    /// Rendered bytes equal the file's.
    Unchanged,
    /// Installed (and checked, when the frontend has a checker).
    Written,
    /// Dry run: this diff would be written.
    WouldChange(String),
    /// Not rendered: its service has no good backend set.
    Skipped(String),
    /// Rendered but not installed, or rolled back (a check or write failed).
    NotApplied,
    /// Rendering failed.
    Failed,
}

/// One output's result.
#[derive(Debug, Clone)]
pub struct OutputReport {
    /// The file.
    pub path: PathBuf,
    /// What happened.
    pub status: OutputStatus,
}

/// What happened to one frontend.
#[derive(Debug, Clone, PartialEq)]
pub enum FrontendStatus {
    /// Nothing changed for it.
    Untouched,
    /// Files installed and checked; reload skipped (`--no-reload` or no reload action).
    Installed,
    /// Files installed and the frontend reloaded.
    Reloaded,
    /// Files installed and the running frontend updated to match them without a reload.
    UpdatedInPlace,
    /// Check failed: files restored, no reload.
    CheckFailed,
    /// Files installed but the reload failed; it is owed.
    ReloadFailed,
}

/// One frontend's result.
#[derive(Debug, Clone)]
pub struct FrontendReport {
    /// The frontend.
    pub name: String,
    /// What happened.
    pub status: FrontendStatus,
}

/// One `on_change` hook that ran.
#[derive(Debug, Clone)]
pub struct HookReport {
    /// The service.
    pub service: String,
    /// The hook's command line.
    pub hook: String,
    /// Backends added and removed in the summary it got.
    pub added: usize,
    /// See `added`.
    pub removed: usize,
    /// Whether it exited 0.
    pub ok: bool,
}

/// Everything a pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Per service.
    pub services: Vec<ServiceReport>,
    /// Per output, in config order.
    pub outputs: Vec<OutputReport>,
    /// Per frontend that had work.
    pub frontends: Vec<FrontendReport>,
    /// Per `on_change` hook that ran.
    pub hooks: Vec<HookReport>,
    /// Every problem, in the order met.
    pub problems: Vec<PassProblem>,
}

impl PassReport {
    /// True when anything went wrong (the exit status of `elasticd render`).
    pub fn failed(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// Asks every locator of one service; any failure means the service has no answer this pass.
pub async fn locate_service(
    config: &Config,
    name: &str,
    service: &ServiceConfig,
) -> Result<Vec<Backend>, Vec<LocateError>> {
    let ctx = LocateContext {
        service: name.to_string(),
        environment: config.environment.clone(),
        default_port: service.port,
        base_dir: config.base_dir.clone(),
    };
    let locators: Vec<_> = service.locators.iter().map(|l| l.build()).collect();
    let timeout = service.timeout.0;
    let results = join_all(locators.iter().map(|l| {
        let ctx = &ctx;
        async move {
            tokio::time::timeout(timeout, l.locate(ctx))
                .await
                .unwrap_or_else(|_| {
                    Err(LocateError::Timeout {
                        locator: l.describe(),
                        timeout,
                    })
                })
        }
    }))
    .await;
    let mut backends = Vec::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
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

/// Why the guard refuses `new`, if it does.
pub fn guard_verdict(
    guard: &GuardConfig,
    last: Option<&[Backend]>,
    new: &[Backend],
) -> Option<String> {
    if new.len() < guard.min_backends {
        return Some(format!(
            "locators found {} backend{}, fewer than min_backends {}",
            new.len(),
            if new.len() == 1 { "" } else { "s" },
            guard.min_backends
        ));
    }
    if let (Some(ratio), Some(last)) = (guard.max_removed_ratio, last)
        && !last.is_empty()
    {
        let now: HashSet<_> = new.iter().map(Backend::key).collect();
        let removed = last.iter().filter(|b| !now.contains(&b.key())).count();
        let share = removed as f64 / last.len() as f64;
        if share > ratio {
            return Some(format!(
                "{removed} of {} backends would be removed ({:.0}%), more than max_removed_ratio {ratio}",
                last.len(),
                share * 100.0
            ));
        }
    }
    None
}

fn endpoint_diff(old: Option<&[Backend]>, new: &[Backend]) -> (Vec<String>, Vec<String>) {
    let old = old.unwrap_or_default();
    let old_keys: HashSet<_> = old.iter().map(Backend::key).collect();
    let new_keys: HashSet<_> = new.iter().map(Backend::key).collect();
    let added = new
        .iter()
        .filter(|b| !old_keys.contains(&b.key()))
        .map(Backend::endpoint)
        .collect();
    let removed = old
        .iter()
        .filter(|b| !new_keys.contains(&b.key()))
        .map(Backend::endpoint)
        .collect();
    (added, removed)
}

/// A rendered output that differs from its file.
struct Change {
    index: usize,
    content: String,
    previous: Option<Vec<u8>>,
    mode: u32,
}

/// Runs one pass over every service and output.
pub async fn run_pass(
    config: &Config,
    renderer: &Renderer,
    state: &mut PassState,
    options: PassOptions,
) -> PassReport {
    let mut report = PassReport::default();
    let previous = state.last_good.clone();

    let located = join_all(
        config
            .services
            .iter()
            .map(|(name, service)| locate_service(config, name, service)),
    )
    .await;

    for ((name, service), result) in config.services.iter().zip(located) {
        let last = state.last_good.get(name).map(Vec::as_slice);
        let judged = judge_service(name, service, result, last);
        report.services.push(judged.report);
        report.problems.extend(judged.problems);
        if let Some(set) = judged.fresh {
            state.last_good.insert(name.clone(), set);
        }
    }
    state
        .last_good
        .retain(|name, _| config.services.contains_key(name));
    apply(
        config,
        renderer,
        &state.last_good,
        &previous,
        &mut state.pending_reloads,
        options,
        &HashSet::new(),
        &mut report,
    )
    .await;
    run_hooks(
        config,
        &state.last_good,
        &mut state.hooks_acknowledged,
        &state.pending_reloads,
        options,
        &mut report,
    )
    .await;
    report
}

/// The outcome of one service's locate, after the guard.
pub struct Judged {
    /// For the pass report.
    pub report: ServiceReport,
    /// Locator errors or the guard's reason.
    pub problems: Vec<PassProblem>,
    /// The new set when it is accepted (it becomes the last good set).
    pub fresh: Option<Vec<Backend>>,
}

/// Applies the guard to one service's locate result, against its last good set.
pub fn judge_service(
    name: &str,
    service: &ServiceConfig,
    result: Result<Vec<Backend>, Vec<LocateError>>,
    last: Option<&[Backend]>,
) -> Judged {
    let mut problems = Vec::new();
    let kept_outcome = || match last {
        Some(l) => format!("keeping the last good set of {} backends", l.len()),
        None => "no good set is known yet, so its outputs are left as they are".to_string(),
    };
    let fresh = match result {
        Ok(backends) => match guard_verdict(&service.guard, last, &backends) {
            None => Some(backends),
            Some(reason) => {
                problems.push(PassProblem::GuardHeld {
                    service: name.to_string(),
                    reason,
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
        (Some(set), _) => {
            let (added, removed) = endpoint_diff(last, set);
            (ServiceStatus::Fresh, set.len(), added, removed)
        }
        (None, Some(last)) => (ServiceStatus::KeptLastGood, last.len(), vec![], vec![]),
        (None, None) => (ServiceStatus::NoData, 0, vec![], vec![]),
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

/// Renders every output from `sets` and brings each frontend up to date: install, check,
/// reload. Frontends in `held` are left alone this time (the daemon's backoff). `previous` holds
/// the sets of the last apply, for the change summary reload plugins get.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    config: &Config,
    renderer: &Renderer,
    sets: &IndexMap<String, Vec<Backend>>,
    previous: &IndexMap<String, Vec<Backend>>,
    pending_reloads: &mut BTreeSet<String>,
    options: PassOptions,
    held: &HashSet<String>,
    report: &mut PassReport,
) {
    let context = PassContext::new(
        config.environment.as_deref(),
        |s| config.services.get(s).and_then(|x| x.port),
        sets,
    );
    let mut changes: Vec<Change> = Vec::new();
    for (index, output) in config.outputs.iter().enumerate() {
        let missing: Vec<&str> = match output.service() {
            Some(s) => [s].into_iter().filter(|s| !sets.contains_key(*s)).collect(),
            None => config
                .services
                .keys()
                .map(String::as_str)
                .filter(|s| !sets.contains_key(*s))
                .collect(),
        };
        let status = if !missing.is_empty() {
            OutputStatus::Skipped(format!(
                "no good backend set yet for {}",
                missing
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            match render_and_compare(config, renderer, index, output, &context, sets).await {
                Ok(None) => OutputStatus::Unchanged,
                Ok(Some(change)) => {
                    if options.dry_run {
                        let diff = output::unified_diff(
                            &output.path,
                            change.previous.as_deref(),
                            change.content.as_bytes(),
                        );
                        OutputStatus::WouldChange(diff)
                    } else {
                        changes.push(change);
                        OutputStatus::NotApplied
                    }
                }
                Err(problem) => {
                    report.problems.push(problem);
                    OutputStatus::Failed
                }
            }
        };
        report.outputs.push(OutputReport {
            path: output.path.clone(),
            status,
        });
    }

    if options.dry_run {
        return;
    }

    // Outputs that feed no frontend are just installed.
    for change in changes
        .iter()
        .filter(|c| config.outputs[c.index].frontend.is_none())
    {
        match install_with_backup(config, change) {
            Ok(()) => report.outputs[change.index].status = OutputStatus::Written,
            Err(e) => report.problems.push(e.into()),
        }
    }

    // A frontend with an output that could not be rendered is left entirely alone: installing
    // its other files would put a half-updated config in front of traffic.
    let unrendered: HashSet<&str> = config
        .outputs
        .iter()
        .zip(&report.outputs)
        .filter(|(_, r)| r.status == OutputStatus::Failed)
        .filter_map(|(o, _)| o.frontend.as_deref())
        .collect();
    for (name, frontend) in &config.frontends {
        if held.contains(name) || unrendered.contains(name.as_str()) {
            continue;
        }
        let mine: Vec<&Change> = changes
            .iter()
            .filter(|c| config.outputs[c.index].frontend.as_deref() == Some(name.as_str()))
            .collect();
        let owed = pending_reloads.contains(name);
        if mine.is_empty() && !owed {
            continue;
        }
        let installed = if mine.is_empty() {
            Ok(())
        } else {
            apply_frontend_changes(config, name, frontend, &mine).await
        };
        let status = match installed {
            Err(problem) => {
                let status = match &problem {
                    PassProblem::Frontend(FrontendError::Check { .. }) => {
                        FrontendStatus::CheckFailed
                    }
                    _ => FrontendStatus::Untouched,
                };
                report.problems.push(problem);
                status
            }
            Ok(()) => {
                for c in &mine {
                    report.outputs[c.index].status = OutputStatus::Written;
                }
                match (&frontend.reload, options.no_reload) {
                    (Some(action), false) => {
                        let summary = frontend_summary(config, name, sets, previous, &mine);
                        let context = frontend::ReloadContext {
                            changed: mine
                                .iter()
                                .map(|c| frontend::ChangedFile {
                                    path: &config.outputs[c.index].path,
                                    previous: c.previous.as_deref(),
                                    content: &c.content,
                                })
                                .collect(),
                            owed,
                            request: frontend::exec::ReloadRequest {
                                environment: config.environment.as_deref(),
                                summary: Some(&summary),
                            },
                        };
                        match frontend::reload(name, action, &config.base_dir, &context).await {
                            Ok(done) => {
                                pending_reloads.remove(name);
                                match done {
                                    frontend::Reloaded::Reloaded => FrontendStatus::Reloaded,
                                    frontend::Reloaded::InPlace => FrontendStatus::UpdatedInPlace,
                                }
                            }
                            Err(e) => {
                                pending_reloads.insert(name.clone());
                                report.problems.push(e.into());
                                FrontendStatus::ReloadFailed
                            }
                        }
                    }
                    (Some(_), true) => {
                        // The files changed under a running frontend; the reload stays owed so
                        // that a later pass without --no-reload delivers it.
                        if !mine.is_empty() {
                            pending_reloads.insert(name.clone());
                        }
                        FrontendStatus::Installed
                    }
                    (None, _) => FrontendStatus::Installed,
                }
            }
        };
        report.frontends.push(FrontendReport {
            name: name.clone(),
            status,
        });
    }

    pending_reloads.retain(|name| config.frontends.contains_key(name));
}

/// Identifies an `on_change` hook across passes and in the state file; a changed command is a
/// new hook that has acknowledged nothing.
pub fn hook_key(service: &str, index: usize, hook: &crate::plugin::PluginCall) -> String {
    format!(
        "{service}#{index} {}",
        crate::process::display_command(&hook.exec)
    )
}

/// Runs the `on_change` hooks of every service whose current set the hook has not acknowledged
/// and whose change is applied: each of its outputs installed (or already up to date) and no
/// reload owed by the frontends concerned. Nothing runs on a dry run or with `--no-reload`.
pub async fn run_hooks(
    config: &Config,
    sets: &IndexMap<String, Vec<Backend>>,
    acknowledged: &mut IndexMap<String, Vec<Backend>>,
    pending_reloads: &BTreeSet<String>,
    options: PassOptions,
    report: &mut PassReport,
) {
    let keys: HashSet<String> = config
        .services
        .iter()
        .flat_map(|(name, s)| {
            s.on_change
                .iter()
                .enumerate()
                .map(move |(i, h)| hook_key(name, i, h))
        })
        .collect();
    acknowledged.retain(|k, _| keys.contains(k));
    if options.dry_run || options.no_reload {
        return;
    }
    for (name, service) in &config.services {
        if service.on_change.is_empty() {
            continue;
        }
        let Some(set) = sets.get(name) else {
            continue;
        };
        let mine: Vec<usize> = config
            .outputs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.service().is_none_or(|s| s == name))
            .map(|(i, _)| i)
            .collect();
        let status_of = |i: usize| report.outputs.get(i).map(|o| &o.status);
        let applied = mine.iter().all(|&i| {
            matches!(
                status_of(i),
                Some(OutputStatus::Unchanged | OutputStatus::Written)
            ) && config.outputs[i]
                .frontend
                .as_ref()
                .is_none_or(|f| !pending_reloads.contains(f))
        });
        if !applied {
            tracing::debug!(service = %name, "on_change hooks wait: the change is not applied yet");
            continue;
        }
        let outputs: Vec<WrittenOutput> = mine
            .iter()
            .filter(|&&i| status_of(i) == Some(&OutputStatus::Written))
            .map(|&i| WrittenOutput {
                path: config.outputs[i].path.clone(),
                frontend: config.outputs[i].frontend.clone(),
            })
            .collect();
        for (index, hook) in service.on_change.iter().enumerate() {
            let key = hook_key(name, index, hook);
            let acked = acknowledged.get(&key);
            if acked == Some(set) {
                continue;
            }
            let summary = ChangeSummary {
                changes: vec![ServiceChange::between(name, acked.map(Vec::as_slice), set)],
                outputs: outputs.clone(),
            };
            let (added, removed) = (
                summary.changes[0].added.len(),
                summary.changes[0].removed.len(),
            );
            let result = crate::plugin::hook::run(
                &config.base_dir,
                config.environment.as_deref(),
                name,
                hook,
                &summary,
            )
            .await;
            report.hooks.push(HookReport {
                service: name.clone(),
                hook: crate::process::display_command(&hook.exec),
                added,
                removed,
                ok: result.is_ok(),
            });
            match result {
                Ok(()) => {
                    acknowledged.insert(key, set.clone());
                }
                Err(source) => report.problems.push(PassProblem::Hook {
                    service: name.clone(),
                    source,
                }),
            }
        }
    }
}

/// What a frontend's reload plugin is told: the services its outputs render and the files written.
fn frontend_summary(
    config: &Config,
    frontend: &str,
    sets: &IndexMap<String, Vec<Backend>>,
    previous: &IndexMap<String, Vec<Backend>>,
    written: &[&Change],
) -> ChangeSummary {
    let mut services: Vec<&str> = Vec::new();
    for output in config.outputs_of(frontend) {
        match output.service() {
            Some(s) => services.push(s),
            // An output without a service renders them all.
            None => services.extend(config.services.keys().map(String::as_str)),
        }
    }
    let mut seen = HashSet::new();
    services.retain(|s| seen.insert(*s));
    ChangeSummary {
        changes: services
            .into_iter()
            .filter_map(|s| {
                let set = sets.get(s)?;
                Some(ServiceChange::between(
                    s,
                    previous.get(s).map(Vec::as_slice),
                    set,
                ))
            })
            .collect(),
        outputs: written
            .iter()
            .map(|c| WrittenOutput {
                path: config.outputs[c.index].path.clone(),
                frontend: config.outputs[c.index].frontend.clone(),
            })
            .collect(),
    }
}

async fn render_and_compare(
    config: &Config,
    renderer: &Renderer,
    index: usize,
    output: &crate::render::OutputConfig,
    context: &PassContext,
    sets: &IndexMap<String, Vec<Backend>>,
) -> Result<Option<Change>, PassProblem> {
    // Read first: slotted outputs keep the slot assignment of the installed file.
    let previous = output::read_current(&output.path)?;
    let mut ctx = context.for_output(output);
    if let Some(backends) = output.service().and_then(|s| sets.get(s)) {
        context.insert_slots(&mut ctx, output, backends, previous.as_deref());
    }
    let content = match &output.renderer {
        Some(call) => {
            crate::render::exec::render(
                &config.base_dir,
                config.environment.as_deref(),
                output,
                call,
                &ctx,
            )
            .await?
        }
        None => renderer.render(index, output, &ctx)?,
    };
    if previous.as_deref() == Some(content.as_bytes()) {
        return Ok(None);
    }
    Ok(Some(Change {
        index,
        content,
        previous,
        mode: output::effective_mode(&output.path, output.mode.map(|m| m.0)),
    }))
}

fn install_with_backup(config: &Config, change: &Change) -> Result<(), InstallError> {
    let path = &config.outputs[change.index].path;
    if let Some(previous) = &change.previous {
        output::write_backup(path, previous, change.mode)?;
    }
    output::install_atomically(path, change.content.as_bytes(), change.mode)
}

/// Installs one frontend's changed outputs so that a failed check leaves its files as they were.
async fn apply_frontend_changes(
    config: &Config,
    name: &str,
    frontend: &crate::frontend::FrontendConfig,
    changes: &[&Change],
) -> Result<(), PassProblem> {
    if frontend::checks_staged_file(frontend) {
        // Check every staged file before any of them goes into place.
        let mut staged = Vec::new();
        for change in changes {
            let path = &config.outputs[change.index].path;
            let file = output::stage(path, change.content.as_bytes(), change.mode)?;
            let staged_file = frontend::StagedFile {
                staged: file.path(),
                output: path,
            };
            frontend::check(name, frontend, Some(staged_file), &config.base_dir).await?;
            staged.push((change, file));
        }
        let mut committed: Vec<&Change> = Vec::new();
        for (change, file) in staged {
            let path = &config.outputs[change.index].path;
            let result = match &change.previous {
                Some(previous) => output::write_backup(path, previous, change.mode),
                None => Ok(()),
            }
            .and_then(|()| file.commit());
            if let Err(e) = result {
                rollback(config, &committed);
                return Err(e.into());
            }
            committed.push(change);
        }
        return Ok(());
    }

    let mut done: Vec<&Change> = Vec::new();
    let mut result: Result<(), PassProblem> = Ok(());
    for change in changes {
        match install_with_backup(config, change) {
            Ok(()) => done.push(change),
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    if result.is_ok() {
        result = frontend::check(name, frontend, None, &config.base_dir)
            .await
            .map_err(PassProblem::from);
    }
    if result.is_err() {
        // The checker judges the frontend's whole config, so every file of this pass goes back.
        rollback(config, &done);
    }
    result
}

fn rollback(config: &Config, changes: &[&Change]) {
    for change in changes {
        let path = &config.outputs[change.index].path;
        if let Err(e) = output::restore(path, change.previous.as_deref(), change.mode) {
            tracing::error!("rolling back {} failed: {e}", path.display());
        }
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
        assert!(
            guard_verdict(&guard, None, &[])
                .unwrap()
                .contains("fewer than min_backends 1")
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
        assert!(verdict.contains("3 of 4"), "{verdict}");
        // Additions never trip it.
        assert!(guard_verdict(&guard, Some(&last), &set(&["10.0.0.9:80"])).is_some());
        assert!(guard_verdict(&guard, None, &set(&["10.0.0.9:80"])).is_none());
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(PassState::load(&path).unwrap(), PassState::default());
        let mut state = PassState::default();
        state.last_good.insert("web".into(), set(&["[::1]:80"]));
        state.pending_reloads.insert("nginx".into());
        state.save(&path).unwrap();
        assert_eq!(PassState::load(&path).unwrap(), state);
    }
}
