//! Checking and reloading a frontend: its own validator, then a command, a signal, HAProxy's
//! master socket, or in-place updates through HAProxy's Runtime API.

pub mod haproxy_file;
pub mod haproxy_runtime;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::config::{FrontendConfig, HumanDuration};
use crate::process::{self, CommandSpec, ProcessError};
use haproxy_runtime::{HaproxyRuntime, RawHaproxyRuntime, RuntimeError, RuntimeSocket};

pub mod varnish;

pub use varnish::VarnishReloadConfig;

/// Placeholder in a `check` argv that stands for the staged file.
pub const STAGED_PLACEHOLDER: &str = "{staged}";
/// Checkers and reload commands print little; more than this is not read.
const MAX_ACTION_OUTPUT: usize = 1024 * 1024;

/// How a frontend picks up new files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawReload")]
pub enum ReloadAction {
    /// Run a program (`[nginx, -s, reload]`, `[apachectl, -k, graceful]`).
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// How long it may run.
        timeout: Duration,
    },
    /// Send a signal to the pid in a pidfile.
    Signal {
        /// The signal.
        signal: Signal,
        /// The pidfile.
        pidfile: PathBuf,
    },
    /// Send `reload` to the master CLI of a master-worker HAProxy (`haproxy -W -S PATH`).
    MasterSocket {
        /// The master socket.
        socket: RuntimeSocket,
        /// How long the exchange may take.
        timeout: Duration,
    },
    /// Update HAProxy's servers in place through its Runtime API; reload only when needed.
    HaproxyRuntime(HaproxyRuntime),
    /// Load the VCL into a running Varnish under a new name and switch to it.
    Varnish(VarnishReloadConfig),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    #[serde(default)]
    haproxy_runtime: Option<RawHaproxyRuntime>,
    #[serde(default)]
    master_socket: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<HumanDuration>,
    #[serde(default)]
    signal: Option<String>,
    #[serde(default)]
    pidfile: Option<PathBuf>,
    #[serde(default)]
    varnish: Option<VarnishReloadConfig>,
}

/// The default time a reload command may take.
pub const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

impl TryFrom<RawReload> for ReloadAction {
    type Error = String;

    fn try_from(raw: RawReload) -> Result<Self, String> {
        if let Some(varnish) = raw.varnish {
            if raw.command.is_some()
                || raw.signal.is_some()
                || raw.master_socket.is_some()
                || raw.haproxy_runtime.is_some()
            {
                return Err(
                    "give one of `command`, `signal`, `master_socket`, `haproxy_runtime` or `varnish`"
                        .into(),
                );
            }
            if raw.timeout.is_some() || raw.pidfile.is_some() {
                return Err(
                    "`timeout` and `pidfile` don't go with `varnish` (its timeout goes inside it)"
                        .into(),
                );
            }
            varnish.validate()?;
            return Ok(ReloadAction::Varnish(varnish));
        }
        let chosen = [
            raw.command.is_some(),
            raw.signal.is_some(),
            raw.master_socket.is_some(),
            raw.haproxy_runtime.is_some(),
        ];
        if chosen.iter().filter(|c| **c).count() > 1 {
            return Err(
                if raw.haproxy_runtime.is_some() || raw.master_socket.is_some() {
                    "give one of `command`, `signal`, `master_socket` or `haproxy_runtime`, not several (a \
                 `haproxy_runtime` names its own `fallback`)"
                    .into()
                } else {
                    "give either `command` or `signal`, not both".into()
                },
            );
        }
        if raw.pidfile.is_some() && raw.signal.is_none() {
            return Err(if raw.command.is_some() {
                "`pidfile` goes with `signal`, not with `command`".into()
            } else {
                "`pidfile` goes with `signal`".into()
            });
        }
        if let Some(runtime) = raw.haproxy_runtime {
            if raw.timeout.is_some() {
                return Err("`timeout` goes inside `haproxy_runtime: { ... }`".into());
            }
            return HaproxyRuntime::try_from(runtime).map(ReloadAction::HaproxyRuntime);
        }
        if let Some(socket) = raw.master_socket {
            return Ok(ReloadAction::MasterSocket {
                socket: RuntimeSocket::parse(&socket)
                    .map_err(|e| format!("`master_socket`: {e}"))?,
                timeout: raw
                    .timeout
                    .map_or(haproxy_runtime::DEFAULT_RUNTIME_TIMEOUT, |t| t.0),
            });
        }
        if let Some(argv) = raw.command {
            if argv.first().is_none_or(|p| p.is_empty()) {
                return Err("`command` must be a non-empty list like [nginx, -s, reload]".into());
            }
            return Ok(ReloadAction::Command {
                argv,
                timeout: raw.timeout.map_or(DEFAULT_RELOAD_TIMEOUT, |t| t.0),
            });
        }
        if let Some(name) = raw.signal {
            if raw.timeout.is_some() {
                return Err("`timeout` goes with `command`; sending a signal is immediate".into());
            }
            let signal = parse_signal(&name)?;
            let pidfile = raw
                .pidfile
                .ok_or("`signal` needs `pidfile`, the file holding the process id")?;
            return Ok(ReloadAction::Signal { signal, pidfile });
        }
        Err(
            "`reload` needs `command: [...]`, `signal: NAME` with `pidfile: PATH`, \
             `master_socket: PATH`, `haproxy_runtime: { socket, fallback }` or \
             `varnish: {vcl: PATH, ...}`"
                .into(),
        )
    }
}

