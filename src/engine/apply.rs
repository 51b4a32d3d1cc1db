//! Bringing files and frontends up to date with the backend sets: render every output, compare it
//! with the file on disk, and per frontend install the changed files (one batch), check them and
//! reload once. This file decides policy; the file operations are [`crate::output`]'s.

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

use super::BackendSet;
use crate::config::Config;
use crate::frontend::{self, FrontendConfig, FrontendError, ReloadAction, SpecAction};
use crate::output::{self, FileChange, InstallError, StagedBatch};
use crate::plugin::request::{ChangeSummary, ServiceChange, WrittenOutput};
use crate::render::{OutputConfig, PassContext, Renderer};

use super::report::{
    FrontendReport, FrontendStatus, OutputReport, OutputStatus, PassOptions, PassProblem,
    PassReport,
};

/// A rendered output that differs from its file.
pub(super) struct Change {
    pub(super) index: usize,
    pub(super) content: String,
    pub(super) previous: Option<Vec<u8>>,
    pub(super) mode: u32,
}

impl Change {
    fn file<'a>(&'a self, config: &'a Config) -> FileChange<'a> {
        FileChange {
            path: &config.outputs[self.index].path,
            content: self.content.as_bytes(),
            previous: self.previous.as_deref(),
            mode: self.mode,
        }
    }
}

/// What an output was rendered from while its file matched the rendering, and that file as it
/// was then: with the same sets and an untouched file, rendering again would change nothing.
#[derive(Debug, Clone)]
pub(super) struct Memo {
    sets: Vec<BackendSet>,
    file: FileStamp,
}

/// A file's identity and last change (device, inode, size, mtime and ctime in nanoseconds):
/// any write, replacement or chmod moves one of them.
type FileStamp = (u64, u64, u64, i128, i128);

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::symlink_metadata(path).ok()?;
    let nanos = |s: i64, ns: i64| i128::from(s) * 1_000_000_000 + i128::from(ns);
    Some((
        m.dev(),
        m.ino(),
        m.len(),
        nanos(m.mtime(), m.mtime_nsec()),
        nanos(m.ctime(), m.ctime_nsec()),
    ))
}

/// The sets output `output` is rendered from: its service's for a built-in template, every set
/// otherwise (a custom template may read any service). `None` for a renderer plugin, whose
/// output may depend on more than the sets, so it is rendered every time.
fn depends_on(
    config: &Config,
    output: &OutputConfig,
    sets: &IndexMap<String, BackendSet>,
) -> Option<Vec<BackendSet>> {
    if output.renderer.is_some() {
        return None;
    }
    let builtin = matches!(
        output.template,
        Some(crate::render::TemplateRef::Builtin(_))
    );
    match output.service() {
        Some(s) if builtin => Some(vec![Arc::clone(sets.get(s)?)]),
        _ => config
            .services
            .keys()
            .map(|s| sets.get(s).map(Arc::clone))
            .collect(),
    }
}

fn same_sets(a: &[BackendSet], b: &[BackendSet]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| Arc::ptr_eq(x, y) || **x == **y)
}

/// What one apply works from.
pub(super) struct Inputs<'a> {
    pub(super) config: &'a Config,
    pub(super) renderer: &'a Renderer,
    /// The sets to render.
    pub(super) sets: &'a IndexMap<String, BackendSet>,
    /// The sets of the last apply, for the change summary reload plugins get.
    pub(super) previous: &'a IndexMap<String, BackendSet>,
    pub(super) options: PassOptions,
    /// Frontends left alone this time (the daemon's backoff).
    pub(super) held: &'a HashSet<String>,
}

