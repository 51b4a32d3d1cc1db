//! Putting a rendered file in place: compare, stage, fsync, rename, keep one backup, roll back.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Mode for new files when the config sets none.
pub const DEFAULT_MODE: u32 = 0o644;

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct InstallError {
    /// What was being done (`write`, `rename into place`, ...).
    pub action: &'static str,
    /// The file concerned.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

fn err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> InstallError + 'a {
    move |source| InstallError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The current content of `path`, or `None` when it doesn't exist.
///
/// A symbolic link is refused: the install renames a regular file over the link (the target is
/// left stale), and its bytes would become the `.bak` (mode 0644) and the `--dry-run` diff, even
/// for a 0600 target. Anything else that is not a regular file (a FIFO would block the read) is
/// refused as well.
pub fn read_current(path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NOFOLLOW: the link itself is refused, not whatever it points to at the moment; O_NONBLOCK:
    // opening a FIFO does not wait for a writer.
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let target = fs::read_link(path)
                .map(|t| format!("`{}`", t.display()))
                .unwrap_or_else(|e| format!("an unreadable target ({e})"));
            return Err(err("replace", path)(std::io::Error::other(format!(
                "it is a symbolic link to {target}; elasticd replaces only regular files, so set the output's `path` to the link's target"
            ))));
        }
        Err(e) => return Err(err("read", path)(e)),
    };
    let kind = file.metadata().map_err(err("read", path))?.file_type();
    if !kind.is_file() {
        return Err(err("replace", path)(std::io::Error::other(format!(
            "it is {}, not a regular file",
            describe_file_type(kind)
        ))));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(err("read", path))?;
    Ok(Some(bytes))
}

/// Reads `path` whole on a blocking thread, refusing anything but a regular file (a FIFO would
/// block the read forever) and giving up after `timeout` (a hung network mount): the thread is
/// then abandoned, and the process can still exit.
pub async fn read_regular(path: &Path, timeout: std::time::Duration) -> std::io::Result<Vec<u8>> {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        let kind = fs::metadata(&owned)?.file_type();
        if !kind.is_file() {
            return Err(std::io::Error::other(format!(
                "it is {}, not a regular file",
                describe_file_type(kind)
            )));
        }
        fs::read(&owned)
    });
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(std::io::Error::other(format!("the read failed: {e}"))),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no answer within {} (a hung mount?)",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

