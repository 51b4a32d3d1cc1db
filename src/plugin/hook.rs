//! `on_change` hooks: action plugins run after a change of their service is applied.

use std::time::Duration;

use super::request::{self, ChangeSummary};
use super::{PluginCall, PluginError, PluginKind};
use crate::config::Config;

/// A hook may take this long when the config sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one hook of `service` with `summary`; `Ok` means it acknowledged the change.
pub async fn run(
    config: &Config,
    service: &str,
    hook: &PluginCall,
    summary: &ChangeSummary,
) -> Result<(), PluginError> {
    let plugin = hook.plugin(PluginKind::Action, DEFAULT_TIMEOUT, &config.base_dir);
    let mut env = vec![
        ("ELASTICD_SERVICE".to_string(), service.to_string()),
        ("ELASTICD_EVENT".to_string(), "change".to_string()),
    ];
    if let Some(environment) = &config.environment {
        env.push(("ELASTICD_ENVIRONMENT".to_string(), environment.clone()));
    }
    let request = request::change(
        config.environment.as_deref(),
        &hook.options,
        service,
        summary,
    );
    plugin.run(&request, env).await.map(|_| ())
}
