//! The `cluster:` section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::IntoDeserializer;

use crate::value::{HumanDuration, is_valid_name};

/// `cluster: { name, member, etcd: {...}, lease_ttl, fallback_after, share }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The fleet: members with the same name (and environment) share their locators.
    pub name: String,
    /// This member's name in etcd and in the status (default: host name and process id).
    #[serde(default)]
    pub member: Option<String>,
    /// How to reach etcd.
    pub etcd: EtcdConfig,
    /// A leader that stops renewing its lease for this long loses leadership.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: HumanDuration,
    /// How long followers go without etcd before asking the locator themselves.
    #[serde(default)]
    pub fallback_after: FallbackAfter,
    /// The locator kinds shared through the fleet; the others run on every member.
    #[serde(default = "default_share")]
    pub share: Vec<String>,
}

/// `etcd: { endpoints, prefix, username, password_file, ca_file, cert_file, key_file,
/// dial_timeout }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// `http://127.0.0.1:2379` or `https://...`; any member of the cluster.
    pub endpoints: Vec<String>,
    /// Every key elasticd writes starts with this.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// etcd user (with `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the user's password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the servers' certificates.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// How long connecting may take.
    #[serde(default = "default_dial_timeout")]
    pub dial_timeout: HumanDuration,
}

/// `fallback_after: 2m` or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackAfter {
    /// Ask the locator directly after etcd has been unusable this long.
    After(Duration),
    /// Keep the last good set for as long as etcd is unusable.
    Never,
}

impl Default for FallbackAfter {
    fn default() -> Self {
        FallbackAfter::After(Duration::from_secs(120))
    }
}

impl<'de> Deserialize<'de> for FallbackAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "never" {
            return Ok(FallbackAfter::Never);
        }
        let d: serde::de::value::StringDeserializer<D::Error> = text.into_deserializer();
        HumanDuration::deserialize(d).map(|h| FallbackAfter::After(h.0))
    }
}

fn default_lease_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_dial_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_prefix() -> String {
    "/elasticd".into()
}
fn default_share() -> Vec<String> {
    vec!["ec2".into(), "asg".into()]
}

/// The kinds that may be listed in `share`: `static` is host-local by nature.
pub const SHAREABLE: &[&str] = &["ec2", "asg", "exec", "file"];

impl ClusterConfig {
    /// What deserializing could not check, one message per problem (key first).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !is_valid_name(&self.name) {
            out.push((
                "name",
                format!(
                    "`cluster.name` `{}` is not a valid name: use letters, digits, `_`, `-` and `.`",
                    self.name
                ),
            ));
        }
        if let Some(member) = &self.member
            && !is_valid_name(member)
        {
            out.push((
                "member",
                format!("`cluster.member` `{member}` is not a valid name: use letters, digits, `_`, `-` and `.`"),
            ));
        }
        let etcd = &self.etcd;
        if etcd.endpoints.is_empty() {
            out.push((
                "etcd",
                "`cluster.etcd.endpoints` must list at least one URL like http://127.0.0.1:2379"
                    .into(),
            ));
        }
        for e in &etcd.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                out.push((
                    "etcd",
                    format!("etcd endpoint `{e}` must start with http:// or https://"),
                ));
            }
        }
        if etcd.ca_file.is_none() && etcd.endpoints.iter().any(|e| e.starts_with("https://")) {
            out.push((
                "etcd",
                "https:// etcd endpoints need `cluster.etcd.ca_file` (the CA of the servers' certificates)".into(),
            ));
        }
        if !etcd.prefix.starts_with('/') || etcd.prefix.contains("//") {
            out.push((
                "etcd",
                format!(
                    "`cluster.etcd.prefix` `{}` must start with `/`",
                    etcd.prefix
                ),
            ));
        }
        if etcd.username.is_some() != etcd.password_file.is_some() {
            out.push((
                "etcd",
                "`cluster.etcd` needs both `username` and `password_file`, or neither".into(),
            ));
        }
        if etcd.cert_file.is_some() != etcd.key_file.is_some() {
            out.push((
                "etcd",
                "`cluster.etcd` needs both `cert_file` and `key_file`, or neither".into(),
            ));
        }
        let ttl = self.lease_ttl.0;
        if ttl < Duration::from_secs(2) || ttl.subsec_nanos() != 0 {
            out.push((
                "lease_ttl",
                "`cluster.lease_ttl` must be whole seconds, at least 2s".into(),
            ));
        }
        for kind in &self.share {
            if !SHAREABLE.contains(&kind.as_str()) {
                out.push((
                    "share",
                    format!(
                        "`cluster.share` lists `{kind}`, which can't be shared; shareable kinds: {}",
                        SHAREABLE.join(", ")
                    ),
                ));
            }
        }
        out
    }

    /// Makes relative file paths absolute against the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        let etcd = &mut self.etcd;
        for p in [
            &mut etcd.password_file,
            &mut etcd.ca_file,
            &mut etcd.cert_file,
            &mut etcd.key_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// This member's name: `member`, else `HOSTNAME-PID`.
    pub fn member_name(&self) -> String {
        if let Some(m) = &self.member {
            return m.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        format!("{host}-{}", std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, String> {
        crate::yaml::parse(text)
            .unwrap()
            .deserialize()
            .map_err(|e| e.message)
    }

    #[test]
    fn defaults() {
        let c = parse("name: edge\netcd: { endpoints: [http://127.0.0.1:2379] }").unwrap();
        assert_eq!(c.lease_ttl.0, Duration::from_secs(10));
        assert_eq!(
            c.fallback_after,
            FallbackAfter::After(Duration::from_secs(120))
        );
        assert_eq!(c.etcd.prefix, "/elasticd");
        assert_eq!(c.share, ["ec2", "asg"]);
        assert!(c.problems().is_empty());
    }

    #[test]
    fn never_falls_back_and_bad_settings_are_named() {
        let c = parse(
            "name: edge\nfallback_after: never\nlease_ttl: 1s\nshare: [static]\n\
             etcd: { endpoints: [127.0.0.1:2379], username: u }",
        )
        .unwrap();
        assert_eq!(c.fallback_after, FallbackAfter::Never);
        let keys: Vec<&str> = c.problems().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["etcd", "etcd", "lease_ttl", "share"]);
        assert!(parse("name: e\netcd: { endpoints: [] }\nfallback_after: soon").is_err());
    }
}
