//! Fleet mode (`cluster:`): one locator run for the whole fleet, shared through etcd.
//!
//! Every shared locator (by kind, `cluster.share`, or by `shared:` on its entry) has its own election in etcd, keyed by the
//! fleet, the environment and a hash of what decides its answer (settings as written, service,
//! default port; a stable, versioned canonical form: `key.rs`), so host-specific templates or
//! paths never split the fleet, nor do two elasticd versions. The leader
//! runs the locator on its schedule and publishes the answer; followers watch the key and use the
//! published set instead of asking the cloud themselves. They render, check and reload locally as
//! without fleet mode. See `docs/operations.md` ("Fleet mode").
//!
//! This file and `key.rs` hold the settings and the parts that need no etcd; the client is in
//! `etcd.rs` (cargo feature `etcd`).

mod config;
#[cfg(feature = "etcd")]
mod etcd;
mod key;
#[cfg(feature = "etcd")]
mod session;

pub use config::{ClusterConfig, EtcdConfig, FallbackAfter, SHAREABLE};
pub use key::{
    FleetKey, KEY_FORM, LocatorForm, SHARED_KEY, canonical, fleet_key, key_document, locator_form,
    written,
};

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::locator::{LocateContext, Locator, LocatorConfig};
use crate::status::{FleetStatus, Timestamp};

/// Why a `cluster:` section is refused by a build without the `etcd` feature.
pub const NOT_BUILT: &str = "this elasticd was built without fleet mode (cargo feature `etcd`); \
     build it with default features to use `cluster`";

/// The newest version of the published record. Followers read it and the one before
/// ([`OLDEST_SCHEMA`]), so that members one version apart share a fleet during an upgrade.
///
/// - 1: `{schema, revision, generated_at, leader, backends}`.
/// - 2: adds `failing: {since, error}` when the leader's locator has stopped answering, so that
///   followers can tell a set nobody confirms any more from one that merely did not change.
pub const SCHEMA: u32 = 2;

/// The oldest record version this elasticd reads.
pub const OLDEST_SCHEMA: u32 = SCHEMA - 1;

/// What the leader publishes for one shared locator (JSON in etcd).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record version it is written in ([`Record::schema_needed`]).
    pub schema: u32,
    /// Counts the sets published for this key, starting at 1.
    pub revision: u64,
    /// When the leader found this set.
    pub generated_at: Timestamp,
    /// The member that published it.
    pub leader: String,
    /// The locator's answer.
    pub backends: Vec<Backend>,
    /// Set while the leader's locator has no answer: the set is then no longer confirmed
    /// (schema 2; absent in schema 1, which is read as "answering").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<Failing>,
}

/// The leader's locator has had no answer since `since`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failing {
    /// Its first failed run in a row.
    pub since: Timestamp,
    /// What it said then.
    pub error: String,
}

impl Record {
    /// The oldest version that holds everything in this record: the leader writes that one,
    /// so that followers still one version behind read every record they can understand.
    pub fn schema_needed(&self) -> u32 {
        if self.failing.is_some() { 2 } else { 1 }
    }

