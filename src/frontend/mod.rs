//! Checking and reloading a frontend: its own validator, then a command, a signal, a plugin,
//! a Varnish VCL swap, HAProxy's master socket, or in-place updates through HAProxy's Runtime API.

pub mod exec;
pub mod haproxy_file;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::plugin::{PluginKind, PluginSlot};
use crate::process::{self, CommandSpec, ProcessError};
use crate::value::{BoxFuture, HumanDuration};
use haproxy_runtime::{RuntimeError, RuntimeSocket};

pub use varnish::VarnishReloadConfig;

/// How to validate and reload one frontend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendConfig {
    /// The frontend's own config checker, as argv; `{staged}` stands for the staged file.
    #[serde(default)]
    pub check: Option<Vec<String>>,
    /// How long the checker may run.
    #[serde(default = "default_check_timeout")]
    pub check_timeout: HumanDuration,
    /// How to make the frontend pick up new files; none means files only.
    #[serde(default)]
    pub reload: Option<ReloadAction>,
}

fn default_check_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// Placeholder in a `check` argv that stands for the staged file.
pub const STAGED_PLACEHOLDER: &str = "{staged}";

/// A reload action in a file of its own, written `reload: { KEY: { ... } }` and listed once in
/// the registry below ([`reload_actions!`]). See `docs/plugins.md`.
pub trait ReloadSpec: Send + Sync {
    /// Checks what the config type can't express; the message becomes a config error.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// Resolves relative paths against the config file's directory.
    fn resolve_paths(&mut self, _base: &Path) {}
    /// The program it runs, if any (for `elasticd check`).
    fn program(&self) -> Option<&str> {
        None
    }
    /// The plugin it runs, if any, for the loader to find; `argv_at` starts at its settings
    /// (inside `KEY:`).
    fn plugin_mut(&mut self) -> Option<PluginSlot<'_>> {
        None
    }
    /// Makes the frontend take the files installed this pass.
    fn reload<'a>(
        &'a self,
        frontend: &'a str,
        cwd: &'a Path,
        context: &'a ReloadContext<'a>,
    ) -> BoxFuture<'a, Result<Reloaded, FrontendError>>;
}

/// Generates [`SpecAction`] and the `reload:` keys of the actions that have a file of their own.
macro_rules! reload_actions {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident => $key:ident : $module:ident :: $config:ident,
    )*) => {
        $(pub mod $module;)*

        /// A reload action with a file of its own (one line each in the registry).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum SpecAction {
            $(
                $(#[doc = $doc])*
                $variant($module::$config),
            )*
        }

        /// The `reload:` keys of the actions in [`SpecAction`], in registry order.
        const SPEC_KEYS: &[&str] = &[$(stringify!($key)),*];

        /// A `reload:` section as written: the built-in keys, then one per registry line.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct RawReload {
            #[serde(default)]
            command: Option<Vec<String>>,
            #[serde(default)]
            timeout: Option<HumanDuration>,
            #[serde(default)]
            signal: Option<String>,
            #[serde(default)]
            pidfile: Option<PathBuf>,
            #[serde(default)]
            master_socket: Option<String>,
            #[serde(default)]
            exec: Option<Vec<String>>,
            #[serde(default)]
            options: Option<serde_json::Map<String, serde_json::Value>>,
            #[serde(default)]
            pass_env: Option<Vec<String>>,
            #[serde(default)]
            env: Option<indexmap::IndexMap<String, String>>,
            $(
                #[serde(default)]
                $key: Option<$module::$config>,
            )*
        }

        impl RawReload {
            /// How many registry actions the section sets.
            fn spec_count(&self) -> usize {
                0 $(+ usize::from(self.$key.is_some()))*
            }

            /// The registry action the section sets, if any, with its key.
            fn take_spec(&mut self) -> Option<(&'static str, SpecAction)> {
                $(
                    if let Some(config) = self.$key.take() {
                        return Some((stringify!($key), SpecAction::$variant(config)));
                    }
                )*
                None
            }
        }

        impl SpecAction {
            /// The action behind the trait.
            pub fn spec(&self) -> &dyn ReloadSpec {
                match self {
                    $(SpecAction::$variant(config) => config,)*
                }
            }

            fn spec_mut(&mut self) -> &mut dyn ReloadSpec {
                match self {
                    $(SpecAction::$variant(config) => config,)*
                }
            }

            /// The `reload:` key it is written under.
            fn key(&self) -> &'static str {
                match self {
                    $(SpecAction::$variant(_) => stringify!($key),)*
                }
            }
        }
    };
}

