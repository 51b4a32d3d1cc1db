//! The daemon's side of push registration: it tells the store which services take
//! registrations, and locates a service as soon as its registrations change.

use crate::config::Config;
use crate::locator::LocatorConfig;
use crate::registry;

/// Hands the store the `registry` locators' limits (start and SIGHUP).
pub(super) fn configure(config: &Config) {
    let mut services = Vec::new();
    for (name, service) in &config.services {
        let Some(settings) = service.locators.iter().find_map(|l| match l {
            LocatorConfig::Registry(r) => Some(r),
            _ => None,
        }) else {
            continue;
        };
        match settings.policy() {
            Ok(policy) => services.push((name.clone(), policy)),
            Err(e) => {
                tracing::error!(service = %name, "registry: {e}; the service takes no registrations");
            }
        }
    }
    let no_server_token = config
        .server
        .as_ref()
        .is_none_or(|s| s.token_file.is_none());
    for (name, policy) in &services {
        if config.server.is_none() || (no_server_token && policy.tokens.is_empty()) {
            tracing::warn!(
                service = %name,
                "registry: nothing can register: it needs `server:` with a `token_file` or `tokens`"
            );
        }
    }
    registry::global().configure(config.environment.clone(), services);
}

impl super::Daemon {
    /// Locates the services whose registrations changed; one still being located is located
    /// again when that answer is in, so that no change waits for the next scheduled refresh.
    pub(super) fn registrations_changed(&mut self, names: Vec<String>) {
        for name in names {
            if self.in_flight.contains(&name) {
                self.owed.insert(name);
            } else {
                self.start_locate(&name);
            }
        }
    }
}
