//! Giving memory back: the heap's free pages once applies stop, and the program file's pages that
//! only start-up used.

use std::time::Duration;

use tokio::time::Instant;

/// How long the daemon must go without an apply before the heap's free pages go back to the
/// system. An apply of a large set frees about as much as it allocates (the old sets, the file
/// read, the rendered output and the installed file read back), and the next apply needs as much
/// again: handing those pages back after every apply made each apply fault them in afresh (about
/// 1,900 minor faults, most of its CPU time, at 10,000 backends). While changes keep coming the
/// pages are kept and reused; once they stop, RSS goes back down.
pub(super) const TRIM_AFTER: Duration = Duration::from_secs(30);

/// The largest allocation that still comes from the heap (glibc's default is 128 KB, raised on
/// the fly): above the threshold each buffer is a mapping of its own, unmapped when freed, so
/// the rendered output and the files read would fault in afresh on every apply. 32 MB is the
/// most glibc allows.
const MMAP_THRESHOLD: i32 = 32 * 1024 * 1024;
/// How much free memory at the top of the heap `free` keeps before giving it back on its own:
/// set high, because [`Trim`] gives it back when the daemon goes quiet instead.
const TRIM_THRESHOLD: i32 = 256 * 1024 * 1024;

/// Sets the allocator up for a long-running daemon: large buffers from the heap, and no trimming
/// of the heap by `free` between applies (see [`TRIM_AFTER`]).
pub(super) fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets two of the allocator's parameters; it takes no pointers and
    // may be called at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// When the heap's free pages go back to the system: right after start-up, then once no apply
/// has run for [`TRIM_AFTER`].
#[derive(Debug, Default)]
pub(super) struct Trim {
    at: Option<Instant>,
}

impl Trim {
    /// An apply ran at `now`: what it freed is kept for the next one until the daemon has been
    /// quiet for [`TRIM_AFTER`].
    pub(super) fn applied(&mut self, now: Instant) {
        self.at = Some(now + TRIM_AFTER);
    }

    /// When the free pages are due to go back, if they are.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.at
    }

    /// Gives the free pages back now, and nothing more until the next apply.
    pub(super) fn now(&mut self) {
        self.at = None;
        release_freed_memory();
    }
}

/// Returns the heap's free pages to the system: glibc keeps freed memory for reuse, so without
/// this the daemon's RSS stays at the peak of its largest apply.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it takes no
    // pointers from us and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lets go of the pages of the program file once start-up is over (config parsing, template
/// compiling, the first locate and apply): they stay mapped after their one use, and with the
/// kernel mapping the neighbours of every page touched, that is most of an idle daemon's RSS.
/// The pages stay in the page cache; what is used again is mapped again from there.
pub(super) fn release_start_up_code() {
    #[cfg(target_os = "linux")]
    {
        let (Ok(exe), Ok(smaps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/smaps"),
        ) else {
            return;
        };
        for (start, end) in unmodified_mappings(&smaps, &exe) {
            // SAFETY: the range is a private, read-only mapping of the program file without a
            // page of its own (`Anonymous: 0 kB`: nothing was relocated or patched in it), so
            // its pages equal the file's and dropping them only means that the next use maps
            // them again from the page cache. Nothing in this process writes to such a range.
            unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    end.saturating_sub(start),
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}

/// The address ranges in `smaps` that map `exe` read-only and private with no page changed from
/// the file (the code, the read-only data; not the relocated data, which has copied pages).
pub(super) fn unmodified_mappings(smaps: &str, exe: &std::path::Path) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [range, perms, _, _, _, path, ..] = fields[..]
            && range.contains('-')
        {
            // `START-END PERMS OFFSET DEV INODE PATH`: a mapping begins.
            current = None;
            let ours = std::path::Path::new(path) == exe;
            let read_only = perms.starts_with("r-") && perms.ends_with('p');
            if let (true, true, Some((start, end))) = (ours, read_only, range.split_once('-'))
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                current = Some((start, end));
            }
            continue;
        }
        if let ["Anonymous:", size, "kB"] = fields[..] {
            // Only a mapping without a page of its own is released.
            if let (Some(range), "0") = (current.take(), size) {
                found.push(range);
            }
        }
    }
    found
}
