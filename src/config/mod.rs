//! The config file: types, loading, and validation that reports every problem at once.
//!
//! Loading happens in three steps: the file is parsed into a located YAML tree ([`yaml`]); each
//! top-level section, and each service, frontend and output inside it, is deserialized on its own
//! so that one mistake doesn't hide the next; then cross-references (an output's frontend and
//! service, duplicate paths, ...) are checked. Every problem found is returned together.

pub mod checks;
mod cluster;
mod named;
mod schedule;

pub use schedule::{DEFAULT_REFRESH, Schedule};

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::aws::AwsSettings;
use crate::frontend::{FrontendConfig, ReloadAction};
use crate::locator::LocatorConfig;
use crate::render::{BUILTIN_PREFIX, OutputConfig, TemplateRef};
use crate::server::ServerConfig;
use crate::value::{HumanDuration, is_valid_name, resolve_program};
use crate::yaml::{self, Location, Node, NodeKind};

/// Where to look for the config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config.yaml";

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The directory relative paths resolve against, and commands run in.
    pub base_dir: PathBuf,
    /// Deployment environment name, shown to templates and plugins.
    pub environment: Option<String>,
    /// Where one-shot runs keep last good backend sets and pending reloads between runs.
    pub state_file: Option<PathBuf>,
    /// Where plugins named without a `/` are looked for (default `plugins/` beside the config).
    pub plugin_dir: PathBuf,
    /// Services by name, in file order.
    pub services: IndexMap<String, ServiceConfig>,
    /// Frontends by name, in file order.
    pub frontends: IndexMap<String, FrontendConfig>,
    /// Files to render, in file order.
    pub outputs: Vec<OutputConfig>,
    /// How `elasticd run` schedules, coalesces and retries.
    pub daemon: DaemonConfig,
    /// AWS settings for the `ec2` and `asg` locators (each may override them).
    pub aws: AwsSettings,
    /// The operations server; off unless the section is present.
    pub server: Option<ServerConfig>,
    /// Fleet mode (`cluster:`); off unless the section is present.
    pub cluster: Option<crate::fleet::ClusterConfig>,
}

/// Settings of the daemon (`elasticd run`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Apply changes this long after the last one arrived (quiet period).
    #[serde(default = "default_settle_min")]
    pub settle_min: HumanDuration,
    /// ... but no later than this after the first one.
    #[serde(default = "default_settle_max")]
    pub settle_max: HumanDuration,
    /// Random delay before each refresh, as a share (0.0-1.0) of the service's refresh period.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Longest wait between retries of a failing locator or frontend.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: HumanDuration,
}

/// The longest `settle_min`. `settle_max` and `backoff_max`, like every duration, are at most
/// [`crate::value::MAX_DURATION`] (a day).
pub const MAX_SETTLE_MIN: Duration = Duration::from_secs(60 * 60);

fn default_settle_min() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_settle_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_jitter() -> f64 {
    0.1
}
fn default_backoff_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            settle_min: default_settle_min(),
            settle_max: default_settle_max(),
            jitter: default_jitter(),
            backoff_max: default_backoff_max(),
        }
    }
}

/// A named pool of backends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// When the daemon asks the locators again: `15s` or a cron expression with seconds.
    #[serde(default)]
    pub refresh: Schedule,
    /// How long each locator may take before its answer counts as failed.
    #[serde(default = "default_locate_timeout")]
    pub timeout: HumanDuration,
    /// Port for backends whose locator gives none.
    #[serde(default)]
    pub port: Option<u16>,
    /// Where the backends come from; their results are merged.
    pub locators: Vec<LocatorConfig>,
    /// When to refuse a new backend set and keep the last good one.
    #[serde(default)]
    pub guard: GuardConfig,
    /// Action plugins run after a change of this service is applied.
    #[serde(default)]
    pub on_change: Vec<crate::plugin::PluginCall>,
    /// Active health checks; without them every located backend is used.
    #[serde(default)]
    pub health: Option<crate::health::HealthConfig>,
    /// Each locator as written (see [`crate::fleet::locator_form`]): what fleet mode names its
    /// election by. Filled by the loader, not a config key.
    #[serde(skip)]
    pub fleet_forms: Vec<crate::fleet::LocatorForm>,
}

/// Limits that stop a bad locator answer from reaching a frontend.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Fewer backends than this keeps the last good set.
    #[serde(default = "default_min_backends")]
    pub min_backends: usize,
    /// Losing more than this share (0.0-1.0) of the last good set in one pass keeps it instead.
    #[serde(default)]
    pub max_removed_ratio: Option<f64>,
}

