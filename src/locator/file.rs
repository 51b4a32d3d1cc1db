//! The `file` locator: a Prometheus file_sd document on disk, read on every pass unless it is
//! unchanged since the last read.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::backend::Backend;

use super::{DocumentFormat, LocateContext, LocateError, LocateFuture, Locator, parse_document};

/// How long the blocking read may take at most (a hung mount); the service's `timeout` gives up
/// on it sooner.
const READ_LIMIT: Duration = std::time::Duration::from_secs(300);

/// A file whose mtime or ctime is this close to the clock may still be rewritten within the
/// same timestamp tick (kernel timestamps are coarse; FAT's are 2 s), with the same size: its
/// answer is not reused.
const SETTLE: Duration = Duration::from_secs(3);

/// Even an unchanged-looking file is parsed again this often, in case a writer restored its
/// timestamps.
const REPARSE_EVERY: Duration = Duration::from_secs(300);

/// `file: { path: backends.json }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLocatorConfig {
    /// The document; `.json` is JSON, anything else is read as YAML (JSON is YAML too).
    pub path: PathBuf,
}

impl super::LocatorSpec for FileLocatorConfig {
    fn build(&self) -> Box<dyn Locator> {
        Box::new(FileLocator::new(self.clone()))
    }

    fn resolve_paths(&mut self, base: &std::path::Path) {
        if self.path.is_relative() {
            self.path = base.join(&self.path);
        }
    }
}

/// What identifies one version of the file without reading it: a rewrite in place changes the
/// size or the times, a rename over it changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether both times were at least `settle` before `now` (a time in the future, a
    /// skewed clock, is never settled).
    fn settled(&self, now: SystemTime, settle: Duration) -> bool {
        let Some(limit) = now.checked_sub(settle) else {
            return false;
        };
        let Ok(limit) = limit.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let limit = (
            i64::try_from(limit.as_secs()).unwrap_or(i64::MAX),
            i64::from(limit.subsec_nanos()),
        );
        self.mtime <= limit && self.ctime <= limit
    }
}

/// The last answer, with the file version it was parsed from.
struct Cached {
    stamp: Stamp,
    default_port: Option<u16>,
    parsed_at: Instant,
    backends: Vec<Backend>,
}

/// Reads the file on each pass, or reuses the last answer while the file is unchanged.
pub struct FileLocator {
    config: FileLocatorConfig,
    /// [`SETTLE`] (shorter in tests).
    settle: Duration,
    last: Mutex<Option<Cached>>,
}

impl FileLocator {
    /// A locator for one file.
    pub fn new(config: FileLocatorConfig) -> Self {
        FileLocator {
            config,
            settle: SETTLE,
            last: Mutex::new(None),
        }
    }

    /// The last answer, if `stamp` is the version it was parsed from and it may be reused.
    fn reuse(&self, stamp: &Stamp, ctx: &LocateContext) -> Option<Vec<Backend>> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let cached = last.as_ref()?;
        (cached.stamp == *stamp
            && cached.default_port == ctx.default_port
            && cached.parsed_at.elapsed() < REPARSE_EVERY)
            .then(|| cached.backends.clone())
    }

    /// Keeps an answer for reuse with the settled file version it came from; `None` forgets
    /// the last one (the file changed, is settling, or gave no answer).
    fn remember(&self, kept: Option<(Stamp, &[Backend])>, ctx: &LocateContext) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = kept.map(|(stamp, backends)| Cached {
            stamp,
            default_port: ctx.default_port,
            parsed_at: Instant::now(),
            backends: backends.to_vec(),
        });
    }
}

/// The file's stamp, and whether it had settled when taken; `None` when it can't be had (the
/// read then reports why).
async fn stat(path: &Path, settle: Duration) -> Option<(Stamp, bool)> {
    let owned = path.to_path_buf();
    let meta = tokio::task::spawn_blocking(move || std::fs::metadata(owned));
    let meta = tokio::time::timeout(READ_LIMIT, meta)
        .await
        .ok()?
        .ok()?
        .ok()?;
    let stamp = Stamp::of(&meta);
    Some((stamp, stamp.settled(SystemTime::now(), settle)))
}

impl Locator for FileLocator {
    fn describe(&self) -> String {
        format!("file {}", self.config.path.display())
    }

