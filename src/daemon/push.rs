//! The daemon's side of push registration: it tells the store which services take
//! registrations, and locates a service as soon as its registrations change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::locator::LocatorConfig;
use crate::registry::{self, SavedFile};

/// How often the saver looks for changes: a flood of registrations costs one write a second.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// The largest registrations file read back (10,000 registrations take about 2 MB).
const MAX_SAVED_BYTES: u64 = 64 * 1024 * 1024;

/// Where registrations are kept: beside the `state_file`, with `.registrations` appended.
pub(super) fn saved_path(config: &Config) -> Option<PathBuf> {
    let state = config.state_file.as_ref()?;
    let mut name = state.as_os_str().to_os_string();
    name.push(".registrations");
    Some(PathBuf::from(name))
}

/// Takes back the registrations saved by the daemon that ran before, if any.
pub(super) async fn restore(path: &Path) {
    let bytes = match read_limited(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::error!(
                "registrations file {}: {e}; starting without",
                path.display()
            );
            return;
        }
    };
    let file: SavedFile = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(
                "registrations file {} is not valid: {e}; starting without",
                path.display()
            );
            return;
        }
    };
    let (restored, problems) = registry::global().restore(file, tokio::time::Instant::now());
    for p in problems {
        tracing::warn!("registration not restored: {p}");
    }
    tracing::info!(
        "restored {} from {}; each has one TTL to be renewed",
        crate::value::count(restored, "registration"),
        path.display()
    );
}

async fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    tokio::fs::File::open(path)
        .await?
        .take(MAX_SAVED_BYTES)
        .read_to_end(&mut bytes)
        .await?;
    Ok(bytes)
}

/// Writes the registrations file whenever the registrations changed, at most once per
/// [`SAVE_EVERY`]; dropping it stops it, [`Saver::finish`] writes a last time.
pub(super) struct Saver {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Saver {
    /// Starts saving to `path`.
    pub(super) fn start(path: PathBuf) -> Saver {
        let target = path.clone();
        let task = tokio::spawn(async move {
            let mut written = None;
            loop {
                tokio::time::sleep(SAVE_EVERY).await;
                let generation = registry::global().generation();
                if written == Some(generation) {
                    continue;
                }
                let file = registry::global().save();
                let to = target.clone();
                match tokio::task::spawn_blocking(move || write(&to, &file)).await {
                    Ok(Ok(())) => written = Some(generation),
                    Ok(Err(e)) => {
                        tracing::error!("registrations file {}: {e}", target.display())
                    }
                    Err(e) => tracing::error!("registrations file {}: {e}", target.display()),
                }
            }
        });
        Saver { path, task }
    }

    /// Stops the saver and writes what is registered now.
    pub(super) fn finish(self) {
        self.task.abort();
        if let Err(e) = write(&self.path, &registry::global().save()) {
            tracing::error!("registrations file {}: {e}", self.path.display());
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Replaces the file atomically (a temporary file in the same directory, renamed over it), so a
/// crash leaves the old file or the new one, never half of one.
fn write(path: &Path, file: &SavedFile) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut tmp, file)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Hands the store the `registry` locators' limits (start and SIGHUP).
pub(super) fn configure(config: &Config) {
    let mut services = Vec::new();
    for (name, service) in &config.services {
        let Some(settings) = service.locators.iter().find_map(|l| match l {
            LocatorConfig::Registry(r) => Some(r),
            _ => None,
        }) else {
            continue;
        };
        match settings.policy() {
            Ok(policy) => services.push((name.clone(), policy)),
            Err(e) => {
                tracing::error!(service = %name, "registry: {e}; the service takes no registrations");
            }
        }
    }
    let no_server_token = config
        .server
        .as_ref()
        .is_none_or(|s| s.token_file.is_none());
    for (name, policy) in &services {
        if config.server.is_none() || (no_server_token && policy.tokens.is_empty()) {
            tracing::warn!(
                service = %name,
                "registry: nothing can register: it needs `server:` with a `token_file` or `tokens`"
            );
        }
    }
    registry::global().configure(config.environment.clone(), services);
}

impl super::Daemon {
    /// Locates the services whose registrations changed; one still being located is located
    /// again when that answer is in, so that no change waits for the next scheduled refresh.
    pub(super) fn registrations_changed(&mut self, names: Vec<String>) {
        for name in names {
            if self.in_flight.contains(&name) {
                self.owed.insert(name);
            } else {
                self.start_locate(&name);
            }
        }
    }
}
