//! `on_change` hooks: action plugins run after a change of their service is applied.

use std::path::Path;
use std::time::Duration;

use super::request::{self, ChangeSummary};
use super::{PluginCall, PluginError, PluginKind};

/// A hook may take this long when the config sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one hook of `service` with `summary` in `base_dir`, the config file's directory; `Ok`
/// means it acknowledged the change.
pub async fn run(
    base_dir: &Path,
    environment: Option<&str>,
    service: &str,
    hook: &PluginCall,
    summary: &ChangeSummary,
) -> Result<(), PluginError> {
    let plugin = hook.plugin(PluginKind::Action, DEFAULT_TIMEOUT, base_dir);
    let env = super::elasticd_env(
        environment,
        [("ELASTICD_SERVICE", service), ("ELASTICD_EVENT", "change")],
    );
    let request = request::change(environment, &hook.options, service, summary);
    plugin.run(&request, env).await.map(|_| ())
}
