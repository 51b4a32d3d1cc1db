//! Command-line interface: `run`, `render`, `check`, `locate`, `status` and `register`.

mod status;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::backend::Backend;
use crate::config::{self, Config, ConfigError};
use crate::engine::{
    BuiltService, Engine, FrontendStatus, OutputStatus, PassOptions, PassReport, ServiceStatus,
    State,
};
use crate::render::Renderer;
use crate::value::count;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: a pass failed (locator, guard, render, check or reload).
pub const EXIT_PASS_FAILED: u8 = 1;
/// Exit status: the config is invalid.
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit status: `status` could not reach the daemon.
pub const EXIT_UNREACHABLE: u8 = 3;

mod generate;
mod init;

/// `--version`: the version and the cargo features built in, which decide what a config may use.
#[cfg(all(feature = "aws", feature = "etcd"))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: aws, etcd)");
/// `--version`: the version and the cargo features built in, which decide what a config may use.
#[cfg(all(feature = "aws", not(feature = "etcd")))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: aws)");
/// `--version`: the version and the cargo features built in, which decide what a config may use.
#[cfg(all(not(feature = "aws"), feature = "etcd"))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: etcd)");
/// `--version`: the version and the cargo features built in, which decide what a config may use.
#[cfg(not(any(feature = "aws", feature = "etcd")))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (features: none)");

/// The end of `--help`: what the daemon does on each signal, the exit codes, the docs.
const AFTER_HELP: &str = "\
Signals (elasticd run):
  SIGHUP          read the config again; a bad one is logged and the old one keeps running
  SIGUSR1         locate every service now
  SIGTERM, SIGINT finish the running apply, then exit 0

Exit status:
  0  success (changed or not)
  1  a pass failed: locator, guard, render, check, install or reload
  2  bad config or command line; nothing was located or written

Documentation: man elasticd; /usr/share/doc/elasticd (Debian package), or README.md and docs/
in the source tree (config.md, frontends.md, operations.md, templates.md).";

/// Keeps web frontends pointed at the live addresses of their backends.
#[derive(Debug, Parser)]
#[command(
    name = "elasticd",
    version = VERSION,
    about,
    propagate_version = true,
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Log level or filter (`info`, `debug`, `elasticd=debug`); RUST_LOG also works.
    #[arg(long, global = true, env = "ELASTICD_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as text, or as one JSON object per line (journald, Loki, ELK).
    #[arg(
        long,
        global = true,
        env = "ELASTICD_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL message name=value ...`, coloured only on a terminal.
    Text,
    /// `{"timestamp", "level", "message", "fields"}`, one object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a daemon: refresh on each service's schedule, apply changes, until SIGTERM.
    Run(ConfigArg),
    /// Run one pass: locate, render, check, install, reload.
    Render(RenderArgs),
    /// Validate the config and templates; writes nothing.
    Check(CheckArgs),
    /// Show the backends each locator finds.
    Locate(LocateArgs),

    /// Write a commented starter config and the frontend's snippet for the Debian layout.
    Init(init::InitArgs),
    /// Write the man page or shell completions on stdout (for packaging).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
    /// Show what the running daemon knows: services, backends, frontends, readiness.
    Status(status::StatusArgs),
    /// Register a backend with a daemon and keep it registered until SIGTERM.
    Register(Box<RegisterArgs>),
}

