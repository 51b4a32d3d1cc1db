//! The action: the `haproxy_runtime` config and its [`ReloadSpec`] impl, which makes the change
//! in place when the plan allows it and runs the fallback reload when it does not.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::client::{RuntimeClient, RuntimeError, RuntimeSocket};
use super::plan::{NotInPlace, changed_servers, plan};
use crate::frontend::haproxy_file::BackendSection;
use crate::frontend::{
    FrontendError, RawReload, ReloadAction, ReloadContext, ReloadSpec, Reloaded, SpecAction,
};
use crate::metrics::metrics;
use crate::plugin::PluginSlot;
use crate::value::{BoxFuture, HumanDuration};

/// How long a Runtime API update or a master-socket reload may take by default.
pub const DEFAULT_RUNTIME_TIMEOUT: Duration = Duration::from_secs(5);

/// The `haproxy_runtime` reload action.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawHaproxyRuntime")]
pub struct HaproxyRuntime {
    /// The stats socket, at `level admin` (`set server` is refused at lower levels).
    pub socket: RuntimeSocket,
    /// How long the whole in-place update may take.
    pub timeout: Duration,
    /// The reload used when the change cannot be made in place or the Runtime API fails.
    pub fallback: Box<ReloadAction>,
}

/// `haproxy_runtime: { socket, timeout, fallback }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHaproxyRuntime {
    #[serde(default)]
    socket: Option<String>,
    #[serde(default)]
    timeout: Option<HumanDuration>,
    #[serde(default)]
    fallback: Option<Box<RawReload>>,
}

impl TryFrom<RawHaproxyRuntime> for HaproxyRuntime {
    type Error = String;

    fn try_from(raw: RawHaproxyRuntime) -> Result<Self, String> {
        let socket = raw.socket.ok_or(
            "`haproxy_runtime` needs `socket`: the stats socket path (`stats socket PATH level admin` \
             in haproxy.cfg) or HOST:PORT",
        )?;
        let socket =
            RuntimeSocket::parse(&socket).map_err(|e| format!("`haproxy_runtime.socket`: {e}"))?;
        let fallback = raw.fallback.ok_or(
            "`haproxy_runtime` needs `fallback`: the reload to use when servers cannot be moved in \
             place, e.g. `fallback: { master_socket: /run/haproxy-master.sock }`",
        )?;
        let fallback = ReloadAction::try_from(*fallback)
            .map_err(|e| format!("`haproxy_runtime.fallback`: {e}"))?;
        if matches!(fallback, ReloadAction::Spec(SpecAction::HaproxyRuntime(_))) {
            return Err(
                "`haproxy_runtime.fallback` must be a real reload (`command`, `signal`, \
                 `master_socket` or `exec`), not another `haproxy_runtime`"
                    .into(),
            );
        }
        Ok(HaproxyRuntime {
            socket,
            timeout: raw.timeout.map_or(DEFAULT_RUNTIME_TIMEOUT, |t| t.0),
            fallback: Box::new(fallback),
        })
    }
}

impl ReloadSpec for HaproxyRuntime {
    fn resolve_paths(&mut self, base: &Path) {
        self.socket.resolve_paths(base);
        self.fallback.resolve_paths(base);
    }

    fn program(&self) -> Option<&str> {
        self.fallback.program()
    }

    // An `exec` fallback is found when the config loads, like any other reload plugin, so that a
    // missing one is a config error rather than a failed reload on the first change that cannot
    // be made in place.
    fn plugin_mut(&mut self) -> Option<PluginSlot<'_>> {
        let mut slot = self.fallback.plugin_mut()?;
        slot.argv_at.insert(0, "fallback");
        Some(slot)
    }

    fn reload<'a>(
        &'a self,
        frontend: &'a str,
        cwd: &'a Path,
        context: &'a ReloadContext<'a>,
    ) -> BoxFuture<'a, Result<Reloaded, FrontendError>> {
        Box::pin(async move {
            reload(frontend, self, cwd, context)
                .await
                .map(|outcome| match outcome {
                    RuntimeOutcome::InPlace(_) => Reloaded::InPlace,
                    RuntimeOutcome::Reloaded(_) => Reloaded::Reloaded,
                })
        })
    }
}

/// What the runtime action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeOutcome {
    /// The servers were updated in place with these commands (none when already equal).
    InPlace(Vec<String>),
    /// The fallback reload ran, for this reason.
    Reloaded(String),
}

/// Runs the `haproxy_runtime` action for one frontend.
pub async fn reload(
    name: &str,
    action: &HaproxyRuntime,
    cwd: &Path,
    context: &ReloadContext<'_>,
) -> Result<RuntimeOutcome, FrontendError> {
    let reason = match in_place_update(action, context).await {
        Ok(commands) => {
            if commands.is_empty() {
                tracing::info!("frontend `{name}`: live servers already match the files");
            } else {
                tracing::info!(
                    "frontend `{name}`: updated in place through {} ({}, no reload): {}",
                    action.socket,
                    crate::value::count(commands.len(), "command"),
                    commands.join("; ")
                );
            }
            metrics().reloaded(name, "runtime_api", true);
            return Ok(RuntimeOutcome::InPlace(commands));
        }
        Err(reason) => {
            // A change the plan can't make in place is no failure; the Runtime API failing is.
            if matches!(reason, NotInPlace::Runtime(_)) {
                metrics().reloaded(name, "runtime_api", false);
            }
            reason
        }
    };
    tracing::warn!("frontend `{name}`: {reason}; reloading with the fallback");
    match Box::pin(crate::frontend::reload(
        name,
        &action.fallback,
        cwd,
        context,
    ))
    .await
    {
        Ok(_) => Ok(RuntimeOutcome::Reloaded(reason.to_string())),
        Err(source) => Err(FrontendError::RuntimeFallback {
            frontend: name.to_string(),
            reason: reason.to_string(),
            source: Box::new(source),
        }),
    }
}

async fn in_place_update(
    action: &HaproxyRuntime,
    context: &ReloadContext<'_>,
) -> Result<Vec<String>, NotInPlace> {
    if context.owed {
        return Err(NotInPlace::Owed);
    }
    let mut desired: Vec<BackendSection> = Vec::new();
    for file in &context.changed {
        desired.extend(changed_servers(file)?);
    }
    let client = RuntimeClient::new(&action.socket, action.timeout);
    let mut sent = Vec::new();
    let mut plans = Vec::new();
    for backend in &desired {
        let live = client
            .servers_state(&backend.name)
            .await
            .map_err(NotInPlace::Runtime)?;
        plans.push(plan(&action.socket, backend, &live)?);
    }
    // New and changed servers first, then the ones going into maintenance, so that capacity
    // is added before it is taken away.
    let (ups, downs): (Vec<_>, Vec<_>) = plans.into_iter().flatten().partition(|s| s.up);
    for step in ups.into_iter().chain(downs) {
        for command in step.commands {
            client.set(&command).await.map_err(NotInPlace::Runtime)?;
            sent.push(command);
        }
    }
    // Read back: what HAProxy runs must now be what the file says.
    for backend in &desired {
        let live = client
            .servers_state(&backend.name)
            .await
            .map_err(NotInPlace::Runtime)?;
        let pending: Vec<String> = plan(&action.socket, backend, &live)?
            .into_iter()
            .flat_map(|s| s.commands)
            .collect();
        if !pending.is_empty() {
            return Err(NotInPlace::Runtime(RuntimeError::NotConverged {
                socket: action.socket.clone(),
                backend: backend.name.clone(),
                pending: pending.join("; "),
            }));
        }
    }
    Ok(sent)
}
