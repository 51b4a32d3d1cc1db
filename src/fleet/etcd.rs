//! The etcd side of fleet mode: one election per shared locator (over the process's one
//! session, `session.rs`), and the [`FleetLocator`] that answers from it.
//!
//! Leadership is the leader key, created in a transaction only when absent and bound to the
//! member's lease: when the member dies, etcd deletes it after `lease_ttl` and a follower takes
//! over; nothing is ever left behind that blocks a restarted fleet. Publishing is a transaction
//! conditioned on the leader key still being the one this member created, so a member that lost
//! its lease (or was replaced meanwhile) can never overwrite the new leader's data.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};

use super::session::{Shared, retry};
use super::{ClusterConfig, Failing, FallbackAfter, FleetKey, Record, set_status};
use crate::backend::Backend;
use crate::locator::{LocateContext, LocateError, LocateFuture, Locator};
use crate::metrics::{ElectionLabels, LocatorLabels, metrics};
use crate::status::{FleetStatus, Timestamp};

/// A full read of the data key this often, so that a missed watch event can't persist.
const FULL_READ: Duration = Duration::from_secs(120);

static INSTALLED: OnceLock<Arc<Shared>> = OnceLock::new();

pub(super) fn install(cluster: &ClusterConfig, refresh: Box<dyn Fn(&str) + Send + Sync>) {
    let shared = Shared {
        member: cluster.member_name(),
        config: cluster.clone(),
        refresh,
        session: tokio::sync::Mutex::new(None),
    };
    let _ = INSTALLED.set(Arc::new(shared));
}

pub(super) fn installed() -> Option<Arc<Shared>> {
    INSTALLED.get().cloned()
}

