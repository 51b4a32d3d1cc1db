//! The `varnish` reload action: load the VCL under a new name, switch to it, discard old ones.
//!
//! This is what `varnishreload` does, through `varnishadm`. Varnish compiles the VCL on
//! `vcl.load`; a VCL that fails to compile is never used, so the active one stays in place.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::process::{self, CommandSpec, ProcessError};
use crate::value::{BoxFuture, HumanDuration};

/// Prefix of the VCL names elasticd loads; only these are ever discarded.
pub const VCL_NAME_PREFIX: &str = "elasticd_";
/// varnishadm prints little; more than this is not read.
const MAX_VARNISHADM_OUTPUT: usize = 4 * 1024 * 1024;

/// `reload: { varnish: { vcl: ..., instance | admin + secret, keep, timeout } }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarnishReloadConfig {
    /// The top-level VCL file to load (the one that includes the rendered file).
    pub vcl: PathBuf,
    /// varnishd's instance name or work directory (`varnishadm -n`).
    #[serde(default)]
    pub instance: Option<String>,
    /// The management address (`varnishadm -T host:port`).
    #[serde(default)]
    pub admin: Option<String>,
    /// The secret file for `admin` (`varnishadm -S`).
    #[serde(default)]
    pub secret: Option<PathBuf>,
    /// How many earlier elasticd VCLs to keep loaded (for a manual `vcl.use` rollback).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// How long each varnishadm call may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// The varnishadm program.
    #[serde(default = "default_varnishadm")]
    pub varnishadm: String,
}

fn default_keep() -> usize {
    2
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_varnishadm() -> String {
    "varnishadm".to_string()
}

impl super::ReloadSpec for VarnishReloadConfig {
    fn validate(&self) -> Result<(), String> {
        if self.secret.is_some() && self.admin.is_none() {
            return Err("`secret` goes with `admin` (varnishadm -T); with `instance` (-n) varnishadm finds the secret itself".into());
        }
        if self.varnishadm.is_empty() {
            return Err("`varnishadm` is empty".into());
        }
        if self.timeout.0.is_zero() {
            return Err("`timeout` must be more than zero".into());
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        for path in [Some(&mut self.vcl), self.secret.as_mut()]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        let mut argv = [std::mem::take(&mut self.varnishadm)];
        crate::value::resolve_program(&mut argv, base);
        let [program] = argv;
        self.varnishadm = program;
    }

    fn program(&self) -> Option<&str> {
        Some(&self.varnishadm)
    }

    fn reload<'a>(
        &'a self,
        frontend: &'a str,
        cwd: &'a Path,
        _context: &'a super::ReloadContext<'a>,
    ) -> BoxFuture<'a, Result<super::Reloaded, super::FrontendError>> {
        Box::pin(async move {
            let vcl = swap_vcl(frontend, self, cwd).await.map_err(|source| {
                super::FrontendError::Action {
                    frontend: frontend.to_string(),
                    action: "varnish",
                    source: Box::new(source),
                }
            })?;
            tracing::debug!(frontend, "varnish: VCL `{vcl}` active");
            Ok(super::Reloaded::Reloaded)
        })
    }
}

impl VarnishReloadConfig {
    /// varnishadm and the options that pick the instance.
    fn base_argv(&self) -> Vec<String> {
        let mut argv = vec![self.varnishadm.clone()];
        if let Some(instance) = &self.instance {
            argv.extend(["-n".to_string(), instance.clone()]);
        }
        if let Some(admin) = &self.admin {
            argv.extend(["-T".to_string(), admin.clone()]);
        }
        if let Some(secret) = &self.secret {
            argv.extend(["-S".to_string(), secret.to_string_lossy().into_owned()]);
        }
        argv
    }
}

/// Why a VCL swap failed.
#[derive(Debug, thiserror::Error)]
pub enum VarnishError {
    /// `vcl.load` failed: usually a compile error; the active VCL is unchanged.
    #[error("vcl.load of {} as `{name}` failed, the active VCL is unchanged: {source}", vcl.display())]
    Load {
        /// The VCL file.
        vcl: PathBuf,
        /// The name it was to get.
        name: String,
        /// What varnishadm said.
        source: ProcessError,
    },
    /// `vcl.use` failed; the new VCL was loaded but is not active.
    #[error("vcl.use `{name}` failed, the previous VCL stays active: {source}")]
    Use {
        /// The loaded VCL's name.
        name: String,
        /// What varnishadm said.
        source: ProcessError,
    },
}

/// One row of `vcl.list -j`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
struct VclEntry {
    status: String,
    name: String,
}

