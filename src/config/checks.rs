//! What `elasticd check` looks at beyond the file itself, so that a config that passes `check`
//! also renders: every template rendered once against sample backends, the directories outputs
//! and pidfiles live in, the server's token and TLS files, and static addresses that may not
//! mean what they say.

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::Config;
use crate::backend::{Address, Backend};
use crate::frontend::{ReloadAction, SpecAction};
use crate::locator::LocatorConfig;
use crate::render::{PassContext, Renderer};
use crate::server::{TlsConfig, read_token};
use crate::yaml::{self, Node};

/// What `check` found: errors fail it (exit 2), warnings are printed and pass.
#[derive(Debug, Default)]
pub struct Findings {
    /// What `render` would fail on.
    pub errors: Vec<String>,
    /// What is probably a mistake but may be meant.
    pub warnings: Vec<String>,
}

/// Runs every check below on a loaded config; the templates are rendered when they compiled.
pub fn preflight(config: &Config, renderer: Option<&Renderer>) -> Findings {
    let lines = Lines::read(config);
    let mut findings = Findings::default();
    if let Some(renderer) = renderer {
        findings
            .errors
            .extend(render_samples(config, renderer, &lines));
    }
    findings.errors.extend(output_dirs(config, &lines));
    findings.errors.extend(pidfile_dirs(config, &lines));
    findings.errors.extend(server_files(config, &lines));
    findings.warnings.extend(ambiguous_ipv6(config, &lines));
    findings.warnings.extend(registry_warnings(config, &lines));
    findings
}

/// Points a finding at its line in the config file, which is parsed again for that. Without the
/// tree (the file changed meanwhile) a finding still names its item.
struct Lines {
    path: String,
    root: Option<Node>,
}

impl Lines {
    fn read(config: &Config) -> Self {
        let root = std::fs::read_to_string(&config.path)
            .ok()
            .and_then(|text| yaml::parse(&text).ok());
        Lines {
            path: config.path.display().to_string(),
            root,
        }
    }

    fn at<'a>(
        &'a self,
        find: impl FnOnce(&'a Node) -> Option<&'a Node>,
        message: String,
    ) -> String {
        match self.root.as_ref().and_then(find) {
            Some(node) => format!("{}:{}: {message}", self.path, node.loc),
            None => format!("{}: {message}", self.path),
        }
    }
}

fn output_node<'a>(root: &'a Node, index: usize, key: &str) -> Option<&'a Node> {
    let item = root.get("outputs")?.item(index)?;
    item.get(key).or(Some(item))
}

/// Two backends for every service, one IPv4 and one IPv6, with every field but tags and meta
/// set: a template that needs a tag must say what to do without it (`| default(value="")`),
/// since any backend may lack it.
pub fn sample_backends(port: Option<u16>) -> Vec<Backend> {
    let port = port.unwrap_or(8080);
    let sample = |address: Address, n: u32| Backend {
        weight: n,
        id: Some(format!("sample-{n}").into()),
        name: Some(format!("sample-{n}").into()),
        zone: Some("sample-zone".into()),
        source: "sample".into(),
        ..Backend::new(address, port)
    };
    vec![
        sample(Address::Ip([10, 0, 0, 1].into()), 1),
        sample(
            Address::Ip(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into()),
            2,
        ),
    ]
}

/// Renders each template output once with [`sample_backends`] for every service; renderer
/// plugins are not run (`check` runs nothing but lookups).
fn render_samples(config: &Config, renderer: &Renderer, lines: &Lines) -> Vec<String> {
    let sets: IndexMap<String, Vec<Backend>> = config
        .services
        .iter()
        .map(|(name, s)| (name.clone(), sample_backends(s.port)))
        .collect();
    render_sets(
        config,
        renderer,
        lines,
        &sets,
        "check renders each template with 2 sample backends per service, which have no tags \
         or meta",
    )
}