/// Parses `HUP`, `SIGHUP` or `sighup`.
pub fn parse_signal(name: &str) -> Result<Signal, String> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full)
        .map_err(|_| format!("`{name}` is not a signal name (try HUP, USR1, USR2)"))
}

impl ReloadAction {
    /// Resolves relative paths against the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            ReloadAction::Command { argv, .. } => crate::config::resolve_program(argv, base),
            ReloadAction::Signal { pidfile, .. } => {
                if pidfile.is_relative() {
                    *pidfile = base.join(&*pidfile);
                }
            }
            ReloadAction::MasterSocket { socket, .. } => {
                haproxy_runtime::resolve_socket(socket, base)
            }
            ReloadAction::HaproxyRuntime(runtime) => runtime.resolve_paths(base),
            ReloadAction::Varnish(config) => config.resolve_paths(base),
        }
    }

    /// The program this action runs, if any (for `elasticd check`).
    pub fn program(&self) -> Option<&str> {
        match self {
            ReloadAction::Command { argv, .. } => argv.first().map(String::as_str),
            ReloadAction::Signal { .. } | ReloadAction::MasterSocket { .. } => None,
            ReloadAction::HaproxyRuntime(runtime) => runtime.fallback.program(),
            ReloadAction::Varnish(config) => Some(&config.varnishadm),
        }
    }
}