/// Loads and activates the VCL, then discards older elasticd VCLs beyond `keep`.
///
/// Returns the new VCL's name. Failing to list or discard old VCLs is logged, not an error:
/// the new configuration is live by then.
pub async fn swap_vcl(
    frontend: &str,
    config: &VarnishReloadConfig,
    cwd: &Path,
) -> Result<String, VarnishError> {
    let name = new_vcl_name();
    let vcl = config.vcl.to_string_lossy().into_owned();
    varnishadm(config, cwd, &["vcl.load", &name, &vcl])
        .await
        .map_err(|source| VarnishError::Load {
            vcl: config.vcl.clone(),
            name: name.clone(),
            source,
        })?;
    if let Err(source) = varnishadm(config, cwd, &["vcl.use", &name]).await {
        // Don't leave a loaded, unused VCL behind; if this fails too, the next swap's
        // cleanup finds it.
        let _ = varnishadm(config, cwd, &["vcl.discard", &name]).await;
        return Err(VarnishError::Use { name, source });
    }
    discard_old(frontend, config, cwd).await;
    Ok(name)
}

async fn discard_old(frontend: &str, config: &VarnishReloadConfig, cwd: &Path) {
    let listing = match varnishadm(config, cwd, &["vcl.list", "-j"]).await {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(
                frontend,
                "varnish: new VCL active, but listing old ones failed: {e}"
            );
            return;
        }
    };
    let entries = match parse_vcl_list(&listing) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(
                frontend,
                "varnish: new VCL active, but `vcl.list -j` gave {e}"
            );
            return;
        }
    };
    for name in discardable(&entries, config.keep) {
        if let Err(e) = varnishadm(config, cwd, &["vcl.discard", &name]).await {
            // A label or a busy reference can pin an old VCL; it is retried on the next swap.
            tracing::warn!(frontend, "varnish: cannot discard old VCL `{name}`: {e}");
        }
    }
}

async fn varnishadm(
    config: &VarnishReloadConfig,
    cwd: &Path,
    args: &[&str],
) -> Result<Vec<u8>, ProcessError> {
    let mut argv = config.base_argv();
    argv.extend(args.iter().map(|a| a.to_string()));
    process::run(CommandSpec {
        argv: &argv,
        timeout: config.timeout.0,
        cwd,
        env: vec![],
        stdin: None,
        max_stdout: MAX_VARNISHADM_OUTPUT,
    })
    .await
    .map(|finished| finished.stdout)
}

/// A name that sorts by load time: `elasticd_<unix ms>_<random>`.
fn new_vcl_name() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{VCL_NAME_PREFIX}{millis:013}_{:04x}", fastrand::u16(..))
}

/// Parses `vcl.list -j`: `[version, [command...], timestamp, {entry}, ...]`.
fn parse_vcl_list(output: &[u8]) -> Result<Vec<VclEntry>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(output).map_err(|e| format!("no JSON ({e})"))?;
    let items = value.as_array().ok_or("not a JSON array")?;
    items
        .iter()
        .skip(3)
        .map(|item| serde_json::from_value(item.clone()).map_err(|e| format!("an odd entry ({e})")))
        .collect()
}

/// elasticd's own inactive VCLs, oldest first, beyond the newest `keep`.
fn discardable(entries: &[VclEntry], keep: usize) -> Vec<String> {
    let mut ours: Vec<&str> = entries
        .iter()
        .filter(|e| e.name.starts_with(VCL_NAME_PREFIX) && e.status == "available")
        .map(|e| e.name.as_str())
        .collect();
    ours.sort_unstable();
    let excess = ours.len().saturating_sub(keep);
    ours[..excess].iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"[ 2, ["vcl.list", "-j"], 1795311285.621,
      {"status": "available", "state": "auto", "temperature": "warm", "busy": 0, "name": "boot"},
      {"status": "available", "state": "auto", "temperature": "cold", "busy": 0, "name": "elasticd_1795311285000_00aa"},
      {"status": "available", "state": "auto", "temperature": "warm", "busy": 1, "name": "elasticd_1795311286000_0001"},
      {"status": "available", "state": "auto", "temperature": "warm", "busy": 0, "name": "elasticd_1795311287000_ffff"},
      {"status": "active", "state": "auto", "temperature": "warm", "busy": 3, "name": "elasticd_1795311288000_1234"}
    ]"#;

    #[test]
    fn keeps_the_newest_of_its_own_and_never_touches_others() {
        let entries = parse_vcl_list(LISTING.as_bytes()).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(
            discardable(&entries, 2),
            vec!["elasticd_1795311285000_00aa".to_string()]
        );
        assert_eq!(discardable(&entries, 0).len(), 3);
        assert!(discardable(&entries, 5).is_empty());
    }

    #[test]
    fn names_sort_by_load_time() {
        let a = new_vcl_name();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_vcl_name();
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with(VCL_NAME_PREFIX));
    }

    #[test]
    fn garbage_listing_is_an_error_not_a_panic() {
        assert!(parse_vcl_list(b"not json").is_err());
        assert!(parse_vcl_list(b"{}").is_err());
    }
}