/// Renders each template output once with the backends the locators found (`check --locate`);
/// an output whose service found nothing is left out, as `render` would leave it alone.
pub fn render_located(
    config: &Config,
    renderer: &Renderer,
    sets: &IndexMap<String, Vec<Backend>>,
) -> Vec<String> {
    render_sets(
        config,
        renderer,
        &Lines::read(config),
        sets,
        "check --locate renders each template with the backends its service's locators found",
    )
}

fn render_sets(
    config: &Config,
    renderer: &Renderer,
    lines: &Lines,
    sets: &IndexMap<String, Vec<Backend>>,
    note: &str,
) -> Vec<String> {
    let port_of = |name: &str| config.services.get(name).and_then(|s| s.port);
    let context = PassContext::new(
        config.environment.as_deref(),
        port_of,
        sets.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
    );
    let mut errors = Vec::new();
    for (i, output) in config.outputs.iter().enumerate() {
        let found = match output.service() {
            Some(service) => sets.contains_key(service),
            None => config.services.keys().all(|s| sets.contains_key(s)),
        };
        if output.template.is_none() || !found {
            continue;
        }
        let mut ctx = context.for_output(output);
        if let Some(backends) = output.service().and_then(|s| sets.get(s)) {
            context.insert_slots(&mut ctx, output, backends, None);
        }
        if let Err(e) = renderer.render(i, output, &ctx) {
            errors.push(lines.at(
                |root| output_node(root, i, "template"),
                format!("{e}\n({note})"),
            ));
        }
    }
    errors
}

/// The directory each output is installed into must exist and be writable.
fn output_dirs(config: &Config, lines: &Lines) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, output) in config.outputs.iter().enumerate() {
        let dir = parent_dir(&output.path);
        if let Err(reason) = writable_dir(&dir) {
            errors.push(lines.at(
                |root| output_node(root, i, "path"),
                format!("output `{}`: {reason}", output.path.display()),
            ));
        }
    }
    errors
}

/// The directory of each `signal` reload's pidfile must exist: the frontend writes its pid there.
fn pidfile_dirs(config: &Config, lines: &Lines) -> Vec<String> {
    let mut errors = Vec::new();
    for (name, frontend) in &config.frontends {
        let mut action = frontend.reload.as_ref();
        // A `haproxy_runtime` falls back to another action, which may be a signal.
        while let Some(a) = action {
            action = match a {
                ReloadAction::Signal { pidfile, .. } => {
                    let dir = parent_dir(pidfile);
                    if !dir.is_dir() {
                        errors.push(lines.at(
                            |root| root.get("frontends")?.get(name)?.get("reload"),
                            format!(
                                "frontend `{name}`: the directory of pidfile `{}` does not exist",
                                pidfile.display()
                            ),
                        ));
                    }
                    None
                }
                ReloadAction::Spec(SpecAction::HaproxyRuntime(runtime)) => Some(&*runtime.fallback),
                _ => None,
            };
        }
    }
    errors
}

/// The server's token and TLS files are read as the daemon reads them at start, where any
/// problem with them keeps it from starting.
fn server_files(config: &Config, lines: &Lines) -> Vec<String> {
    let Some(server) = &config.server else {
        return Vec::new();
    };
    let at = |key: &str, message: String| {
        lines.at(
            |root| {
                let section = root.get("server")?;
                section.get(key).or(Some(section))
            },
            message,
        )
    };
    let mut errors = Vec::new();
    if let Some(Err(e)) = server.token_file.as_deref().map(read_token) {
        errors.push(at("token_file", e.to_string()));
    }
    if let Some(Err(e)) = server.tls.as_ref().map(TlsConfig::load) {
        errors.push(at("tls", e.to_string()));
    }
    errors
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Why files can't be created in `dir`, if they can't.
pub fn writable_dir(dir: &Path) -> Result<(), String> {
    use nix::unistd::{AccessFlags, access};
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("directory `{}` does not exist", dir.display()));
        }
        Err(e) => return Err(format!("directory `{}`: {e}", dir.display())),
        Ok(m) if !m.is_dir() => return Err(format!("`{}` is not a directory", dir.display())),
        Ok(_) => {}
    }
    // access(2) answers for this user, ACLs and read-only mounts included, without writing.
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
        format!(
            "directory `{}` is not writable: {}",
            dir.display(),
            e.desc()
        )
    })
}

