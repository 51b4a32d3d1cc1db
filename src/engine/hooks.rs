//! `on_change` hooks: action plugins run once their service's change is applied, until each has
//! acknowledged the current set.

use std::collections::{BTreeSet, HashSet};

use indexmap::IndexMap;

use crate::backend::Backend;
use crate::config::Config;
use crate::plugin::PluginCall;
use crate::plugin::request::{ChangeSummary, ServiceChange, WrittenOutput};

use super::report::{HookReport, OutputStatus, PassOptions, PassProblem, PassReport};

/// Identifies an `on_change` hook across passes and in the state file; a changed command is a
/// new hook that has acknowledged nothing.
pub fn hook_key(service: &str, index: usize, hook: &PluginCall) -> String {
    format!(
        "{service}#{index} {}",
        crate::process::display_command(&hook.exec)
    )
}

/// Runs the `on_change` hooks of every service whose current set the hook has not acknowledged
/// and whose change is applied: each of its outputs installed (or already up to date) and no
/// reload owed by the frontends concerned. Nothing runs on a dry run or with `--no-reload`.
pub(super) async fn run_hooks(
    config: &Config,
    sets: &IndexMap<String, super::BackendSet>,
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
            if acked.is_some_and(|a| a == set.as_ref()) {
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
            crate::metrics::metrics().hook_ran(name, result.is_ok());
            report.hooks.push(HookReport {
                service: name.clone(),
                hook: crate::process::display_command(&hook.exec),
                added,
                removed,
                ok: result.is_ok(),
            });
            match result {
                Ok(()) => {
                    acknowledged.insert(key, set.as_ref().clone());
                }
                Err(source) => report.problems.push(PassProblem::Hook {
                    service: name.clone(),
                    source,
                }),
            }
        }
    }
}