pub(super) async fn shutdown() {
    if let Some(shared) = INSTALLED.get() {
        shared.revoke().await;
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Role {
    #[default]
    Electing,
    /// `rev` is the leader key's create revision, which every publish compares against.
    Leader {
        rev: i64,
        lease: i64,
    },
    Follower,
}

/// Since when, and why, the fleet data can't be trusted (`None` while etcd is healthy).
type Degraded = Option<(Instant, String)>;

#[derive(Default)]
struct State {
    role: Role,
    leader: Option<String>,
    data: Option<Record>,
    /// Since when, and why, the fleet data can't be trusted.
    degraded: Degraded,
    /// Asking the locator directly, after `fallback_after`.
    fallback: bool,
    /// The last unreadable record's complaint, logged once.
    unreadable: Option<String>,
    /// The lease the data key is on in etcd (0: no data key). An unchanged set is rewritten
    /// only when it isn't on the leader's own lease, which would expire with someone else.
    data_lease: i64,
    /// `degraded` is set because the leader's locator has stopped answering (not because of
    /// etcd): a record that says it answers again clears it.
    unconfirmed: bool,
}

/// One shared locator's election and the data it follows.
struct Election {
    shared: Arc<Shared>,
    key: FleetKey,
    state: Mutex<State>,
    /// Bumped on every change of `state`, for a locate waiting for the first data.
    changed: watch::Sender<u64>,
    /// Tells the election loop to campaign again (a publish found it is no longer leader).
    kick: tokio::sync::Notify,
    /// The service's refresh period: a set the leader has not confirmed for 3 of them is stale.
    refresh: Duration,
}

impl Election {
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        let out = self.state.lock().ok().map(|mut s| f(&mut s));
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.record();
        out
    }

    fn snapshot(&self) -> Option<(Role, Option<Record>, Degraded)> {
        let s = self.state.lock().ok()?;
        Some((s.role, s.data.clone(), s.degraded.clone()))
    }

    fn labels(&self) -> LocatorLabels {
        LocatorLabels {
            service: self.key.service.clone(),
            locator: self.key.locator.clone(),
        }
    }

    /// Writes the state to the status table and the metrics.
    fn record(&self) {
        let Ok(s) = self.state.lock() else {
            return;
        };
        let age = s
            .degraded
            .as_ref()
            .map_or(0.0, |(since, _)| since.elapsed().as_secs_f64());
        let role = match s.role {
            _ if s.fallback => "fallback",
            Role::Leader { .. } => "leader",
            Role::Follower => "follower",
            Role::Electing => "electing",
        };
        let m = metrics();
        let leading = matches!(s.role, Role::Leader { .. });
        m.fleet_leader
            .get_or_create(&self.labels())
            .set(i64::from(leading));
        m.fleet_data_age.get_or_create(&self.labels()).set(age);
        let status = FleetStatus {
            service: self.key.service.clone(),
            locator: self.key.locator.clone(),
            key: self.key.dir.clone(),
            role: role.into(),
            leader: s.leader.clone(),
            revision: s.data.as_ref().map(|d| d.revision),
            degraded: s.degraded.as_ref().map(|(_, why)| why.clone()),
            data_age_seconds: age,
        };
        set_status(&self.key.dir, Some(status));
    }

    fn degrade(&self, why: &str) {
        let first = self.with_state(|s| {
            let first = s.degraded.is_none();
            if first {
                s.degraded = Some((Instant::now(), why.to_string()));
            } else if let Some((_, w)) = &mut s.degraded {
                *w = why.to_string();
            }
            if matches!(s.role, Role::Leader { .. }) {
                // Without etcd there is no proof of leadership; publishing waits for a new round.
                s.role = Role::Electing;
            }
            first
        });
        if first == Some(true) {
            tracing::warn!(
                service = %self.key.service,
                "fleet: {why}; keeping the last good set of {}",
                self.key.locator
            );
        }
    }

    /// Takes a published record; a new set makes the daemon locate (and so render) now.
    fn take(&self, bytes: &[u8], lease: i64) {
        self.with_state(|s| s.data_lease = lease);
        match Record::parse(bytes) {
            Ok(record) => {
                let answering = record.failing.is_none();
                let changed = self.with_state(|s| {
                    s.unreadable = None;
                    if answering && std::mem::take(&mut s.unconfirmed) {
                        s.degraded = None;
                        s.fallback = false;
                    }
                    let changed = s.data.as_ref().map(|d| &d.backends) != Some(&record.backends);
                    s.data = Some(record);
                    changed
                });
                if changed == Some(true) {
                    (self.shared.refresh)(&self.key.service);
                }
            }
            Err(why) => {
                let new = self.with_state(|s| {
                    let new = s.unreadable.as_deref() != Some(why.as_str());
                    s.unreadable = Some(why.clone());
                    new
                });
                if new == Some(true) {
                    tracing::warn!(service = %self.key.service, "fleet: {why}; keeping the last good set");
                }
            }
        }
    }

    async fn run(self: Arc<Self>) {
        let mut wait = Duration::from_millis(250);
        let most = (self.shared.config.lease_ttl.0 / 2).max(Duration::from_secs(1));
        loop {
            match self.round().await {
                Ok(()) => wait = Duration::from_millis(250),
                Err(why) => {
                    self.degrade(&why);
                    sleep(wait).await;
                    wait = wait.saturating_mul(2).min(most);
                }
            }
        }
    }

    /// Campaigns, reads the data, then watches both keys until something calls for a new round.
    async fn round(&self) -> Result<(), String> {
        let shared = &self.shared;
        let limit = shared.limit();
        let session = shared.session().await?;
        let client = session.client.clone();
        let leader_key = self.key.leader_key();
        let data_key = self.key.data_key();
        let claim = PutOptions::new().with_lease(session.lease);
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader_key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(leader_key.as_str(), shared.member.as_str(), Some(claim)),
                TxnOp::get(data_key.as_str(), None),
            ])
            .or_else([
                TxnOp::get(leader_key.as_str(), None),
                TxnOp::get(data_key.as_str(), None),
            ]);
        let resp = retry(limit, &client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let mut holder = None;
        let mut data = None;
        for op in resp.op_responses() {
            let TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                if kv.key() == leader_key.as_bytes() {
                    let name = String::from_utf8_lossy(kv.value()).into_owned();
                    holder = Some((name, kv.lease(), kv.create_revision()));
                } else if kv.key() == data_key.as_bytes() {
                    data = Some((kv.value().to_vec(), kv.lease()));
                }
            }
        }
        let role = match &holder {
            None if resp.succeeded() => Role::Leader {
                rev,
                lease: session.lease,
            },
            // Still ours from before a disconnect: the lease outlived it.
            Some((_, lease, created)) if *lease == session.lease => Role::Leader {
                rev: *created,
                lease: *lease,
            },
            Some((name, _, created)) if *name == shared.member => {
                // This member's previous process (same name, another lease) is gone: don't
                // wait out its lease.
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        leader_key.as_str(),
                        CompareOp::Equal,
                        *created,
                    )])
                    .and_then([TxnOp::delete(leader_key.as_str(), None)]);
                retry(limit, &client, |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
                return Ok(());
            }
            _ => Role::Follower,
        };
        let leading = matches!(role, Role::Leader { .. });
        let result = if leading { "won" } else { "lost" };
        metrics()
            .fleet_elections
            .get_or_create(&ElectionLabels {
                result: result.into(),
            })
            .inc();
        let leader = if leading {
            Some(shared.member.clone())
        } else {
            holder.map(|(name, _, _)| name)
        };
        let was = self.with_state(|s| {
            let was = s.degraded.take();
            // A set the leader stopped confirming is judged again at the next locate.
            let was = was.filter(|_| !std::mem::take(&mut s.unconfirmed));
            s.role = role;
            s.leader = leader.clone();
            was
        });
        if let Some(Some((_, why))) = was {
            tracing::info!(service = %self.key.service, "fleet: etcd is back ({why} before)");
        }
        if leading {
            tracing::info!(service = %self.key.service, "fleet: leading {} ({})", self.key.locator, self.key.dir);
        } else {
            tracing::debug!(service = %self.key.service, "fleet: following {}", leader.as_deref().unwrap_or("?"));
        }
        match data {
            Some((bytes, lease)) => self.take(&bytes, lease),
            None => {
                self.with_state(|s| s.data_lease = 0);
            }
        }
        if leading {
            // Publish now rather than at the next refresh: followers may be waiting.
            (shared.refresh)(&self.key.service);
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev.saturating_add(1));
        let prefix = format!("{}/", self.key.dir);
        let mut stream = retry(limit, &client, |mut c| {
            let (prefix, options) = (prefix.clone(), options.clone());
            async move { c.watch(prefix, Some(options)).await }
        })
        .await?;
        let mut lost = session.lost.clone();
        let mut full_read = tokio::time::interval_at(Instant::now() + FULL_READ, FULL_READ);
        loop {
            tokio::select! {
                message = stream.message() => {
                    let resp = match message {
                        Ok(Some(resp)) => resp,
                        Ok(None) => return Err(self.restart("etcd closed the watch")),
                        Err(e) => return Err(self.restart(&format!("the etcd watch failed: {e}"))),
                    };
                    if resp.canceled() || resp.compact_revision() > 0 {
                        // Compacted past our revision: read everything again and watch anew.
                        self.restart("the etcd watch was cancelled");
                        return Ok(());
                    }
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        if kv.key() == leader_key.as_bytes() {
                            if event.event_type() == EventType::Delete {
                                if leading {
                                    tracing::warn!(service = %self.key.service, "fleet: lost the leadership of {}", self.key.locator);
                                }
                                self.with_state(|s| s.role = Role::Electing);
                                return Ok(());
                            }
                            let name = String::from_utf8_lossy(kv.value()).into_owned();
                            self.with_state(|s| s.leader = Some(name));
                        } else if kv.key() == data_key.as_bytes() {
                            if event.event_type() == EventType::Put {
                                self.take(kv.value(), kv.lease());
                            } else {
                                // Gone with its lease; the set stays, and a leader writes it again.
                                self.with_state(|s| s.data_lease = 0);
                            }
                        }
                    }
                }
                _ = full_read.tick() => {
                    let key = data_key.clone();
                    let resp = retry(limit, &client, |mut c| {
                        let key = key.clone();
                        async move { c.get(key, None).await }
                    })
                    .await?;
                    if let Some(kv) = resp.kvs().first() {
                        self.take(kv.value(), kv.lease());
                    }
                }
                changed = lost.changed() => {
                    if changed.is_err() || *lost.borrow() {
                        self.with_state(|s| s.role = Role::Electing);
                        return Err("the etcd lease expired".into());
                    }
                }
                _ = self.kick.notified() => return Ok(()),
            }
        }
    }

    fn restart(&self, why: &str) -> String {
        metrics().fleet_watch_restarts.inc();
        tracing::debug!(service = %self.key.service, "fleet: {why}; watching again");
        why.to_string()
    }

    /// Publishes what the locator found (`Ok`), or that it has no answer (`Err`, written once
    /// per failure in a row), while this member still leads; an unchanged set is not written.
    async fn publish(&self, found: Result<&[Backend], String>) {
        let Some((Role::Leader { rev, lease }, previous, _)) = self.snapshot() else {
            return;
        };
        let on_own_lease = self.state.lock().is_ok_and(|s| s.data_lease == lease);
        let (backends, generated_at, failing) = match found {
            Ok(found) => {
                let same = |p: &Record| p.backends == found && p.failing.is_none();
                if on_own_lease && previous.as_ref().is_some_and(same) {
                    return;
                }
                (found.to_vec(), Timestamp::now(), None)
            }
            Err(error) => {
                // Without a set there is nothing to mark; followers wait for one anyway.
                let Some(p) = &previous else {
                    return;
                };
                if on_own_lease && p.failing.is_some() {
                    return;
                }
                let failing = p.failing.clone().unwrap_or_else(|| Failing {
                    since: Timestamp::now(),
                    error,
                });
                (p.backends.clone(), p.generated_at, Some(failing))
            }
        };
        let mut record = Record {
            schema: 0,
            revision: previous.map_or(1, |p| p.revision.saturating_add(1)),
            generated_at,
            leader: self.shared.member.clone(),
            backends,
            failing,
        };
        record.schema = record.schema_needed();
        let Ok(json) = serde_json::to_vec(&record) else {
            return;
        };
        let Some(client) = self.shared.client().await else {
            return;
        };
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.leader_key(),
                CompareOp::Equal,
                rev,
            )])
            .and_then([TxnOp::put(
                self.key.data_key(),
                json,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let published = retry(self.shared.limit(), &client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await;
        match published {
            Ok(resp) if resp.succeeded() => {
                if let Some(f) = &record.failing {
                    tracing::warn!(
                        service = %self.key.service,
                        "fleet: published revision {}: {} has no answer ({}); followers keep its last set",
                        record.revision,
                        self.key.locator,
                        f.error
                    );
                } else {
                    tracing::info!(
                        service = %self.key.service,
                        "fleet: published {} revision {} ({})",
                        self.key.locator,
                        record.revision,
                        crate::value::count(record.backends.len(), "backend")
                    );
                }
                self.with_state(|s| {
                    s.data = Some(record);
                    s.data_lease = lease;
                });
            }
            Ok(_) => {
                tracing::warn!(service = %self.key.service, "fleet: no longer the leader of {}; not publishing", self.key.locator);
                self.with_state(|s| s.role = Role::Electing);
                self.kick.notify_one();
            }
            Err(why) => {
                self.degrade(&format!("cannot publish: {why}"));
                // A new round proves leadership again (or finds it lost) and clears this.
                self.kick.notify_one();
            }
        }
    }

    /// Waits (at most `limit`) until `ready` holds for the state.
    async fn wait_for(&self, limit: Duration, ready: impl Fn(&State) -> bool) {
        let mut rx = self.changed.subscribe();
        let check = || self.state.lock().map(|s| ready(&s)).unwrap_or(true);
        let _ = timeout(limit, async {
            while !check() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    async fn locate(
        &self,
        inner: &dyn Locator,
        ctx: &LocateContext,
    ) -> Result<Vec<Backend>, LocateError> {
        let config = &self.shared.config;
        let decided = |s: &State| s.role != Role::Electing || s.degraded.is_some();
        self.wait_for(config.etcd.dial_timeout.0 + Duration::from_secs(1), decided)
            .await;
        let Some((role, data, degraded)) = self.snapshot() else {
            return inner.locate(ctx).await;
        };
        if let Role::Leader { .. } = role {
            let found = inner.locate(ctx).await;
            match &found {
                Ok(set) => self.publish(Ok(set)).await,
                Err(e) => self.publish(Err(e.to_string())).await,
            }
            return found;
        }
        let unusable = |why: &str| LocateError::Fleet {
            locator: inner.describe(),
            message: format!("fleet data unusable ({why}); keeping the last good set"),
        };
        if let Some((since, why)) = degraded {
            if let FallbackAfter::After(after) = config.fallback_after
                && since.elapsed() >= after
            {
                let first = self.with_state(|s| !std::mem::replace(&mut s.fallback, true));
                if first == Some(true) {
                    tracing::warn!(service = %self.key.service, "fleet: etcd unusable for {}; asking the locator directly", humantime::format_duration(after));
                }
                return inner.locate(ctx).await;
            }
            self.record();
            return Err(unusable(&why));
        }
        self.with_state(|s| s.fallback = false);
        if let Some(record) = data {
            if let Some(f) = &record.failing
                && f.since.age(std::time::SystemTime::now()) > self.refresh.saturating_mul(3)
            {
                let why = format!(
                    "leader {} has had no answer from the locator for over 3 refresh periods ({})",
                    record.leader, f.error
                );
                self.degrade(&why);
                self.with_state(|s| s.unconfirmed = true);
                return Err(unusable(&why));
            }
            return Ok(record.backends);
        }
        self.wait_for(config.lease_ttl.0, |s| {
            s.data.is_some() || s.degraded.is_some()
        })
        .await;
        match self.snapshot() {
            Some((_, Some(record), None)) => Ok(record.backends),
            _ => Err(unusable("the fleet leader has published nothing yet")),
        }
    }
}

/// A shared locator: asks the fleet's leader's data, or runs the locator when leading.
pub(super) struct FleetLocator {
    inner: Box<dyn Locator>,
    election: Arc<Election>,
    task: OnceLock<tokio::task::AbortHandle>,
}

impl FleetLocator {
    pub(super) fn new(
        shared: Arc<Shared>,
        key: FleetKey,
        inner: Box<dyn Locator>,
        refresh: Duration,
    ) -> Self {
        let (changed, _) = watch::channel(0);
        let election = Arc::new(Election {
            shared,
            key,
            state: Mutex::new(State::default()),
            changed,
            kick: tokio::sync::Notify::new(),
            refresh,
        });
        FleetLocator {
            inner,
            election,
            task: OnceLock::new(),
        }
    }
}

impl Locator for FleetLocator {
    fn describe(&self) -> String {
        format!(
            "{} (shared by fleet `{}`)",
            self.inner.describe(),
            self.election.shared.config.name
        )
    }

    fn locate<'a>(&'a self, ctx: &'a LocateContext) -> LocateFuture<'a> {
        Box::pin(async move {
            // Started on first use, inside the daemon's runtime.
            self.task
                .get_or_init(|| tokio::spawn(Arc::clone(&self.election).run()).abort_handle());
            self.election.locate(&*self.inner, ctx).await
        })
    }
}

impl Drop for FleetLocator {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
        set_status(&self.election.key.dir, None);
        // The locator left this config: hand the leadership over now, and take the data along.
        let Some((Role::Leader { rev, .. }, _, _)) = self.election.snapshot() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let election = Arc::clone(&self.election);
        runtime.spawn(async move {
            let Some(client) = election.shared.client().await else {
                return;
            };
            let txn = Txn::new()
                .when([Compare::create_revision(
                    election.key.leader_key(),
                    CompareOp::Equal,
                    rev,
                )])
                .and_then([
                    TxnOp::delete(election.key.data_key(), None),
                    TxnOp::delete(election.key.leader_key(), None),
                ]);
            let _ = retry(election.shared.limit(), &client, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await;
        });
    }
}
