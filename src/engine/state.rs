//! What survives between passes and, with a `state_file`, between runs: last good sets, reloads
//! still owed, and what each `on_change` hook has acknowledged.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::output::{self, InstallError};

/// How long reading the state file may take before the run goes on without it.
const STATE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What survives between passes: last good sets and reloads still owed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Per service, the last backend set that passed the guard.
    #[serde(default)]
    pub last_good: IndexMap<String, Vec<Backend>>,
    /// Frontends whose files changed but whose reload has not yet succeeded.
    #[serde(default)]
    pub pending_reloads: BTreeSet<String>,
    /// Per `on_change` hook ([`super::hooks::hook_key`]), the last backend set it exited 0 for.
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

impl State {
    /// Reads the state file; a missing file is an empty state.
    pub async fn load(path: &Path) -> Result<Self, StateError> {
        match output::read_regular(path, STATE_READ_TIMEOUT).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Invalid {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(State::load(&path).await.unwrap(), State::default());
        let mut state = State::default();
        let (address, port) = crate::backend::parse_target("[::1]:80").unwrap();
        state
            .last_good
            .insert("web".into(), vec![Backend::new(address, port.unwrap())]);
        state.pending_reloads.insert("nginx".into());
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).await.unwrap(), state);
    }
}