/// Renders every output from the sets and brings each frontend up to date: install, check,
/// reload. Reloads that fail stay in `pending_reloads` for the next apply. An output whose
/// `memo` shows the same sets and an untouched file is not rendered again.
pub(super) async fn apply(
    inputs: &Inputs<'_>,
    memo: &mut [Option<Memo>],
    pending_reloads: &mut BTreeSet<String>,
    report: &mut PassReport,
) {
    let Inputs {
        config,
        renderer,
        sets,
        previous,
        options,
        held,
    } = *inputs;
    let depends: Vec<Option<Vec<BackendSet>>> = config
        .outputs
        .iter()
        .map(|o| depends_on(config, o, sets))
        .collect();
    let fresh = |index: usize| {
        let (Some(Some(m)), Some(Some(now))) = (memo.get(index), depends.get(index)) else {
            return false;
        };
        same_sets(&m.sets, now) && stamp(&config.outputs[index].path) == Some(m.file)
    };
    let skipped: Vec<bool> = (0..config.outputs.len()).map(fresh).collect();
    // The templates read the shared sets in place: no copy per pass.
    let context = PassContext::new(
        config.environment.as_deref(),
        |s| config.services.get(s).and_then(|x| x.port),
        sets.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
    );
    let mut changes: Vec<Change> = Vec::new();
    for (index, output) in config.outputs.iter().enumerate() {
        if skipped.get(index).copied().unwrap_or(false) {
            report.outputs.push(OutputReport {
                path: output.path.clone(),
                status: OutputStatus::Unchanged,
            });
            continue;
        }
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
            match render_and_compare(config, renderer, index, output, &context).await {
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
        match output::install_with_backup(&change.file(config)) {
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
            install_and_check(config, name, frontend, &mine).await
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
                        // Every backend of every set it names: made only for an action that
                        // reads it.
                        let summary = tells_summary(action)
                            .then(|| frontend_summary(config, name, sets, previous, &mine));
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
                                summary: summary.as_ref(),
                            },
                        };
                        match frontend::reload(name, action, &config.base_dir, &context).await {
                            Ok(done) => {
                                pending_reloads.remove(name);
                                clear_owed(config, outputs_of(config, name));
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
                        // that a later pass without --no-reload delivers it (through the state
                        // file: --no-reload is a choice, not an interrupted run, so the files'
                        // owed markers go).
                        if !mine.is_empty() {
                            pending_reloads.insert(name.clone());
                        }
                        clear_owed(config, outputs_of(config, name));
                        FrontendStatus::Installed
                    }
                    (None, _) => {
                        clear_owed(config, outputs_of(config, name));
                        FrontendStatus::Installed
                    }
                }
            }
        };
        report.frontends.push(FrontendReport {
            name: name.clone(),
            status,
        });
    }

    pending_reloads.retain(|name| config.frontends.contains_key(name));
    record_renders(config, report);
    for (index, done) in report.outputs.iter().enumerate() {
        let Some(slot) = memo.get_mut(index) else {
            continue;
        };
        let matches = matches!(done.status, OutputStatus::Unchanged | OutputStatus::Written);
        *slot = match (matches, depends.get(index).cloned().flatten()) {
            (true, Some(sets)) => {
                stamp(&config.outputs[index].path).map(|file| Memo { sets, file })
            }
            _ => None,
        };
    }
}

/// Counts each rendered output by what became of it once the pass is done (outputs skipped for
/// want of a good set were not rendered, and dry runs never get here).
fn record_renders(config: &Config, report: &PassReport) {
    let metrics = crate::metrics::metrics();
    for (output, done) in config.outputs.iter().zip(&report.outputs) {
        let result = match done.status {
            OutputStatus::Unchanged => "unchanged",
            OutputStatus::Written => "written",
            OutputStatus::Failed => "failed",
            OutputStatus::NotApplied => "not_applied",
            OutputStatus::Skipped(_) | OutputStatus::WouldChange(_) => continue,
        };
        metrics.rendered(&output.path.display().to_string(), result);
    }
}

