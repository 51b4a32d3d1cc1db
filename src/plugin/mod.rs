//! Plugins: external programs that locate backends, render outputs, reload frontends or act on
//! changes, spoken to with the protocol in `plugins/README.md` (protocol 1).
//!
//! A plugin gets a cleared environment rebuilt from a short allow-list, `pass_env` and `env`; a
//! JSON request on stdin; its own process group and a timeout. Anything but a clean exit with
//! well-formed output is an error that names the plugin, and the caller applies nothing.

pub mod hook;
pub mod lookup;
pub mod request;

use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::process::{self, CommandSpec, Finished, ProcessError};
use crate::value::HumanDuration;

/// The protocol version sent as `protocol` in every request and `ELASTICD_PLUGIN_PROTOCOL`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The most a locator or renderer plugin may print.
pub const MAX_DATA_OUTPUT: usize = 64 * 1024 * 1024;
/// Variables copied from elasticd's own environment into every plugin's, when set.
pub const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// What a plugin is for; it picks the lookup directory, the request shape and the output limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// Prints backends.
    Locator,
    /// Prints a file's content.
    Renderer,
    /// Reloads a frontend or reacts to a change; output ignored.
    Action,
}

impl PluginKind {
    /// The name used in requests, `ELASTICD_PLUGIN_KIND` and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Locator => "locator",
            PluginKind::Renderer => "renderer",
            PluginKind::Action => "action",
        }
    }

    /// The subdirectory of the plugin directory searched first.
    pub fn dir(self) -> &'static str {
        match self {
            PluginKind::Locator => "locators",
            PluginKind::Renderer => "renderers",
            PluginKind::Action => "actions",
        }
    }

    /// The stdout limit.
    pub fn max_output(self) -> usize {
        match self {
            PluginKind::Locator | PluginKind::Renderer => MAX_DATA_OUTPUT,
            PluginKind::Action => process::MAX_ACTION_OUTPUT,
        }
    }
}

/// `{exec: [prog, args], timeout, options, pass_env, env}`: a plugin named in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "as_written::PluginCall")]
pub struct PluginCall {
    /// Program and arguments; a bare name is looked up in the plugin directory, then `PATH`.
    pub exec: Vec<String>,
    /// How long it may run (the default depends on the use).
    pub timeout: Option<HumanDuration>,
    /// Passed to the plugin as `options` in its request.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// Variables of elasticd's environment passed through: exact names or prefixes ending in `*`.
    pub pass_env: Vec<String>,
    /// Variables set for the plugin.
    pub env: IndexMap<String, String>,
    /// argv[0] resolved at load time (see [`lookup`]).
    pub program: Option<PathBuf>,
}

/// Declares `$module::$name`, the settings of a [`PluginCall`] as written, with the program list
/// under the key `$argv`, and its conversion into the call. Every syntax of a plugin call is made
/// here, so that they keep the same keys in the same order (serde lists them in unknown-key
/// errors). `$name` is the name of the type it becomes, because serde's type errors name it
/// (`struct PluginCall`, which `yaml` words as "a mapping of settings"); `$timeout` deserializes the `timeout` key when present, as a
/// path from inside `$module`.
macro_rules! plugin_call_syntax {
    ($module:ident :: $name:ident, $argv:ident, timeout: $timeout:literal) => {
        mod $module {
            /// A plugin call as written in the config, made into a `PluginCall` once read.
            #[derive(::serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            pub(crate) struct $name {
                pub(super) $argv: Vec<String>,
                #[serde(default, deserialize_with = $timeout)]
                pub(super) timeout: Option<$crate::value::HumanDuration>,
                #[serde(default)]
                pub(super) options: ::serde_json::Map<String, ::serde_json::Value>,
                #[serde(default)]
                pub(super) pass_env: Vec<String>,
                #[serde(default)]
                pub(super) env: ::indexmap::IndexMap<String, String>,
            }
        }

        impl From<$module::$name> for $crate::plugin::PluginCall {
            fn from(raw: $module::$name) -> Self {
                $crate::plugin::PluginCall {
                    exec: raw.$argv,
                    timeout: raw.timeout,
                    options: raw.options,
                    pass_env: raw.pass_env,
                    env: raw.env,
                    program: None,
                }
            }
        }
    };
}
pub(crate) use plugin_call_syntax;

plugin_call_syntax!(
    as_written::PluginCall,
    exec,
    timeout: "::serde::Deserialize::deserialize"
);

impl PluginCall {
    /// This call as a plugin for the config loader to find (the program list is `exec`).
    pub fn slot(&mut self, kind: PluginKind) -> PluginSlot<'_> {
        PluginSlot {
            kind,
            argv_at: vec!["exec"],
            call: self,
        }
    }

    /// The runnable plugin, with `default_timeout` when the config sets none.
    pub fn plugin<'a>(
        &'a self,
        kind: PluginKind,
        default_timeout: Duration,
        cwd: &'a Path,
    ) -> Plugin<'a> {
        Plugin {
            kind,
            argv: &self.exec,
            program: self.program.as_deref(),
            timeout: self.timeout.map_or(default_timeout, |t| t.0),
            pass_env: &self.pass_env,
            env: &self.env,
            cwd,
        }
    }
}

