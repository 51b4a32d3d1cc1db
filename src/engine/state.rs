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
    pub last_good: IndexMap<String, super::BackendSet>,
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
    /// A backend in the file is not one a locator could have produced (tampered with, or
    /// from a broken writer): the whole file is distrusted.
    #[error("state file {} holds a bad backend `{endpoint}` for `{set}`: {reason}", path.display())]
    BadBackend {
        /// The state file.
        path: PathBuf,
        /// The service (or hook) whose set holds it.
        set: String,
        /// The backend's address and port as stored.
        endpoint: String,
        /// What is wrong with it.
        reason: crate::backend::InvalidBackend,
    },
    /// Writing failed.
    #[error(transparent)]
    Install(#[from] InstallError),
}

impl State {
    /// Reads the state file; a missing file is an empty state.
    pub async fn load(path: &Path) -> Result<Self, StateError> {
        match output::read_regular(path, STATE_READ_TIMEOUT).await {
            Ok(bytes) => {
                let state: State =
                    serde_json::from_slice(&bytes).map_err(|source| StateError::Invalid {
                        path: path.to_path_buf(),
                        source,
                    })?;
                state.validate(path)?;
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Checks every stored backend the way a locator's answer is checked.
    fn validate(&self, path: &Path) -> Result<(), StateError> {
        let sets = self.last_good.iter().map(|(k, v)| (k, v.as_slice())).chain(
            self.hooks_acknowledged
                .iter()
                .map(|(k, v)| (k, v.as_slice())),
        );
        for (set, backends) in sets {
            for b in backends {
                b.validate().map_err(|reason| StateError::BadBackend {
                    path: path.to_path_buf(),
                    set: set.clone(),
                    endpoint: b.endpoint(),
                    reason,
                })?;
            }
        }
        Ok(())
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
        state.last_good.insert(
            "web".into(),
            vec![Backend::new(address, port.unwrap())].into(),
        );
        state.pending_reloads.insert("nginx".into());
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).await.unwrap(), state);
    }

    #[tokio::test]
    async fn a_tampered_backend_distrusts_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = State::default();
        let (address, port) = crate::backend::parse_target("127.0.0.1:80").unwrap();
        state.last_good.insert(
            "web".into(),
            vec![Backend::new(address, port.unwrap())].into(),
        );
        state.save(&path).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        assert!(
            good.contains(r#""port":80"#) && good.contains(r#""weight":1"#),
            "{good}"
        );
        for bad in [
            good.replace(r#""port":80"#, r#""port":0"#),
            good.replace(r#""weight":1"#, r#""weight":4000000000"#),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let err = State::load(&path).await.unwrap_err().to_string();
            assert!(err.contains("holds a bad backend"), "{bad}: {err}");
        }
    }
}