/// Options of `register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The daemon's server: http://HOST:PORT or unix:PATH.
    #[arg(long, default_value = "http://127.0.0.1:9797")]
    pub server: crate::register::Endpoint,
    /// The service to register into (it needs a `registry` locator).
    #[arg(long)]
    pub service: String,
    /// The registration's id (default ADDRESS:PORT).
    #[arg(long)]
    pub id: Option<String>,
    /// The backend's IP address.
    #[arg(long)]
    pub address: String,
    /// The backend's port.
    #[arg(long)]
    pub port: u16,
    /// Weight, 1-100.
    #[arg(long)]
    pub weight: Option<u32>,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// A file whose first line is the token.
    #[arg(long)]
    pub token_file: PathBuf,
    /// A lease with this TTL, renewed at a third of it.
    #[arg(long, conflicts_with = "connect", required_unless_present = "connect")]
    pub ttl: Option<humantime::Duration>,
    /// Hold a WebSocket open instead of a lease.
    #[arg(long)]
    pub connect: bool,
    /// The environment to state (the daemon's `environment`).
    #[arg(long)]
    pub environment: Option<String>,
    /// On SIGTERM, stay with weight 0 this long before going.
    #[arg(long)]
    pub drain: Option<humantime::Duration>,
    /// Registered only while `GET URL` (http://HOST:PORT/PATH) answers 2xx.
    #[arg(long, value_parser = crate::register::Check::http)]
    pub check: Option<crate::register::Check>,
    /// Registered only while a TCP connection to HOST:PORT opens.
    #[arg(long, conflicts_with = "check")]
    pub check_tcp: Option<String>,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// The `--config` option shared by all commands.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file.
    #[arg(long, short, env = "ELASTICD_CONFIG", default_value = config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// Options of `render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Write nothing and reload nothing; print a unified diff per changed output.
    #[arg(long)]
    pub dry_run: bool,
    /// Install changed files (checked) but do not reload frontends.
    #[arg(long, conflicts_with = "dry_run")]
    pub no_reload: bool,
    /// Probe the backends of services with `health:` once and render only those that pass
    /// (unless too many fail: see `max_unhealthy_ratio`).
    #[arg(long)]
    pub health: bool,
}

/// Options of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Also run every locator (plugins too; still writes nothing) and render each template
    /// with the backends they find, besides the sample backends.
    #[arg(long)]
    pub locate: bool,
}

/// Options of `locate`.
#[derive(Debug, Args)]
pub struct LocateArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Only this service.
    pub service: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Probe each backend of services with `health:` once and show whether it passes.
    #[arg(long)]
    pub health: bool,
}

/// Runs the parsed command and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Run(args) => run_daemon(args.config).await,
        Command::Render(args) => render(args).await,
        Command::Check(args) => check(&args.config.config, args.locate).await,
        Command::Locate(args) => locate(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Register(args) => register(*args).await,
        Command::Init(args) => init::init(&args),
        Command::Generate(args) => generate::generate(&args),
    };
    ExitCode::from(code)
}

/// Prints `error: MESSAGE` on stderr, the one way an error line is printed: control characters
/// in the message are escaped and its continuation lines indented ([`crate::logline::sanitize`]),
/// so a value quoted in it cannot forge a line or drive the terminal.
/// With `--log-format json`, as an `ERROR` record instead, so that a log collector gets nothing
/// but JSON from the process.
pub fn print_error(message: impl std::fmt::Display) {
    if json_logs() {
        tracing::error!("{message}");
    } else {
        eprintln!("error: {}", crate::logline::sanitize(&message.to_string()));
    }
}

/// A `warning:` or `hint:` line on stderr, like [`print_error`] (a `WARN` or `INFO` record with
/// `--log-format json`).
fn print_note(kind: &str, message: impl std::fmt::Display) {
    if json_logs() {
        if kind == "warning" {
            tracing::warn!("{message}");
        } else {
            tracing::info!("{message}");
        }
    } else {
        eprintln!("{kind}: {}", crate::logline::sanitize(&message.to_string()));
    }
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Records the `--log-format` the logger was set up with, for [`print_error`]; the first call
/// wins.
pub fn set_log_format(format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
}

fn json_logs() -> bool {
    LOG_FORMAT.get() == Some(&LogFormat::Json)
}

async fn register(args: RegisterArgs) -> u8 {
    let token = match crate::register::read_token(&args.token_file) {
        Ok(t) => t,
        Err(e) => {
            print_error(e);
            return EXIT_BAD_CONFIG;
        }
    };
    let options = crate::register::Options {
        server: args.server,
        id: args
            .id
            .unwrap_or_else(|| format!("{}:{}", args.address, args.port)),
        service: args.service,
        address: args.address,
        port: args.port,
        weight: args.weight,
        meta: args.meta,
        token,
        ttl: args.ttl.map(Into::into),
        environment: args.environment,
        drain: args.drain.map(Into::into),
        check: args
            .check
            .or(args.check_tcp.map(crate::register::Check::Tcp)),
    };
    match crate::register::run(options).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            print_error(e);
            EXIT_PASS_FAILED
        }
    }
}