/// A plugin that a config entry runs, handed to the config loader so that it finds the program
/// when the config is loaded (see [`lookup`]); registry entries give one from `plugin_mut`.
#[derive(Debug)]
pub struct PluginSlot<'a> {
    /// What the plugin is for; picks the directory it is looked for in.
    pub kind: PluginKind,
    /// The keys from the entry's YAML node down to the program list, whose first item is where
    /// a lookup error points: `["exec"]` for `{exec: [prog, args]}`.
    pub argv_at: Vec<&'static str>,
    /// The call: its argv as written, and the `program` the loader fills.
    pub call: &'a mut PluginCall,
}

/// Everything needed to run one plugin once.
#[derive(Debug, Clone)]
pub struct Plugin<'a> {
    /// Locator, renderer or action.
    pub kind: PluginKind,
    /// Program and arguments as written in the config.
    pub argv: &'a [String],
    /// argv[0] resolved by [`lookup::find`]; `None` runs argv[0] as written.
    pub program: Option<&'a Path>,
    /// Hard limit; the process group is killed after it.
    pub timeout: Duration,
    /// Patterns of variables passed through.
    pub pass_env: &'a [String],
    /// Variables set.
    pub env: &'a IndexMap<String, String>,
    /// Working directory (the config file's directory).
    pub cwd: &'a Path,
}

impl Plugin<'_> {
    /// argv[0] as written.
    pub fn name(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or_default()
    }

    /// `locator plugin `cloudmap` (/etc/elasticd/plugins/locators/cloudmap)`, for messages.
    pub fn describe(&self) -> String {
        describe(self.kind, self.name(), self.program)
    }

    fn error(&self, cause: PluginFailure) -> PluginError {
        PluginError {
            plugin: self.describe(),
            cause,
        }
    }

    /// Runs the plugin with `request` on stdin; its output when it exits 0 within the limits.
    pub async fn run(
        &self,
        request: &serde_json::Value,
        elasticd_env: Vec<(String, String)>,
    ) -> Result<Finished, PluginError> {
        let input = serde_json::to_vec(request)
            .map_err(|e| self.error(PluginFailure::Request(e.to_string())))?;
        let mut argv = self.argv.to_vec();
        if let (Some(first), Some(program)) = (argv.first_mut(), self.program) {
            *first = program.to_string_lossy().into_owned();
        }
        let env = environment(self, elasticd_env, std::env::vars_os());
        let finished = process::run_with_clean_env(CommandSpec {
            argv: &argv,
            timeout: self.timeout,
            cwd: self.cwd,
            env,
            stdin: Some(input),
            max_stdout: self.kind.max_output(),
        })
        .await
        .map_err(|e| self.error(PluginFailure::Process(e)))?;
        if !finished.stderr.is_empty() {
            tracing::debug!(
                "{} said on stderr:\n{}",
                self.describe(),
                process::tail(&finished.stderr)
            );
        }
        if self.kind == PluginKind::Action && !finished.stdout.is_empty() {
            tracing::debug!(
                "{} printed:\n{}",
                self.describe(),
                process::tail(&finished.stdout)
            );
        }
        Ok(finished)
    }

    /// An error for output that came back but is unusable (invalid JSON, not UTF-8, ...).
    pub fn invalid_output(&self, message: String, stderr: &[u8]) -> PluginError {
        self.error(PluginFailure::InvalidOutput {
            message,
            stderr_tail: process::tail(stderr),
        })
    }
}

/// `KIND plugin `NAME` (PATH)`.
pub fn describe(kind: PluginKind, name: &str, program: Option<&Path>) -> String {
    match program {
        Some(path) if path.as_os_str() != name => {
            format!("{} plugin `{name}` ({})", kind.as_str(), path.display())
        }
        _ => format!("{} plugin `{name}`", kind.as_str()),
    }
}

