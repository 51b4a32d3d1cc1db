//! Fleet mode (`cluster:`): one locator run for the whole fleet, shared through etcd.
//!
//! Every shared locator (by kind, `cluster.share`) has its own election in etcd, keyed by the
//! fleet, the environment and a hash of what decides its answer (kind, settings as written,
//! service, default port), so host-specific templates or paths never split the fleet. The leader
//! runs the locator on its schedule and publishes the answer; followers watch the key and use the
//! published set instead of asking the cloud themselves. They render, check and reload locally as
//! without fleet mode. See `docs/operations.md` ("Fleet mode").
//!
//! This file holds the settings and the parts that need no etcd; the client is in `etcd.rs`
//! (cargo feature `etcd`).

mod config;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod session;

pub use config::{ClusterConfig, EtcdConfig, FallbackAfter};

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::Backend;
use crate::locator::{LocateContext, Locator, LocatorConfig};
use crate::status::{FleetStatus, Timestamp};

/// Why a `cluster:` section is refused by a build without the `etcd` feature.
pub const NOT_BUILT: &str = "this elasticd was built without fleet mode (cargo feature `etcd`); \
     build it with default features to use `cluster`";

/// The version of the published record; followers accept this one and the one before.
pub const SCHEMA: u32 = 1;

/// What the leader publishes for one shared locator (JSON in etcd).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// [`SCHEMA`] of the writer.
    pub schema: u32,
    /// Counts the sets published for this key, starting at 1.
    pub revision: u64,
    /// When the leader found this set.
    pub generated_at: Timestamp,
    /// The member that published it.
    pub leader: String,
    /// The locator's answer.
    pub backends: Vec<Backend>,
}

impl Record {
    /// Reads a published record; `Err` says why it can't be used (kept out: the last good set
    /// stays).
    pub fn parse(bytes: &[u8]) -> Result<Record, String> {
        #[derive(Deserialize)]
        struct Head {
            schema: u32,
        }
        let head: Head = serde_json::from_slice(bytes)
            .map_err(|e| format!("the published record is not readable: {e}"))?;
        if head.schema > SCHEMA || head.schema < SCHEMA.saturating_sub(1) {
            return Err(format!(
                "the published record has schema {}, this elasticd reads {}..{SCHEMA}; \
                 run the same or an adjacent version on every member",
                head.schema,
                SCHEMA.saturating_sub(1)
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("the published record is invalid: {e}"))
    }
}

/// Where one shared locator lives in etcd, and what it is called in logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetKey {
    /// `{prefix}/fleets/{fleet}/{environment}/{hash}`; the leader and data keys are below it.
    pub dir: String,
    /// The service the locator works for (on this host).
    pub service: String,
    /// `INDEX:KIND`, as in the other metrics.
    pub locator: String,
}

impl FleetKey {
    /// The key whose creator leads (its value is the leader's member name).
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.dir)
    }

    /// The key holding the published [`Record`].
    pub fn data_key(&self) -> String {
        format!("{}/data", self.dir)
    }
}

/// The election key of locator `index` of service `service` (port `port`), or `None` when the
/// locator is host-local (its kind is not in `share`).
pub fn fleet_key(
    cluster: &ClusterConfig,
    environment: Option<&str>,
    service: &str,
    port: Option<u16>,
    index: usize,
    locator: &LocatorConfig,
) -> Option<FleetKey> {
    let kind = locator.kind();
    if !cluster.share.contains(&kind) {
        return None;
    }
    // The program's resolved path differs between hosts whose configs live in different
    // places; the name as written is what every host shares.
    let mut written = locator.clone();
    if let Some(slot) = written.plugin_mut() {
        slot.call.program = None;
    }
    let mut hash = Sha256::new();
    hash.update(format!("{service}\n{port:?}\n{written:?}"));
    let digest = hash.finalize();
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    Some(FleetKey {
        dir: format!(
            "{}/fleets/{}/{}/{hex}",
            cluster.etcd.prefix.trim_end_matches('/'),
            cluster.name,
            environment.unwrap_or("-"),
        ),
        service: service.to_string(),
        locator: format!("{index}:{kind}"),
    })
}

/// Wraps `built` (locator `index` of service `ctx.service`) in its fleet election when this
/// process runs in fleet mode ([`install`]) and the locator is shared; else returns it as is.
pub fn wrap(
    built: Box<dyn Locator>,
    index: usize,
    locator: &LocatorConfig,
    ctx: &LocateContext,
    refresh: std::time::Duration,
) -> Box<dyn Locator> {
    #[cfg(feature = "etcd")]
    if let Some(fleet) = etcd::installed() {
        let key = fleet_key(
            fleet.config(),
            ctx.environment.as_deref(),
            &ctx.service,
            ctx.default_port,
            index,
            locator,
        );
        if let Some(key) = key {
            return Box::new(etcd::FleetLocator::new(fleet, key, built, refresh));
        }
    }
    let _ = (index, locator, ctx, refresh);
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

    fn cluster() -> ClusterConfig {
        crate::yaml::parse(
            "name: edge\netcd: { endpoints: [http://127.0.0.1:2379] }\nshare: [exec, ec2]",
        )
        .unwrap()
        .deserialize()
        .unwrap()
    }

    fn exec(program: &str, resolved: &str) -> LocatorConfig {
        let text = format!("exec: {{ command: [{program}, --zone, a] }}");
        let mut l: LocatorConfig = crate::yaml::parse(&text).unwrap().deserialize().unwrap();
        l.plugin_mut().unwrap().call.program = Some(resolved.into());
        l
    }

    #[test]
    fn hosts_with_different_paths_share_one_key() {
        let c = cluster();
        let a = fleet_key(&c, Some("prod"), "web", Some(80), 0, &exec("dc", "/a/dc")).unwrap();
        let b = fleet_key(&c, Some("prod"), "web", Some(80), 0, &exec("dc", "/b/dc")).unwrap();
        assert_eq!(a, b);
        assert!(
            a.dir.starts_with("/elasticd/fleets/edge/prod/"),
            "{}",
            a.dir
        );
        let other = fleet_key(&c, Some("prod"), "web", Some(81), 0, &exec("dc", "/a/dc")).unwrap();
        assert_ne!(a.dir, other.dir, "the default port changes the answer");
        let env = fleet_key(&c, Some("test"), "web", Some(80), 0, &exec("dc", "/a/dc")).unwrap();
        assert_ne!(a.dir, env.dir);
    }

    #[test]
    fn host_local_kinds_are_not_shared() {
        let c = cluster();
        let file: LocatorConfig = crate::yaml::parse("file: { path: web.json }")
            .unwrap()
            .deserialize()
            .unwrap();
        assert_eq!(fleet_key(&c, None, "web", None, 0, &file), None);
    }

    #[test]
    fn records_of_the_previous_schema_are_read_and_newer_ones_refused() {
        let record = Record {
            schema: SCHEMA,
            revision: 3,
            generated_at: Timestamp(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            ),
            leader: "a".into(),
            backends: vec![Backend::new(
                crate::backend::parse_target("10.0.0.1").unwrap().0,
                80,
            )],
        };
        let text = serde_json::to_vec(&record).unwrap();
        assert_eq!(Record::parse(&text).unwrap(), record);
        let newer = String::from_utf8(text).unwrap().replace(
            &format!("\"schema\":{SCHEMA}"),
            &format!("\"schema\":{}", SCHEMA + 1),
        );
        let err = Record::parse(newer.as_bytes()).unwrap_err();
        assert!(err.contains("schema 2"), "{err}");
        assert!(Record::parse(b"{").is_err());
    }
}
