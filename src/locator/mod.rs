//! Locators: where backends come from. One file per kind; the config enum is the registry.

#[cfg(feature = "aws")]
pub mod asg;
mod discovery;
#[cfg(feature = "aws")]
pub mod ec2;
mod exec;
mod file;
mod static_list;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use serde::Deserialize;

pub use discovery::{DocumentFormat, parse_document};
pub use exec::ExecLocatorConfig;
pub use file::FileLocatorConfig;
pub use static_list::StaticBackend;

use crate::backend::{AddressError, Backend};

/// A boxed future, so that locators can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a locator knows about the service it works for.
#[derive(Debug, Clone)]
pub struct LocateContext {
    /// Service name.
    pub service: String,
    /// Deployment environment, if the config sets one.
    pub environment: Option<String>,
    /// Port for backends that come without one.
    pub default_port: Option<u16>,
    /// The config file's directory (plugins run there).
    pub base_dir: PathBuf,
}

/// A source of backends.
pub trait Locator: Send + Sync {
    /// Names the locator in logs and errors (`file /etc/elasticd/web.json`).
    fn describe(&self) -> String;
    /// Finds the current backends; an error means "no answer", never "no backends".
    fn locate<'a>(
        &'a self,
        ctx: &'a LocateContext,
    ) -> BoxFuture<'a, Result<Vec<Backend>, LocateError>>;
}

/// A locator as written in the config; `build` turns it into a [`Locator`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocatorConfig {
    /// A fixed list of backends.
    Static(Vec<StaticBackend>),
    /// A Prometheus file_sd document (JSON or YAML), read on each pass.
    File(FileLocatorConfig),
    /// A program that prints a file_sd document.
    Exec(ExecLocatorConfig),
    /// EC2 instances found by DescribeInstances filters.
    #[cfg(feature = "aws")]
    Ec2(ec2::Ec2LocatorConfig),
    /// EC2 instances found by DescribeInstances filters (not in this build).
    #[cfg(not(feature = "aws"))]
    Ec2(crate::aws::NotBuilt),
    /// Members of Auto Scaling groups.
    #[cfg(feature = "aws")]
    Asg(asg::AsgLocatorConfig),
    /// Members of Auto Scaling groups (not in this build).
    #[cfg(not(feature = "aws"))]
    Asg(crate::aws::NotBuilt),
}

impl LocatorConfig {
    /// Makes the runnable locator.
    pub fn build(&self) -> Box<dyn Locator> {
        match self {
            LocatorConfig::Static(list) => Box::new(static_list::StaticLocator::new(list.clone())),
            LocatorConfig::File(cfg) => Box::new(file::FileLocator::new(cfg.clone())),
            LocatorConfig::Exec(cfg) => Box::new(exec::ExecLocator::new(cfg.clone())),
            #[cfg(feature = "aws")]
            LocatorConfig::Ec2(cfg) => Box::new(ec2::Ec2Locator::new(cfg.clone())),
            #[cfg(feature = "aws")]
            LocatorConfig::Asg(cfg) => Box::new(asg::AsgLocator::new(cfg.clone())),
            #[cfg(not(feature = "aws"))]
            LocatorConfig::Ec2(never) | LocatorConfig::Asg(never) => match *never {},
        }
    }

    /// Fills the AWS settings a locator leaves unset from the top-level `aws` section.
    pub fn inherit_aws(&mut self, top: &crate::aws::AwsSettings) {
        match self {
            #[cfg(feature = "aws")]
            LocatorConfig::Ec2(cfg) => cfg.aws = cfg.aws.over(top),
            #[cfg(feature = "aws")]
            LocatorConfig::Asg(cfg) => cfg.aws = cfg.aws.over(top),
            #[cfg(not(feature = "aws"))]
            LocatorConfig::Ec2(never) | LocatorConfig::Asg(never) => match *never {},
            LocatorConfig::Static(_) | LocatorConfig::File(_) | LocatorConfig::Exec(_) => {
                let _ = top;
            }
        }
    }

    /// Resolves relative paths against the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            LocatorConfig::Static(_) => {}
            LocatorConfig::File(cfg) => {
                if cfg.path.is_relative() {
                    cfg.path = base.join(&cfg.path);
                }
            }
            // Plugins are found when the config is loaded (`crate::plugin::lookup`).
            LocatorConfig::Exec(_) => {}
            LocatorConfig::Ec2(_) | LocatorConfig::Asg(_) => {}
        }
    }
}

/// Why a locator has no answer this pass.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// A file could not be read.
    #[error("{locator}: cannot read {}: {source}", path.display())]
    Read {
        /// The locator, described.
        locator: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The backend list is not valid JSON/YAML of the expected shape.
    #[error("{locator}: invalid backend list: {message}")]
    Parse {
        /// The locator, described.
        locator: String,
        /// What the parser said, with position.
        message: String,
    },
    /// One entry has a bad address, port or weight.
    #[error("{locator}: bad backend `{value}`: {reason}")]
    BadBackend {
        /// The locator, described.
        locator: String,
        /// The offending value, as written.
        value: String,
        /// Why it's bad.
        reason: String,
    },
    /// An entry has no port and the service sets none.
    #[error("{locator}: backend `{address}` has no port and service `{service}` sets no `port`")]
    NoPort {
        /// The locator, described.
        locator: String,
        /// The address without a port.
        address: String,
        /// The service.
        service: String,
    },
    /// The locator took longer than the service's `timeout`.
    #[error("{locator}: no answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The locator, described.
        locator: String,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// A locator plugin failed or printed something unusable.
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
    /// An AWS locator got no usable answer (API error, credentials, missing group).
    #[error("{locator}: {source}")]
    Aws {
        /// The locator, described.
        locator: String,
        /// What AWS (or the SDK) said (boxed: it is the largest error here).
        source: Box<crate::aws::AwsError>,
    },
}

/// Metadata a backend may carry besides its address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendMeta {
    /// Weight, when given.
    pub weight: Option<u32>,
    /// Identity.
    pub id: Option<String>,
    /// Human name.
    pub name: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Labels.
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Builds a backend from an address string, filling the port from the service default.
pub fn backend_from_target(
    target: &str,
    port: Option<u16>,
    meta: BackendMeta,
    locator: &str,
    ctx: &LocateContext,
) -> Result<Backend, LocateError> {
    let bad = |e: AddressError| LocateError::BadBackend {
        locator: locator.to_string(),
        value: target.to_string(),
        reason: e.to_string(),
    };
    let (address, target_port) = crate::backend::parse_target(target).map_err(bad)?;
    let port = target_port
        .or(port)
        .or(ctx.default_port)
        .ok_or_else(|| LocateError::NoPort {
            locator: locator.to_string(),
            address: target.to_string(),
            service: ctx.service.clone(),
        })?;
    let weight = meta.weight.unwrap_or(1);
    if !(1..=crate::backend::MAX_WEIGHT).contains(&weight) {
        return Err(LocateError::BadBackend {
            locator: locator.to_string(),
            value: target.to_string(),
            reason: format!(
                "weight {weight} is out of range (1-{})",
                crate::backend::MAX_WEIGHT
            ),
        });
    }
    Ok(Backend {
        weight,
        id: meta.id,
        name: meta.name,
        zone: meta.zone,
        tags: meta.tags,
        source: locator.to_string(),
        ..Backend::new(address, port)
    })
}
