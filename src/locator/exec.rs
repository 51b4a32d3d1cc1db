//! The `exec` locator: runs a program that prints a file_sd JSON document on stdout.

use std::time::Duration;

use serde::Deserialize;

use super::{BoxFuture, DocumentFormat, LocateContext, LocateError, Locator, parse_document};
use crate::backend::Backend;
use crate::config::HumanDuration;
use crate::process::{self, CommandSpec};

/// The most a plugin may print; a backend list this large is a bug, not a fleet.
pub const MAX_PLUGIN_OUTPUT: usize = 64 * 1024 * 1024;

/// `exec: { command: [prog, arg], timeout: 10s }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecLocatorConfig {
    /// Program and arguments.
    pub command: Vec<String>,
    /// How long it may run (default 10s).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// Runs the program on each pass.
pub struct ExecLocator {
    config: ExecLocatorConfig,
}

impl ExecLocator {
    /// A locator for one program.
    pub fn new(config: ExecLocatorConfig) -> Self {
        ExecLocator { config }
    }
}

impl Locator for ExecLocator {
    fn describe(&self) -> String {
        format!("exec [{}]", process::display_command(&self.config.command))
    }

    fn locate<'a>(
        &'a self,
        ctx: &'a LocateContext,
    ) -> BoxFuture<'a, Result<Vec<Backend>, LocateError>> {
        Box::pin(async move {
            let locator = self.describe();
            let mut env = vec![
                ("ELASTICD_SERVICE".to_string(), ctx.service.clone()),
                ("ELASTICD_PLUGIN_KIND".to_string(), "locator".to_string()),
            ];
            if let Some(environment) = &ctx.environment {
                env.push(("ELASTICD_ENVIRONMENT".to_string(), environment.clone()));
            }
            let finished = process::run(CommandSpec {
                argv: &self.config.command,
                timeout: self.config.timeout.0,
                cwd: &ctx.base_dir,
                env,
                stdin: None,
                max_stdout: MAX_PLUGIN_OUTPUT,
            })
            .await
            .map_err(|source| LocateError::Process {
                locator: locator.clone(),
                source,
            })?;
            parse_document(&finished.stdout, DocumentFormat::Json, &locator, ctx).map_err(|e| {
                match e {
                    // Garbage on stdout usually comes with an explanation on stderr.
                    LocateError::Parse { locator, message } if !finished.stderr.is_empty() => {
                        LocateError::Parse {
                            locator,
                            message: format!(
                                "{message}; the program's stderr ends with:\n{}",
                                process::tail(&finished.stderr)
                            ),
                        }
                    }
                    other => other,
                }
            })
        })
    }
}
