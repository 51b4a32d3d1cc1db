//! Services with their locators built: made once per config load and asked on every refresh.

use futures_util::future::join_all;

use crate::backend::{self, Backend};
use crate::config::{Config, ServiceConfig};
use crate::locator::{LocateContext, LocateError, Locator};

/// One service with its locators built, as long-lived as the config it came from.
pub struct BuiltService {
    /// The service's settings as loaded (compared on SIGHUP to keep or rebuild it).
    pub config: ServiceConfig,
    locators: Vec<Box<dyn Locator>>,
    ctx: LocateContext,
}

impl BuiltService {
    /// Builds the locators of service `name` of `config`.
    pub fn build(config: &Config, name: &str, service: &ServiceConfig) -> Self {
        BuiltService {
            config: service.clone(),
            locators: service.locators.iter().map(|l| l.build()).collect(),
            ctx: LocateContext {
                service: name.to_string(),
                environment: config.environment.clone(),
                default_port: service.port,
                base_dir: config.base_dir.clone(),
            },
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.ctx.service
    }

    /// The config's `environment` the locators were built with.
    pub fn environment(&self) -> Option<&str> {
        self.ctx.environment.as_deref()
    }

    /// The config directory the locators were built with.
    pub fn base_dir(&self) -> &std::path::Path {
        &self.ctx.base_dir
    }

    /// Asks every locator at once, each within the service's `timeout`; any failure means the
    /// service has no answer this time. The answer is sorted and free of repeats.
    pub async fn locate(&self) -> Result<Vec<Backend>, Vec<LocateError>> {
        let timeout = self.config.timeout.0;
        let ctx = &self.ctx;
        let results = join_all(self.locators.iter().map(|l| async move {
            // On expiry the locate future is dropped, which kills a plugin's process group.
            tokio::time::timeout(timeout, l.locate(ctx))
                .await
                .unwrap_or_else(|_| {
                    Err(LocateError::Timeout {
                        locator: l.describe(),
                        timeout,
                    })
                })
        }))
        .await;
        let mut backends = Vec::new();
        let mut errors = Vec::new();
        for result in results {
            match result {
                Ok(found) => backends.extend(found),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            backend::normalize(&mut backends);
            Ok(backends)
        } else {
            Err(errors)
        }
    }
}