/// The plugin's environment: [`BASE_ENV`], then `pass_env` matches, then `env`, then elasticd's
/// own `ELASTICD_*` variables (which nothing in the config can override).
fn environment(
    plugin: &Plugin<'_>,
    elasticd_env: Vec<(String, String)>,
    outer: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(String, String)> {
    let mut env: IndexMap<String, String> = IndexMap::new();
    let outer: Vec<(String, String)> = outer
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    for (k, v) in &outer {
        if BASE_ENV.contains(&k.as_str()) || plugin.pass_env.iter().any(|p| env_matches(p, k)) {
            env.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in plugin.env {
        env.insert(k.clone(), v.clone());
    }
    env.insert(
        "ELASTICD_PLUGIN_PROTOCOL".into(),
        PROTOCOL_VERSION.to_string(),
    );
    env.insert("ELASTICD_PLUGIN_KIND".into(), plugin.kind.as_str().into());
    env.insert(
        "ELASTICD_CONFIG_DIR".into(),
        plugin.cwd.to_string_lossy().into_owned(),
    );
    for (k, v) in elasticd_env {
        env.insert(k, v);
    }
    env.into_iter().collect()
}

/// The `ELASTICD_*` variables of one call: what it is about (`ELASTICD_SERVICE`, ...), then
/// `ELASTICD_ENVIRONMENT` when the config names an environment; for [`Plugin::run`].
pub fn elasticd_env<'a>(
    environment: Option<&'a str>,
    about: impl IntoIterator<Item = (&'static str, &'a str)>,
) -> Vec<(String, String)> {
    about
        .into_iter()
        .chain(environment.map(|e| ("ELASTICD_ENVIRONMENT", e)))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// True when `name` matches a `pass_env` pattern: the exact name, or a prefix ending in `*`.
pub fn env_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// A plugin failed; nothing it produced is used.
#[derive(Debug, thiserror::Error)]
#[error("{plugin}: {cause}")]
pub struct PluginError {
    /// The plugin, described with its kind, name as written and resolved path.
    pub plugin: String,
    /// What went wrong.
    pub cause: PluginFailure,
}

/// What went wrong with a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginFailure {
    /// It could not start, exited non-zero, died from a signal, timed out or printed too much.
    #[error("{}", process_failure(.0))]
    Process(ProcessError),
    /// It exited 0 but its output is unusable.
    #[error("invalid output: {message}{}", process::tail_suffix("stderr", .stderr_tail))]
    InvalidOutput {
        /// What is wrong with it.
        message: String,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The request could not be encoded (never expected).
    #[error("cannot encode the request: {0}")]
    Request(String),
}

// The plugin is already named in front of the cause, so the command line is not repeated.
fn process_failure(e: &ProcessError) -> String {
    match e {
        ProcessError::Empty => "the command is empty".into(),
        ProcessError::Spawn { source, .. } => format!("cannot start it: {source}"),
        ProcessError::Timeout {
            timeout,
            output_tail,
            ..
        } => format!(
            "no answer within {}: killed with its process group{}",
            humantime::format_duration(*timeout),
            process::tail_suffix("output", output_tail)
        ),
        ProcessError::Failed {
            status,
            output_tail,
            ..
        } => format!(
            "failed ({status}){}",
            process::tail_suffix("output", output_tail)
        ),
        ProcessError::TooMuchOutput { limit, .. } => format!(
            "printed more than {} on stdout (the limit): killed",
            human_size(*limit)
        ),
        ProcessError::Io { source, .. } => format!("I/O error talking to it: {source}"),
    }
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn pass_env_takes_names_and_prefixes() {
        assert!(env_matches("AWS_*", "AWS_REGION"));
        assert!(env_matches("HTTPS_PROXY", "HTTPS_PROXY"));
        assert!(!env_matches("HTTPS_PROXY", "HTTPS_PROXY2"));
        assert!(!env_matches("AWS_*", "MY_AWS_KEY"));
    }

    #[test]
    fn elasticd_env_names_the_call_then_the_environment() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            elasticd_env(Some("prod"), [("ELASTICD_SERVICE", "web")]),
            [
                pair("ELASTICD_SERVICE", "web"),
                pair("ELASTICD_ENVIRONMENT", "prod")
            ]
        );
        assert_eq!(
            elasticd_env(None, [("ELASTICD_SERVICE", "web")]),
            [pair("ELASTICD_SERVICE", "web")]
        );
    }

    #[test]
    fn environment_is_rebuilt_from_the_allow_list() {
        let mut set = IndexMap::new();
        set.insert("REGION".to_string(), "eu".to_string());
        set.insert("ELASTICD_PLUGIN_KIND".to_string(), "spoofed".to_string());
        let pass = vec!["AWS_*".to_string()];
        let argv = vec!["x".to_string()];
        let plugin = Plugin {
            kind: PluginKind::Locator,
            argv: &argv,
            program: None,
            timeout: Duration::from_secs(1),
            pass_env: &pass,
            env: &set,
            cwd: Path::new("/etc/elasticd"),
        };
        let outer = [
            ("PATH", "/bin"),
            ("SECRET", "x"),
            ("AWS_PROFILE", "p"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env: IndexMap<String, String> = environment(
            &plugin,
            vec![("ELASTICD_SERVICE".into(), "web".into())],
            outer.into_iter(),
        )
        .into_iter()
        .collect();
        assert_eq!(env.get("PATH").map(String::as_str), Some("/bin"));
        assert_eq!(env.get("AWS_PROFILE").map(String::as_str), Some("p"));
        assert_eq!(env.get("REGION").map(String::as_str), Some("eu"));
        assert_eq!(env.get("SECRET"), None);
        assert_eq!(
            env.get("ELASTICD_PLUGIN_KIND").map(String::as_str),
            Some("locator")
        );
        assert_eq!(env.get("ELASTICD_SERVICE").map(String::as_str), Some("web"));
        assert_eq!(
            env.get("ELASTICD_PLUGIN_PROTOCOL").map(String::as_str),
            Some("1")
        );
    }
}