/// Why a frontend's check or reload failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The checker rejected the new config (or could not run).
    #[error("frontend `{frontend}`: check failed{}: {source}", staged_for.as_ref().map(|p| format!(" for {} (staged copy)", p.display())).unwrap_or_default())]
    Check {
        /// Frontend name.
        frontend: String,
        /// The output whose staged copy was checked, for `{staged}` checks.
        staged_for: Option<PathBuf>,
        /// What the checker did.
        source: ProcessError,
    },
    /// The reload command failed.
    #[error("frontend `{frontend}`: reload failed: {source}")]
    ReloadCommand {
        /// Frontend name.
        frontend: String,
        /// What the command did.
        source: ProcessError,
    },
    /// Varnish did not take the new VCL.
    #[error("frontend `{frontend}`: varnish reload failed: {source}")]
    Varnish {
        /// Frontend name.
        frontend: String,
        /// What went wrong (boxed: it carries a whole process error).
        source: Box<varnish::VarnishError>,
    },
    /// The pidfile could not be read or holds no pid.
    #[error("frontend `{frontend}`: cannot read pid from {}: {reason}", pidfile.display())]
    Pidfile {
        /// Frontend name.
        frontend: String,
        /// The pidfile.
        pidfile: PathBuf,
        /// What's wrong with it.
        reason: String,
    },
    /// The signal could not be sent.
    #[error("frontend `{frontend}`: cannot send {signal} to pid {pid} (from {}): {errno}", pidfile.display())]
    Signal {
        /// Frontend name.
        frontend: String,
        /// The signal.
        signal: Signal,
        /// The pid.
        pid: i32,
        /// The pidfile.
        pidfile: PathBuf,
        /// The OS error.
        errno: nix::errno::Errno,
    },
    /// The master socket reload failed.
    #[error("frontend `{frontend}`: reload through the master socket failed: {source}")]
    MasterSocket {
        /// Frontend name.
        frontend: String,
        /// What the socket did.
        source: RuntimeError,
    },
    /// `haproxy_runtime` could not update in place, and its fallback reload failed too.
    #[error("frontend `{frontend}`: {reason}; the fallback reload failed too: {source}")]
    RuntimeFallback {
        /// Frontend name.
        frontend: String,
        /// Why the update was not made in place.
        reason: String,
        /// The fallback's error.
        source: Box<FrontendError>,
    },
}

/// What a reload action may want to know about the pass: the files that changed.
#[derive(Debug, Default)]
pub struct ReloadContext<'a> {
    /// The frontend's outputs installed this pass.
    pub changed: Vec<ChangedFile<'a>>,
    /// An earlier pass installed files without a successful reload.
    pub owed: bool,
}

/// One output installed this pass.
#[derive(Debug, Clone, Copy)]
pub struct ChangedFile<'a> {
    /// The output.
    pub path: &'a Path,
    /// What it held before (`None`: it is new).
    pub previous: Option<&'a [u8]>,
    /// What it holds now.
    pub content: &'a str,
}

/// A staged copy of an output, for checkers that take `{staged}`.
#[derive(Debug, Clone, Copy)]
pub struct StagedFile<'a> {
    /// Where the staged copy is.
    pub staged: &'a Path,
    /// The output it will become.
    pub output: &'a Path,
}

/// Runs the frontend's checker. With `staged`, `{staged}` in the argv is replaced by that path.
pub async fn check(
    name: &str,
    frontend: &FrontendConfig,
    staged: Option<StagedFile<'_>>,
    cwd: &Path,
) -> Result<(), FrontendError> {
    let Some(argv) = &frontend.check else {
        return Ok(());
    };
    let argv: Vec<String> = match staged {
        Some(file) => argv
            .iter()
            .map(|a| a.replace(STAGED_PLACEHOLDER, &file.staged.to_string_lossy()))
            .collect(),
        None => argv.clone(),
    };
    process::run(CommandSpec {
        argv: &argv,
        timeout: frontend.check_timeout.0,
        cwd,
        env: vec![],
        stdin: None,
        max_stdout: MAX_ACTION_OUTPUT,
    })
    .await
    .map(|_| ())
    .map_err(|source| FrontendError::Check {
        frontend: name.to_string(),
        staged_for: staged.map(|f| f.output.to_path_buf()),
        source,
    })
}

/// True when the checker validates a staged file (argv contains `{staged}`).
pub fn checks_staged_file(frontend: &FrontendConfig) -> bool {
    frontend
        .check
        .as_ref()
        .is_some_and(|argv| argv.iter().any(|a| a.contains(STAGED_PLACEHOLDER)))
}

/// What a successful reload action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The frontend reloaded (or was asked to).
    Reloaded,
    /// The frontend took the change without a reload (`haproxy_runtime`).
    InPlace,
}

