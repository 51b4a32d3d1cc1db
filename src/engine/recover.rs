//! Start-up recovery: files that a killed run installed but that their frontend never both checked
//! and reloaded (their owed marker is still there, see [`crate::output::OwedMarker`]) are checked
//! again. If they pass, the reload is owed; if not, their backups go back. Staging files that
//! killed runs left are removed first.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::Config;
use crate::frontend::{self, StagedFile};
use crate::output::{self, OwedMarker};

use super::report::PassProblem;

/// Re-checks every frontend with marked files; see the module comment.
pub(super) async fn recover(
    config: &Config,
    pending_reloads: &mut BTreeSet<String>,
) -> Vec<PassProblem> {
    let mut problems = Vec::new();
    // A run killed between staging and rename (a `{staged}` check takes a while) leaves its
    // staging file; nothing would ever remove it.
    let files = config.outputs.iter().map(|o| o.path.as_path());
    for path in files.chain(config.state_file.as_deref()) {
        match output::remove_stale_staging(path) {
            Ok(removed) => {
                for stale in removed {
                    tracing::info!("removed {}, left by a run that was killed", stale.display());
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    for output in config.outputs.iter().filter(|o| o.frontend.is_none()) {
        // Nothing checks or reloads for such a file; a marker from an older config means nothing.
        if output::read_owed(&output.path).is_some()
            && let Err(e) = output::clear_owed(&output.path)
        {
            tracing::warn!("{e}");
        }
    }
    for (name, frontend) in &config.frontends {
        let marked: Vec<(&Path, OwedMarker)> = config
            .outputs_of(name)
            .filter_map(|o| Some((o.path.as_path(), output::read_owed(&o.path)?)))
            .collect();
        if marked.is_empty() {
            continue;
        }
        let checked = if frontend::checks_staged_file(frontend) {
            let mut result = Ok(());
            for (path, _) in &marked {
                let file = StagedFile {
                    staged: path,
                    output: path,
                };
                result = frontend::check(name, frontend, Some(file), &config.base_dir).await;
                if result.is_err() {
                    break;
                }
            }
            result
        } else {
            frontend::check(name, frontend, None, &config.base_dir).await
        };
        let files = marked
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        match checked {
            Ok(()) => {
                tracing::warn!(
                    frontend = %name,
                    "an earlier run installed {files} but did not finish; the check passes, so the reload is owed"
                );
                pending_reloads.insert(name.clone());
            }
            Err(e) => {
                tracing::warn!(
                    frontend = %name,
                    "an earlier run installed {files} but did not finish, and the check fails: restoring the previous files"
                );
                for (path, marker) in &marked {
                    match output::restore_backup(path, marker) {
                        Ok(()) => {
                            if let Err(e) = output::clear_owed(path) {
                                tracing::warn!("{e}");
                            }
                        }
                        Err(e) => problems.push(e.into()),
                    }
                }
                problems.push(e.into());
            }
        }
    }
    problems
}