fn default_locate_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_min_backends() -> usize {
    1
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            min_backends: default_min_backends(),
            max_removed_ratio: None,
        }
    }
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Where in the file, when known.
    pub loc: Option<Location>,
    /// What is wrong, and how to fix it where that's clear.
    pub message: String,
}

impl Problem {
    fn at(node: &Node, message: impl Into<String>) -> Self {
        Problem {
            loc: Some(node.loc),
            message: message.into(),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The config path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file was read but has problems; all of them are listed.
    #[error("{}", format_problems(path, problems))]
    Invalid {
        /// The config path.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

/// Formats problems compiler-style: `file:line:column: message`, one per line.
pub fn format_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = format!(
        "{} has {} problem{}:",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        match p.loc {
            Some(loc) => out.push_str(&format!("\n  {}:{loc}: {}", path.display(), p.message)),
            None => out.push_str(&format!("\n  {}: {}", path.display(), p.message)),
        }
    }
    out
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config text as if it had been read from `path`.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let invalid = |problems: Vec<Problem>| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    let root = yaml::parse(text).map_err(|e| {
        invalid(vec![Problem {
            loc: Some(e.loc),
            message: format!("YAML syntax error: {}", e.message),
        }])
    })?;
    let base_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    let mut loader = Loader {
        problems: Vec::new(),
        declared: HashSet::new(),
        output_items: Vec::new(),
    };
    let mut config = loader.sections(&root, path, base_dir);
    loader.cross_check(&root, &config);
    loader.find_plugins(&root, &mut config);
    if !loader.problems.is_empty() {
        let mut problems = loader.problems;
        problems.sort_by_key(|p| p.loc);
        return Err(invalid(problems));
    }
    config.resolve_paths();
    Ok(config)
}

struct Loader {
    problems: Vec<Problem>,
    /// Names present in the file, parsed or not, so that a broken service doesn't also show up
    /// as "unknown service" everywhere it is used.
    declared: HashSet<(String, String)>,
    /// For each parsed output, its position in the `outputs` list.
    output_items: Vec<usize>,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "environment",
    "state_file",
    "plugin_dir",
    "aws",
    "daemon",
    "services",
    "frontends",
    "outputs",
    "server",
    "cluster",
];

impl Loader {
    fn take<'a, T: Deserialize<'a>>(&mut self, node: &'a Node) -> Option<T> {
        match node.deserialize::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problems.push(Problem {
                    loc: e.loc.or(Some(node.loc)),
                    message: e.message,
                });
                None
            }
        }
    }

    fn sections(&mut self, root: &Node, path: &Path, base_dir: PathBuf) -> Config {
        let mut config = Config {
            path: path.to_path_buf(),
            plugin_dir: base_dir.join(crate::plugin::lookup::DEFAULT_PLUGIN_DIR),
            base_dir,
            environment: None,
            state_file: None,
            services: IndexMap::new(),
            frontends: IndexMap::new(),
            outputs: Vec::new(),
            daemon: DaemonConfig::default(),
            aws: AwsSettings::default(),
            server: None,
            cluster: None,
        };
        let entries = match &root.kind {
            NodeKind::Map(entries) => entries,
            NodeKind::Null => {
                self.problems.push(Problem::at(
                    root,
                    "the config is empty; it needs `services` (and `outputs` to write anything)",
                ));
                return config;
            }
            _ => {
                self.problems.push(Problem::at(
                    root,
                    "the config must be a mapping of sections",
                ));
                return config;
            }
        };
        for (key, value) in entries {
            let name = key.as_scalar_text().unwrap_or_default();
            match name.as_str() {
                "environment" => {
                    config.environment = self.take::<Option<String>>(value).flatten();
                    if config.environment.as_deref() == Some("") {
                        self.problems
                            .push(Problem::at(value, "`environment` must not be empty"));
                    }
                }
                "state_file" => config.state_file = self.take::<Option<PathBuf>>(value).flatten(),
                "plugin_dir" => {
                    if let Some(dir) = self.take::<Option<PathBuf>>(value).flatten() {
                        config.plugin_dir = config.base_dir.join(dir);
                    }
                }
                "aws" => {
                    if cfg!(feature = "aws") {
                        config.aws = self
                            .take::<Option<AwsSettings>>(value)
                            .flatten()
                            .unwrap_or_default();
                    } else {
                        self.problems.push(Problem::at(
                            key,
                            format!("`aws`: {}", crate::aws::NOT_BUILT),
                        ));
                    }
                }
                "daemon" => {
                    if let Some(daemon) = self.take::<Option<DaemonConfig>>(value).flatten() {
                        if !(0.0..=1.0).contains(&daemon.jitter) {
                            self.problems.push(Problem::at(
                                value.get("jitter").unwrap_or(value),
                                format!(
                                    "jitter must be between 0.0 and 1.0, not {}",
                                    daemon.jitter
                                ),
                            ));
                        }
                        if daemon.settle_min.0 > MAX_SETTLE_MIN {
                            self.problems.push(Problem::at(
                                value.get("settle_min").unwrap_or(value),
                                "settle_min must be at most 1h: every change would wait that long to be applied",
                            ));
                        }
                        config.daemon = daemon;
                    }
                }
                // `server:` with nothing under it turns the server on with its defaults.
                "server" => match &value.kind {
                    NodeKind::Null => {
                        let empty = Node {
                            kind: NodeKind::Map(Vec::new()),
                            ..value.clone()
                        };
                        config.server = self.take::<ServerConfig>(&empty)
                    }
                    _ => config.server = self.take::<ServerConfig>(value),
                },
                "cluster" => config.cluster = self.cluster(key, value, &config.base_dir),
                "services" => {
                    config.services =
                        self.named_section(value, "services", |l, node| l.take_service(node))
                }
                "frontends" => {
                    config.frontends =
                        self.named_section(value, "frontends", |l, node| l.take(node))
                }
                "outputs" => match &value.kind {
                    NodeKind::Seq(items) => {
                        for (i, item) in items.iter().enumerate() {
                            if let Some(output) = self.take::<OutputConfig>(item) {
                                config.outputs.push(output);
                                self.output_items.push(i);
                            }
                        }
                    }
                    _ => self
                        .problems
                        .push(Problem::at(value, "`outputs` must be a list of outputs")),
                },
                other => self.problems.push(Problem::at(
                    key,
                    format!(
                        "unknown top-level key `{other}`; expected one of: {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                )),
            }
        }
        if root.get("services").is_none() {
            self.problems
                .push(Problem::at(root, "missing section `services`"));
        }
        cluster::fill_fleet_forms(root, &mut config);
        config
    }

    // Each locator is read on its own so that a mistake in one doesn't hide one in the next.
    fn take_service(&mut self, node: &Node) -> Option<ServiceConfig> {
        let mut rest = node.clone();
        let mut locators = Vec::new();
        if let NodeKind::Map(entries) = &mut rest.kind
            && let Some((_, list)) = entries
                .iter_mut()
                .find(|(k, _)| matches!(&k.kind, NodeKind::Str(s) if s == "locators"))
            && let NodeKind::Seq(items) = &mut list.kind
        {
            for mut item in std::mem::take(items) {
                self.take_shared(&mut item);
                locators.extend(self.take::<LocatorConfig>(&item));
            }
        }
        // A service with a broken locator still goes through the cross-checks; the config is
        // rejected anyway because the locator's problem is recorded.
        let mut service = self.take::<ServiceConfig>(&rest)?;
        if service.locators.is_empty() {
            service.locators = locators;
        }
        Some(service)
    }

    fn cross_check(&mut self, root: &Node, config: &Config) {
        let services_node = root.get("services");
        for (name, service) in &config.services {
            let node = services_node.and_then(|s| s.get(name));
            let node = node.unwrap_or(root);
            for (i, locator) in service.locators.iter().enumerate() {
                if let Err(message) = locator.validate() {
                    let at = node.get("locators").and_then(|l| l.item(i)).unwrap_or(node);
                    self.problems
                        .push(Problem::at(at, format!("service `{name}`: {message}")));
                }
            }
            for (i, hook) in service.on_change.iter().enumerate() {
                if hook.exec.first().is_none_or(|p| p.is_empty()) {
                    let at = node
                        .get("on_change")
                        .and_then(|l| l.item(i))
                        .unwrap_or(node);
                    self.problems.push(Problem::at(
                        at,
                        format!("service `{name}`: `on_change` `exec` must be a non-empty list like [my-hook, --flag]"),
                    ));
                }
            }
            let written = node.get("locators").and_then(|l| match &l.kind {
                NodeKind::Seq(items) => Some(items.len()),
                _ => None,
            });
            if written == Some(0) {
                self.problems.push(Problem::at(
                    node.get("locators").unwrap_or(node),
                    format!("service `{name}` has no locators"),
                ));
            }
            if service.port == Some(0) {
                self.problems.push(Problem::at(
                    node.get("port").unwrap_or(node),
                    "port 0 is not a usable port",
                ));
            }
            if let Some(ratio) = service.guard.max_removed_ratio
                && !(0.0..=1.0).contains(&ratio)
            {
                self.problems.push(Problem::at(
                    node.at_or_here(&["guard", "max_removed_ratio"]),
                    format!("max_removed_ratio must be between 0.0 and 1.0, not {ratio}"),
                ));
            }
        }
        let frontends_node = root.get("frontends");
        for (name, frontend) in &config.frontends {
            let node = frontends_node.and_then(|s| s.get(name)).unwrap_or(root);
            if let Some(check) = &frontend.check
                && check.first().is_none_or(|p| p.is_empty())
            {
                self.problems.push(Problem::at(
                    node.get("check").unwrap_or(node),
                    format!("frontend `{name}`: `check` must be a non-empty command list"),
                ));
            }
        }
        let declared = |section: &str, name: &str| {
            self.declared
                .contains(&(section.to_string(), name.to_string()))
        };
        let any_service_declared = self.declared.iter().any(|(s, _)| s == "services");
        if !any_service_declared && root.get("services").is_some() {
            self.problems.push(Problem::at(
                root.get("services").unwrap_or(root),
                "no services are defined",
            ));
        }

        let outputs_node = root.get("outputs");
        let mut paths = HashSet::new();
        let mut problems = Vec::new();
        for (output, item) in config.outputs.iter().zip(&self.output_items) {
            let node = outputs_node.and_then(|n| n.item(*item)).unwrap_or(root);
            let what = format!("output `{}`", output.path.display());
            match (&output.template, &output.renderer) {
                (Some(_), Some(_)) => problems.push(Problem::at(
                    node.get("renderer").unwrap_or(node),
                    format!("{what}: give either `template` or `renderer`, not both"),
                )),
                (None, None) => problems.push(Problem::at(
                    node,
                    format!(
                        "{what} needs `template: builtin:NAME` (or a file) or `renderer: {{ exec: [PLUGIN] }}`"
                    ),
                )),
                (None, Some(call)) if call.exec.first().is_none_or(|p| p.is_empty()) => problems
                    .push(Problem::at(
                        node.get("renderer").unwrap_or(node),
                        format!("{what}: `renderer.exec` must be a non-empty list like [my-renderer, --flag]"),
                    )),
                _ => {}
            }
            // `a.conf` and `./a.conf` are the same file.
            let normalized: PathBuf = output
                .path
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            if !paths.insert(normalized) {
                problems.push(Problem::at(
                    node.get("path").unwrap_or(node),
                    format!("{what} is written by more than one output"),
                ));
            }
            if let Some(frontend) = &output.frontend
                && !declared("frontends", frontend)
            {
                problems.push(Problem::at(
                    node.get("frontend").unwrap_or(node),
                    format!(
                        "{what}: unknown frontend `{frontend}`; defined frontends: {}",
                        self.declared_names("frontends")
                    ),
                ));
            }
            if let Some(slots) = output.vars.get("slots")
                && !slots
                    .as_u64()
                    .is_some_and(|n| (1..=crate::render::slots::MAX_SLOTS).contains(&n))
            {
                problems.push(Problem::at(
                    node.at_or_here(&["vars", "slots"]),
                    format!(
                        "{what}: `vars.slots` must be a whole number from 1 to {}, not {slots}",
                        crate::render::slots::MAX_SLOTS
                    ),
                ));
            }
            match output.vars.get("service") {
                Some(serde_json::Value::String(service)) => {
                    if !declared("services", service) {
                        problems.push(Problem::at(
                            node.at_or_here(&["vars", "service"]),
                            format!(
                                "{what}: unknown service `{service}`; defined services: {}",
                                self.declared_names("services")
                            ),
                        ));
                    }
                }
                Some(_) => problems.push(Problem::at(
                    node.at_or_here(&["vars", "service"]),
                    format!("{what}: `vars.service` must be a service name"),
                )),
                None => {
                    if let Some(TemplateRef::Builtin(name)) = &output.template {
                        problems.push(Problem::at(
                            node.get("vars").unwrap_or(node),
                            format!(
                                "{what}: `{BUILTIN_PREFIX}{name}` renders one service; set `vars: {{ service: NAME }}`"
                            ),
                        ));
                    }
                }
            }
        }
        self.problems.extend(problems);
    }
}

impl Loader {
    /// Resolves every plugin's program now, so that a missing or non-executable plugin is a
    /// config error with its position instead of a failure at 3 a.m. Locators and reload actions
    /// say which plugin they run (`plugin_mut`); hooks and renderers are plugin calls themselves.
    fn find_plugins(&mut self, root: &Node, config: &mut Config) {
        use crate::plugin::{PluginKind, PluginSlot, lookup};
        let plugin_dir = config.plugin_dir.clone();
        let base = config.base_dir.clone();
        let mut find = |slot: PluginSlot<'_>, at: Option<&Node>, what: &str| {
            let Some(program) = slot.call.exec.first().filter(|p| !p.is_empty()) else {
                return;
            };
            match lookup::find(program, slot.kind, &plugin_dir, &base) {
                Ok(path) => slot.call.program = Some(path),
                Err(message) => self.problems.push(Problem {
                    loc: at.map(|n| n.loc),
                    message: format!("{what}: {message}"),
                }),
            }
        };
        let services_node = root.get("services");
        for (name, service) in &mut config.services {
            let node = services_node.and_then(|s| s.get(name));
            for (i, locator) in service.locators.iter_mut().enumerate() {
                let Some(slot) = locator.plugin_mut() else {
                    continue;
                };
                let item = node.and_then(|n| n.get("locators")).and_then(|l| l.item(i));
                let at = item.map(|l| argv0(l, tagged_value(l), &slot.argv_at));
                find(slot, at.or(node), &format!("service `{name}`"));
            }
            for (i, hook) in service.on_change.iter_mut().enumerate() {
                let slot = hook.slot(PluginKind::Action);
                let item = node
                    .and_then(|n| n.get("on_change"))
                    .and_then(|l| l.item(i));
                let at = item.map(|h| argv0(h, Some(h), &slot.argv_at));
                find(slot, at.or(node), &format!("service `{name}` on_change"));
            }
        }
        let frontends_node = root.get("frontends");
        for (name, frontend) in &mut config.frontends {
            let Some(slot) = frontend.reload.as_mut().and_then(ReloadAction::plugin_mut) else {
                continue;
            };
            let reload = frontends_node
                .and_then(|n| n.get(name))
                .and_then(|f| f.get("reload"));
            let at = reload.map(|r| argv0(r, Some(r), &slot.argv_at));
            find(slot, at, &format!("frontend `{name}` reload"));
        }
        let outputs_node = root.get("outputs");
        for (output, item) in config.outputs.iter_mut().zip(&self.output_items) {
            let what = format!("output `{}`", output.path.display());
            let Some(call) = &mut output.renderer else {
                continue;
            };
            let slot = call.slot(PluginKind::Renderer);
            let renderer = outputs_node
                .and_then(|n| n.item(*item))
                .and_then(|o| o.get("renderer"));
            let at = renderer.map(|r| argv0(r, Some(r), &slot.argv_at));
            find(slot, at, &what);
        }
    }

    fn declared_names(&self, section: &str) -> String {
        let mut names: Vec<&String> = self
            .declared
            .iter()
            .filter(|(s, _)| s == section)
            .map(|(_, n)| n)
            .collect();
        names.sort();
        list_or_none(names.into_iter())
    }
}

/// Where a plugin's lookup error points: its argv[0], found by following `argv_at` from
/// `settings`, else the `entry` that names the plugin.
fn argv0<'n>(entry: &'n Node, settings: Option<&'n Node>, argv_at: &[&str]) -> &'n Node {
    settings
        .and_then(|s| argv_at.iter().try_fold(s, |node, key| node.get(key)))
        .and_then(|argv| argv.item(0))
        .unwrap_or(entry)
}

/// The settings of a `KIND: { ... }` entry (a locator), where its plugin's `argv_at` starts.
fn tagged_value(entry: &Node) -> Option<&Node> {
    match &entry.kind {
        NodeKind::Map(entries) if entries.len() == 1 => entries.first().map(|(_, value)| value),
        _ => None,
    }
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Config {
    fn resolve_paths(&mut self) {
        let base = self.base_dir.clone();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = &mut self.state_file {
            resolve(p);
        }
        if let Some(server) = &mut self.server {
            server.resolve_paths(&base);
        }
        for output in &mut self.outputs {
            resolve(&mut output.path);
            if let Some(TemplateRef::File(p)) = &mut output.template {
                resolve(p);
            }
        }
        for service in self.services.values_mut() {
            for locator in &mut service.locators {
                locator.resolve_paths(&base);
                locator.inherit_aws(&self.aws);
            }
        }
        for frontend in self.frontends.values_mut() {
            if let Some(check) = &mut frontend.check {
                resolve_program(check, &base);
            }
            if let Some(reload) = &mut frontend.reload {
                reload.resolve_paths(&base);
            }
        }
    }

    /// The outputs that feed `frontend`.
    pub fn outputs_of<'a>(&'a self, frontend: &'a str) -> impl Iterator<Item = &'a OutputConfig> {
        self.outputs
            .iter()
            .filter(move |o| o.frontend.as_deref() == Some(frontend))
    }
}

#[cfg(test)]
mod tests;
