//! `elasticd run`: the daemon. Each service is located on its own schedule; accepted changes are
//! coalesced in a settle window and then applied (render, install, check, reload once per
//! frontend). Failing locators and frontends back off exponentially. Signals: SIGTERM/SIGINT stop
//! after the running apply, SIGHUP re-reads the config, SIGUSR1 refreshes every service now.
//!
//! The daemon holds desired state, not events: the last good backend set of every service, and
//! the reloads still owed. Each apply renders from that state and compares with the files on disk,
//! so a failed check or reload is simply tried again, later, until it succeeds.

mod book;
mod memory;
mod moved;
mod push;
mod signals;
mod timing;

pub use signals::{Control, hold, listen, release};
pub use timing::{Backoff, Settle, jitter_delay};

use std::collections::{HashMap, HashSet};
use std::future::pending;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::config::{self, Config, Schedule};
use crate::engine::{
    BackendSet, BuiltService, Engine, FrontendStatus, OutputStatus, PassOptions, PassProblem,
};
use crate::locator::LocateError;
use crate::server::{self, Server, ServerError};
use crate::value::count;

/// The first retry of a failed frontend comes this soon; later ones double up to `backoff_max`.
const FRONTEND_BACKOFF_BASE: Duration = Duration::from_secs(1);

enum Event {
    Refresh(String),
    /// The fleet published a new set for this service: locate it now, backoff or not.
    Published(String),
    Located {
        service: String,
        /// The service the answer was obtained with; stale after a SIGHUP that changed it.
        asked_with: Arc<BuiltService>,
        result: Result<BackendSet, Vec<LocateError>>,
    },
}

/// Runs the daemon on `engine` (built from the config at `config_path`, which SIGHUP reads
/// again) until `control` says stop or closes.
pub async fn run(
    config_path: PathBuf,
    engine: Engine,
    control: mpsc::Receiver<Control>,
) -> Result<(), DaemonError> {
    memory::tune_allocator();
    Daemon::new(config_path, engine, control).main_loop().await
}

/// Why the daemon could not keep running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The scheduler failed to start.
    #[error("cannot start the scheduler: {0}")]
    Scheduler(#[from] JobSchedulerError),
    /// The operations server could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
}

struct Daemon {
    path: PathBuf,
    engine: Engine,
    control: mpsc::Receiver<Control>,
    settle: Settle,
    service_backoff: HashMap<String, Backoff>,
    /// The last problem logged per service, so a persistent failure is logged once.
    service_problem: HashMap<String, String>,
    frontend_backoff: HashMap<String, Backoff>,
    /// Retries an apply that failed to render or write a file (a full disk, a missing directory).
    apply_backoff: Backoff,
    in_flight: HashSet<String>,
    /// Services whose registrations changed while they were being located.
    owed: HashSet<String>,
    tasks: JoinSet<()>,
    /// Which service each locate task works for, to clear `in_flight` even if one panics.
    task_services: HashMap<tokio::task::Id, String>,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    scheduler: Option<JobScheduler>,
    /// What the daemon knows about itself, published to the server after each event.
    book: book::Book,
    server: Option<Server>,
    commands_tx: mpsc::Sender<server::Command>,
    commands: mpsc::Receiver<server::Command>,
    /// Health transitions from the probe loops, once they run.
    health_events: Option<mpsc::UnboundedReceiver<crate::health::HealthEvent>>,
    /// Whether the first apply is done (and the start-up code's pages were let go).
    started_up: bool,
    /// When the heap's free pages go back to the system.
    trim: memory::Trim,
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => sleep_until(t).await,
        None => pending().await,
    }
}

