//! The daemon's record of itself ([`Status`]), kept up to date from its events and published to
//! the operations server (and anyone else holding a receiver) after each one.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::backend;
use crate::config::Config;
use crate::engine::{
    Engine, FrontendStatus as Done, OutputStatus as Written, PassProblem, PassReport,
};
use crate::metrics::{ServiceLabels, metrics};
use crate::status::{
    CHANGE_ENDPOINTS, Change, ConfigStatus, Failure, FrontendStatus, GuardStatus, Outcome,
    OutputStatus, ServiceStatus, Status, Timestamp,
};

/// The most bytes of an output that are hashed for the status (bigger files show no hash).
const MAX_HASHED: u64 = 64 * 1024 * 1024;

/// Keeps the status in the watch channel itself and edits it there: the status is copied only
/// when a reader still holds the last one published (a request being answered), not on every
/// event, which with a large set's change records was most of an unchanged answer's cost.
pub(super) struct Book {
    tx: watch::Sender<Arc<Status>>,
    /// Whether the outputs' SHA-256 are kept: only while a server can show them (hashing a
    /// large output on each write is most of an apply's work otherwise, for no one).
    hashing: bool,
}

impl Book {
    pub(super) fn new(engine: &Engine) -> Self {
        let config = engine.config();
        let now = Timestamp::now();
        let mut status = Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: now,
            config: ConfigStatus {
                path: config.path.display().to_string(),
                loaded_at: now,
                last_reload_error: None,
            },
            services: Vec::new(),
            frontends: Vec::new(),
            outputs: Vec::new(),
            changes: VecDeque::new(),
            fleet: Vec::new(),
        };
        shape(&mut status, config);
        let hashing = config.server.is_some();
        if hashing {
            for output in &mut status.outputs {
                output.sha256 = hash_file(Path::new(&output.path));
            }
        }
        metrics().config_loaded();
        status.fleet = crate::fleet::statuses();
        let (tx, _) = watch::channel(Arc::new(status));
        // Readiness depends on the time of asking (data goes stale without any event), so the
        // `elasticd_ready` gauge is worked out at each scrape from the last published status.
        let published = tx.subscribe();
        metrics().before_encode(Box::new(move |m| {
            let ready = published.borrow().readiness(SystemTime::now()).ready;
            m.ready.set(i64::from(ready));
        }));
        Book { tx, hashing }
    }

    /// A server now shows the status (`true`: the outputs are hashed now and after each write)
    /// or none does any more.
    pub(super) fn show_hashes(&mut self, shown: bool) {
        if shown == self.hashing {
            return;
        }
        self.hashing = shown;
        let paths: Vec<String> = self
            .tx
            .borrow()
            .outputs
            .iter()
            .map(|o| o.path.clone())
            .collect();
        let hashes: Vec<Option<String>> = paths
            .iter()
            .map(|p| shown.then(|| hash_file(Path::new(p))).flatten())
            .collect();
        self.edit(|status| {
            for (out, hash) in status.outputs.iter_mut().zip(hashes) {
                out.sha256 = hash;
            }
        });
    }

    /// A receiver of every published status.
    pub(super) fn subscribe(&self) -> watch::Receiver<Arc<Status>> {
        self.tx.subscribe()
    }

    /// Changes the status with `edit` and publishes it.
    fn edit(&self, edit: impl FnOnce(&mut Status)) {
        self.tx.send_modify(|shared| {
            let status = Arc::make_mut(shared);
            edit(status);
            // Fleet elections change on their own (etcd events); each publish takes their state
            // now.
            status.fleet = crate::fleet::statuses();
        });
    }

    /// A locate of `name` ended; `problem` is the locators' or guard's message when it failed.
    pub(super) fn located(
        &mut self,
        engine: &Engine,
        name: &str,
        problem: Option<(String, Option<String>)>,
        consecutive_failures: u32,
        next_refresh_at: Option<SystemTime>,
    ) {
        let now = Timestamp::now();
        let records = engine.service(name).map(|s| s.locator_records());
        let set = engine.backends_with_health(name);
        let health = engine.health_status(name);
        self.edit(|status| {
            let Some(s) = service(status, name) else {
                return;
            };
            if let Some(records) = records {
                s.locators = records;
            }
            s.consecutive_failures = consecutive_failures;
            s.health = health;
            s.next_refresh_at = next_refresh_at.map(Timestamp);
            match problem {
                None => {
                    s.last_success_at = Some(now);
                    s.last_error = None;
                    s.guard.holding = false;
                    s.guard.reason = None;
                }
                Some((message, guard_reason)) => {
                    if let Some(reason) = guard_reason {
                        s.guard.holding = true;
                        s.guard.reason = Some(reason);
                        s.guard.held_total = s.guard.held_total.saturating_add(1);
                    }
                    s.last_error = Some(Failure { message, at: now });
                }
            }
            if let Some(set) = set {
                // Copied only when it changed: a large set answered unchanged every second costs a
                // comparison, not an allocation.
                metrics()
                    .backends
                    .get_or_create(&ServiceLabels {
                        service: name.to_string(),
                    })
                    .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
                if !Arc::ptr_eq(&s.backends, &set) && *s.backends != *set {
                    s.changed_at = Some(now);
                }
                // Shared with the engine's set either way: the status holds no copy of its own.
                s.backends = set;
                s.has_good_set = true;
            }
        });
    }

    /// A backend of `name` changed health state, or an apply may have changed fail-open.
    pub(super) fn health_changed(&mut self, engine: &Engine, name: &str) {
        let set = engine.backends_with_health(name);
        let health = engine.health_status(name);
        self.edit(|status| {
            let Some(s) = service(status, name) else {
                return;
            };
            if let Some(set) = set {
                s.backends = set;
            }
            s.health = health;
        });
    }

    /// An apply ended; `before` were the engine's applied sets when it began.
    pub(super) fn applied(
        &mut self,
        engine: &Engine,
        report: &PassReport,
        before: &indexmap::IndexMap<String, crate::engine::BackendSet>,
        moved: &[super::moved::Moved],
        retry_at: impl Fn(&str) -> (u32, Option<SystemTime>),
    ) {
        let now = Timestamp::now();
        // Hashed before the status is taken for editing: readers wait while it is.
        let hashes: Vec<Option<String>> = report
            .outputs
            .iter()
            .map(|o| {
                (self.hashing && o.status == Written::Written)
                    .then(|| hash_file(&o.path))
                    .flatten()
            })
            .collect();
        self.edit(|status| {
            for (o, hash) in report.outputs.iter().zip(hashes) {
                let path = o.path.display().to_string();
                let Some(out) = status.outputs.iter_mut().find(|x| x.path == path) else {
                    continue;
                };
                out.last_result = Some(
                    match o.status {
                        Written::Unchanged => "unchanged",
                        Written::Written => "written",
                        Written::WouldChange(_) => "would_change",
                        Written::Skipped(_) => "skipped",
                        Written::NotApplied => "not_applied",
                        Written::Failed => "failed",
                    }
                    .to_string(),
                );
                if o.status == Written::Written {
                    out.written_at = Some(now);
                    out.sha256 = hash;
                }
            }
            let errors: Vec<&crate::frontend::FrontendError> = report
                .problems
                .iter()
                .filter_map(|p| match p {
                    PassProblem::Frontend(e) => Some(e),
                    _ => None,
                })
                .collect();
            for f in &report.frontends {
                let Some(fs) = status.frontends.iter_mut().find(|x| x.name == f.name) else {
                    continue;
                };
                let error = errors
                    .iter()
                    .find(|e| e.frontend() == f.name)
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "failed".to_string());
                let ok = |message: &str| Outcome {
                    ok: true,
                    at: now,
                    message: message.to_string(),
                };
                let failed = Outcome {
                    ok: false,
                    at: now,
                    message: error,
                };
                match f.status {
                    Done::Untouched => {}
                    Done::Installed => fs.last_check = Some(ok("checked")),
                    Done::CheckFailed => fs.last_check = Some(failed),
                    Done::ReloadFailed => {
                        fs.last_check = Some(ok("checked"));
                        fs.last_reload = Some(failed);
                    }
                    Done::Reloaded => {
                        fs.last_check = Some(ok("checked"));
                        fs.last_reload = Some(ok("reloaded"));
                    }
                    Done::UpdatedInPlace => {
                        fs.last_check = Some(ok("checked"));
                        fs.last_reload = Some(ok("updated in place (no reload)"));
                    }
                }
            }
            for fs in &mut status.frontends {
                fs.reload_owed = engine.state().pending_reloads.contains(&fs.name);
                let (failures, at) = retry_at(&fs.name);
                fs.consecutive_failures = failures;
                fs.retry_at = at.map(Timestamp);
            }
            // The engine moves its applied sets only on a clean apply; each service whose set moved
            // is one change, logged once however many retries it took.
            for (name, set) in engine.applied() {
                if before
                    .get(name)
                    .is_some_and(|b| Arc::ptr_eq(b, set) || b == set)
                {
                    continue;
                }
                let endpoints = |list: &[&backend::Backend]| {
                    let named = list.iter().take(CHANGE_ENDPOINTS);
                    (named.map(|b| b.endpoint()).collect(), list.len())
                };
                // The apply's own diff when it is of the same sets (it is, after a clean apply).
                let ((added, added_count), (removed, removed_count)) = match moved
                    .iter()
                    .find(|m| m.name == name && Arc::ptr_eq(m.set, set))
                {
                    Some(m) => (endpoints(&m.added), endpoints(&m.removed)),
                    None => {
                        let old = before.get(name).map_or(&[][..], |b| b.as_slice());
                        let (added, removed) = backend::diff(old, set);
                        (endpoints(&added), endpoints(&removed))
                    }
                };
                status.push_change(Change {
                    at: now,
                    service: name.clone(),
                    added,
                    removed,
                    added_count,
                    removed_count,
                    backends: set.len(),
                });
            }
        });
    }

    /// A SIGHUP loaded `config` (`Ok`) or failed to (`Err` with the message).
    pub(super) fn reloaded(&mut self, config: Result<&Config, String>) {
        match config {
            Ok(config) => {
                self.edit(|status| {
                    status.config.loaded_at = Timestamp::now();
                    status.config.last_reload_error = None;
                    shape(status, config);
                });
                metrics().config_loaded();
            }
            Err(message) => {
                self.edit(|status| {
                    status.config.last_reload_error = Some(Failure {
                        message,
                        at: Timestamp::now(),
                    });
                });
                metrics().config_last_reload_success.set(0);
            }
        }
    }
}

