//! Rendering outputs with Tera: built-in templates, custom template files, and the context.
//!
//! Tera 2 is used (not 1.x): it is the maintained major version, its errors point at the template
//! line with a source excerpt, and its escape function is pluggable, which is what lets every
//! template escape for config files instead of HTML (see [`escape`]).

mod config;
pub mod escape;
pub mod exec;
mod fast;
pub mod slots;

pub use config::{BUILTIN_PREFIX, OutputConfig, TemplateRef};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use indexmap::IndexMap;
use serde::Serialize;
use tera::{Context, Kwargs, State, Tera, Value};

use crate::backend::{Backend, Labels};

/// The built-in templates, embedded from `templates/` at build time.
const BUILTINS: &[(&str, &str)] = &[
    ("nginx", include_str!("../../templates/nginx.conf.tera")),
    (
        "nginx-stream",
        include_str!("../../templates/nginx-stream.conf.tera"),
    ),
    ("haproxy", include_str!("../../templates/haproxy.cfg.tera")),
    (
        "haproxy-tcp",
        include_str!("../../templates/haproxy-tcp.cfg.tera"),
    ),
    ("varnish", include_str!("../../templates/varnish.vcl.tera")),
    ("apache", include_str!("../../templates/apache.conf.tera")),
];

/// The source of a built-in template.
pub fn builtin_source(name: &str) -> Option<&'static str> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The names of all built-in templates.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(n, _)| *n)
}

/// Why a template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template file could not be read.
    #[error("template {}: cannot read it: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Templates did not compile.
    #[error("templates in {dir} do not compile:\n{message}")]
    Compile {
        /// The template directory, or `built-in`.
        dir: String,
        /// Tera's report, with file, line and excerpt.
        message: String,
    },
    /// A renderer plugin failed or printed something unusable.
    #[error("output {}: {source}", path.display())]
    Plugin {
        /// The output path.
        path: PathBuf,
        /// What the plugin did.
        source: crate::plugin::PluginError,
    },
    /// Rendering failed (a missing variable, a bad filter argument, ...).
    #[error("output {}: rendering {template} failed:\n{message}", path.display())]
    Render {
        /// The output path.
        path: PathBuf,
        /// The template.
        template: String,
        /// Tera's report, with file, line and excerpt.
        message: String,
    },
}

/// Compiled templates for every output of a config.
pub struct Renderer {
    engines: Vec<Tera>,
    /// Per output: which engine and which template name.
    handles: Vec<(usize, String)>,
}

fn new_engine() -> Tera {
    let mut tera = Tera::new();
    // An empty suffix matches every template name: escaping is on everywhere.
    tera.autoescape_on(vec![""]);
    tera.set_escape_fn(escape::escape_config_value);
    tera.register_filter("ident", |s: &str, _: Kwargs, _: &State| escape::ident(s));
    tera.register_filter("backend_idents", escape::backend_idents);
    tera
}

fn tera_message(e: &tera::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!("\ncaused by: {s}"));
        source = s.source();
    }
    message
}

impl Renderer {
    /// Compiles the templates of every output; all failures are returned together.
    pub fn new(outputs: &[OutputConfig]) -> Result<Self, Vec<RenderError>> {
        let mut errors = Vec::new();
        let mut builtin = new_engine();
        // Only the built-ins some output uses: compiling all of them is most of a small run's
        // start-up. They are compiled (and their errors reported) the same way either way.
        let used = |name: &str| {
            outputs
                .iter()
                .any(|o| matches!(&o.template, Some(TemplateRef::Builtin(n)) if n == name))
        };
        let sources: Vec<(String, &str)> = BUILTINS
            .iter()
            .filter(|(n, _)| used(n))
            .map(|(n, s)| (format!("{BUILTIN_PREFIX}{n}"), *s))
            .collect();
        if let Err(e) = builtin.add_raw_templates(sources) {
            errors.push(RenderError::Compile {
                dir: "built-in".into(),
                message: tera_message(&e),
            });
        }
        let mut engines = vec![builtin];
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut handles = Vec::new();
        for output in outputs {
            match &output.template {
                // A renderer plugin: nothing to compile (see `exec`).
                None => handles.push((0, String::new())),
                Some(TemplateRef::Builtin(name)) => {
                    handles.push((0, format!("{BUILTIN_PREFIX}{name}")))
                }
                Some(TemplateRef::File(path)) => {
                    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
                    let name = path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    let index = match dirs.iter().position(|d| *d == dir) {
                        Some(i) => i + 1,
                        None => {
                            dirs.push(dir.clone());
                            match load_dir(&dir, path) {
                                Ok(engine) => engines.push(engine),
                                Err(e) => {
                                    errors.push(e);
                                    engines.push(new_engine());
                                }
                            }
                            dirs.len()
                        }
                    };
                    handles.push((index, name));
                }
            }
        }
        if errors.is_empty() {
            Ok(Renderer { engines, handles })
        } else {
            Err(errors)
        }
    }