async fn render_and_compare(
    config: &Config,
    renderer: &Renderer,
    index: usize,
    output: &OutputConfig,
    context: &PassContext<'_>,
) -> Result<Option<Change>, PassProblem> {
    // Read first: slotted outputs keep the slot assignment of the installed file.
    let previous = output::read_current(&output.path)?;
    let content = match &output.renderer {
        Some(call) => {
            let mut ctx = context.for_output(output);
            if let Some(backends) = output.service().and_then(|s| context.set(s)) {
                context.insert_slots(&mut ctx, output, backends, previous.as_deref());
            }
            crate::render::exec::render(
                &config.base_dir,
                config.environment.as_deref(),
                output,
                call,
                &ctx,
            )
            .await?
        }
        None => renderer.render_pass(index, output, context, previous.as_deref())?,
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

/// Whether a reload action hands the change summary to a plugin: `exec`, and actions that may
/// fall back to one (any action with a file of its own, as it decides what to run).
fn tells_summary(action: &ReloadAction) -> bool {
    match action {
        ReloadAction::Command { .. } | ReloadAction::Signal { .. } => false,
        ReloadAction::MasterSocket { .. } => false,
        ReloadAction::Exec(_) => true,
        ReloadAction::Spec(SpecAction::HaproxyRuntime(runtime)) => tells_summary(&runtime.fallback),
        ReloadAction::Spec(_) => true,
    }
}

/// What a frontend's reload plugin is told: the services its outputs render and the files written.
fn frontend_summary(
    config: &Config,
    frontend: &str,
    sets: &IndexMap<String, BackendSet>,
    previous: &IndexMap<String, BackendSet>,
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
                    previous.get(s).map(|p| p.as_slice()),
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

/// Installs one frontend's changed outputs so that a failed check leaves its files as they were.
/// Each file is marked owed ([`output::mark_owed`]) before it goes into place, so that a run
/// killed before the reload leaves a trace the next run acts on.
async fn install_and_check(
    config: &Config,
    name: &str,
    frontend: &FrontendConfig,
    changes: &[&Change],
) -> Result<(), PassProblem> {
    if frontend::checks_staged_file(frontend) {
        // Check every staged file before any of them goes into place.
        let mut batch = StagedBatch::new();
        for change in changes {
            let file = change.file(config);
            let staged = batch.stage(file)?;
            let staged_file = frontend::StagedFile {
                staged,
                output: file.path,
            };
            frontend::check(name, frontend, Some(staged_file), &config.base_dir).await?;
        }
        mark_owed(config, name, changes)?;
        match batch.commit() {
            Ok(installed) => installed.keep(),
            Err(e) => {
                clear_owed(config, changes.iter().map(|c| c.index));
                return Err(e.into());
            }
        }
        return Ok(());
    }
    mark_owed(config, name, changes)?;
    let files: Vec<FileChange> = changes.iter().map(|c| c.file(config)).collect();
    let installed = match output::install_batch(&files) {
        Ok(installed) => installed,
        Err(e) => {
            clear_owed(config, changes.iter().map(|c| c.index));
            return Err(e.into());
        }
    };
    if let Err(e) = frontend::check(name, frontend, None, &config.base_dir).await {
        // The checker judges the frontend's whole config, so every file of this pass goes back.
        installed.rollback();
        clear_owed(config, changes.iter().map(|c| c.index));
        return Err(e.into());
    }
    installed.keep();
    Ok(())
}

/// Marks every changed file owed, durably, before any of them is installed.
fn mark_owed(config: &Config, frontend: &str, changes: &[&Change]) -> Result<(), InstallError> {
    for (i, change) in changes.iter().enumerate() {
        let marker = output::OwedMarker {
            frontend: frontend.to_string(),
            previous: change.previous.is_some(),
        };
        if let Err(e) = output::mark_owed(&config.outputs[change.index].path, &marker) {
            clear_owed(config, changes[..i].iter().map(|c| c.index));
            return Err(e);
        }
    }
    Ok(())
}

/// Removes the owed markers of the outputs numbered `indexes`; a failure is only logged (the
/// next start re-checks a file whose marker stayed, which is safe).
pub(super) fn clear_owed(config: &Config, indexes: impl Iterator<Item = usize>) {
    for index in indexes {
        let path = &config.outputs[index].path;
        if let Err(e) = output::clear_owed(path) {
            tracing::warn!("{e}");
        }
    }
}

/// The indexes of the outputs that feed `frontend`.
fn outputs_of(config: &Config, frontend: &str) -> impl Iterator<Item = usize> {
    config
        .outputs
        .iter()
        .enumerate()
        .filter(move |(_, o)| o.frontend.as_deref() == Some(frontend))
        .map(|(i, _)| i)
}