fn service<'a>(status: &'a mut Status, name: &str) -> Option<&'a mut ServiceStatus> {
    status.services.iter_mut().find(|s| s.name == name)
}

/// Makes the lists match the config's services, frontends and outputs, keeping the records of
/// those that stay.
fn shape(status: &mut Status, config: &Config) {
    let mut old = std::mem::take(&mut status.services);
    for (name, service) in &config.services {
        let kept = old
            .iter()
            .position(|s| &s.name == name)
            .map(|i| old.swap_remove(i));
        status.services.push(kept.unwrap_or_else(|| ServiceStatus {
            name: name.clone(),
            refresh_seconds: 0.0,
            has_good_set: false,
            backends: Arc::default(),
            changed_at: None,
            last_success_at: None,
            last_error: None,
            consecutive_failures: 0,
            next_refresh_at: None,
            locators: Vec::new(),
            guard: GuardStatus::default(),
            health: None,
        }));
        if let Some(s) = status.services.last_mut() {
            s.refresh_seconds = service.refresh.period().as_secs_f64();
        }
    }
    let mut old = std::mem::take(&mut status.frontends);
    for (name, frontend) in &config.frontends {
        let kept = old
            .iter()
            .position(|f| &f.name == name)
            .map(|i| old.swap_remove(i));
        let mut f = kept.unwrap_or_else(|| FrontendStatus {
            name: name.clone(),
            reload_method: String::new(),
            last_check: None,
            last_reload: None,
            reload_owed: false,
            consecutive_failures: 0,
            retry_at: None,
        });
        f.reload_method = frontend
            .reload
            .as_ref()
            .map_or("none", |r| r.method())
            .to_string();
        status.frontends.push(f);
    }
    let mut old = std::mem::take(&mut status.outputs);
    for output in &config.outputs {
        let path = output.path.display().to_string();
        let kept = old
            .iter()
            .position(|o| o.path == path)
            .map(|i| old.swap_remove(i));
        let mut o = kept.unwrap_or_else(|| OutputStatus {
            path,
            frontend: None,
            services: Vec::new(),
            sha256: None,
            written_at: None,
            last_result: None,
        });
        o.frontend = output.frontend.clone();
        o.services = match output.service() {
            Some(name) => vec![name.to_string()],
            None => config.services.keys().cloned().collect(),
        };
        status.outputs.push(o);
    }
}

/// SHA-256 of the file at `path` in hex; `None` when it can't be read (or is huge).
fn hash_file(path: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > MAX_HASHED {
        return None;
    }
    let mut hasher = Sha256::new();
    let mut reader = std::io::BufReader::new(file);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = reader.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// `Instant` to wall time, for the status's timestamps.
pub(super) fn wall(at: tokio::time::Instant) -> SystemTime {
    let now = tokio::time::Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => SystemTime::now() + ahead,
        None => SystemTime::now()
            .checked_sub(now.duration_since(at))
            .unwrap_or(SystemTime::now()),
    }
}
