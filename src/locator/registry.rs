//! The `registry` locator: the backends that registered themselves into this service over the
//! server's API (`/api/v1/registry/{service}/{id}`), from the process's push registry.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{LocateContext, LocateFuture, LocateSetFuture, Locator, LocatorSpec};
use crate::registry::{self, Policy, Registry};
use crate::value::HumanDuration;

/// `registry: {ttl_default, ttl_min, ttl_max, max_registrations, allow, tokens}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryLocatorConfig {
    /// TTL of a lease that names none.
    #[serde(default = "default_ttl")]
    pub ttl_default: HumanDuration,
    /// The shortest TTL a lease may ask for.
    #[serde(default = "default_ttl_min")]
    pub ttl_min: HumanDuration,
    /// The longest TTL a lease may ask for.
    #[serde(default = "default_ttl_max")]
    pub ttl_max: HumanDuration,
    /// Registrations the service holds at most.
    #[serde(default = "default_max")]
    pub max_registrations: usize,
    /// CIDRs a registered address must fall in (default loopback, RFC 1918 and ULA).
    #[serde(default)]
    pub allow: Option<Vec<IpNet>>,
    /// Files of tokens that may register into this service besides the server's own.
    #[serde(default)]
    pub tokens: Vec<PathBuf>,
}

impl Default for RegistryLocatorConfig {
    fn default() -> Self {
        RegistryLocatorConfig {
            ttl_default: default_ttl(),
            ttl_min: default_ttl_min(),
            ttl_max: default_ttl_max(),
            max_registrations: default_max(),
            allow: None,
            tokens: Vec::new(),
        }
    }
}

fn default_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_ttl_min() -> HumanDuration {
    HumanDuration(Duration::from_secs(3))
}

fn default_ttl_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

fn default_max() -> usize {
    10_000
}

/// The shortest `ttl_min` accepted: below it a lease would lapse between two renewals.
const SHORTEST_TTL: Duration = Duration::from_secs(1);

impl RegistryLocatorConfig {
    /// The store's limits for the service, with the scoped tokens read from their files.
    pub fn policy(&self) -> Result<Policy, String> {
        Ok(Policy {
            ttl_default: self.ttl_default.0,
            ttl_min: self.ttl_min.0,
            ttl_max: self.ttl_max.0,
            max_registrations: self.max_registrations,
            allow: self.allow.clone().unwrap_or_else(registry::default_allow),
            tokens: registry::read_tokens(&self.tokens)?,
        })
    }
}

impl LocatorSpec for RegistryLocatorConfig {
    fn build(&self) -> Box<dyn Locator> {
        Box::new(RegistryLocator {
            store: registry::global(),
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        for token in &mut self.tokens {
            *token = base.join(&*token);
        }
    }

    fn validate(&self) -> Result<(), String> {
        let (min, default, max) = (self.ttl_min.0, self.ttl_default.0, self.ttl_max.0);
        if min < SHORTEST_TTL {
            return Err("`ttl_min` must be at least 1s".into());
        }
        if !(min <= default && default <= max) {
            return Err(format!(
                "the TTLs must satisfy ttl_min ({}) <= ttl_default ({}) <= ttl_max ({})",
                humantime::format_duration(min),
                humantime::format_duration(default),
                humantime::format_duration(max)
            ));
        }
        if self.max_registrations == 0 {
            return Err("`max_registrations` must be at least 1".into());
        }
        if self.allow.as_ref().is_some_and(Vec::is_empty) {
            return Err("`allow` is empty: no address could register".into());
        }
        Ok(())
    }
}

/// Reads the registrations of its service from the store.
pub struct RegistryLocator {
    store: &'static Registry,
}

impl Locator for RegistryLocator {
    fn describe(&self) -> String {
        "registry".into()
    }

    fn locate<'a>(&'a self, ctx: &'a LocateContext) -> LocateFuture<'a> {
        Box::pin(async move { self.locate_set(ctx).await.map(Arc::unwrap_or_clone) })
    }

    fn locate_set<'a>(&'a self, ctx: &'a LocateContext) -> LocateSetFuture<'a> {
        // Outside the daemon (`elasticd render`, `locate`) nothing registers: the set is empty.
        // The store's own set, not a copy: 10,000 registrations are held once.
        let backends = self
            .store
            .backends(&ctx.service, tokio::time::Instant::now());
        Box::pin(async move { Ok(backends) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_out_of_order_are_refused() {
        let c = RegistryLocatorConfig {
            ttl_min: HumanDuration(Duration::from_secs(20)),
            ..RegistryLocatorConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("ttl_min (20s)"));
        assert_eq!(RegistryLocatorConfig::default().validate(), Ok(()));
        let p = RegistryLocatorConfig::default().policy().unwrap();
        assert_eq!(p.allow.len(), registry::DEFAULT_ALLOW.len());
    }
}