/// Static IPv6 addresses written without brackets whose last group looks like a port:
/// `2001:db8::1:8080` is one address with no port, maybe not what was meant.
fn ambiguous_ipv6(config: &Config, lines: &Lines) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, service) in &config.services {
        for (l, locator) in service.locators.iter().enumerate() {
            let LocatorConfig::Static(list) = locator else {
                continue;
            };
            for (b, backend) in list.iter().enumerate() {
                if backend.port.is_some() {
                    continue;
                }
                if let Some((address, port)) = split_ipv6_port(&backend.target) {
                    warnings.push(lines.at(|root| static_node(root, name, l, b), format!(
                        "service `{name}`: static backend `{}` is the IPv6 address {} with no port; \
                         if {port} is the port, write \"[{address}]:{port}\" (or \"[{}]\" to keep it as it is)",
                        backend.target,
                        backend.target.trim(),
                        backend.target.trim()
                    )));
                }
            }
        }
    }
    warnings
}

/// A `registry` locator that nothing can register into, or whose registrations a restart loses.
fn registry_warnings(config: &Config, lines: &Lines) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, service) in &config.services {
        for (l, locator) in service.locators.iter().enumerate() {
            let LocatorConfig::Registry(settings) = locator else {
                continue;
            };
            let token = config
                .server
                .as_ref()
                .is_some_and(|s| s.token_file.is_some());
            if config.server.is_none() || (!token && settings.tokens.is_empty()) {
                warnings.push(lines.at(|root| locator_node(root, name, l), format!(
                    "service `{name}`: nothing can register into the `registry` locator: it needs \
                     `server:` with a `token_file`, or `tokens`"
                )));
            }
            if config.state_file.is_none() {
                warnings.push(lines.at(
                    |root| locator_node(root, name, l),
                    format!(
                        "service `{name}`: registrations are lost when the daemon restarts: set \
                     `state_file` to keep them"
                    ),
                ));
            }
        }
    }
    warnings
}

fn locator_node<'a>(root: &'a Node, service: &str, locator: usize) -> Option<&'a Node> {
    root.get("services")?
        .get(service)?
        .get("locators")?
        .item(locator)
}

fn static_node<'a>(root: &'a Node, service: &str, locator: usize, item: usize) -> Option<&'a Node> {
    let locators = root.get("services")?.get(service)?.get("locators")?;
    locators.item(locator)?.get("static")?.item(item)
}

/// `2001:db8::1:8080` -> (`2001:db8::1`, `8080`) when both halves make sense on their own.
fn split_ipv6_port(target: &str) -> Option<(&str, &str)> {
    let target = target.trim();
    target.parse::<Ipv6Addr>().ok()?;
    let (address, port) = target.rsplit_once(':')?;
    let is_port = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    (is_port && address.parse::<Ipv6Addr>().is_ok()).then_some((address, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_address_ending_in_a_port_is_ambiguous() {
        assert_eq!(
            split_ipv6_port("2001:db8::1:8080"),
            Some(("2001:db8::1", "8080"))
        );
        assert_eq!(split_ipv6_port("::1:80"), Some(("::1", "80")));
        for clear in [
            "fe80::1",
            "2001:db8::abcd",
            "2001:db8:0:0:0:0:0:1",
            "10.0.0.1:80",
            "[::1]:80",
            "::1:0",
        ] {
            assert_eq!(split_ipv6_port(clear), None, "{clear}");
        }
    }

    #[test]
    fn a_missing_or_plain_file_directory_is_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(writable_dir(dir.path()), Ok(()));
        let missing = dir.path().join("nope");
        assert!(
            writable_dir(&missing)
                .unwrap_err()
                .contains("does not exist")
        );
        std::fs::write(&missing, "").unwrap();
        assert!(
            writable_dir(&missing)
                .unwrap_err()
                .contains("is not a directory")
        );
    }
}
