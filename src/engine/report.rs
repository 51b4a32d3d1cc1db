//! What a pass did, for the one printer at the top (`elasticd render`'s lines, the daemon's
//! log) and for the daemon's retry decisions.

use std::path::PathBuf;

use crate::frontend::FrontendError;
use crate::locator::LocateError;
use crate::output::InstallError;
use crate::render::RenderError;

/// What a pass may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    /// Write nothing, reload nothing; report diffs.
    pub dry_run: bool,
    /// Install files but don't reload frontends.
    pub no_reload: bool,
    /// Probe the backends of services with `health:` once before rendering.
    pub health: bool,
}

/// Something that went wrong in a pass (the pass goes on with what it can).
#[derive(Debug, thiserror::Error)]
pub enum PassProblem {
    /// A locator had no answer; the service keeps its last good set.
    #[error("service `{service}`: {source}")]
    Locate {
        /// The service.
        service: String,
        /// What the locator said.
        source: LocateError,
    },
    /// The guard refused the new set.
    #[error("service `{service}`: guard held: {reason}; {outcome}")]
    GuardHeld {
        /// The service.
        service: String,
        /// Which limit held.
        limit: super::judge::GuardLimit,
        /// Which limit, with numbers.
        reason: String,
        /// What is used instead.
        outcome: String,
    },
    /// A template failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A file could not be written.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// A check or reload failed.
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    /// An `on_change` hook failed; it is owed and runs again on the next pass.
    #[error("service `{service}`: on_change hook failed (it will be retried): {source}")]
    Hook {
        /// The service.
        service: String,
        /// What the plugin did.
        source: crate::plugin::PluginError,
    },
}

/// How one service fared.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceStatus {
    /// The locators answered and the guard accepted it.
    Fresh,
    /// The last good set is used (locator failed or guard held).
    KeptLastGood,
    /// No usable set: its outputs are left alone.
    NoData,
}

/// One service's result.
#[derive(Debug, Clone)]
pub struct ServiceReport {
    /// The service.
    pub name: String,
    /// Fresh, kept, or none.
    pub status: ServiceStatus,
    /// Size of the set used this pass.
    pub backends: usize,
    /// How many backends were added since the last good set (counted, not listed: the log and
    /// the status list the first few themselves, and 100,000 endpoint strings per pass cost more
    /// than the rest of the judge).
    pub added: usize,
    /// How many backends were removed since the last good set.
    pub removed: usize,
}

/// What happened to one output.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputStatus {
    /// Rendered bytes equal the file's.
    Unchanged,
    /// Installed (and checked, when the frontend has a checker).
    Written,
    /// Dry run: this diff would be written.
    WouldChange(String),
    /// Not rendered: its service has no good backend set.
    Skipped(String),
    /// Rendered but not installed, or rolled back (a check or write failed).
    NotApplied,
    /// Rendering failed.
    Failed,
}

/// One output's result.
#[derive(Debug, Clone)]
pub struct OutputReport {
    /// The file.
    pub path: PathBuf,
    /// What happened.
    pub status: OutputStatus,
}

/// What happened to one frontend.
#[derive(Debug, Clone, PartialEq)]
pub enum FrontendStatus {
    /// Nothing changed for it.
    Untouched,
    /// Files installed and checked; reload skipped (`--no-reload` or no reload action).
    Installed,
    /// Files installed and the frontend reloaded.
    Reloaded,
    /// Files installed and the running frontend updated to match them without a reload.
    UpdatedInPlace,
    /// Check failed: files restored, no reload.
    CheckFailed,
    /// Files installed but the reload failed; it is owed.
    ReloadFailed,
}

/// One frontend's result.
#[derive(Debug, Clone)]
pub struct FrontendReport {
    /// The frontend.
    pub name: String,
    /// What happened.
    pub status: FrontendStatus,
}

/// One `on_change` hook that ran.
#[derive(Debug, Clone)]
pub struct HookReport {
    /// The service.
    pub service: String,
    /// The hook's command line.
    pub hook: String,
    /// Backends added and removed in the summary it got.
    pub added: usize,
    /// See `added`.
    pub removed: usize,
    /// Whether it exited 0.
    pub ok: bool,
}

/// Everything a pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Per service.
    pub services: Vec<ServiceReport>,
    /// Per output, in config order.
    pub outputs: Vec<OutputReport>,
    /// Per frontend that had work.
    pub frontends: Vec<FrontendReport>,
    /// Per `on_change` hook that ran.
    pub hooks: Vec<HookReport>,
    /// Every problem, in the order met.
    pub problems: Vec<PassProblem>,
}

impl PassReport {
    /// True when anything went wrong (the exit status of `elasticd render`).
    pub fn failed(&self) -> bool {
        !self.problems.is_empty()
    }
}