/// Runs the reload action; `context` says which files changed.
pub async fn reload(
    name: &str,
    action: &ReloadAction,
    cwd: &Path,
    context: &ReloadContext<'_>,
) -> Result<Reloaded, FrontendError> {
    let done =
        match action {
            ReloadAction::HaproxyRuntime(runtime) => {
                return haproxy_runtime::reload(name, runtime, cwd, context)
                    .await
                    .map(|outcome| match outcome {
                        haproxy_runtime::RuntimeOutcome::InPlace(_) => Reloaded::InPlace,
                        haproxy_runtime::RuntimeOutcome::Reloaded(_) => Reloaded::Reloaded,
                    });
            }
            ReloadAction::MasterSocket { socket, timeout } => {
                haproxy_runtime::master_reload(socket, *timeout)
                    .await
                    .map_err(|source| FrontendError::MasterSocket {
                        frontend: name.to_string(),
                        source,
                    })
            }
            ReloadAction::Command { argv, timeout } => process::run(CommandSpec {
                argv,
                timeout: *timeout,
                cwd,
                env: vec![],
                stdin: None,
                max_stdout: MAX_ACTION_OUTPUT,
            })
            .await
            .map(|_| ())
            .map_err(|source| FrontendError::ReloadCommand {
                frontend: name.to_string(),
                source,
            }),
            ReloadAction::Signal { signal, pidfile } => {
                let pidfile_err = |reason: String| FrontendError::Pidfile {
                    frontend: name.to_string(),
                    pidfile: pidfile.clone(),
                    reason,
                };
                let text = tokio::fs::read_to_string(pidfile)
                    .await
                    .map_err(|e| pidfile_err(e.to_string()))?;
                let pid: i32 =
                    text.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                        pidfile_err(format!("`{}` is not a process id", text.trim()))
                    })?;
                kill(Pid::from_raw(pid), *signal).map_err(|errno| FrontendError::Signal {
                    frontend: name.to_string(),
                    signal: *signal,
                    pid,
                    pidfile: pidfile.clone(),
                    errno,
                })
            }
            ReloadAction::Varnish(config) => {
                let vcl = varnish::swap_vcl(name, config, cwd)
                    .await
                    .map_err(|source| FrontendError::Varnish {
                        frontend: name.to_string(),
                        source: Box::new(source),
                    })?;
                tracing::debug!(frontend = name, "varnish: VCL `{vcl}` active");
                Ok(())
            }
        };
    done.map(|()| Reloaded::Reloaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_parse_with_or_without_prefix() {
        assert_eq!(parse_signal("HUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("sigusr2").unwrap(), Signal::SIGUSR2);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn reload_needs_exactly_one_action() {
        let raw =
            |command: Option<Vec<String>>, signal: Option<&str>, pidfile: Option<&str>| RawReload {
                haproxy_runtime: None,
                master_socket: None,
                command,
                timeout: None,
                signal: signal.map(String::from),
                pidfile: pidfile.map(PathBuf::from),
                varnish: None,
            };
        assert!(ReloadAction::try_from(raw(None, None, None)).is_err());
        assert!(ReloadAction::try_from(raw(Some(vec!["x".into()]), Some("HUP"), None)).is_err());
        assert!(ReloadAction::try_from(raw(None, Some("HUP"), None)).is_err());
        assert!(ReloadAction::try_from(raw(None, Some("HUP"), Some("/run/x.pid"))).is_ok());
        assert!(ReloadAction::try_from(raw(Some(vec![]), None, None)).is_err());
    }

    #[tokio::test]
    async fn signal_reload_reports_a_bad_pidfile() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("x.pid");
        std::fs::write(&pidfile, "garbage").unwrap();
        let action = ReloadAction::Signal {
            signal: Signal::SIGHUP,
            pidfile: pidfile.clone(),
        };
        let err = reload("nginx", &action, dir.path(), &ReloadContext::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("garbage") && err.contains("x.pid"), "{err}");
    }
}