    fn locate<'a>(&'a self, ctx: &'a LocateContext) -> LocateFuture<'a> {
        Box::pin(async move {
            let path = &self.config.path;
            // Taken before the read, so a kept stamp is never newer than what was parsed: a
            // write between the two changes the stamp and the next pass reads again.
            let before = stat(path, self.settle).await;
            if let Some((stamp, true)) = &before
                && let Some(backends) = self.reuse(stamp, ctx)
            {
                return Ok(backends);
            }
            let locator = self.describe();
            // The service's `timeout` ends a read that hangs; this limit only bounds the thread.
            let bytes = crate::output::read_regular(path, READ_LIMIT)
                .await
                .map_err(|source| LocateError::Read {
                    locator: locator.clone(),
                    path: path.clone(),
                    source,
                });
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => DocumentFormat::Json,
                _ => DocumentFormat::Yaml,
            };
            let parsed = bytes.and_then(|bytes| parse_document(&bytes, format, &locator, ctx));
            let keep = match (&parsed, before) {
                (Ok(backends), Some((stamp, true))) => Some((stamp, backends.as_slice())),
                _ => None,
            };
            self.remember(keep, ctx);
            parsed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> LocateContext {
        LocateContext {
            service: "web".into(),
            environment: None,
            default_port: Some(80),
            base_dir: ".".into(),
        }
    }

    /// A locator for `path` that trusts a file as soon as `settle` has passed.
    fn locator(path: &Path, settle: Duration) -> FileLocator {
        FileLocator {
            settle,
            ..FileLocator::new(FileLocatorConfig { path: path.into() })
        }
    }

    async fn addresses(l: &FileLocator) -> Vec<String> {
        let found = l.locate(&ctx()).await.unwrap();
        found.iter().map(|b| b.address.to_string()).collect()
    }

    /// Whether the next pass would reuse the last answer without reading.
    async fn would_reuse(l: &FileLocator) -> bool {
        match stat(&l.config.path, l.settle).await {
            Some((stamp, true)) => l.reuse(&stamp, &ctx()).is_some(),
            _ => false,
        }
    }

    // Past the kernel's timestamp tick, so a rewrite gets a new mtime and ctime.
    async fn tick() {
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    #[tokio::test]
    async fn an_unchanged_settled_file_is_reused_and_a_same_size_rewrite_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.json");
        std::fs::write(&path, r#"[{"targets": ["127.0.0.1"]}]"#).unwrap();
        let l = locator(&path, Duration::ZERO);
        assert_eq!(addresses(&l).await, ["127.0.0.1"]);
        assert!(would_reuse(&l).await);
        assert_eq!(addresses(&l).await, ["127.0.0.1"]);

        tick().await;
        std::fs::write(&path, r#"[{"targets": ["127.0.0.2"]}]"#).unwrap();
        assert!(!would_reuse(&l).await);
        assert_eq!(addresses(&l).await, ["127.0.0.2"]);

        // Same size and the old mtime put back: the ctime still tells.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        tick().await;
        std::fs::write(&path, r#"[{"targets": ["127.0.0.3"]}]"#).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(mtime).unwrap();
        assert_eq!(addresses(&l).await, ["127.0.0.3"]);
    }

    #[tokio::test]
    async fn a_rename_over_the_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.json");
        std::fs::write(&path, r#"[{"targets": ["127.0.0.1"]}]"#).unwrap();
        let l = locator(&path, Duration::ZERO);
        assert_eq!(addresses(&l).await, ["127.0.0.1"]);
        let new = dir.path().join("web.json.tmp");
        std::fs::write(&new, r#"[{"targets": ["127.0.0.2"]}]"#).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&new)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert_eq!(addresses(&l).await, ["127.0.0.2"]);
    }

    #[tokio::test]
    async fn a_recently_written_file_is_read_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.json");
        std::fs::write(&path, r#"[{"targets": ["127.0.0.1"]}]"#).unwrap();
        let l = locator(&path, SETTLE);
        assert_eq!(addresses(&l).await, ["127.0.0.1"]);
        assert!(!would_reuse(&l).await);
        // Possibly within the same timestamp tick, with the same size.
        std::fs::write(&path, r#"[{"targets": ["127.0.0.2"]}]"#).unwrap();
        assert_eq!(addresses(&l).await, ["127.0.0.2"]);
    }

    #[test]
    fn only_times_before_the_settle_margin_are_settled() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |secs: i64| Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (secs, 0),
            ctime: (900, 0),
        };
        assert!(at(990).settled(now, SETTLE));
        assert!(!at(999).settled(now, SETTLE));
        assert!(
            !at(2_000).settled(now, SETTLE),
            "a future mtime is never settled"
        );
        let ctime_recent = Stamp {
            ctime: (999, 0),
            ..at(900)
        };
        assert!(!ctime_recent.settled(now, SETTLE));
    }

    #[tokio::test]
    async fn a_failed_read_forgets_the_last_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.json");
        std::fs::write(&path, r#"[{"targets": ["127.0.0.1"]}]"#).unwrap();
        let l = locator(&path, Duration::ZERO);
        assert_eq!(addresses(&l).await, ["127.0.0.1"]);
        std::fs::remove_file(&path).unwrap();
        assert!(l.locate(&ctx()).await.is_err());
        assert!(l.last.lock().unwrap().is_none());
    }
}