    /// Renders output number `index` of the config with `context`.
    pub fn render(
        &self,
        index: usize,
        output: &OutputConfig,
        context: &Context,
    ) -> Result<String, RenderError> {
        let (engine, name) = &self.handles[index];
        let mut text =
            self.engines[*engine]
                .render(name, context)
                .map_err(|e| RenderError::Render {
                    path: output.path.clone(),
                    template: output
                        .template
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    message: tera_message(&e),
                })?;
        // Config files end with a newline whatever the template's last line does.
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(text)
    }
}

impl Renderer {
    /// Renders output number `index` of the config for this pass: natively where a built-in has
    /// a native renderer (see `fast`), otherwise through Tera with the full context and, for
    /// `vars.slots`, the slots kept from `previous` (the installed file).
    pub fn render_pass(
        &self,
        index: usize,
        output: &OutputConfig,
        context: &PassContext<'_>,
        previous: Option<&[u8]>,
    ) -> Result<String, RenderError> {
        let service = output
            .service()
            .and_then(|name| Some((name, context.set(name)?)));
        if let (Some(TemplateRef::Builtin(template)), Some((name, backends))) =
            (&output.template, service)
            && template == "nginx"
            && let Some(text) = fast::nginx(name, &output.vars, backends)
        {
            return Ok(text);
        }
        let mut ctx = context.for_output(output);
        if let Some((_, backends)) = service {
            context.insert_slots(&mut ctx, output, backends, previous);
        }
        self.render(index, output, &ctx)
    }
}

// A custom template may include or extend the `*.tera` files in its directory tree, by their path
// relative to that directory.
fn load_dir(dir: &Path, main: &Path) -> Result<Tera, RenderError> {
    // Named first, so that a missing template (or its missing directory) is reported as the file
    // the config names, not as the directory that could not be listed.
    if let Err(source) = std::fs::metadata(main) {
        return Err(RenderError::Read {
            path: main.to_path_buf(),
            source,
        });
    }
    let mut files = Vec::new();
    collect_templates(dir, &mut files).map_err(|source| RenderError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    if !files.iter().any(|f| f == main) {
        files.push(main.to_path_buf());
    }
    let mut sources = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| RenderError::Read {
            path: file.clone(),
            source,
        })?;
        let name = file
            .strip_prefix(dir)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        sources.push((name, text));
    }
    let mut engine = new_engine();
    engine
        .add_raw_templates(sources)
        .map_err(|e| RenderError::Compile {
            dir: dir.display().to_string(),
            message: tera_message(&e),
        })?;
    Ok(engine)
}

fn collect_templates(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_templates(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "tera") {
            out.push(path);
        }
    }
    Ok(())
}

/// A backend as templates see it.
#[derive(Serialize)]
struct BackendView<'a> {
    address: String,
    port: u16,
    endpoint: String,
    weight: u32,
    id: Option<&'a str>,
    name: Option<&'a str>,
    zone: Option<&'a str>,
    tags: &'a Labels,
    meta: &'a Labels,
    is_ipv6: bool,
    /// Only for services with `health:`, so that templates can test `is defined`.
    #[serde(skip_serializing_if = "Option::is_none")]
    healthy: Option<bool>,
}

impl<'a> From<&'a Backend> for BackendView<'a> {
    fn from(b: &'a Backend) -> Self {
        BackendView {
            address: b.address.to_string(),
            port: b.port,
            endpoint: b.endpoint(),
            weight: b.weight,
            id: b.id.as_deref(),
            name: b.name.as_deref(),
            zone: b.zone.as_deref(),
            tags: &b.tags,
            meta: &b.meta,
            is_ipv6: b.address.is_ipv6(),
            healthy: b.healthy,
        }
    }
}

#[derive(Serialize)]
struct ServiceView<'a> {
    name: &'a str,
    port: Option<u16>,
    backends: Vec<BackendView<'a>>,
}

/// The parts of the template context shared by all outputs of one pass.
///
/// The Tera values are built on first use: outputs that [`Renderer::render_pass`] writes
/// natively never need them.
pub struct PassContext<'a> {
    environment: Option<&'a str>,
    /// Each usable set by service name, with the service's configured port. Borrowed, so that
    /// a pass renders from the sets the engine holds (shared) rather than from a copy.
    sets: Vec<(&'a str, &'a [Backend], Option<u16>)>,
    values: OnceLock<Values>,
}

struct Values {
    environment: Value,
    services: Value,
    by_name: IndexMap<String, (Value, Value)>,
}

