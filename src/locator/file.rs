//! The `file` locator: a Prometheus file_sd document on disk, read on every pass.

use std::path::PathBuf;

use serde::Deserialize;

use super::{DocumentFormat, LocateContext, LocateError, LocateFuture, Locator, parse_document};

/// How long the blocking read may take at most (a hung mount); the service's `timeout` gives up
/// on it sooner.
const READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// `file: { path: backends.json }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLocatorConfig {
    /// The document; `.json` is JSON, anything else is read as YAML (JSON is YAML too).
    pub path: PathBuf,
}

impl super::LocatorSpec for FileLocatorConfig {
    fn build(&self) -> Box<dyn Locator> {
        Box::new(FileLocator::new(self.clone()))
    }

    fn resolve_paths(&mut self, base: &std::path::Path) {
        if self.path.is_relative() {
            self.path = base.join(&self.path);
        }
    }
}

/// Reads the file on each pass.
pub struct FileLocator {
    config: FileLocatorConfig,
}

impl FileLocator {
    /// A locator for one file.
    pub fn new(config: FileLocatorConfig) -> Self {
        FileLocator { config }
    }
}

impl Locator for FileLocator {
    fn describe(&self) -> String {
        format!("file {}", self.config.path.display())
    }

    fn locate<'a>(&'a self, ctx: &'a LocateContext) -> LocateFuture<'a> {
        Box::pin(async move {
            let locator = self.describe();
            let path = &self.config.path;
            // The service's `timeout` ends a read that hangs; this limit only bounds the thread.
            let bytes = crate::output::read_regular(path, READ_LIMIT)
                .await
                .map_err(|source| LocateError::Read {
                    locator: locator.clone(),
                    path: path.clone(),
                    source,
                })?;
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => DocumentFormat::Json,
                _ => DocumentFormat::Yaml,
            };
            parse_document(&bytes, format, &locator, ctx)
        })
    }
}
