//! The `exec` locator: runs a locator plugin (protocol 1, `plugins/README.md`) that prints backends
//! as JSON on stdout.

use std::time::Duration;

use serde::Deserialize;

use super::{DocumentFormat, LocateContext, LocateError, LocateFuture, Locator, parse_document};
use crate::plugin::{self, Plugin, PluginCall, PluginKind, PluginSlot, request};
use crate::value::HumanDuration;

/// A locator plugin may take this long when the config sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// `exec: { command: [prog, arg], timeout: 10s, options: {...}, pass_env: [...], env: {...} }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "as_written::ExecLocatorConfig")]
pub struct ExecLocatorConfig {
    /// The plugin: `command` is its `exec`.
    pub call: PluginCall,
}

// A locator names its program list `command`, not `exec` (it sits under `exec:` already).
plugin::plugin_call_syntax!(as_written::ExecLocatorConfig, command, timeout: "super::present");

impl From<as_written::ExecLocatorConfig> for ExecLocatorConfig {
    fn from(raw: as_written::ExecLocatorConfig) -> Self {
        ExecLocatorConfig { call: raw.into() }
    }
}

// `timeout: ~` has never meant "the default" here (unlike other plugin calls): keep refusing it.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
    HumanDuration::deserialize(d).map(Some)
}

impl super::LocatorSpec for ExecLocatorConfig {
    fn build(&self) -> Box<dyn Locator> {
        Box::new(ExecLocator::new(self.clone()))
    }

    // Checked after loading rather than while deserializing, so that the error points at the
    // locator and names its service.
    fn validate(&self) -> Result<(), String> {
        if self.call.exec.first().is_none_or(|p| p.is_empty()) {
            return Err("`exec.command` must be a non-empty list like [./plugin, --flag]".into());
        }
        Ok(())
    }

    fn plugin_mut(&mut self) -> Option<PluginSlot<'_>> {
        Some(PluginSlot {
            kind: PluginKind::Locator,
            argv_at: vec!["command"],
            call: &mut self.call,
        })
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
        self.config
            .call
            .plugin(PluginKind::Locator, DEFAULT_TIMEOUT, &ctx.base_dir)
    }
}

impl Locator for ExecLocator {
    fn describe(&self) -> String {
        let call = &self.config.call;
        plugin::describe(
            PluginKind::Locator,
            call.exec.first().map(String::as_str).unwrap_or_default(),
            call.program.as_deref(),
        )
    }

    fn locate<'a>(&'a self, ctx: &'a LocateContext) -> LocateFuture<'a> {
        Box::pin(async move {
            let plugin = self.plugin(ctx);
            let env = plugin::elasticd_env(
                ctx.environment.as_deref(),
                [("ELASTICD_SERVICE", ctx.service.as_str())],
            );
            let request = request::locator(
                ctx.environment.as_deref(),
                &self.config.call.options,
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
