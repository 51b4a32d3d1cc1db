//! Giving memory back between applies: the heap's free pages, and the program file's pages that
//! only start-up used.

/// Returns the heap's free pages to the system. An apply of a large set frees as much as it
/// held (the old sets, the render's copy and output), and glibc keeps freed memory for reuse, so
/// without this the daemon's RSS stays at the peak of its largest apply.
pub(super) fn release_freed_memory() {
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