    /// Reads a published record; `Err` says why it can't be used (kept out: the last good set
    /// stays).
    pub fn parse(bytes: &[u8]) -> Result<Record, String> {
        #[derive(Deserialize)]
        struct Head {
            schema: u32,
        }
        let head: Head = serde_json::from_slice(bytes)
            .map_err(|e| format!("the published record is not readable: {e}"))?;
        if !(OLDEST_SCHEMA..=SCHEMA).contains(&head.schema) {
            return Err(format!(
                "the published record has schema {}, this elasticd reads {OLDEST_SCHEMA} to \
                 {SCHEMA}; run the same or an adjacent version on every member",
                head.schema,
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("the published record is invalid: {e}"))
    }
}

/// Wraps `built` (locator `index` of service `ctx.service`, written as `form`, see
/// [`locator_form`]) in its fleet election when this process runs in fleet mode ([`install`])
/// and the locator is shared; else returns it as is. Without a written form (a config not read
/// from a file) the locator is not shared: there is nothing stable to name its election by.
pub fn wrap(
    built: Box<dyn Locator>,
    index: usize,
    locator: &LocatorConfig,
    form: Option<&LocatorForm>,
    ctx: &LocateContext,
    refresh: std::time::Duration,
) -> Box<dyn Locator> {
    #[cfg(feature = "etcd")]
    if let (Some(fleet), Some(form)) = (etcd::installed(), form) {
        let key = fleet_key(
            fleet.config(),
            ctx.environment.as_deref(),
            &ctx.service,
            ctx.default_port,
            index,
            &locator.kind(),
            form,
        );
        if let Some(key) = key {
            return Box::new(etcd::FleetLocator::new(fleet, key, built, refresh));
        }
    }
    let _ = (index, locator, form, ctx, refresh);
    built
}

/// Turns fleet mode on for this process (the daemon, at start): locators built from now on
/// are shared. `refresh` is called with a service's name when the fleet published a new set for
/// it, so that the daemon locates it now instead of at its next refresh.
pub fn install(cluster: &ClusterConfig, refresh: Box<dyn Fn(&str) + Send + Sync>) {
    #[cfg(feature = "etcd")]
    etcd::install(cluster, refresh);
    #[cfg(not(feature = "etcd"))]
    let _ = (cluster, refresh);
}

/// Gives up leadership everywhere now (revokes the lease), so that another member takes over
/// without waiting for the lease to expire. Called when the daemon stops.
pub async fn shutdown() {
    #[cfg(feature = "etcd")]
    etcd::shutdown().await;
}

fn table() -> &'static Mutex<BTreeMap<String, FleetStatus>> {
    static TABLE: Mutex<BTreeMap<String, FleetStatus>> = Mutex::new(BTreeMap::new());
    &TABLE
}

/// Every shared locator's fleet state, for the status document and `/readyz`.
pub fn statuses() -> Vec<FleetStatus> {
    table()
        .lock()
        .map(|t| t.values().cloned().collect())
        .unwrap_or_default()
}

#[cfg(feature = "etcd")]
fn set_status(dir: &str, status: Option<FleetStatus>) {
    if let Ok(mut t) = table().lock() {
        match status {
            Some(s) => t.insert(dir.to_string(), s),
            None => t.remove(dir),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_the_previous_schema_are_read_and_newer_ones_refused() {
        let mut record = Record {
            schema: 1,
            revision: 3,
            generated_at: Timestamp(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            ),
            leader: "a".into(),
            backends: vec![Backend::new(
                crate::backend::parse_target("10.0.0.1").unwrap().0,
                80,
            )],
            failing: None,
        };
        assert_eq!(record.schema_needed(), 1);
        let v1 = serde_json::to_vec(&record).unwrap();
        assert!(!String::from_utf8_lossy(&v1).contains("failing"));
        assert_eq!(Record::parse(&v1).unwrap(), record);
        record.failing = Some(Failing {
            since: record.generated_at,
            error: "no answer".into(),
        });
        assert_eq!(record.schema_needed(), 2);
        record.schema = 2;
        let v2 = serde_json::to_vec(&record).unwrap();
        assert_eq!(Record::parse(&v2).unwrap(), record);
        let newer = String::from_utf8(v2)
            .unwrap()
            .replace("\"schema\":2", &format!("\"schema\":{}", SCHEMA + 1));
        let err = Record::parse(newer.as_bytes()).unwrap_err();
        assert!(
            err.contains("schema 3, this elasticd reads 1 to 2"),
            "{err}"
        );
        let older = String::from_utf8(v1)
            .unwrap()
            .replace("\"schema\":1", "\"schema\":0");
        assert!(Record::parse(older.as_bytes()).is_err());
        assert!(Record::parse(b"{").is_err());
    }
}