// The registry: adding a reload action is a new file in this directory (a config type that
// implements `Deserialize` and [`ReloadSpec`]) plus one line here.
reload_actions! {
    /// Load the VCL into a running Varnish under a new name and switch to it.
    Varnish => varnish: varnish::VarnishReloadConfig,
    /// Update HAProxy's servers in place through its Runtime API; reload only when needed.
    HaproxyRuntime => haproxy_runtime: haproxy_runtime::HaproxyRuntime,
}

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
    /// Run a reload plugin with the change summary on stdin (`exec: [my-reload]`).
    Exec(crate::plugin::PluginCall),
    /// Send `reload` to the master CLI of a master-worker HAProxy (`haproxy -W -S PATH`).
    MasterSocket {
        /// The master socket.
        socket: RuntimeSocket,
        /// How long the exchange may take.
        timeout: Duration,
    },
    /// An action with a file of its own: `varnish`, `haproxy_runtime`.
    Spec(SpecAction),
}

/// The default time a reload command may take.
pub const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// "`a`, `b` or `c`".
fn one_of(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl TryFrom<RawReload> for ReloadAction {
    type Error = String;

    fn try_from(mut raw: RawReload) -> Result<Self, String> {
        let chosen = [
            raw.command.is_some(),
            raw.signal.is_some(),
            raw.exec.is_some(),
            raw.master_socket.is_some(),
        ];
        let count = chosen.iter().filter(|c| **c).count() + raw.spec_count();
        let all_keys: Vec<&str> = ["command", "signal", "exec", "master_socket"]
            .into_iter()
            .chain(SPEC_KEYS.iter().copied())
            .collect();
        if count > 1 {
            return Err(
                if count == 2 && raw.command.is_some() && raw.signal.is_some() {
                    "give either `command` or `signal`, not both".into()
                } else {
                    format!(
                        "give one of {}, not several (a `haproxy_runtime` names its own `fallback`)",
                        one_of(&all_keys)
                    )
                },
            );
        }
        if raw.exec.is_none()
            && (raw.options.is_some() || raw.pass_env.is_some() || raw.env.is_some())
        {
            return Err("`options`, `pass_env` and `env` go with `exec` (a reload plugin)".into());
        }
        if raw.pidfile.is_some() && raw.signal.is_none() {
            return Err(if raw.command.is_some() {
                "`pidfile` goes with `signal`, not with `command`".into()
            } else {
                "`pidfile` goes with `signal`".into()
            });
        }
        if let Some((key, action)) = raw.take_spec() {
            if raw.timeout.is_some() {
                return Err(format!("`timeout` goes inside `{key}: {{ ... }}`"));
            }
            action.spec().validate()?;
            return Ok(ReloadAction::Spec(action));
        }
        if let Some(argv) = raw.exec {
            if argv.first().is_none_or(|p| p.is_empty()) {
                return Err("`exec` must be a non-empty list like [my-reload, --flag]".into());
            }
            return Ok(ReloadAction::Exec(crate::plugin::PluginCall {
                exec: argv,
                timeout: raw.timeout,
                options: raw.options.unwrap_or_default(),
                pass_env: raw.pass_env.unwrap_or_default(),
                env: raw.env.unwrap_or_default(),
                program: None,
            }));
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
        Err(format!(
            "`reload` needs one of {} (`command: [...]`, `signal: NAME` with `pidfile: PATH`, \
             `exec: [PLUGIN]`, `master_socket: PATH`, or `KEY: {{ ... }}` for the others)",
            one_of(&all_keys)
        ))
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
            ReloadAction::Command { argv, .. } => crate::value::resolve_program(argv, base),
            ReloadAction::Signal { pidfile, .. } => {
                if pidfile.is_relative() {
                    *pidfile = base.join(&*pidfile);
                }
            }
            // Plugins are found when the config is loaded (`crate::plugin::lookup`).
            ReloadAction::Exec(_) => {}
            ReloadAction::MasterSocket { socket, .. } => socket.resolve_paths(base),
            ReloadAction::Spec(action) => action.spec_mut().resolve_paths(base),
        }
    }

    /// The plugin this action runs, if any, for the loader to find; `argv_at` starts at
    /// `reload:`.
    pub fn plugin_mut(&mut self) -> Option<PluginSlot<'_>> {
        match self {
            ReloadAction::Exec(call) => Some(call.slot(PluginKind::Action)),
            ReloadAction::Spec(action) => {
                let key = action.key();
                let mut slot = action.spec_mut().plugin_mut()?;
                slot.argv_at.insert(0, key);
                Some(slot)
            }
            ReloadAction::Command { .. }
            | ReloadAction::Signal { .. }
            | ReloadAction::MasterSocket { .. } => None,
        }
    }

    /// How it reloads, as the status API and the `method` label of metrics name it.
    pub fn method(&self) -> &'static str {
        match self {
            ReloadAction::Command { .. } => "command",
            ReloadAction::Signal { .. } => "signal",
            ReloadAction::Exec(_) => "plugin",
            ReloadAction::MasterSocket { .. } => "master_socket",
            ReloadAction::Spec(action) => match action.key() {
                "varnish" => "vcl_swap",
                "haproxy_runtime" => "runtime_api",
                other => other,
            },
        }
    }

    /// The program this action runs, if any (for `elasticd check`).
    pub fn program(&self) -> Option<&str> {
        match self {
            ReloadAction::Command { argv, .. } => argv.first().map(String::as_str),
            ReloadAction::Signal { .. } | ReloadAction::MasterSocket { .. } => None,
            ReloadAction::Exec(call) => call.program.as_deref().and_then(Path::to_str),
            ReloadAction::Spec(action) => action.spec().program(),
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
    /// A reload action from the registry failed (`varnish`, ...).
    #[error("frontend `{frontend}`: {action} reload failed: {source}")]
    Action {
        /// Frontend name.
        frontend: String,
        /// The action's key (`varnish`).
        action: &'static str,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The reload plugin failed.
    #[error("frontend `{frontend}`: reload failed: {source}")]
    ReloadPlugin {
        /// Frontend name.
        frontend: String,
        /// What the plugin did.
        source: crate::plugin::PluginError,
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
    /// The pidfile is empty: the frontend stopped (`nginx -t` leaves an empty one behind).
    #[error("frontend `{frontend}`: {frontend} does not seem to be running (empty pidfile {})", pidfile.display())]
    NotRunning {
        /// Frontend name.
        frontend: String,
        /// The pidfile.
        pidfile: PathBuf,
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

impl FrontendError {
    /// The frontend it is about.
    pub fn frontend(&self) -> &str {
        match self {
            FrontendError::Check { frontend, .. }
            | FrontendError::ReloadCommand { frontend, .. }
            | FrontendError::Action { frontend, .. }
            | FrontendError::ReloadPlugin { frontend, .. }
            | FrontendError::Pidfile { frontend, .. }
            | FrontendError::NotRunning { frontend, .. }
            | FrontendError::Signal { frontend, .. }
            | FrontendError::MasterSocket { frontend, .. }
            | FrontendError::RuntimeFallback { frontend, .. } => frontend,
        }
    }

    /// True for a failed check (the files were restored), false for a failed reload.
    pub fn is_check(&self) -> bool {
        matches!(self, FrontendError::Check { .. })
    }
}

/// What a reload action may want to know about the pass: the files that changed.
#[derive(Debug, Default)]
pub struct ReloadContext<'a> {
    /// The frontend's outputs installed this pass.
    pub changed: Vec<ChangedFile<'a>>,
    /// An earlier pass installed files without a successful reload.
    pub owed: bool,
    /// What a reload plugin is told: the environment and the change summary.
    pub request: exec::ReloadRequest<'a>,
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
    run_program(&argv, frontend.check_timeout.0, cwd)
        .await
        .map_err(|source| {
            crate::metrics::metrics().check_failed(name);
            FrontendError::Check {
                frontend: name.to_string(),
                staged_for: staged.map(|f| f.output.to_path_buf()),
                source,
            }
        })
}

/// Runs a checker or reload command, which must exit 0 within `timeout`; its output only
/// matters in errors.
async fn run_program(argv: &[String], timeout: Duration, cwd: &Path) -> Result<(), ProcessError> {
    process::run(CommandSpec {
        argv,
        timeout,
        cwd,
        env: vec![],
        stdin: None,
        max_stdout: process::MAX_ACTION_OUTPUT,
    })
    .await
    .map(|_| ())
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
    let result = run_reload(name, action, cwd, context).await;
    // `haproxy_runtime` counts itself: an in-place update as `runtime_api`, and its fallback
    // through this function under the fallback's own method.
    if !matches!(action, ReloadAction::Spec(SpecAction::HaproxyRuntime(_))) {
        crate::metrics::metrics().reloaded(name, action.method(), result.is_ok());
    }
    result
}

async fn run_reload(
    name: &str,
    action: &ReloadAction,
    cwd: &Path,
    context: &ReloadContext<'_>,
) -> Result<Reloaded, FrontendError> {
    let done =
        match action {
            ReloadAction::Spec(spec) => return spec.spec().reload(name, cwd, context).await,
            ReloadAction::MasterSocket { socket, timeout } => {
                haproxy_runtime::master_reload(socket, *timeout)
                    .await
                    .map_err(|source| FrontendError::MasterSocket {
                        frontend: name.to_string(),
                        source,
                    })
            }
            ReloadAction::Exec(call) => exec::reload(name, call, cwd, &context.request).await,
            ReloadAction::Command { argv, timeout } => run_program(argv, *timeout, cwd)
                .await
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
                if text.trim().is_empty() {
                    return Err(FrontendError::NotRunning {
                        frontend: name.to_string(),
                        pidfile: pidfile.clone(),
                    });
                }
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
                exec: None,
                options: None,
                pass_env: None,
                env: None,
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
        // What `nginx -t` leaves behind when nginx is down.
        std::fs::write(&pidfile, "\n").unwrap();
        let err = reload("nginx", &action, dir.path(), &ReloadContext::default())
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "frontend `nginx`: nginx does not seem to be running (empty pidfile {})",
                pidfile.display()
            )
        );
    }
}