fn describe_file_type(kind: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// The mode to give `path`: the configured one, else the existing file's, else 0644.
pub fn effective_mode(path: &Path, configured: Option<u32>) -> u32 {
    configured.unwrap_or_else(|| {
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(DEFAULT_MODE)
    })
}

/// Where the backup of `path` is kept: `path.bak`, beside it.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// A file written and synced next to its destination, not yet in place.
pub struct Staged {
    file: NamedTempFile,
    dest: PathBuf,
}

impl Staged {
    /// The staged file's path (for `{staged}` in a check command).
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Renames the staged file over the destination and syncs the directory.
    pub fn commit(self) -> Result<(), InstallError> {
        let dest = self.dest;
        self.file
            .persist(&dest)
            .map_err(|e| err("rename into place", &dest)(e.error))?;
        sync_dir(&dest)
    }
}

/// Writes `bytes` to a temporary file in `dest`'s directory, with `mode`, and fsyncs it.
///
/// The temporary name keeps `dest`'s extension so that checkers which look at it still work.
pub fn stage(dest: &Path, bytes: &[u8], mode: u32) -> Result<Staged, InstallError> {
    let dir = dir_of(dest);
    let suffix = dest
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let prefix = staging_prefix(dest);
    let mut file = tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(STAGING_RANDOM)
        .suffix(&suffix)
        .tempfile_in(dir)
        .map_err(err("create a staging file for", dest))?;
    // Held until this process closes the file (or dies): a staging file nobody holds is stale,
    // and [`remove_stale_staging`] may remove it. A filesystem without flock leaves it unlocked.
    let _ = try_lock(file.as_file());
    file.write_all(bytes).map_err(err("write", dest))?;
    fs::set_permissions(file.path(), fs::Permissions::from_mode(mode))
        .map_err(err("set the mode of", dest))?;
    file.as_file().sync_all().map_err(err("fsync", dest))?;
    Ok(Staged {
        file,
        dest: dest.to_path_buf(),
    })
}

/// The directory `path` is in (`.` for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `.NAME.elasticd-`: how the staging names of `dest` begin.
fn staging_prefix(dest: &Path) -> String {
    let stem = dest.file_name().unwrap_or_default().to_string_lossy();
    format!(".{stem}.elasticd-")
}

/// How many random letters and digits a staging name has (`.NAME.elasticd-XXXXXX[.ext]`).
const STAGING_RANDOM: usize = 6;

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` when another open file holds
/// one. The lock lasts until every descriptor of this open file is closed.
pub fn try_lock(file: &fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) only acts on the descriptor number, which `file` keeps open for the call;
    // no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// True when `name` is a staging name of `dest_name`: `.DEST.elasticd-` then exactly
/// [`STAGING_RANDOM`] letters or digits, then DEST's extension (if it has one). The owed marker
/// `.DEST.elasticd-owed` never is one.
fn is_staging_name(name: &str, dest_name: &str) -> bool {
    let suffix = Path::new(dest_name)
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    name.strip_prefix(&format!(".{dest_name}.elasticd-"))
        .and_then(|rest| rest.strip_suffix(suffix.as_str()))
        .is_some_and(|random| {
            random.len() == STAGING_RANDOM && random.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// Removes the staging files that runs killed mid-install left beside `dest`, its backup and its
/// owed marker (`.NAME.elasticd-XXXXXX[.ext]`), and returns their paths. A staging file that a
/// live process still holds ([`stage`] locks it) is left alone, so a daemon or another config's
/// run working on the same file is not disturbed. Owed markers are not staging files.
pub fn remove_stale_staging(dest: &Path) -> Result<Vec<PathBuf>, InstallError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = dir_of(dest);
    let names: Vec<String> = [
        dest.to_path_buf(),
        backup_path(dest),
        owed_marker_path(dest),
    ]
    .iter()
    .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
    .collect();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err("list the directory of", dest)(e)),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !names.iter().any(|n| is_staging_name(&name, n)) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) || !matches!(try_lock(&file), Ok(true)) {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("remove", &path)(e)),
        }
    }
    if !removed.is_empty() {
        sync_dir(dest)?;
    }
    Ok(removed)
}

/// Replaces `dest` with `bytes` atomically: readers see the old file or the new one, never a mix.
pub fn install_atomically(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    stage(dest, bytes, mode)?.commit()
}

/// Saves `previous` as the one backup of `dest`: as a second name of the file in place when that
/// still holds `previous` (no copy of its bytes to write and sync: about half of the disk work of
/// an install), else as a new file with `mode`.
pub fn write_backup(dest: &Path, previous: &[u8], mode: u32) -> Result<(), InstallError> {
    let backup = backup_path(dest);
    match link_backup(dest, &backup, previous, mode) {
        Some(linked) => {
            linked
                .persist(&backup)
                .map_err(|e| err("rename into place", &backup)(e.error))?;
            sync_dir(&backup)
        }
        None => install_atomically(&backup, previous, mode),
    }
}

/// A staging name beside `backup` for the file now at `dest`, synced, if that file holds exactly
/// `previous` and has `mode`; `None` when it does not (it changed since it was read, or its mode
/// is not the output's) or cannot be linked (a filesystem without hard links, a file of another
/// owner under `protected_hardlinks`).
fn link_backup(dest: &Path, backup: &Path, previous: &[u8], mode: u32) -> Option<NamedTempFile> {
    use std::io::Read;
    let dir = dir_of(backup);
    let prefix = staging_prefix(backup);
    let mut linked = tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(STAGING_RANDOM)
        .make_in(dir, |path| {
            fs::hard_link(dest, path)?;
            fs::File::open(path)
        })
        .ok()?;
    let _ = try_lock(linked.as_file());
    // The backup gets the output's mode: a file left 0644 is not kept as the backup of a 0600
    // output.
    let meta = linked.as_file().metadata().ok()?;
    if meta.permissions().mode() & 0o7777 != mode || meta.len() != previous.len() as u64 {
        return None;
    }
    // Compared in pieces: nothing of the file's size is allocated.
    let mut rest = previous;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = linked.as_file_mut().read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        let (head, tail) = rest.split_at_checked(n)?;
        if buf.get(..n)? != head {
            return None;
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return None;
    }
    // The new link count is on disk before the name that relies on it.
    linked.as_file().sync_all().ok()?;
    Some(linked)
}

/// Puts `dest` back as it was before an install: the previous bytes, or no file at all.
pub fn restore(dest: &Path, previous: Option<&[u8]>, mode: u32) -> Result<(), InstallError> {
    match previous {
        Some(bytes) => install_atomically(dest, bytes, mode),
        None => match fs::remove_file(dest) {
            Ok(()) => sync_dir(dest),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("remove", dest)(e)),
        },
    }
}

/// One file of a batch: its new bytes, the bytes it replaces (none: it is new) and its mode.
#[derive(Debug, Clone, Copy)]
pub struct FileChange<'a> {
    /// The destination.
    pub path: &'a Path,
    /// What goes there.
    pub content: &'a [u8],
    /// What was there, kept as the backup and restored on rollback.
    pub previous: Option<&'a [u8]>,
    /// The mode the file gets.
    pub mode: u32,
}

/// Installs one file with its backup: the previous bytes become `PATH.bak`, then the new ones go
/// into place atomically.
pub fn install_with_backup(change: &FileChange<'_>) -> Result<(), InstallError> {
    if let Some(previous) = change.previous {
        write_backup(change.path, previous, change.mode)?;
    }
    install_atomically(change.path, change.content, change.mode)
}

/// Files of one batch that are in place; [`Installed::rollback`] puts them all back.
#[must_use = "an installed batch is either kept or rolled back"]
pub struct Installed<'a> {
    files: Vec<FileChange<'a>>,
}

impl Installed<'_> {
    /// Leaves the files in place: the batch is final.
    pub fn keep(self) {}

    /// Puts every file back as it was before the batch; failures are logged, since nothing better
    /// can be done with them mid-rollback.
    pub fn rollback(self) {
        for change in &self.files {
            if let Err(e) = restore(change.path, change.previous, change.mode) {
                tracing::error!("rolling back {} failed: {e}", change.path.display());
            }
        }
    }
}

/// Installs every file of a batch with its backup, in order. If one fails, the ones already in
/// place are rolled back and the error is returned: a batch goes in whole or not at all.
pub fn install_batch<'a>(changes: &[FileChange<'a>]) -> Result<Installed<'a>, InstallError> {
    let mut done = Installed { files: Vec::new() };
    for change in changes {
        if let Err(e) = install_with_backup(change) {
            done.rollback();
            return Err(e);
        }
        done.files.push(*change);
    }
    Ok(done)
}

/// Files staged beside their destinations, none in place yet; dropping the batch removes them.
#[derive(Default)]
pub struct StagedBatch<'a> {
    files: Vec<(FileChange<'a>, Staged)>,
}

impl<'a> StagedBatch<'a> {
    /// An empty batch.
    pub fn new() -> Self {
        StagedBatch { files: Vec::new() }
    }

    /// Stages one more file; returns the staged file's path (for a checker's `{staged}`).
    pub fn stage(&mut self, change: FileChange<'a>) -> Result<&Path, InstallError> {
        let staged = stage(change.path, change.content, change.mode)?;
        self.files.push((change, staged));
        Ok(self.files.last().map_or(change.path, |(_, s)| s.path()))
    }

    /// Moves every staged file into place, each after its backup. If one fails, those already
    /// committed are rolled back and the error is returned.
    pub fn commit(self) -> Result<Installed<'a>, InstallError> {
        let mut done = Installed { files: Vec::new() };
        for (change, staged) in self.files {
            let result = match change.previous {
                Some(previous) => write_backup(change.path, previous, change.mode),
                None => Ok(()),
            }
            .and_then(|()| staged.commit());
            if let Err(e) = result {
                done.rollback();
                return Err(e);
            }
            done.files.push(change);
        }
        Ok(done)
    }
}

/// A note beside an installed file that its frontend has not yet both checked and taken it: it is
/// written before the file goes into place and removed once the frontend has reloaded. A run
/// killed in between leaves it, and the next run re-checks the file (and restores the backup if
/// the check fails) and owes the reload, instead of taking the file on disk as applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OwedMarker {
    /// The frontend that reads the file.
    pub frontend: String,
    /// Whether a file was there before (and so `PATH.bak` holds it); if not, a rollback removes
    /// the file.
    pub previous: bool,
}

/// Where the [`OwedMarker`] of `path` is kept: `.NAME.elasticd-owed`, beside it. The leading dot
/// and the suffix keep it out of `*.conf`-style includes.
pub fn owed_marker_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.elasticd-owed"))
}

/// Writes the marker of `path` durably, before the file itself is installed.
pub fn mark_owed(path: &Path, marker: &OwedMarker) -> Result<(), InstallError> {
    let marker_path = owed_marker_path(path);
    let bytes = serde_json::to_vec(marker).map_err(|e| InstallError {
        action: "encode the marker of",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    install_atomically(&marker_path, &bytes, 0o600)
}

/// The marker of `path`, if a run left one; a marker that can't be read counts as absent.
pub fn read_owed(path: &Path) -> Option<OwedMarker> {
    let bytes = fs::read(owed_marker_path(path)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the marker of `path`, if there is one.
pub fn clear_owed(path: &Path) -> Result<(), InstallError> {
    let marker_path = owed_marker_path(path);
    // Not synced: a marker that comes back after a crash makes the next start check the file
    // again and owe the reload, which is safe; an fsync of the directory on every apply is not
    // free.
    match fs::remove_file(&marker_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err("remove", &marker_path)(e)),
    }
}

/// Puts back what `path` replaced, from its backup (or removes it when it was new).
pub fn restore_backup(path: &Path, marker: &OwedMarker) -> Result<(), InstallError> {
    if !marker.previous {
        return restore(path, None, DEFAULT_MODE);
    }
    let backup = backup_path(path);
    let bytes = fs::read(&backup).map_err(err("read", &backup))?;
    let mode = effective_mode(&backup, None);
    install_atomically(path, &bytes, mode)
}

// The rename is durable only once the directory entry is on disk.
fn sync_dir(path: &Path) -> Result<(), InstallError> {
    let dir = dir_of(path);
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("fsync the directory of", path))
}

/// A unified diff from `old` to `new`, labelled with `path`.
pub fn unified_diff(path: &Path, old: Option<&[u8]>, new: &[u8]) -> String {
    let old_text = old.map(String::from_utf8_lossy).unwrap_or_default();
    let new_text = String::from_utf8_lossy(new);
    let label = path.display().to_string();
    similar::TextDiff::from_lines(old_text.as_ref(), new_text.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(
            &if old.is_some() {
                format!("a{label}")
            } else {
                "/dev/null".into()
            },
            &format!("b{label}"),
        )
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_replaces_and_sets_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("up.conf");
        install_atomically(&dest, b"one", 0o640).unwrap();
        install_atomically(&dest, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn the_backup_is_a_link_only_to_the_same_bytes_with_the_output_mode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("up.conf");
        let bak = backup_path(&dest);
        let inode = |p: &Path| fs::metadata(p).unwrap().ino();
        // Larger than one compared piece, so that the comparison walks several.
        let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        install_atomically(&dest, &big, 0o640).unwrap();
        write_backup(&dest, &big, 0o640).unwrap();
        assert_eq!(inode(&bak), inode(&dest), "same bytes and mode: linked");
        assert_eq!(fs::read(&bak).unwrap(), big);

        // Bytes that are not the file's (it changed since it was read), or one byte short, or
        // another mode: written as a copy.
        let mut other = big.clone();
        other[39_999] ^= 1;
        for (previous, mode) in [
            (&other[..], 0o640),
            (&big[..39_999], 0o640),
            (&big[..], 0o600),
        ] {
            write_backup(&dest, previous, mode).unwrap();
            assert_ne!(inode(&bak), inode(&dest));
            assert_eq!(fs::read(&bak).unwrap(), previous);
            assert_eq!(
                fs::metadata(&bak).unwrap().permissions().mode() & 0o777,
                mode
            );
        }
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no staging names are left: {names:?}");
        // Replacing the file leaves a linked backup with the old bytes.
        write_backup(&dest, &big, 0o640).unwrap();
        install_atomically(&dest, b"new", 0o640).unwrap();
        assert_eq!(fs::read(&bak).unwrap(), big);
    }

    #[test]
    fn staged_file_is_beside_dest_and_vanishes_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("haproxy.cfg");
        let staged = stage(&dest, b"x", 0o644).unwrap();
        let p = staged.path().to_path_buf();
        assert_eq!(p.parent(), Some(dir.path()));
        assert!(p.to_string_lossy().ends_with(".cfg"));
        drop(staged);
        assert!(!p.exists() && !dest.exists());
    }

    #[test]
    fn only_stale_staging_files_go_and_owed_markers_stay() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("haproxy.cfg");
        let held = stage(&dest, b"x", 0o644).unwrap();
        let stale = dir.path().join(".haproxy.cfg.elasticd-Ab12Cd.cfg");
        let stale_backup = dir.path().join(".haproxy.cfg.bak.elasticd-xY9z0Q.bak");
        let marker = owed_marker_path(&dest);
        let others = [
            dir.path().join(".haproxy.cfg.elasticd-toolong1.cfg"),
            dir.path().join(".other.cfg.elasticd-Ab12Cd.cfg"),
            dir.path().join("haproxy.cfg.elasticd-Ab12Cd.cfg"),
        ];
        for p in [&stale, &stale_backup, &marker].into_iter().chain(&others) {
            fs::write(p, b"y").unwrap();
        }
        let mut removed = remove_stale_staging(&dest).unwrap();
        removed.sort();
        let mut want = vec![stale.clone(), stale_backup.clone()];
        want.sort();
        assert_eq!(removed, want);
        assert!(held.path().exists() && marker.exists());
        assert!(others.iter().all(|p| p.exists()));
        assert!(is_staging_name(".a.elasticd-q1W2e3", "a"));
        assert!(!is_staging_name(".a.elasticd-owed", "a"));
        assert!(!is_staging_name(".a.conf.elasticd-owed", "a.conf"));
    }

    #[test]
    fn a_symlinked_output_is_refused_with_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret");
        fs::write(&target, b"key").unwrap();
        let link = dir.path().join("out.conf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read_current(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link") && e.contains("secret"), "{e}");
        assert_eq!(read_current(&dir.path().join("none")).unwrap(), None);
    }

    #[test]
    fn restore_puts_back_or_removes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.conf");
        install_atomically(&dest, b"new", 0o644).unwrap();
        restore(&dest, Some(b"old"), 0o644).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        restore(&dest, None, 0o644).unwrap();
        assert!(!dest.exists());
    }

    #[test]
    fn diff_has_headers_and_changes() {
        let d = unified_diff(Path::new("/x.conf"), Some(b"a\nb\n"), b"a\nc\n");
        assert!(
            d.contains("--- a/x.conf") && d.contains("+++ b/x.conf"),
            "{d}"
        );
        assert!(d.contains("-b\n") && d.contains("+c\n"), "{d}");
    }
}