fn load_config(path: &Path) -> Result<Config, u8> {
    config::load(path).map_err(|e| {
        print_error(&e);
        if matches!(e, ConfigError::Read { .. }) && path == Path::new(config::DEFAULT_CONFIG_PATH) {
            print_note("hint", "pass --config FILE or set ELASTICD_CONFIG");
        }
        EXIT_BAD_CONFIG
    })
}

fn build_engine(config: Config) -> Result<Engine, u8> {
    Engine::new(config).map_err(|errors| {
        for e in errors {
            print_error(&e);
        }
        EXIT_BAD_CONFIG
    })
}

async fn run_daemon(path: PathBuf) -> u8 {
    // First, before the config is read: a SIGHUP or SIGTERM sent right after start (say by
    // `systemctl reload`) is then queued for the daemon instead of ending the process.
    let control = match crate::daemon::listen() {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!("cannot listen for signals: {e}");
            return EXIT_PASS_FAILED;
        }
    };
    let engine = match load_config(&path).and_then(build_engine) {
        Ok(e) => e,
        Err(code) => return code,
    };
    match crate::daemon::run(path, engine, control).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            tracing::error!("{e}");
            EXIT_PASS_FAILED
        }
    }
}

async fn render(args: RenderArgs) -> u8 {
    let config = match load_config(&args.config.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Held until the run ends; the state is read under it, so a run never starts from a state
    // that an overlapping one is about to replace.
    let _locks = if args.dry_run {
        Vec::new()
    } else {
        match lock_run(&config).await {
            Ok(locks) => locks,
            Err(message) => {
                print_error(message);
                return EXIT_PASS_FAILED;
            }
        }
    };
    let state = match &config.state_file {
        Some(path) => State::load(path).await.unwrap_or_else(|e| {
            tracing::warn!("{e}; starting without last good sets");
            State::default()
        }),
        None => State::default(),
    };
    let state_file = config.state_file.clone();
    let mut engine = match build_engine(config) {
        Ok(e) => e.with_state(state),
        Err(code) => return code,
    };
    // Only a state file needs the comparison (and the copy it takes).
    let state_before = state_file.as_ref().map(|_| engine.state().clone());
    let options = PassOptions {
        dry_run: args.dry_run,
        no_reload: args.no_reload,
        health: args.health,
    };
    // A dry run writes nothing, so it leaves an interrupted run's files for a real run to settle.
    let recovered = if args.dry_run {
        Vec::new()
    } else {
        engine.recover().await
    };
    let mut report = engine.run_pass(options).await;
    report.problems.splice(0..0, recovered);
    print_report(&report);
    // Rewriting an unchanged state file would touch the disk on every cron run for nothing.
    if !args.dry_run
        && state_before.as_ref() != Some(engine.state())
        && let Some(path) = &state_file
        && let Err(e) = engine.state().save(path)
    {
        print_error(&e);
        return EXIT_PASS_FAILED;
    }
    let code = if report.failed() {
        EXIT_PASS_FAILED
    } else {
        EXIT_OK
    };
    // The process ends right after this: freeing every backend, template and report one by one
    // would only cost time (a fifth of a 10,000-backend run). Files are flushed and closed by
    // now except the locks, which the exit releases. With `--health` the engine is dropped as
    // usual, which stops its probe tasks first.
    if args.health {
        drop(engine);
    } else {
        std::mem::forget(engine);
    }
    std::mem::forget(report);
    std::mem::forget(state_before);
    code
}

/// How long `render` waits for an overlapping run of the same config or state file to end.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the exclusive locks of one `render`: on the config file itself (the same file under any
/// path), and on `.STATE.elasticd-lock` beside the state file (two configs sharing one state
/// file). Two overlapping runs could otherwise install an older set over a newer one. Waits up
/// to [`LOCK_WAIT`], then gives up with a message naming the file.
async fn lock_run(config: &Config) -> Result<Vec<std::fs::File>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut files = vec![(config.path.clone(), std::fs::File::open(&config.path))];
    if let Some(state) = &config.state_file {
        let name = state.file_name().unwrap_or_default().to_string_lossy();
        let path = state.with_file_name(format!(".{name}.elasticd-lock"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path);
        files.push((path, file));
    }
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    let mut held = Vec::new();
    for (path, file) in files {
        // A lock that cannot be taken at all (a read-only directory, a filesystem without flock)
        // must not stop a run that worked before there were locks.
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(
                    "cannot open {} to lock it: {e}; running without that lock",
                    path.display()
                );
                continue;
            }
        };
        loop {
            match crate::output::try_lock(&file) {
                Ok(true) => break,
                Ok(false) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Ok(false) => {
                    return Err(format!(
                        "another `elasticd render` holds the lock on {} (waited {}); not starting a second run, which could install an older set over a newer one",
                        path.display(),
                        humantime::format_duration(LOCK_WAIT)
                    ));
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot lock {}: {e}; running without that lock",
                        path.display()
                    );
                    break;
                }
            }
        }
        held.push(file);
    }
    Ok(held)
}