impl Daemon {
    fn new(path: PathBuf, engine: Engine, control: mpsc::Receiver<Control>) -> Self {
        let (tx, rx) = mpsc::channel(256);
        let daemon = &engine.config().daemon;
        let settle = Settle::new(daemon.settle_min.0, daemon.settle_max.0);
        let apply_backoff = Backoff::new(FRONTEND_BACKOFF_BASE, daemon.backoff_max.0);
        let (commands_tx, commands) = mpsc::channel(16);
        let book = book::Book::new(&engine);
        Daemon {
            book,
            server: None,
            commands_tx,
            commands,
            path,
            engine,
            control,
            settle,
            service_backoff: HashMap::new(),
            service_problem: HashMap::new(),
            frontend_backoff: HashMap::new(),
            apply_backoff,
            in_flight: HashSet::new(),
            owed: HashSet::new(),
            tasks: JoinSet::new(),
            task_services: HashMap::new(),
            tx,
            rx,
            scheduler: None,
            health_events: None,
            started_up: false,
            trim: memory::Trim::default(),
        }
    }

    fn config(&self) -> &Arc<Config> {
        self.engine.config()
    }

    async fn main_loop(mut self) -> Result<(), DaemonError> {
        // The server starts first: a port in use is a reason not to start at all.
        if let Some(config) = &self.config().server {
            let config = config.clone();
            self.server = Some(
                Server::start(&config, self.book.subscribe(), self.commands_tx.clone()).await?,
            );
        }
        push::configure(self.config());
        let saver = match push::saved_path(self.config()) {
            Some(path) => {
                push::restore(&path).await;
                Some(push::Saver::start(path))
            }
            None => None,
        };
        if let Some(cluster) = self.config().cluster.clone() {
            let tx = self.tx.clone();
            let refresh = move |service: &str| {
                let _ = tx.try_send(Event::Published(service.to_string()));
            };
            crate::fleet::install(&cluster, Box::new(refresh));
            self.engine.rebuild_services();
        }
        for problem in self.engine.recover().await {
            tracing::error!("{problem}");
        }
        self.scheduler = Some(start_scheduler(self.config(), &self.tx).await?);
        self.health_events = self.engine.start_health();
        tracing::info!(
            config = %self.path.display(),
            "started: {}, {}, settle {}..{}",
            count(self.config().services.len(), "service"),
            count(self.config().outputs.len(), "output"),
            humantime::format_duration(self.config().daemon.settle_min.0),
            humantime::format_duration(self.config().daemon.settle_max.0),
        );
        // Locate everything at once on start; until a service has a good answer, its outputs are
        // left as they are.
        let names: Vec<String> = self.config().services.keys().cloned().collect();
        for name in names {
            self.start_locate(&name);
        }

        loop {
            let settle_at = self.settle.deadline();
            let retry_at = self.next_frontend_retry();
            let trim_at = self.trim.deadline();
            tokio::select! {
                Some(event) = self.rx.recv() => self.handle(event),
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.reap(done);
                }
                Some(event) = recv_opt(&mut self.health_events) => self.on_health(event),
                names = crate::registry::global().changed() => self.registrations_changed(names),
                _ = sleep_until_opt(settle_at) => self.apply_now().await,
                _ = sleep_until_opt(retry_at) => self.apply_now().await,
                _ = sleep_until_opt(trim_at) => self.trim.now(),
                Some(command) = self.commands.recv() => match command {
                    server::Command::Refresh(target) => {
                        let names: Vec<String> = match target {
                            Some(name) => vec![name],
                            None => self.config().services.keys().cloned().collect(),
                        };
                        tracing::info!("refresh asked for over the API: {}", names.join(", "));
                        for name in names {
                            self.start_locate(&name);
                        }
                    }
                },
                control = self.control.recv() => match control {
                    None | Some(Control::Stop) => break,
                    Some(Control::Reload) => self.reload_config().await?,
                    Some(Control::Refresh) => {
                        tracing::info!("SIGUSR1: refreshing every service now");
                        let names: Vec<String> = self.config().services.keys().cloned().collect();
                        for name in names {
                            self.start_locate(&name);
                        }
                    }
                },
            }
        }
        tracing::info!("stopping");
        // Listeners close first, so that no request sees a half-stopped daemon.
        let mut server = self.server.take();
        if let Some(server) = &mut server {
            server.close_listeners().await;
        }
        if let Some(mut scheduler) = self.scheduler.take() {
            let _ = scheduler.shutdown().await;
        }
        // Locators still running are dropped; their programs are killed with them.
        self.tasks.shutdown().await;
        if let Some(saver) = saver {
            saver.finish();
        }
        // Open connections go last: a connection-bound registration is saved before its
        // WebSocket closes (and removes it), so that a restart restores it.
        drop(server);
        // Hands fleet leadership over now instead of after the lease's TTL.
        crate::fleet::shutdown().await;
        tracing::info!("stopped");
        Ok(())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Refresh(service) => {
                let waiting = self
                    .service_backoff
                    .get(&service)
                    .is_some_and(|b| b.is_waiting(Instant::now()));
                if waiting {
                    tracing::debug!(service = %service, "refresh skipped: backing off");
                } else {
                    self.start_locate(&service);
                }
            }
            Event::Published(service) => self.start_locate(&service),
            Event::Located {
                service,
                asked_with,
                result,
            } => {
                if self.engine.service(&service).map(|s| &s.config) != Some(&asked_with.config) {
                    // A SIGHUP changed the service while this ran; the locate started for the new
                    // config is the one in flight now.
                    tracing::debug!(service = %service, "answer dropped: the service changed meanwhile");
                    return;
                }
                self.in_flight.remove(&service);
                self.on_located(&service, result);
                if self.owed.remove(&service) {
                    self.start_locate(&service);
                }
            }
        }
    }

    fn start_locate(&mut self, name: &str) {
        let Some(service) = self.engine.service(name).cloned() else {
            return;
        };
        if !self.in_flight.insert(name.to_string()) {
            // A slow locator is still running; don't stack another one behind it.
            tracing::debug!(service = %name, "refresh skipped: the previous one is still running");
            return;
        }
        let tx = self.tx.clone();
        let name = name.to_string();
        let name_for_task = name.clone();
        let handle = self.tasks.spawn(async move {
            let result = service.locate_set().await;
            let _ = tx
                .send(Event::Located {
                    service: name,
                    asked_with: service,
                    result,
                })
                .await;
        });
        self.task_services.insert(handle.id(), name_for_task);
    }

    fn reap(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match &done {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let service = self.task_services.remove(&id);
        if let (Err(e), Some(service)) = (done, service)
            && !e.is_cancelled()
        {
            // Never expected; if it happens the service must not stay "in flight" for ever.
            tracing::error!(service = %service, "locate task failed: {e}");
            self.in_flight.remove(&service);
        }
    }

    fn on_located(&mut self, name: &str, result: Result<BackendSet, Vec<LocateError>>) {
        let now = Instant::now();
        let locate_failed = result.is_err();
        let judged = self.engine.judge(name, result);
        let guard_reason = judged.problems.iter().find_map(|p| match p {
            PassProblem::GuardHeld { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        let mut problem = None;
        let config = Arc::clone(self.engine.config());
        let backoff = self
            .service_backoff
            .entry(name.to_string())
            .or_insert_with(|| {
                let period = config
                    .services
                    .get(name)
                    .map_or(config::DEFAULT_REFRESH, |s| s.refresh.period());
                Backoff::new(period, config.daemon.backoff_max.0)
            });
        match judged.fresh {
            Some(set) => {
                let failures = backoff.succeed();
                if self.service_problem.remove(name).is_some() {
                    if failures > 0 {
                        tracing::info!(service = %name, "recovered after {}", count(failures as usize, "failed attempt"));
                    } else {
                        tracing::info!(service = %name, "the guard accepts the answer again");
                    }
                }
                let size = set.len();
                if self.engine.accept(name, set) {
                    tracing::debug!(
                        service = %name,
                        "change: +{} -{} ({})",
                        judged.report.added,
                        judged.report.removed,
                        count(size, "backend"),
                    );
                    self.settle.change(now);
                }
            }
            None => {
                let message = judged
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let next = if locate_failed {
                    let wait = backoff.fail(now);
                    format!("; next try in {}", humantime::format_duration(wait))
                } else {
                    String::new()
                };
                problem = Some((message.clone(), guard_reason.clone()));
                // Log on a change of state, not on every pass of a persistent failure.
                if self.service_problem.get(name) != Some(&message) {
                    tracing::error!("{message}{next}");
                    self.service_problem.insert(name.to_string(), message);
                } else {
                    tracing::debug!("still failing: {message}{next}");
                }
            }
        }
        let failures = self.service_backoff.get(name).map_or(0, Backoff::failures);
        let period = self
            .config()
            .services
            .get(name)
            .map_or(config::DEFAULT_REFRESH, |s| s.refresh.period());
        let scheduled = timing::later(now, period);
        let next = self
            .service_backoff
            .get(name)
            .and_then(Backoff::until)
            .map_or(scheduled, |b| b.max(scheduled));
        self.book.located(
            &self.engine,
            name,
            problem,
            failures,
            Some(book::wall(next)),
        );
    }

    fn on_health(&mut self, event: crate::health::HealthEvent) {
        if event.healthy {
            tracing::info!(service = %event.service, "backend {} is healthy", event.backend);
        } else {
            tracing::warn!(
                service = %event.service,
                "backend {} is unhealthy: {}",
                event.backend,
                event.reason.as_deref().unwrap_or("its checks failed")
            );
        }
        // A transition is a change like any other: it goes through the settle window.
        self.settle.change(Instant::now());
        self.book.health_changed(&self.engine, &event.service);
    }

    fn next_frontend_retry(&self) -> Option<Instant> {
        self.frontend_backoff
            .values()
            .chain(std::iter::once(&self.apply_backoff))
            .filter(|b| b.failures() > 0)
            .filter_map(Backoff::until)
            .min()
    }

    async fn apply_now(&mut self) {
        self.settle.clear();
        let started = Instant::now();
        let held: HashSet<String> = self
            .frontend_backoff
            .iter()
            .filter(|(_, b)| b.is_waiting(started))
            .map(|(n, _)| n.clone())
            .collect();
        // The sets of the apply before, and those this one renders, for the log line below.
        let before = self.engine.applied().clone();
        let report = self.engine.apply(PassOptions::default(), &held).await;
        let sets = self.engine.rendered().clone();
        let moved = moved::moved_sets(&before, &sets);
        for hook in &report.hooks {
            if hook.ok {
                tracing::info!(
                    service = %hook.service,
                    "on_change hook [{}] done (+{} -{})",
                    hook.hook,
                    hook.added,
                    hook.removed
                );
            }
        }
        for problem in &report.problems {
            tracing::error!("{problem}");
        }
        let backoff_max = self.config().daemon.backoff_max.0;
        let mut reloaded = Vec::new();
        let mut in_place = Vec::new();
        let mut failed = Vec::new();
        for f in &report.frontends {
            let backoff = self
                .frontend_backoff
                .entry(f.name.clone())
                .or_insert_with(|| Backoff::new(FRONTEND_BACKOFF_BASE, backoff_max));
            match f.status {
                FrontendStatus::CheckFailed | FrontendStatus::ReloadFailed => {
                    failed.push(f.name.clone());
                    let wait = backoff.fail(Instant::now());
                    tracing::warn!(
                        frontend = %f.name,
                        "not applied; retrying in {}",
                        humantime::format_duration(wait)
                    );
                }
                FrontendStatus::Reloaded
                | FrontendStatus::UpdatedInPlace
                | FrontendStatus::Installed => {
                    let failures = backoff.succeed();
                    if failures > 0 {
                        tracing::info!(frontend = %f.name, "recovered after {}", count(failures as usize, "failed attempt"));
                    }
                    match f.status {
                        FrontendStatus::Reloaded => reloaded.push(f.name.clone()),
                        FrontendStatus::UpdatedInPlace => in_place.push(f.name.clone()),
                        _ => {}
                    }
                }
                FrontendStatus::Untouched => {}
            }
        }
        // A failed frontend that had nothing to do this time (its files already match, nothing
        // owed) is in the desired state again: stop retrying it.
        for (name, backoff) in &mut self.frontend_backoff {
            if backoff.failures() > 0
                && !held.contains(name)
                && !report.frontends.iter().any(|f| &f.name == name)
            {
                backoff.succeed();
            }
        }
        let unwritten = report
            .problems
            .iter()
            .any(|p| matches!(p, PassProblem::Render(_) | PassProblem::Install(_)));
        // A failed hook is owed: the next apply (after the backoff) runs it again with a summary
        // against the last set it acknowledged.
        let hook_failed = report
            .problems
            .iter()
            .any(|p| matches!(p, PassProblem::Hook { .. }));
        if unwritten || hook_failed {
            let wait = self.apply_backoff.fail(Instant::now());
            tracing::warn!(
                "{}; retrying in {}",
                if unwritten {
                    "some files were not written"
                } else {
                    "some on_change hooks failed"
                },
                humantime::format_duration(wait)
            );
        } else {
            self.apply_backoff.succeed();
        }
        let with_health: Vec<String> = self
            .config()
            .services
            .iter()
            .filter(|(_, s)| s.health.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in with_health {
            self.book.health_changed(&self.engine, &name);
        }
        let frontend_backoff = &self.frontend_backoff;
        self.book
            .applied(&self.engine, &report, &before, &moved, |name| {
                let b = frontend_backoff.get(name);
                let failures = b.map_or(0, Backoff::failures);
                let at = b
                    .filter(|b| b.failures() > 0)
                    .and_then(Backoff::until)
                    .map(book::wall);
                (failures, at)
            });
        let written = report
            .outputs
            .iter()
            .filter(|o| o.status == OutputStatus::Written)
            .count();
        // A frontend that failed was just logged as `not applied`; an `applied ... reloaded
        // nothing` after it would contradict that. The retry that succeeds logs the change, since
        // the sets it is compared with move only on a clean apply.
        let touched = !reloaded.is_empty() || !in_place.is_empty();
        if touched || (written > 0 && failed.is_empty()) {
            let changes: Vec<String> = moved.iter().map(moved::change_summary).collect();
            let not_applied = if failed.is_empty() {
                String::new()
            } else {
                format!(", not applied to {}", failed.join(", "))
            };
            let mut done = Vec::new();
            if !reloaded.is_empty() || in_place.is_empty() {
                done.push(if reloaded.is_empty() {
                    "reloaded nothing".to_string()
                } else {
                    format!("reloaded {}", reloaded.join(", "))
                });
            }
            if !in_place.is_empty() {
                done.push(format!(
                    "updated {} in place (no reload)",
                    in_place.join(", ")
                ));
            }
            tracing::info!(
                "{} {}: {} written, {}{not_applied} in {} ms",
                if failed.is_empty() {
                    "applied"
                } else {
                    "partly applied"
                },
                if changes.is_empty() {
                    "pending files".to_string()
                } else {
                    changes.join(", ")
                },
                count(written, "output"),
                done.join(", "),
                started.elapsed().as_millis()
            );
        }
        // The sets before this apply and the render's copies go now; their pages are kept for
        // the next apply, and given back once the daemon goes quiet (start-up's at once too).
        drop(moved);
        drop((before, sets, report));
        if !self.started_up {
            self.started_up = true;
            self.trim.now();
            memory::release_start_up_code();
        }
        // Also after start-up: what the first refreshes leave is given back once it is quiet.
        self.trim.applied(Instant::now());
    }

    async fn reload_config(&mut self) -> Result<(), DaemonError> {
        tracing::info!(config = %self.path.display(), "SIGHUP: reading the config again");
        let new = match config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("the new config is not valid; still running the old one: {e}");
                self.book.reloaded(Err(e.to_string()));
                return Ok(());
            }
        };
        let new_server = new.server.clone();
        let old = Arc::clone(self.config());
        if new.cluster != old.cluster {
            tracing::warn!("`cluster` changed; fleet mode keeps its old settings until a restart");
        }
        let new_daemon = new.daemon.clone();
        let services_count = new.services.len();
        let changed = match self.engine.reconfigure(new) {
            Ok(changed) => changed,
            Err(errors) => {
                let message = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                for e in errors {
                    tracing::error!("the new config is not valid; still running the old one: {e}");
                }
                self.book.reloaded(Err(message));
                return Ok(());
            }
        };
        self.book.reloaded(Ok(self.engine.config()));
        push::configure(self.engine.config());
        self.reconfigure_server(new_server.as_ref()).await;
        let reschedule =
            !changed.is_empty() || services_count != old.services.len() || new_daemon != old.daemon;
        // Unchanged services keep their last good sets (the engine keeps them); changed ones
        // start over.
        for name in &changed {
            self.service_backoff.remove(name);
            self.service_problem.remove(name);
            // An answer still coming for the old config will be dropped; ask again now.
            self.in_flight.remove(name);
        }
        if new_daemon != old.daemon {
            // New jitter and backoff limits apply to every service and frontend from now on.
            self.service_backoff.clear();
            self.frontend_backoff.clear();
            self.apply_backoff = Backoff::new(FRONTEND_BACKOFF_BASE, new_daemon.backoff_max.0);
        }
        self.settle = Settle::new(new_daemon.settle_min.0, new_daemon.settle_max.0);
        if reschedule || self.scheduler.is_none() {
            if let Some(mut old) = self.scheduler.take() {
                let _ = old.shutdown().await;
            }
            self.scheduler = Some(start_scheduler(self.engine.config(), &self.tx).await?);
        }
        tracing::info!(
            "config reloaded: {} changed",
            count(changed.len(), "service")
        );
        for name in &changed {
            self.start_locate(name);
        }
        // Outputs or templates may have changed too.
        self.settle.change(Instant::now());
        Ok(())
    }
}

impl Daemon {
    /// Starts, stops or reconfigures the server after a SIGHUP; a server that can't take the
    /// new settings keeps the old ones (the daemon never stops over it).
    async fn reconfigure_server(&mut self, config: Option<&server::ServerConfig>) {
        match (self.server.take(), config) {
            (None, None) => {}
            (Some(_old), None) => {
                tracing::info!("server stopped: the config has no `server` any more")
            }
            (None, Some(config)) => {
                match Server::start(config, self.book.subscribe(), self.commands_tx.clone()).await {
                    Ok(s) => self.server = Some(s),
                    Err(e) => tracing::error!("{e}; running without the server"),
                }
            }
            (Some(old), Some(config)) => match old.reconfigure(config).await {
                Ok(s) => self.server = Some(s),
                Err((s, e)) => {
                    tracing::error!("{e}; the server keeps its old settings");
                    self.server = Some(s);
                }
            },
        }
        self.book.show_hashes(self.server.is_some());
    }
}

async fn start_scheduler(
    config: &Config,
    tx: &mpsc::Sender<Event>,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    for (name, service) in &config.services {
        let period = service.refresh.period();
        let jitter = config.daemon.jitter;
        let tx = tx.clone();
        let name = name.clone();
        let run = move |_id, _scheduler| {
            let tx = tx.clone();
            let name = name.clone();
            Box::pin(async move {
                tokio::time::sleep(jitter_delay(period, jitter)).await;
                let _ = tx.send(Event::Refresh(name)).await;
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        };
        let job = match &service.refresh {
            Schedule::Every(every) => Job::new_repeated_async(*every, run)?,
            Schedule::Cron(expr) => Job::new_async(expr.as_str(), run)?,
        };
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    Ok(scheduler)
}

#[cfg(test)]
mod tests;