impl<'a> PassContext<'a> {
    /// Builds the shared context from the backend sets that are usable this pass (service name
    /// and backends, in the config's order); `port_of` gives a service's configured port.
    pub fn new(
        environment: Option<&'a str>,
        port_of: impl Fn(&str) -> Option<u16>,
        sets: impl IntoIterator<Item = (&'a str, &'a [Backend])>,
    ) -> Self {
        PassContext {
            environment,
            sets: sets
                .into_iter()
                .map(|(name, backends)| (name, backends, port_of(name)))
                .collect(),
            values: OnceLock::new(),
        }
    }

    /// The backends of `service`, when its set is usable this pass.
    pub fn set(&self, service: &str) -> Option<&'a [Backend]> {
        self.sets
            .iter()
            .find(|(name, _, _)| *name == service)
            .map(|(_, backends, _)| *backends)
    }

    fn values(&self) -> &Values {
        self.values.get_or_init(|| {
            let mut by_name = IndexMap::new();
            for &(name, backends, port) in &self.sets {
                let view = ServiceView {
                    name,
                    port,
                    backends: backends.iter().map(BackendView::from).collect(),
                };
                let service = Value::from_serializable(&view);
                let backends = service
                    .as_map()
                    .and_then(|m| m.get(&tera::value::Key::from("backends")))
                    .cloned()
                    .unwrap_or_else(|| Value::from_serializable(&view.backends));
                by_name.insert(name.to_string(), (service, backends));
            }
            // Built from the per-service values (cheap reference-counted clones), not serialized
            // again: with 10,000 backends a second deep copy costs several megabytes.
            let services: IndexMap<String, Value> = by_name
                .iter()
                .map(|(n, (s, _))| (n.clone(), s.clone()))
                .collect();
            Values {
                environment: Value::from_serializable(&self.environment),
                services: Value::from(services),
                by_name,
            }
        })
    }

    /// The full context for one output: `environment`, `services`, `vars`, and for a bound
    /// service `service` and `backends`.
    pub fn for_output(&self, output: &OutputConfig) -> Context {
        let values = self.values();
        let mut ctx = Context::new();
        ctx.insert_value("environment", values.environment.clone());
        ctx.insert_value("services", values.services.clone());
        // Tera's `default` treats null as a value, so a `key: ~` would print as nothing; dropping it
        // lets the template's default apply instead.
        let vars: serde_json::Map<String, serde_json::Value> = output
            .vars
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ctx.insert("vars", &vars);
        match output.service().and_then(|name| values.by_name.get(name)) {
            Some((service, backends)) => {
                ctx.insert_value("service", service.clone());
                ctx.insert_value("backends", backends.clone());
            }
            None => {
                ctx.insert_value("service", Value::none());
                ctx.insert("backends", &Vec::<()>::new());
            }
        }
        ctx
    }

    /// For an output with `vars.slots`, adds `slots` to its context: one entry per slot, in
    /// order, each `{ index, backend }` with `backend` null for a free slot (see [`slots`]).
    /// `previous` is the installed file, whose slot assignment is kept.
    pub fn insert_slots(
        &self,
        ctx: &mut Context,
        output: &OutputConfig,
        backends: &[Backend],
        previous: Option<&[u8]>,
    ) {
        let Some(count) = output.vars.get("slots").and_then(|v| v.as_u64()) else {
            return;
        };
        let Some((_, views)) = output
            .service()
            .and_then(|name| self.values().by_name.get(name))
        else {
            return;
        };
        let backend_name = output
            .vars
            .get("backend")
            .and_then(|v| v.as_str())
            .or(output.service())
            .unwrap_or_default();
        let section = previous.and_then(|p| slots::previous_section(p, backend_name));
        let views = views.as_array().unwrap_or_default();
        let assigned = slots::assign(backends, count as usize, section.as_ref());
        let entries: Vec<Value> = assigned
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut entry: BTreeMap<&'static str, Value> = BTreeMap::new();
                entry.insert("index", Value::from(i + 1));
                let backend = b.and_then(|b| views.get(b)).cloned();
                entry.insert("backend", backend.unwrap_or_else(Value::none));
                Value::from(entry)
            })
            .collect();
        ctx.insert_value("slots", Value::from(entries));
    }
}

/// The names given to a template: every one of them is in a renderer plugin's `context`.
pub const CONTEXT_KEYS: &[&str] = &["environment", "services", "vars", "service", "backends"];

/// A template context as JSON, for renderer plugins: the same values, not a description of them.
pub fn context_json(ctx: &Context) -> serde_json::Value {
    // `slots` exists only for outputs that set `vars.slots`.
    let slots = ctx.get("slots").map(|_| "slots");
    let map: serde_json::Map<String, serde_json::Value> = CONTEXT_KEYS
        .iter()
        .copied()
        .chain(slots)
        .map(|k| {
            let value = ctx
                .get(k)
                .and_then(|v| serde_json::to_value(v).ok())
                .unwrap_or(serde_json::Value::Null);
            (k.to_string(), value)
        })
        .collect();
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests;
