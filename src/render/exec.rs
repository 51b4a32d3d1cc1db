//! Outputs rendered by a renderer plugin (`renderer: { exec: [...] }`) instead of a template.

use std::path::Path;
use std::time::Duration;

use tera::Context;

use super::{OutputConfig, RenderError, context_json};
use crate::plugin::{self, PluginCall, PluginKind, request};

/// A renderer plugin may take this long when the config sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the output's renderer plugin with `context` (what a template would get); its stdout,
/// verbatim, is the file's content. It runs in `base_dir`, the config file's directory.
pub async fn render(
    base_dir: &Path,
    environment: Option<&str>,
    output: &OutputConfig,
    call: &PluginCall,
    context: &Context,
) -> Result<String, RenderError> {
    let plugin = call.plugin(PluginKind::Renderer, DEFAULT_TIMEOUT, base_dir);
    let failed = |source| RenderError::Plugin {
        path: output.path.clone(),
        source,
    };
    let path = output.path.to_string_lossy();
    let frontend = output.frontend.as_deref().map(|f| ("ELASTICD_FRONTEND", f));
    let env = plugin::elasticd_env(
        environment,
        std::iter::once(("ELASTICD_OUTPUT", &*path)).chain(frontend),
    );
    let request = request::renderer(
        environment,
        &call.options,
        &output.path,
        output.frontend.as_deref(),
        context_json(context),
    );
    let finished = plugin.run(&request, env).await.map_err(failed)?;
    String::from_utf8(finished.stdout).map_err(|e| {
        failed(plugin.invalid_output(
            format!(
                "not UTF-8 (first bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            &finished.stderr,
        ))
    })
}
