//! Active health checks (`health:` in a service): probe kinds, one file each and one line in the
//! [`probes!`] registry, and the [`Checker`] that probes every backend in a service's current set
//! on its own schedule and keeps a rise/fall state per backend. See `docs/config.md`.
//!
//! Probing never decides alone: a service's set is filtered by health only while that removes at
//! most `max_unhealthy_ratio` of it and leaves `guard.min_backends`; past that, every backend is
//! kept (fail open), because a probe that fails everywhere at once more likely says something
//! about the probe or the network than about every backend.

mod checker;
mod tls;

pub use checker::{Checker, Filtered, HealthEvent, TargetHealth, probe_once};

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::Address;
use crate::value::{BoxFuture, HumanDuration};

/// Where one probe goes: a backend of some service's set, on the probe's port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The backend's address (an IP address or a host name).
    pub address: Address,
    /// The port the probe connects to (the backend's, unless the probe sets its own).
    pub port: u16,
}

impl Target {
    /// `address:port`, with IPv6 addresses in brackets.
    pub fn endpoint(&self) -> String {
        if self.address.is_ipv6() {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// Connects within whatever timeout the caller wraps around it.
    pub async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        match &self.address {
            Address::Ip(ip) => {
                tokio::net::TcpStream::connect(SocketAddr::new(*ip, self.port)).await
            }
            Address::Host(host) => tokio::net::TcpStream::connect((host.as_str(), self.port)).await,
        }
    }
}

/// Whether the warning that the kept-connection budget is spent was logged (once a process).
static BUDGET_SPENT_SAID: AtomicBool = AtomicBool::new(false);

/// What the probes of one backend keep from one probe to the next: the kind's own state (a
/// prepared request, a connection kept open to reuse), and the budget that bounds the
/// connections kept open across all backends.
#[derive(Default)]
pub struct Session {
    state: Option<Box<dyn Any + Send>>,
    budget: Option<Arc<Semaphore>>,
}

impl Session {
    /// A session that may keep a connection open while `budget` has a permit for it (`None`:
    /// never, as for one-shot probes).
    pub fn new(budget: Option<Arc<Semaphore>>) -> Self {
        Session {
            state: None,
            budget,
        }
    }

    /// Takes the kind's state out (`None` on the first probe, or after a probe that was cut
    /// off by its timeout and so could not put it back).
    pub fn take<T: Any + Send>(&mut self) -> Option<Box<T>> {
        self.state.take()?.downcast().ok()
    }

    /// Puts the kind's state back for the next probe.
    pub fn put<T: Any + Send>(&mut self, state: Box<T>) {
        self.state = Some(state);
    }

    /// A permit to keep one connection open after this probe, if the budget has one left. The
    /// first time it has none, says so once: probes still work, at about twice the CPU each.
    pub fn keep_permit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = Arc::clone(self.budget.as_ref()?).try_acquire_owned().ok();
        if permit.is_none() && !BUDGET_SPENT_SAID.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "health: {} connections are kept open between probes, as many as the open-file \
                 limit allows (half of it, less {}); other backends connect anew for each probe. \
                 Raise the limit (`ulimit -n`, systemd's LimitNOFILE=) to keep more",
                checker::kept_connection_budget(),
                checker::MAX_CONCURRENT_PROBES
            );
        }
        permit
    }

    /// Whether this session may keep connections at all.
    pub fn may_keep(&self) -> bool {
        self.budget.is_some()
    }
}

/// What every probe kind provides.
pub trait ProbeSpec {
    /// Checks the backend once; `Err` says why it failed, in plain words. `session` carries
    /// what the kind keeps between the probes of this backend.
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        session: &'a mut Session,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// The port to probe instead of the backend's, if the probe has its own.
    fn port(&self) -> Option<u16> {
        None
    }
    /// Checks what the config type can't express; the message becomes a config error.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Generates [`ProbeConfig`] (one variant per kind), the module declarations, the raw `health:`
/// section with one optional key per kind, and the dispatch to [`ProbeSpec`].
macro_rules! probes {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident => $module:ident :: $spec:ident,
    )*) => {
        $(pub mod $module;)*

        /// The one probe a service's `health:` names.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ProbeConfig {
            $(
                $(#[doc = $doc])*
                $variant($module::$spec),
            )*
        }

        impl ProbeConfig {
            fn spec(&self) -> &dyn ProbeSpec {
                match self {
                    $(ProbeConfig::$variant(spec) => spec,)*
                }
            }

            /// The kind as written in the config (`http`, `tcp`).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(ProbeConfig::$variant(_) => stringify!($module),)*
                }
            }
        }

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawHealth {
            $(
                #[serde(default)]
                $module: Option<$module::$spec>,
            )*
            #[serde(default = "default_interval")]
            interval: HumanDuration,
            #[serde(default = "default_timeout")]
            timeout: HumanDuration,
            #[serde(default)]
            transition_interval: Option<HumanDuration>,
            #[serde(default = "default_rise")]
            rise: u32,
            #[serde(default = "default_fall")]
            fall: u32,
            #[serde(default = "default_jitter")]
            jitter: f64,
            #[serde(default)]
            initial: Initial,
            #[serde(default)]
            startup: Startup,
            #[serde(default = "default_ratio")]
            max_unhealthy_ratio: f64,
            #[serde(default)]
            unhealthy: Unhealthy,
        }

        impl RawHealth {
            fn probes(self) -> (Vec<ProbeConfig>, Self) {
                let mut found = Vec::new();
                let mut rest = self;
                $(
                    if let Some(spec) = rest.$module.take() {
                        found.push(ProbeConfig::$variant(spec));
                    }
                )*
                (found, rest)
            }
        }

        const PROBE_KINDS: &[&str] = &[$(stringify!($module)),*];
    };
}

