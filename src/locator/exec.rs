//! The `exec` locator: runs a locator plugin (protocol 1, `plugins/README.md`) that prints backends
//! as JSON on stdout.

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use super::{BoxFuture, DocumentFormat, LocateContext, LocateError, Locator, parse_document};
use crate::backend::Backend;
use crate::plugin::{self, Plugin, PluginKind, request};
use crate::value::HumanDuration;

/// `exec: { command: [prog, arg], timeout: 10s, options: {...}, pass_env: [...], env: {...} }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecLocatorConfig {
    /// Program and arguments; a bare name is looked up in the plugin directory, then `PATH`.
    pub command: Vec<String>,
    /// How long it may run (default 10s).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Passed to the plugin as `options` in its request.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Variables of elasticd's environment passed through: exact names or prefixes ending in `*`.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Variables set for the plugin.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// `command[0]` resolved when the config is loaded.
    #[serde(skip)]
    pub program: Option<PathBuf>,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

// The plugin itself is found when the config is loaded (`crate::plugin::lookup`).
impl super::LocatorSpec for ExecLocatorConfig {
    fn build(&self) -> Box<dyn Locator> {
        Box::new(ExecLocator::new(self.clone()))
    }
}

/// Runs the plugin on each pass.
pub struct ExecLocator {
    config: ExecLocatorConfig,
}

impl ExecLocator {
    /// A locator for one plugin.
    pub fn new(config: ExecLocatorConfig) -> Self {
        ExecLocator { config }
    }

    fn plugin<'a>(&'a self, ctx: &'a LocateContext) -> Plugin<'a> {
        Plugin {
            kind: PluginKind::Locator,
            argv: &self.config.command,
            program: self.config.program.as_deref(),
            timeout: self.config.timeout.0,
            pass_env: &self.config.pass_env,
            env: &self.config.env,
            cwd: &ctx.base_dir,
        }
    }
}

impl Locator for ExecLocator {
    fn describe(&self) -> String {
        plugin::describe(
            PluginKind::Locator,
            self.config
                .command
                .first()
                .map(String::as_str)
                .unwrap_or_default(),
            self.config.program.as_deref(),
        )
    }

    fn locate<'a>(
        &'a self,
        ctx: &'a LocateContext,
    ) -> BoxFuture<'a, Result<Vec<Backend>, LocateError>> {
        Box::pin(async move {
            let plugin = self.plugin(ctx);
            let env = plugin::elasticd_env(
                ctx.environment.as_deref(),
                [("ELASTICD_SERVICE", ctx.service.as_str())],
            );
            let request = request::locator(
                ctx.environment.as_deref(),
                &self.config.options,
                &ctx.service,
                ctx.default_port,
            );
            let finished = plugin.run(&request, env).await?;
            parse_document(
                &finished.stdout,
                DocumentFormat::Json,
                &plugin.describe(),
                ctx,
            )
            .map_err(|e| match e {
                // The plugin exited 0 with garbage: its own error, nothing used.
                LocateError::Parse { message, .. } => plugin
                    .invalid_output(format!("not a backend list: {message}"), &finished.stderr)
                    .into(),
                other => other,
            })
        })
    }
}
