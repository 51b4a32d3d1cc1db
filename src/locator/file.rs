//! The `file` locator: a Prometheus file_sd document on disk, read on every pass unless it is
//! unchanged since the last read, and parsed only when its bytes changed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::backend::BackendSet;

use super::{
    DocumentFormat, LocateContext, LocateError, LocateFuture, LocateSetFuture, Locator,
    parse_document,
};

/// How long the blocking read may take at most (a hung mount); the service's `timeout` gives up
/// on it sooner.
const READ_LIMIT: Duration = std::time::Duration::from_secs(300);

/// A file whose mtime or ctime is this close to the clock may still be rewritten within the
/// same timestamp tick (kernel timestamps are coarse; FAT's are 2 s), with the same size: its
/// answer is not reused.
const SETTLE: Duration = Duration::from_secs(3);

/// Even an unchanged-looking file is read again this often, in case a writer restored its
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
    /// The file's version when it had settled; `None` while it was still settling, when the
    /// answer is reused only for the same bytes.
    stamp: Option<Stamp>,
    /// The bytes parsed, kept only while the file settles (the few reads after a change, which
    /// then cost a comparison instead of a parse).
    bytes: Option<Vec<u8>>,
    default_port: Option<u16>,
    read_at: Instant,
    backends: BackendSet,
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

    /// The last answer, if `stamp` is the settled version it was parsed from and it may be
    /// reused without reading.
    fn reuse(&self, stamp: &Stamp, ctx: &LocateContext) -> Option<BackendSet> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let cached = last.as_ref()?;
        (cached.stamp == Some(*stamp)
            && cached.default_port == ctx.default_port
            && cached.read_at.elapsed() < REPARSE_EVERY)
            .then(|| Arc::clone(&cached.backends))
    }

    /// The last answer, if it was parsed from the same bytes (parsing them again would give it).
    fn same_bytes(&self, bytes: &[u8], ctx: &LocateContext) -> Option<BackendSet> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let cached = last.as_ref()?;
        (cached.bytes.as_deref() == Some(bytes) && cached.default_port == ctx.default_port)
            .then(|| Arc::clone(&cached.backends))
    }

    /// Keeps an answer for reuse: with the file's version when it had settled (`stamp`), else
    /// with its bytes. `None` forgets the last one (the file gave no answer).
    fn remember(&self, kept: Option<(Option<Stamp>, Vec<u8>, &BackendSet)>, ctx: &LocateContext) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = kept.map(|(stamp, bytes, backends)| Cached {
            stamp,
            bytes: stamp.is_none().then_some(bytes),
            default_port: ctx.default_port,
            read_at: Instant::now(),
            backends: Arc::clone(backends),
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
        Box::pin(async move { self.locate_set(ctx).await.map(|set| set.to_vec()) })
    }

    fn locate_set<'a>(&'a self, ctx: &'a LocateContext) -> LocateSetFuture<'a> {
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
            let settled = match before {
                Some((stamp, true)) => Some(stamp),
                _ => None,
            };
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
            let bytes = match bytes {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.remember(None, ctx);
                    return Err(e);
                }
            };
            let parsed = match self.same_bytes(&bytes, ctx) {
                Some(backends) => Ok(backends),
                None => parse_document(&bytes, format, &locator, ctx).map(Arc::new),
            };
            match &parsed {
                Ok(backends) => self.remember(Some((settled, bytes, backends)), ctx),
                Err(_) => self.remember(None, ctx),
            }
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

    #[tokio::test]
    async fn a_settling_file_is_parsed_only_when_its_bytes_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.json");
        std::fs::write(&path, r#"[{"targets": ["127.0.0.1"]}]"#).unwrap();
        let l = locator(&path, SETTLE);
        let first = l.locate_set(&ctx()).await.unwrap();
        // Read again (it is still settling), the same bytes: the same set, not a new parse.
        let again = l.locate_set(&ctx()).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        std::fs::write(&path, r#"[{"targets": ["127.0.0.2"]}]"#).unwrap();
        let changed = l.locate_set(&ctx()).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed[0].address.to_string(), "127.0.0.2");
        // Another default port makes the same bytes another answer.
        let other = LocateContext {
            default_port: Some(81),
            ..ctx()
        };
        assert_eq!(l.locate_set(&other).await.unwrap()[0].port, 81);
    }

    #[tokio::test]
    async fn a_settled_file_gives_the_same_set_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.json");
        std::fs::write(&path, r#"[{"targets": ["127.0.0.1"]}]"#).unwrap();
        let l = locator(&path, Duration::ZERO);
        let first = l.locate_set(&ctx()).await.unwrap();
        assert!(l.last.lock().unwrap().as_ref().unwrap().bytes.is_none());
        assert!(Arc::ptr_eq(&first, &l.locate_set(&ctx()).await.unwrap()));
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
