//! Locators: where backends come from. One file per kind, listed once in the registry below
//! ([`locators!`]), which generates the config enum and its dispatch. See `docs/plugins.md`.

mod discovery;
/// What the `ec2` and `asg` locators share (not a locator of its own, so not in the registry).
#[cfg(feature = "aws")]
pub mod ec2_instances;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use discovery::{DocumentFormat, parse_document};
pub use exec::ExecLocatorConfig;
pub use file::FileLocatorConfig;
pub use static_list::StaticBackend;

use crate::aws::AwsSettings;
use crate::backend::{AddressError, Backend, BackendSet, CompactString};
use crate::plugin::PluginSlot;
use crate::value::BoxFuture;

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
    fn locate<'a>(&'a self, ctx: &'a LocateContext) -> LocateFuture<'a>;
    /// [`Locator::locate`] as a shared set. A locator that keeps its last answer (the `file`
    /// locator) returns the same set again while nothing changed, without copying it, and the
    /// daemon then sees an unchanged answer by comparing pointers.
    fn locate_set<'a>(&'a self, ctx: &'a LocateContext) -> LocateSetFuture<'a> {
        Box::pin(async move { self.locate(ctx).await.map(Arc::new) })
    }
}

/// What [`Locator::locate`] returns: the backends found, or why there is no answer.
pub type LocateFuture<'a> = BoxFuture<'a, Result<Vec<Backend>, LocateError>>;

/// What [`Locator::locate_set`] returns: the backends found, shared, or why there is no answer.
pub type LocateSetFuture<'a> = BoxFuture<'a, Result<BackendSet, LocateError>>;

/// The settings of one kind of locator, as read from the config: what the registry needs.
pub trait LocatorSpec {
    /// Makes the runnable locator.
    fn build(&self) -> Box<dyn Locator>;
    /// Fills settings left unset from the top-level `aws` section (AWS locators only).
    fn inherit_aws(&mut self, _top: &AwsSettings) {}
    /// Makes relative paths absolute against the config file's directory.
    fn resolve_paths(&mut self, _base: &Path) {}
    /// Checks what the config type can't express; the message becomes a config error at the
    /// locator.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// The plugin these settings run, if any, for the loader to find; `argv_at` starts at the
    /// settings (inside `KIND:`).
    fn plugin_mut(&mut self) -> Option<PluginSlot<'_>> {
        None
    }
}

/// Generates the `LocatorConfig` enum (one variant per line, named in the config in snake_case),
/// the module declarations and the dispatch to [`LocatorSpec`]. An entry marked
/// `#[feature = "aws"]` exists only with that cargo feature; without it the variant still parses
/// and its use is a config error saying the build lacks AWS support.
macro_rules! locators {
    ($(
        $(#[doc = $doc:literal])*
        $(#[feature = $feature:literal])?
        $variant:ident => $module:ident :: $spec:ident,
    )*) => {
        $(
            $(#[cfg(feature = $feature)])?
            pub mod $module;
        )*

        /// A locator as written in the config; `build` turns it into a [`Locator`].
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum LocatorConfig {
            $(
                $(#[doc = $doc])*
                $(#[cfg(feature = $feature)])?
                $variant($module::$spec),
                $(
                    /// Not in this build (see [`crate::aws::NOT_BUILT`]).
                    #[cfg(not(feature = $feature))]
                    $variant(crate::aws::NotBuilt),
                )?
            )*
        }

        impl LocatorConfig {
            /// The kind as written in the config (`ec2`, `file`).
            pub fn kind(&self) -> String {
                match self {
                    $(LocatorConfig::$variant(_) => stringify!($variant).to_ascii_lowercase(),)*
                }
            }

            fn spec(&self) -> &dyn LocatorSpec {
                match self {
                    $(LocatorConfig::$variant(spec) => spec,)*
                }
            }

            fn spec_mut(&mut self) -> &mut dyn LocatorSpec {
                match self {
                    $(LocatorConfig::$variant(spec) => spec,)*
                }
            }
        }
    };
}

// The registry: adding a locator is a new file in this directory plus one line here.
locators! {
    /// A fixed list of backends.
    Static => static_list::StaticList,
    /// A Prometheus file_sd document (JSON or YAML), read on each pass.
    File => file::FileLocatorConfig,
    /// A locator plugin (`plugins/README.md`).
    Exec => exec::ExecLocatorConfig,
    /// Backends that registered themselves over the server's API (push registration).
    Registry => registry::RegistryLocatorConfig,
    /// EC2 instances found by DescribeInstances filters.
    #[feature = "aws"]
    Ec2 => ec2::Ec2LocatorConfig,
    /// Members of Auto Scaling groups.
    #[feature = "aws"]
    Asg => asg::AsgLocatorConfig,
}

impl LocatorSpec for crate::aws::NotBuilt {
    fn build(&self) -> Box<dyn Locator> {
        match *self {}
    }
}

impl LocatorConfig {
    /// Makes the runnable locator.
    pub fn build(&self) -> Box<dyn Locator> {
        self.spec().build()
    }

    /// Fills the AWS settings a locator leaves unset from the top-level `aws` section.
    pub fn inherit_aws(&mut self, top: &AwsSettings) {
        self.spec_mut().inherit_aws(top);
    }

    /// Resolves relative paths against the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.spec_mut().resolve_paths(base);
    }

    /// What is wrong with the settings that deserializing could not tell.
    pub fn validate(&self) -> Result<(), String> {
        self.spec().validate()
    }

    /// The plugin this locator runs, if any; `argv_at` starts inside `KIND:`.
    pub fn plugin_mut(&mut self) -> Option<PluginSlot<'_>> {
        self.spec_mut().plugin_mut()
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
    /// Fleet mode has no usable set from the leader (etcd unreachable, no data yet).
    #[error("{locator}: {message}")]
    Fleet {
        /// The locator, described.
        locator: String,
        /// Why, and what is used instead.
        message: String,
    },
}

/// Metadata a backend may carry besides its address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendMeta {
    /// Weight, when given.
    pub weight: Option<u32>,
    /// Identity.
    pub id: Option<CompactString>,
    /// Human name.
    pub name: Option<CompactString>,
    /// Zone.
    pub zone: Option<CompactString>,
    /// Labels.
    pub tags: crate::backend::Labels,
    /// What the source knows besides labels (health state, target group, instance type).
    pub meta: crate::backend::Labels,
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
        meta: meta.meta,
        source: crate::backend::shared_source(locator),
        ..Backend::new(address, port)
    })
}