/// The one printer of a pass report for `elasticd render`: what each service, output, frontend
/// and hook did, then every problem.
fn print_report(report: &PassReport) {
    for s in &report.services {
        match s.status {
            ServiceStatus::Fresh => tracing::info!(
                service = %s.name,
                "{} (+{} -{})",
                count(s.backends, "backend"),
                s.added,
                s.removed
            ),
            ServiceStatus::KeptLastGood => {
                tracing::warn!(service = %s.name, "kept the last good set of {}", count(s.backends, "backend"))
            }
            ServiceStatus::NoData => tracing::warn!(service = %s.name, "no good backend set"),
        }
    }
    let mut stdout = std::io::stdout().lock();
    for o in &report.outputs {
        let path = o.path.display();
        match &o.status {
            OutputStatus::Unchanged => tracing::info!("{path}: unchanged"),
            OutputStatus::Written => tracing::info!("{path}: written"),
            OutputStatus::WouldChange(diff) => {
                tracing::info!("{path}: would change");
                let _ = stdout.write_all(diff.as_bytes());
            }
            OutputStatus::Skipped(reason) => tracing::warn!("{path}: left as it is: {reason}"),
            OutputStatus::NotApplied => tracing::warn!("{path}: not applied"),
            OutputStatus::Failed => tracing::warn!("{path}: not rendered"),
        }
    }
    let _ = stdout.flush();
    for f in &report.frontends {
        let what = match f.status {
            FrontendStatus::Untouched => "untouched",
            FrontendStatus::Installed => "files installed, not reloaded",
            FrontendStatus::Reloaded => "reloaded",
            FrontendStatus::UpdatedInPlace => "updated in place (no reload)",
            FrontendStatus::CheckFailed => "check failed, previous files kept, not reloaded",
            FrontendStatus::ReloadFailed => {
                "reload failed; the files are installed, and the next `elasticd render` reloads again"
            }
        };
        tracing::info!(frontend = %f.name, "{what}");
    }
    for h in report.hooks.iter().filter(|h| h.ok) {
        tracing::info!(service = %h.service, "on_change hook [{}] done (+{} -{})", h.hook, h.added, h.removed);
    }
    for problem in &report.problems {
        print_error(problem);
    }
}

async fn check(path: &Path, locate: bool) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut problems: Vec<String> = Vec::new();
    let renderer = Renderer::new(&config.outputs)
        .map_err(|errors| problems.extend(errors.into_iter().map(|e| e.to_string())))
        .ok();
    // The directories matter even when a template doesn't compile.
    let found = config::checks::preflight(&config, renderer.as_ref());
    problems.extend(found.errors);
    if locate {
        let mut sets = indexmap::IndexMap::new();
        for (name, service) in &config.services {
            match BuiltService::build(&config, name, service).locate().await {
                Ok(backends) => {
                    sets.insert(name.clone(), backends);
                }
                Err(errors) => {
                    problems.extend(errors.into_iter().map(|e| format!("service `{name}`: {e}")))
                }
            }
        }
        if let Some(renderer) = &renderer {
            problems.extend(config::checks::render_located(&config, renderer, &sets));
        }
    }
    let warnings = found.warnings;
    for w in &warnings {
        print_note("warning", w);
    }
    let mut programs: Vec<(String, &str)> = Vec::new();
    for (name, frontend) in &config.frontends {
        if let Some(p) = frontend.check.as_ref().and_then(|c| c.first()) {
            programs.push((format!("frontend `{name}` check"), p));
        }
        if let Some(p) = frontend.reload.as_ref().and_then(|r| r.program()) {
            programs.push((format!("frontend `{name}` reload"), p));
        }
    }
    // Plugins were found (or reported missing) when the config was loaded.
    for (what, program) in programs {
        if let Err(reason) = find_program(program, &config.base_dir) {
            problems.push(format!("{what}: {reason}"));
        }
    }
    if problems.is_empty() {
        println!(
            "{}: OK ({}, {}, {})",
            path.display(),
            count(config.services.len(), "service"),
            count(config.frontends.len(), "frontend"),
            count(config.outputs.len(), "output")
        );
        EXIT_OK
    } else {
        for p in &problems {
            print_error(p);
        }
        EXIT_BAD_CONFIG
    }
}

