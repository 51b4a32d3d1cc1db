//! The `exec` reload action: a reload plugin (protocol 1, `plugins/README.md`) that gets the change
//! summary of the frontend on stdin.

use std::path::Path;
use std::time::Duration;

use super::FrontendError;
use crate::plugin::{self, PluginCall, PluginKind, request};

/// A reload plugin may take this long when the config sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a reload plugin is told besides its options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReloadRequest<'a> {
    /// The config's `environment`.
    pub environment: Option<&'a str>,
    /// The services feeding the frontend and the outputs written for it.
    pub summary: Option<&'a request::ChangeSummary>,
}

/// Runs the frontend's reload plugin; any failure means the reload is still owed.
pub async fn reload(
    name: &str,
    call: &PluginCall,
    cwd: &Path,
    req: &ReloadRequest<'_>,
) -> Result<(), FrontendError> {
    let plugin = call.plugin(PluginKind::Action, DEFAULT_TIMEOUT, cwd);
    let empty = request::ChangeSummary::default();
    let summary = req.summary.unwrap_or(&empty);
    let env = plugin::elasticd_env(
        req.environment,
        [("ELASTICD_FRONTEND", name), ("ELASTICD_EVENT", "reload")],
    );
    let request = request::reload(req.environment, &call.options, name, summary);
    plugin
        .run(&request, env)
        .await
        .map(|_| ())
        .map_err(|source| FrontendError::ReloadPlugin {
            frontend: name.to_string(),
            source,
        })
}