// The registry: adding a probe kind is a new file in this directory plus one line here.
probes! {
    /// An HTTP request whose status (and optionally body) must match.
    Http => http::HttpProbe,
    /// A TCP connect.
    Tcp => tcp::TcpProbe,
}

/// A new backend's state before its first probes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initial {
    /// It must pass `rise` probes before it is used (the default).
    #[default]
    Unhealthy,
    /// It is used until it fails `fall` probes.
    Healthy,
}

/// How the backends already in the set when the daemon starts are judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Startup {
    /// Like any new backend, by `initial` and then `rise`/`fall`.
    #[default]
    Initial,
    /// The first probe decides, so that a restart neither waits `rise` probes nor empties a pool.
    Decisive,
}

/// What an unhealthy backend becomes in the rendered files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unhealthy {
    /// It is left out (the default).
    #[default]
    Remove,
    /// It stays, with `healthy: false`; the built-in templates render it as down.
    Mark,
}

/// A service's `health:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawHealth")]
pub struct HealthConfig {
    /// The probe.
    pub probe: ProbeConfig,
    /// Time between probes of a backend in a steady state.
    pub interval: Duration,
    /// How long one probe may take, connect included.
    pub timeout: Duration,
    /// Time between probes while a backend is between states (some passes or fails counted).
    pub transition_interval: Duration,
    /// Passed probes in a row that make an unhealthy backend healthy.
    pub rise: u32,
    /// Failed probes in a row that make a healthy backend unhealthy.
    pub fall: u32,
    /// Random share (0.0-1.0) of the interval added to or taken from each wait.
    pub jitter: f64,
    /// A new backend's state before its first probes.
    pub initial: Initial,
    /// How backends already known at start-up are judged.
    pub startup: Startup,
    /// More than this share (0.0-1.0) unhealthy keeps every backend in (fail open).
    pub max_unhealthy_ratio: f64,
    /// Remove or mark unhealthy backends.
    pub unhealthy: Unhealthy,
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_jitter() -> f64 {
    0.1
}
fn default_ratio() -> f64 {
    0.5
}

/// The most probes in a row `rise` and `fall` may ask for.
pub const MAX_RISE_FALL: u32 = 100;
/// The shortest interval: faster probing is load, not safety.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

impl TryFrom<RawHealth> for HealthConfig {
    type Error = String;

    fn try_from(raw: RawHealth) -> Result<Self, String> {
        let (mut probes, raw) = raw.probes();
        let probe = match probes.len() {
            1 => probes.remove(0),
            0 => {
                return Err(format!(
                    "health: name one probe: {}",
                    PROBE_KINDS
                        .iter()
                        .map(|k| format!("`{k}: {{...}}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
            _ => return Err("health: give only one probe kind".into()),
        };
        probe
            .spec()
            .validate()
            .map_err(|e| format!("health: {e}"))?;
        let interval = raw.interval.0;
        let transition_interval = raw.transition_interval.map_or(interval, |t| t.0);
        for (name, value) in [
            ("interval", interval),
            ("transition_interval", transition_interval),
        ] {
            if value < MIN_INTERVAL {
                return Err(format!(
                    "health: `{name}` must be at least {}",
                    humantime::format_duration(MIN_INTERVAL)
                ));
            }
        }
        if raw.timeout.0 > interval.max(transition_interval) {
            return Err("health: `timeout` must not be longer than `interval`".into());
        }
        for (name, value) in [("rise", raw.rise), ("fall", raw.fall)] {
            if !(1..=MAX_RISE_FALL).contains(&value) {
                return Err(format!(
                    "health: `{name}` must be from 1 to {MAX_RISE_FALL}, not {value}"
                ));
            }
        }
        for (name, value) in [
            ("jitter", raw.jitter),
            ("max_unhealthy_ratio", raw.max_unhealthy_ratio),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!(
                    "health: `{name}` must be between 0.0 and 1.0, not {value}"
                ));
            }
        }
        Ok(HealthConfig {
            probe,
            interval,
            timeout: raw.timeout.0,
            transition_interval,
            rise: raw.rise,
            fall: raw.fall,
            jitter: raw.jitter,
            initial: raw.initial,
            startup: raw.startup,
            max_unhealthy_ratio: raw.max_unhealthy_ratio,
            unhealthy: raw.unhealthy,
        })
    }
}

impl HealthConfig {
    /// Probes `target` once, within `timeout`; `session` is what earlier probes of it kept.
    pub async fn probe(&self, target: &Target, session: &mut Session) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.probe.spec().probe(target, session)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            )),
        }
    }

    /// Where the probe of the backend at `address:port` goes.
    pub fn target(&self, address: &Address, port: u16) -> Target {
        Target {
            address: address.clone(),
            port: self.probe.spec().port().unwrap_or(port),
        }
    }
}

#[cfg(test)]
mod tests;