/// Confirms `program` can be run: an executable path, or a name found on `PATH`.
pub fn find_program(program: &str, base: &Path) -> Result<PathBuf, String> {
    use crate::process::{find_on_path, is_executable_file};
    if program.contains('/') {
        let path = base.join(program);
        return if is_executable_file(&path) {
            Ok(path)
        } else if path.exists() {
            Err(format!("`{}` is not an executable file", path.display()))
        } else {
            Err(format!("`{}` does not exist", path.display()))
        };
    }
    find_on_path(program).ok_or_else(|| format!("`{program}` is not found on PATH"))
}

async fn locate(args: LocateArgs) -> u8 {
    let config = match load_config(&args.config.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(only) = &args.service
        && !config.services.contains_key(only)
    {
        print_error(format_args!(
            "no service `{only}` in {}; services: {}",
            config.path.display(),
            config
                .services
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return EXIT_BAD_CONFIG;
    }
    let mut failed = false;
    let mut found: Vec<(String, Vec<Backend>)> = Vec::new();
    for (name, service) in &config.services {
        if args.service.as_ref().is_some_and(|s| s != name) {
            continue;
        }
        match BuiltService::build(&config, name, service).locate().await {
            Ok(mut backends) => {
                if args.health
                    && let Some(health) = &service.health
                {
                    let results = crate::health::probe_once(health, &backends).await;
                    for (b, result) in backends.iter_mut().zip(results) {
                        if let Err(reason) = &result {
                            print_error(format_args!(
                                "service `{name}`: {} fails its health check: {reason}",
                                b.endpoint()
                            ));
                        }
                        b.healthy = Some(result.is_ok());
                    }
                }
                found.push((name.clone(), backends));
            }
            Err(errors) => {
                failed = true;
                for e in errors {
                    print_error(format_args!("service `{name}`: {e}"));
                }
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> = found
            .iter()
            .map(|(n, b)| (n.clone(), serde_json::to_value(b).unwrap_or_default()))
            .collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&map).unwrap_or_default()
        );
    } else {
        let _ = out.write_all(format_table(&found).as_bytes());
    }
    if failed { EXIT_PASS_FAILED } else { EXIT_OK }
}

/// The `locate` table: one row per backend.
pub fn format_table(found: &[(String, Vec<Backend>)]) -> String {
    // The HEALTH column appears only when something was probed (`locate --health`).
    let with_health = found
        .iter()
        .any(|(_, backends)| backends.iter().any(|b| b.healthy.is_some()));
    let mut header = vec![
        "SERVICE".to_string(),
        "ENDPOINT".into(),
        "WEIGHT".into(),
        "NAME".into(),
        "ID".into(),
        "ZONE".into(),
        "LOCATOR".into(),
    ];
    if with_health {
        header.push("HEALTH".into());
    }
    let mut rows = vec![header];
    for (service, backends) in found {
        for b in backends {
            let mut row = vec![
                service.clone(),
                b.endpoint(),
                b.weight.to_string(),
                printable(b.name.as_deref()),
                printable(b.id.as_deref()),
                printable(b.zone.as_deref()),
                b.source.to_string(),
            ];
            if with_health {
                row.push(
                    match b.healthy {
                        Some(true) => "healthy",
                        Some(false) => "unhealthy",
                        None => "-",
                    }
                    .into(),
                );
            }
            rows.push(row);
        }
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

// Tag values may hold control characters; a terminal table shows them escaped.
fn printable(s: Option<&str>) -> String {
    match s {
        None => "-".into(),
        Some(s) => s.escape_debug().to_string(),
    }
}
